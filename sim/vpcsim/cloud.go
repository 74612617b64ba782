// Package vpcsim is a stand-in for one EC2 region: the control plane (the EC2
// Query API and IMDSv2, as an unmodified aws-sdk-go-v2 client sees them) and,
// optionally, a data plane of network namespaces that forwards packets the
// way a VPC does. Every end-to-end test and the demo run against it.
package vpcsim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// APIError is an EC2 error: the code and HTTP status EC2 answers with.
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func apiErr(code, format string, args ...any) *APIError {
	status := http.StatusBadRequest
	switch code {
	case "InternalError":
		status = http.StatusInternalServerError
	case "RequestLimitExceeded", "Unavailable", "ServiceUnavailable":
		status = http.StatusServiceUnavailable
	case "UnauthorizedOperation", "AuthFailure":
		status = http.StatusForbidden
	case "DryRunOperation":
		status = http.StatusPreconditionFailed
	}
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// VPC is one virtual private cloud.
type VPC struct {
	ID             string
	CIDRs          []netip.Prefix
	IPv6CIDR       netip.Prefix // Amazon-provided /56, if associated
	DefaultGroupID string
}

// Subnet is a VPC subnet with its address accounting.
type Subnet struct {
	ID    string
	VPCID string
	AZ    string
	CIDR  netip.Prefix
	Tags  map[string]string
	// IPv6CIDR is the subnet's /64, if any; used6 and prefixes6 are its
	// addresses and /80 prefixes in use, by ENI (ipv6.go).
	IPv6CIDR  netip.Prefix
	used6     map[netip.Addr]string
	prefixes6 map[netip.Prefix]string
	// used maps every address taken by an ENI (primary, secondary, or any
	// of the 16 inside a delegated /28) to that ENI.
	used   map[netip.Addr]string
	cursor uint32
}

// Attachment binds an ENI to an instance.
type Attachment struct {
	ID                  string
	InstanceID          string
	DeviceIndex         int
	NetworkCard         int
	Status              string
	DeleteOnTermination bool
	AttachTime          time.Time
}

// ENI is an elastic network interface.
type ENI struct {
	ID          string
	SubnetID    string
	VPCID       string
	AZ          string
	MAC         string
	Description string
	// InterfaceType is EC2's: "interface" (the default), "efa",
	// "efa-only", "trunk" or "branch".
	InterfaceType string
	PrimaryIP     netip.Addr
	Secondary     []netip.Addr
	Prefixes      []netip.Prefix
	IPv6s         []netip.Addr
	IPv6Prefixes  []netip.Prefix // /80s
	Groups        []string
	Tags          map[string]string
	Attachment    *Attachment
	Created       time.Time
	// NoSourceDestCheck is the source/destination check disabled (EC2
	// enables it on every new ENI).
	NoSourceDestCheck bool
	clientToken       string
	// trunkAssoc is a branch ENI's trunk association ("" for none).
	trunkAssoc string
	// permissions granted by CreateNetworkInterfacePermission.
	permissions []InterfacePermission
}

// Status is the EC2 status of the ENI: a branch associated with a trunk is
// in use, as an attached ENI is, though it has no attachment.
func (e *ENI) Status() string {
	if e.Attachment != nil || e.trunkAssoc != "" {
		return "in-use"
	}
	return "available"
}

func (e *ENI) slots() int { return 1 + len(e.Secondary) + len(e.Prefixes) }

// Instance is an EC2 instance.
type Instance struct {
	ID       string
	Name     string
	Type     string
	Limits   instancelimits.Limits
	AZ       string
	SubnetID string
	VPCID    string
	ImageID  string
	State    string
	Launched time.Time
	Tags     map[string]string
	// ENIs by where they are attached.
	ENIs map[Slot]string
}

// Slot is where an ENI is attached: device indexes are numbered per
// network card, as on EC2's multi-card instance types.
type Slot struct{ Card, Device int }

// cardLimit is how many ENIs the instance's network card can attach; 0 for
// a card the type does not have.
func (i *Instance) cardLimit(card int) int {
	if len(i.Limits.NetworkCards) == 0 {
		if card == 0 {
			return i.Limits.MaxENIs
		}
		return 0
	}
	return i.Limits.NetworkCards[card]
}

// onCard counts the ENIs attached to one network card.
func (i *Instance) onCard(card int) int {
	n := 0
	for s := range i.ENIs {
		if s.Card == card {
			n++
		}
	}
	return n
}

// DataPlane receives the changes the data plane must mirror. Every call is
// made before the control plane commits the change, so a data-plane failure
// fails the API call instead of leaving the two out of step.
type DataPlane interface {
	AddSubnet(cidr netip.Prefix) error
	AddNode(name string) error
	RemoveNode(name string) error
	AttachENI(node string, id string, mac net.HardwareAddr, slot Slot, primary netip.Addr, subnet netip.Prefix) error
	DetachENI(id string) error
	SetENIAddresses(id string, secondary []netip.Addr, prefixes []netip.Prefix) error
	// SetENIIPv6 replaces the IPv6 addresses and prefixes delivered through
	// an attached ENI.
	SetENIIPv6(id string, addrs []netip.Addr, prefixes []netip.Prefix) error
	// SetSecurityGroups replaces what the router enforces: every group's
	// ingress permissions and every attached ENI's groups.
	SetSecurityGroups(groups map[string][]Permission, eniGroups map[string][]string) error
	// AssociateBranch makes a branch ENI's primary IP ride its attached
	// trunk's link, in 802.1Q frames tagged with vlan; after it the branch
	// takes SetENIAddresses and, in eniGroups, groups like an attached ENI.
	AssociateBranch(trunkID, branchID string, mac net.HardwareAddr, vlan int, primary netip.Addr, subnet netip.Prefix) error
	DisassociateBranch(branchID string) error
}

// Cloud is the simulated region's state. All methods are safe for
// concurrent use.
type Cloud struct {
	mu        sync.Mutex
	region    string
	account   string
	vpcs      map[string]*VPC
	subnets   map[string]*Subnet
	instances map[string]*Instance
	enis      map[string]*ENI
	sgs       map[string]*SecurityGroup
	tokens    map[string]ENIView // CreateNetworkInterface ClientToken -> the first answer (given again, as by EC2, even once the ENI is deleted)
	dp        DataPlane
	onChange  func(InstanceNetwork)
	now       func() time.Time
	describes *describeHistory // what an eventually consistent describe sees
	sgPerENI  int              // the quota of security groups per network interface
	rulesPerG int              // the quota of inbound rules per security group

	// Trunk associations by ID, and the trunk actions' ClientTokens
	// ("Action token") with their first requests (trunk.go).
	assocs      map[string]*TrunkAssociation
	trunkTokens map[string]trunkToken
}

// Amazon VPC's quota of security groups per network interface: 5 unless
// the account has it raised, to 16 at most; of inbound rules per security
// group (IPv4 and IPv6 apart), 60 unless raised. The two multiplied cannot
// exceed 1,000.
const (
	DefaultSecurityGroupsPerInterface = 5
	MaxSecurityGroupsPerInterface     = 16
	DefaultRulesPerSecurityGroup      = 60
	MaxRulesTimesGroups               = 1000
)

// NewCloud makes an empty region.
func NewCloud(region string) *Cloud {
	c := &Cloud{
		region: region, account: "123456789012",
		vpcs: map[string]*VPC{}, subnets: map[string]*Subnet{}, instances: map[string]*Instance{},
		enis: map[string]*ENI{}, sgs: map[string]*SecurityGroup{}, tokens: map[string]ENIView{},
		assocs: map[string]*TrunkAssociation{}, trunkTokens: map[string]trunkToken{},
		now: time.Now, sgPerENI: DefaultSecurityGroupsPerInterface, rulesPerG: DefaultRulesPerSecurityGroup,
	}
	c.describes = newDescribeHistory(c)
	return c
}

// SetDescribeLag makes DescribeNetworkInterfaces eventually consistent: it
// answers with the state of d ago (0: the current state), as EC2 may right
// after a change.
func (c *Cloud) SetDescribeLag(d time.Duration) { c.describes.setLag(d) }

// DescribeLag is the current describe lag.
func (c *Cloud) DescribeLag() time.Duration { return c.describes.currentLag() }

// changedLocked records the ENIs' state after a change for lagged describes.
func (c *Cloud) changedLocked() { c.describes.recordLocked(c.eniDetailsLocked) }

// SetSecurityGroupsPerInterface sets the account's quota of security groups
// per network interface, as a quota increase does (1 to 16).
func (c *Cloud) SetSecurityGroupsPerInterface(n int) error {
	if n < 1 || n > MaxSecurityGroupsPerInterface {
		return fmt.Errorf("security groups per network interface: %d is outside EC2's 1 to %d", n, MaxSecurityGroupsPerInterface)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n*c.rulesPerG > MaxRulesTimesGroups {
		return fmt.Errorf("security groups per network interface: %d times %d rules per group exceeds EC2's %d", n, c.rulesPerG, MaxRulesTimesGroups)
	}
	c.sgPerENI = n
	return nil
}

// SetRulesPerSecurityGroup sets the account's quota of inbound rules per
// security group, as a quota increase does; times the groups per network
// interface it stays within 1,000.
func (c *Cloud) SetRulesPerSecurityGroup(n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 1 || n*c.sgPerENI > MaxRulesTimesGroups {
		return fmt.Errorf("rules per security group: %d (times %d groups per network interface) is outside EC2's 1 to %d", n, c.sgPerENI, MaxRulesTimesGroups)
	}
	c.rulesPerG = n
	return nil
}

// checkGroupCountLocked refuses more groups than the quota, with the code
// EC2 gives for an interface or, at launch, for an instance.
func (c *Cloud) checkGroupCountLocked(groups []string, code string) *APIError {
	if len(groups) > c.sgPerENI {
		return apiErr(code, "You have exceeded the maximum number of security groups (%d) for a network interface: %d given.", c.sgPerENI, len(groups))
	}
	return nil
}

// Region is the region name.
func (c *Cloud) Region() string { return c.region }

// SetDataPlane wires a data plane; nil runs the control plane alone.
func (c *Cloud) SetDataPlane(dp DataPlane) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dp = dp
}

// OnInstanceChange registers the listener told (under the state lock, so in
// order) whenever an instance's network view changes; IMDS uses it.
func (c *Cloud) OnInstanceChange(f func(InstanceNetwork)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = f
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-0" + hex.EncodeToString(b)[:16]
}

func newMAC() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	b[0] = 0x02 // locally administered unicast, as EC2's MACs are
	return net.HardwareAddr(b).String()
}

// ---------------------------------------------------------------- topology

// AddVPC creates a VPC with one or more IPv4 CIDRs and its default security
// group.
func (c *Cloud) AddVPC(cidrs ...string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(cidrs) == 0 {
		return "", fmt.Errorf("a VPC needs at least one CIDR")
	}
	v := &VPC{ID: newID("vpc")}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			return "", fmt.Errorf("VPC CIDR %q: want a canonical IPv4 prefix", s)
		}
		v.CIDRs = append(v.CIDRs, p)
	}
	c.vpcs[v.ID] = v
	// EC2's default group: all traffic from its own members.
	sg, aerr := c.createGroupLocked(v.ID, "default", "default VPC security group")
	if aerr != nil {
		return "", aerr
	}
	sg.Ingress = []Permission{{Protocol: "-1", FromPort: -1, ToPort: -1, Groups: []string{sg.ID}}}
	v.DefaultGroupID = sg.ID
	return v.ID, nil
}

// AddVPCCIDR associates another CIDR with a VPC (as EC2 allows later on).
func (c *Cloud) AddVPCCIDR(vpcID, cidr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vpcs[vpcID]
	if !ok {
		return apiErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Masked() != p || !p.Addr().Is4() {
		return apiErr("InvalidParameterValue", "invalid CIDR %q", cidr)
	}
	if p.Bits() < 16 || p.Bits() > 28 {
		return apiErr("InvalidVpc.Range", "The CIDR '%s' is invalid: the netmask must be between /16 and /28", cidr)
	}
	for _, have := range v.CIDRs {
		if have.Overlaps(p) {
			return apiErr("CidrConflict", "The CIDR '%s' conflicts with the VPC's CIDR '%s'", cidr, have)
		}
	}
	v.CIDRs = append(v.CIDRs, p)
	for _, i := range c.instances {
		if i.VPCID == vpcID {
			c.notifyLocked(i)
		}
	}
	return nil
}

// AddSecurityGroup creates a security group in a VPC with no ingress
// permission, named "launch-wizard-N" as the console names the groups its
// launch wizard creates (CreateSecurityGroup gives a group a chosen name).
func (c *Cloud) AddSecurityGroup(vpcID string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	sg, aerr := c.createGroupLocked(vpcID, "", "")
	if aerr != nil {
		return "", aerr
	}
	return sg.ID, nil
}
