// Package vpcsim is a stand-in for one EC2 region: the control plane (the EC2
// Query API and IMDSv2, as an unmodified aws-sdk-go-v2 client sees them) and,
// optionally, a data plane of network namespaces that forwards packets the
// way a VPC does. Every end-to-end test and the demo run against it.
package vpcsim

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
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
	}
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// VPC is one virtual private cloud.
type VPC struct {
	ID             string
	CIDRs          []netip.Prefix
	DefaultGroupID string
}

// Subnet is a VPC subnet with its address accounting.
type Subnet struct {
	ID    string
	VPCID string
	AZ    string
	CIDR  netip.Prefix
	Tags  map[string]string
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
	PrimaryIP   netip.Addr
	Secondary   []netip.Addr
	Prefixes    []netip.Prefix
	Groups      []string
	Tags        map[string]string
	Attachment  *Attachment
	Created     time.Time
	clientToken string
}

// Status is the EC2 status of the ENI.
func (e *ENI) Status() string {
	if e.Attachment != nil {
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
	// ENIs by device index.
	ENIs map[int]string
}

// DataPlane receives the changes the data plane must mirror. Every call is
// made before the control plane commits the change, so a data-plane failure
// fails the API call instead of leaving the two out of step.
type DataPlane interface {
	AddSubnet(cidr netip.Prefix) error
	AddNode(name string) error
	RemoveNode(name string) error
	AttachENI(node string, id string, mac net.HardwareAddr, deviceIndex int, primary netip.Addr, subnet netip.Prefix) error
	DetachENI(id string) error
	SetENIAddresses(id string, secondary []netip.Addr, prefixes []netip.Prefix) error
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
	groups    map[string]string  // sg id -> vpc id
	tokens    map[string]ENIView // CreateNetworkInterface ClientToken -> the first answer (given again, as by EC2, even once the ENI is deleted)
	dp        DataPlane
	onChange  func(InstanceNetwork)
	now       func() time.Time
}

// NewCloud makes an empty region.
func NewCloud(region string) *Cloud {
	return &Cloud{
		region: region, account: "123456789012",
		vpcs: map[string]*VPC{}, subnets: map[string]*Subnet{}, instances: map[string]*Instance{},
		enis: map[string]*ENI{}, groups: map[string]string{}, tokens: map[string]ENIView{},
		now: time.Now,
	}
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
	v.DefaultGroupID = newID("sg")
	c.groups[v.DefaultGroupID] = v.ID
	c.vpcs[v.ID] = v
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
	v.CIDRs = append(v.CIDRs, p)
	for _, i := range c.instances {
		if i.VPCID == vpcID {
			c.notifyLocked(i)
		}
	}
	return nil
}

// AddSecurityGroup creates a security group in a VPC.
func (c *Cloud) AddSecurityGroup(vpcID string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.vpcs[vpcID]; !ok {
		return "", apiErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	id := newID("sg")
	c.groups[id] = vpcID
	return id, nil
}

// AddSubnet creates a subnet inside one of the VPC's CIDRs.
func (c *Cloud) AddSubnet(vpcID, cidr, az string, tags map[string]string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vpcs[vpcID]
	if !ok {
		return "", apiErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Masked() != p || !p.Addr().Is4() {
		return "", apiErr("InvalidParameterValue", "invalid CIDR %q", cidr)
	}
	if p.Bits() < 16 || p.Bits() > 28 {
		return "", apiErr("InvalidSubnet.Range", "The CIDR '%s' is invalid: the netmask must be between /16 and /28", cidr)
	}
	inside := false
	for _, vc := range v.CIDRs {
		if vc.Contains(p.Addr()) && vc.Bits() <= p.Bits() {
			inside = true
		}
	}
	if !inside {
		return "", apiErr("InvalidSubnet.Range", "The CIDR '%s' is invalid for the VPC", cidr)
	}
	for _, s := range c.subnets {
		if s.VPCID == vpcID && s.CIDR.Overlaps(p) {
			return "", apiErr("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", cidr)
		}
	}
	if c.dp != nil {
		if err := c.dp.AddSubnet(p); err != nil {
			return "", fmt.Errorf("data plane: %w", err)
		}
	}
	s := &Subnet{ID: newID("subnet"), VPCID: vpcID, AZ: az, CIDR: p, Tags: copyTags(tags), used: map[netip.Addr]string{}}
	c.subnets[s.ID] = s
	return s.ID, nil
}

// ----------------------------------------------------------- subnet space

func a2u(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }
func u2a(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// usable is the range of addresses EC2 hands out: it reserves the network
// address, the next three (router, DNS, future) and the broadcast address.
func (s *Subnet) usable() (first, last uint32) {
	base := a2u(s.CIDR.Addr())
	size := uint32(1) << (32 - s.CIDR.Bits())
	return base + 4, base + size - 2
}

// Gateway is the subnet's router address (base+1).
func (s *Subnet) Gateway() netip.Addr { return u2a(a2u(s.CIDR.Addr()) + 1) }

// Available is the free-address count EC2 reports.
func (s *Subnet) Available() int {
	f, l := s.usable()
	return int(l-f+1) - len(s.used)
}

func (s *Subnet) takeIPs(n int, owner string) ([]netip.Addr, *APIError) {
	if n > s.Available() {
		return nil, apiErr("InsufficientFreeAddressesInSubnet",
			"The specified subnet %s does not have enough free addresses to satisfy the request.", s.ID)
	}
	f, l := s.usable()
	if s.cursor < f || s.cursor > l {
		s.cursor = f
	}
	var out []netip.Addr
	for u := s.cursor; len(out) < n; {
		a := u2a(u)
		if _, taken := s.used[a]; !taken {
			s.used[a] = owner
			out = append(out, a)
		}
		if u++; u > l {
			u = f
		}
		s.cursor = u
	}
	return out, nil
}

func (s *Subnet) takeIP(a netip.Addr, owner string) *APIError {
	f, l := s.usable()
	if !s.CIDR.Contains(a) || a2u(a) < f || a2u(a) > l {
		return apiErr("InvalidParameterValue", "Address %s does not fall within the usable range of subnet %s (%s)", a, s.ID, s.CIDR)
	}
	if _, taken := s.used[a]; taken {
		return apiErr("InvalidIPAddress.InUse", "Address %s is in use.", a)
	}
	s.used[a] = owner
	return nil
}

// takePrefixes carves n /28s, aligned and disjoint from every address in use.
func (s *Subnet) takePrefixes(n int, owner string) ([]netip.Prefix, *APIError) {
	f, l := s.usable()
	base := a2u(s.CIDR.Addr())
	size := uint32(1) << (32 - s.CIDR.Bits())
	var out []netip.Prefix
	for blk := base; blk+15 < base+size && len(out) < n; blk += 16 {
		if blk < f || blk+15 > l {
			continue
		}
		free := true
		for u := blk; u <= blk+15; u++ {
			if _, taken := s.used[u2a(u)]; taken {
				free = false
				break
			}
		}
		if free {
			out = append(out, netip.PrefixFrom(u2a(blk), 28))
			for u := blk; u <= blk+15; u++ {
				s.used[u2a(u)] = owner
			}
		}
	}
	if len(out) < n {
		for _, p := range out {
			s.releasePrefix(p)
		}
		return nil, apiErr("InsufficientCidrBlocks",
			"The specified subnet does not have enough free cidr blocks to satisfy the request.")
	}
	return out, nil
}

func (s *Subnet) releaseIP(a netip.Addr) { delete(s.used, a) }
func (s *Subnet) releasePrefix(p netip.Prefix) {
	for u := a2u(p.Addr()); u <= a2u(p.Addr())+15; u++ {
		delete(s.used, u2a(u))
	}
}

// ---------------------------------------------------------------- instances

// LaunchSpec describes an instance to start.
type LaunchSpec struct {
	Name         string // node name in the data plane; defaults to the ID
	InstanceType string
	SubnetID     string
	GroupIDs     []string // defaults to the VPC's default group
}

// LaunchInstance starts an instance with its primary ENI (device 0,
// DeleteOnTermination) and, with a data plane, its node namespace.
func (c *Cloud) LaunchInstance(spec LaunchSpec) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lim, ok := instancelimits.Lookup(spec.InstanceType)
	if !ok {
		return "", apiErr("InvalidParameterValue", "Invalid value '%s' for InstanceType.", spec.InstanceType)
	}
	s, ok := c.subnets[spec.SubnetID]
	if !ok {
		return "", apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", spec.SubnetID)
	}
	groups := spec.GroupIDs
	if len(groups) == 0 {
		groups = []string{c.vpcs[s.VPCID].DefaultGroupID}
	}
	inst := &Instance{ID: newID("i"), Type: spec.InstanceType, Limits: lim, AZ: s.AZ, SubnetID: s.ID,
		VPCID: s.VPCID, ImageID: "ami-0vpcsim000000000", State: "running", Launched: c.now(),
		Tags: map[string]string{}, ENIs: map[int]string{}}
	inst.Name = spec.Name
	if inst.Name == "" {
		inst.Name = inst.ID
	}
	for _, other := range c.instances {
		if other.Name == inst.Name {
			return "", fmt.Errorf("an instance named %q exists", inst.Name)
		}
	}
	eni, aerr := c.createENILocked(createENIInput{SubnetID: s.ID, Groups: groups, Description: "Primary network interface"})
	if aerr != nil {
		return "", aerr
	}
	if c.dp != nil {
		if err := c.dp.AddNode(inst.Name); err != nil {
			c.deleteENILocked(eni)
			return "", fmt.Errorf("data plane: %w", err)
		}
		if err := c.dp.AttachENI(inst.Name, eni.ID, mustMAC(eni.MAC), 0, eni.PrimaryIP, s.CIDR); err != nil {
			_ = c.dp.RemoveNode(inst.Name)
			c.deleteENILocked(eni)
			return "", fmt.Errorf("data plane: %w", err)
		}
	}
	eni.Attachment = &Attachment{ID: newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: 0, Status: "attached",
		DeleteOnTermination: true, AttachTime: c.now()}
	inst.ENIs[0] = eni.ID
	c.instances[inst.ID] = inst
	c.notifyLocked(inst)
	return inst.ID, nil
}

// TerminateInstance stops an instance: ENIs with DeleteOnTermination are
// deleted, the others are detached and left "available" (how ENIs leak).
func (c *Cloud) TerminateInstance(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	inst, ok := c.instances[id]
	if !ok {
		return apiErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	for _, eniID := range inst.ENIs {
		e := c.enis[eniID]
		if c.dp != nil {
			_ = c.dp.DetachENI(e.ID)
		}
		del := e.Attachment.DeleteOnTermination
		e.Attachment = nil
		if del {
			c.deleteENILocked(e)
		}
	}
	if c.dp != nil {
		_ = c.dp.RemoveNode(inst.Name)
	}
	delete(c.instances, id)
	return nil
}

func mustMAC(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

// InstanceByName finds an instance ID by its node name.
func (c *Cloud) InstanceByName(name string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range c.instances {
		if i.Name == name {
			return i.ID, true
		}
	}
	return "", false
}

// ----------------------------------------------------------------- ENIs

type createENIInput struct {
	SubnetID       string
	Groups         []string
	Description    string
	SecondaryCount int
	PrivateIPs     []netip.Addr
	PrefixCount    int
	Tags           map[string]string
	ClientToken    string
}

func (c *Cloud) createENILocked(in createENIInput) (*ENI, *APIError) {
	s, ok := c.subnets[in.SubnetID]
	if !ok {
		return nil, apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", in.SubnetID)
	}
	for _, g := range in.Groups {
		if c.groups[g] != s.VPCID {
			return nil, apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", g, s.VPCID)
		}
	}
	if in.SecondaryCount < 0 || in.PrefixCount < 0 {
		return nil, apiErr("InvalidParameterValue", "counts must not be negative")
	}
	// An unattached ENI is not yet bound to a type's limit; EC2 caps it at
	// the largest any type allows.
	if 1+in.SecondaryCount+len(in.PrivateIPs)+in.PrefixCount > 50 {
		return nil, apiErr("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	e := &ENI{ID: newID("eni"), SubnetID: s.ID, VPCID: s.VPCID, AZ: s.AZ, MAC: newMAC(), Description: in.Description,
		Groups: append([]string(nil), in.Groups...), Tags: copyTags(in.Tags), Created: c.now(), clientToken: in.ClientToken}
	rollback := func() {
		for a, owner := range s.used {
			if owner == e.ID {
				delete(s.used, a)
			}
		}
	}
	pips, aerr := s.takeIPs(1, e.ID)
	if aerr != nil {
		return nil, aerr
	}
	e.PrimaryIP = pips[0]
	for _, a := range in.PrivateIPs {
		if aerr := s.takeIP(a, e.ID); aerr != nil {
			rollback()
			return nil, aerr
		}
		e.Secondary = append(e.Secondary, a)
	}
	if in.SecondaryCount > 0 {
		ips, aerr := s.takeIPs(in.SecondaryCount, e.ID)
		if aerr != nil {
			rollback()
			return nil, aerr
		}
		e.Secondary = append(e.Secondary, ips...)
	}
	if in.PrefixCount > 0 {
		ps, aerr := s.takePrefixes(in.PrefixCount, e.ID)
		if aerr != nil {
			rollback()
			return nil, aerr
		}
		e.Prefixes = ps
	}
	c.enis[e.ID] = e
	if in.ClientToken != "" {
		c.tokens[in.ClientToken] = c.viewLocked(e)
	}
	return e, nil
}

func (c *Cloud) deleteENILocked(e *ENI) {
	if s := c.subnets[e.SubnetID]; s != nil {
		s.releaseIP(e.PrimaryIP)
		for _, a := range e.Secondary {
			s.releaseIP(a)
		}
		for _, p := range e.Prefixes {
			s.releasePrefix(p)
		}
	}
	delete(c.enis, e.ID)
}

// notifyLocked tells the IMDS listener the instance's new network view.
func (c *Cloud) notifyLocked(inst *Instance) {
	if c.onChange == nil {
		return
	}
	c.onChange(c.instanceNetworkLocked(inst))
}

// InstanceNetwork is what an instance sees of itself (the IMDS view).
type InstanceNetwork struct {
	InstanceID   string
	Name         string
	InstanceType string
	Region       string
	AZ           string
	Account      string
	ImageID      string
	Launched     time.Time
	VPCID        string
	VPCCIDRs     []netip.Prefix
	PrimaryIP    netip.Addr
	PrimaryMAC   string
	ENIs         []ENIView // by device index
}

// ENIView is a copy of an ENI's state.
type ENIView struct {
	ID           string
	MAC          string
	DeviceIndex  int
	SubnetID     string
	SubnetCIDR   netip.Prefix
	VPCID        string
	Groups       []string
	PrimaryIP    netip.Addr
	Secondary    []netip.Addr
	Prefixes     []netip.Prefix
	Tags         map[string]string
	Status       string
	AttachmentID string
	InstanceID   string
}

func (c *Cloud) viewLocked(e *ENI) ENIView {
	v := ENIView{ID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, VPCID: e.VPCID,
		Groups: append([]string(nil), e.Groups...), PrimaryIP: e.PrimaryIP,
		Secondary: append([]netip.Addr(nil), e.Secondary...), Prefixes: append([]netip.Prefix(nil), e.Prefixes...),
		Tags: copyTags(e.Tags), Status: e.Status(), DeviceIndex: -1}
	if s := c.subnets[e.SubnetID]; s != nil {
		v.SubnetCIDR = s.CIDR
	}
	if e.Attachment != nil {
		v.DeviceIndex = e.Attachment.DeviceIndex
		v.AttachmentID = e.Attachment.ID
		v.InstanceID = e.Attachment.InstanceID
	}
	return v
}

func (c *Cloud) instanceNetworkLocked(inst *Instance) InstanceNetwork {
	n := InstanceNetwork{InstanceID: inst.ID, Name: inst.Name, InstanceType: inst.Type, Region: c.region, AZ: inst.AZ,
		Account: c.account, ImageID: inst.ImageID, Launched: inst.Launched, VPCID: inst.VPCID,
		VPCCIDRs: append([]netip.Prefix(nil), c.vpcs[inst.VPCID].CIDRs...)}
	var devs []int
	for d := range inst.ENIs {
		devs = append(devs, d)
	}
	sort.Ints(devs)
	for _, d := range devs {
		e := c.enis[inst.ENIs[d]]
		n.ENIs = append(n.ENIs, c.viewLocked(e))
		if d == 0 {
			n.PrimaryIP, n.PrimaryMAC = e.PrimaryIP, e.MAC
		}
	}
	return n
}

// InstanceNetwork returns an instance's current (not lagged) network view.
func (c *Cloud) InstanceNetwork(id string) (InstanceNetwork, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	inst, ok := c.instances[id]
	if !ok {
		return InstanceNetwork{}, false
	}
	return c.instanceNetworkLocked(inst), true
}

// ENI returns a copy of one ENI.
func (c *Cloud) ENI(id string) (ENIView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.enis[id]
	if !ok {
		return ENIView{}, false
	}
	return c.viewLocked(e), true
}

// ENIs returns copies of every ENI, sorted by ID.
func (c *Cloud) ENIs() []ENIView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ENIView
	for _, e := range c.enis {
		out = append(out, c.viewLocked(e))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SubnetAvailable returns the free-address count of a subnet.
func (c *Cloud) SubnetAvailable(id string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.subnets[id]
	if !ok {
		return 0, false
	}
	return s.Available(), true
}

// ------------------------------------------------------------ operations

func (c *Cloud) eniLocked(id string) (*ENI, *APIError) {
	e, ok := c.enis[id]
	if !ok {
		return nil, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
	}
	return e, nil
}

// CreateNetworkInterface creates an unattached ENI. A repeated ClientToken
// returns the ENI the first call created (EC2's idempotency).
func (c *Cloud) CreateNetworkInterface(in createENIInput) (ENIView, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in.ClientToken != "" {
		if first, ok := c.tokens[in.ClientToken]; ok {
			if e, ok := c.enis[first.ID]; ok {
				return c.viewLocked(e), nil
			}
			return first, nil
		}
	}
	if len(in.Groups) == 0 {
		if s, ok := c.subnets[in.SubnetID]; ok {
			in.Groups = []string{c.vpcs[s.VPCID].DefaultGroupID}
		}
	}
	e, aerr := c.createENILocked(in)
	if aerr != nil {
		return ENIView{}, aerr
	}
	return c.viewLocked(e), nil
}

// AttachNetworkInterface attaches an available ENI at a device index.
func (c *Cloud) AttachNetworkInterface(eniID, instanceID string, deviceIndex, networkCard int) (string, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return "", aerr
	}
	inst, ok := c.instances[instanceID]
	if !ok {
		return "", apiErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", instanceID)
	}
	if e.Attachment != nil {
		return "", apiErr("InvalidParameterValue", "Interface %s is currently in use.", eniID)
	}
	if networkCard != 0 {
		return "", apiErr("InvalidParameterValue", "network card index %d is not supported by the simulator", networkCard)
	}
	if e.AZ != inst.AZ || e.VPCID != inst.VPCID {
		return "", apiErr("InvalidParameterValue", "Interface %s is in a different availability zone or VPC than instance %s.", eniID, instanceID)
	}
	if deviceIndex < 1 || deviceIndex > 99 {
		return "", apiErr("InvalidParameterValue", "Invalid value '%d' for deviceIndex.", deviceIndex)
	}
	if _, taken := inst.ENIs[deviceIndex]; taken {
		return "", apiErr("InvalidParameterValue", "Instance '%s' already has an interface attached at device index '%d'.", instanceID, deviceIndex)
	}
	if len(inst.ENIs) >= inst.Limits.MaxENIs {
		return "", apiErr("AttachmentLimitExceeded", "Interface count %d exceeds the limit for %s", len(inst.ENIs)+1, inst.Type)
	}
	if e.slots() > inst.Limits.IPv4PerENI {
		return "", apiErr("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	if len(e.Prefixes) > 0 && !inst.Limits.SupportsPrefixDelegation() {
		return "", apiErr("InvalidParameterValue", "Instance type %s does not support IPv4 prefixes (Nitro only).", inst.Type)
	}
	if c.dp != nil {
		s := c.subnets[e.SubnetID]
		if err := c.dp.AttachENI(inst.Name, e.ID, mustMAC(e.MAC), deviceIndex, e.PrimaryIP, s.CIDR); err != nil {
			return "", apiErr("InternalError", "data plane: %v", err)
		}
		if err := c.dp.SetENIAddresses(e.ID, e.Secondary, e.Prefixes); err != nil {
			_ = c.dp.DetachENI(e.ID)
			return "", apiErr("InternalError", "data plane: %v", err)
		}
	}
	e.Attachment = &Attachment{ID: newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: deviceIndex,
		Status: "attached", AttachTime: c.now()}
	inst.ENIs[deviceIndex] = e.ID
	c.notifyLocked(inst)
	return e.Attachment.ID, nil
}

// DetachNetworkInterface detaches by attachment ID.
func (c *Cloud) DetachNetworkInterface(attachmentID string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.enis {
		if e.Attachment == nil || e.Attachment.ID != attachmentID {
			continue
		}
		if e.Attachment.DeviceIndex == 0 {
			return apiErr("OperationNotPermitted", "The network interface at device index 0 cannot be detached.")
		}
		inst := c.instances[e.Attachment.InstanceID]
		if c.dp != nil {
			if err := c.dp.DetachENI(e.ID); err != nil {
				return apiErr("InternalError", "data plane: %v", err)
			}
		}
		delete(inst.ENIs, e.Attachment.DeviceIndex)
		e.Attachment = nil
		c.notifyLocked(inst)
		return nil
	}
	return apiErr("InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", attachmentID)
}

// DeleteNetworkInterface deletes an available ENI and frees its addresses.
func (c *Cloud) DeleteNetworkInterface(id string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(id)
	if aerr != nil {
		return aerr
	}
	if e.Attachment != nil {
		return apiErr("InvalidNetworkInterface.InUse", "The network interface '%s' is currently in use.", id)
	}
	c.deleteENILocked(e)
	return nil
}

// ModifyDeleteOnTermination sets the attachment's DeleteOnTermination.
func (c *Cloud) ModifyDeleteOnTermination(eniID, attachmentID string, v bool) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	if e.Attachment == nil || e.Attachment.ID != attachmentID {
		return apiErr("InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", attachmentID)
	}
	e.Attachment.DeleteOnTermination = v
	return nil
}

// ModifyGroups replaces the ENI's security groups.
func (c *Cloud) ModifyGroups(eniID string, groups []string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	for _, g := range groups {
		if c.groups[g] != e.VPCID {
			return apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", g, e.VPCID)
		}
	}
	e.Groups = append([]string(nil), groups...)
	if e.Attachment != nil {
		c.notifyLocked(c.instances[e.Attachment.InstanceID])
	}
	return nil
}

func (c *Cloud) limitLocked(e *ENI) int {
	if e.Attachment != nil {
		return c.instances[e.Attachment.InstanceID].Limits.IPv4PerENI
	}
	return 50
}

// AssignPrivateIPs adds secondary IPs (by count or explicitly) or /28
// prefixes to an ENI.
func (c *Cloud) AssignPrivateIPs(eniID string, count int, explicit []netip.Addr, prefixCount int) (ENIView, []netip.Addr, []netip.Prefix, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return ENIView{}, nil, nil, aerr
	}
	n := count + len(explicit) + prefixCount
	if n <= 0 || count < 0 || prefixCount < 0 {
		return ENIView{}, nil, nil, apiErr("InvalidParameterValue", "SecondaryPrivateIpAddressCount, PrivateIpAddress or Ipv4PrefixCount must ask for at least one address")
	}
	if prefixCount > 0 && (count > 0 || len(explicit) > 0) {
		return ENIView{}, nil, nil, apiErr("InvalidParameterCombination", "Ipv4PrefixCount cannot be combined with private IP addresses")
	}
	if prefixCount > 0 && e.Attachment != nil && !c.instances[e.Attachment.InstanceID].Limits.SupportsPrefixDelegation() {
		inst := c.instances[e.Attachment.InstanceID]
		return ENIView{}, nil, nil, apiErr("InvalidParameterValue", "Instance type %s does not support IPv4 prefixes (Nitro only).", inst.Type)
	}
	if e.slots()+n > c.limitLocked(e) {
		return ENIView{}, nil, nil, apiErr("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	s := c.subnets[e.SubnetID]
	var ips []netip.Addr
	var pfx []netip.Prefix
	undo := func() {
		for _, a := range ips {
			s.releaseIP(a)
		}
		for _, p := range pfx {
			s.releasePrefix(p)
		}
	}
	for _, a := range explicit {
		if aerr := s.takeIP(a, e.ID); aerr != nil {
			undo()
			return ENIView{}, nil, nil, aerr
		}
		ips = append(ips, a)
	}
	if count > 0 {
		more, aerr := s.takeIPs(count, e.ID)
		if aerr != nil {
			undo()
			return ENIView{}, nil, nil, aerr
		}
		ips = append(ips, more...)
	}
	if prefixCount > 0 {
		pfx, aerr = s.takePrefixes(prefixCount, e.ID)
		if aerr != nil {
			return ENIView{}, nil, nil, aerr
		}
	}
	newSec := append(append([]netip.Addr(nil), e.Secondary...), ips...)
	newPfx := append(append([]netip.Prefix(nil), e.Prefixes...), pfx...)
	if c.dp != nil && e.Attachment != nil {
		if err := c.dp.SetENIAddresses(e.ID, newSec, newPfx); err != nil {
			undo()
			return ENIView{}, nil, nil, apiErr("InternalError", "data plane: %v", err)
		}
	}
	e.Secondary, e.Prefixes = newSec, newPfx
	if e.Attachment != nil {
		c.notifyLocked(c.instances[e.Attachment.InstanceID])
	}
	return c.viewLocked(e), ips, pfx, nil
}

// UnassignPrivateIPs removes secondary IPs and/or prefixes from an ENI.
func (c *Cloud) UnassignPrivateIPs(eniID string, ips []netip.Addr, prefixes []netip.Prefix) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	if len(ips) == 0 && len(prefixes) == 0 {
		return apiErr("MissingParameter", "PrivateIpAddress or Ipv4Prefix is required")
	}
	sec := map[netip.Addr]bool{}
	for _, a := range e.Secondary {
		sec[a] = true
	}
	for _, a := range ips {
		if a == e.PrimaryIP {
			return apiErr("InvalidParameterValue", "The primary private address %s cannot be unassigned.", a)
		}
		if !sec[a] {
			return apiErr("InvalidParameterValue", "Some of the specified addresses are not assigned to interface %s", eniID)
		}
	}
	pset := map[netip.Prefix]bool{}
	for _, p := range e.Prefixes {
		pset[p] = true
	}
	for _, p := range prefixes {
		if !pset[p] {
			return apiErr("InvalidParameterValue", "Some of the specified prefixes are not assigned to interface %s", eniID)
		}
	}
	drop := map[netip.Addr]bool{}
	for _, a := range ips {
		drop[a] = true
	}
	dropP := map[netip.Prefix]bool{}
	for _, p := range prefixes {
		dropP[p] = true
	}
	var newSec []netip.Addr
	for _, a := range e.Secondary {
		if !drop[a] {
			newSec = append(newSec, a)
		}
	}
	var newPfx []netip.Prefix
	for _, p := range e.Prefixes {
		if !dropP[p] {
			newPfx = append(newPfx, p)
		}
	}
	if c.dp != nil && e.Attachment != nil {
		if err := c.dp.SetENIAddresses(e.ID, newSec, newPfx); err != nil {
			return apiErr("InternalError", "data plane: %v", err)
		}
	}
	s := c.subnets[e.SubnetID]
	for a := range drop {
		s.releaseIP(a)
	}
	for p := range dropP {
		s.releasePrefix(p)
	}
	e.Secondary, e.Prefixes = newSec, newPfx
	if e.Attachment != nil {
		c.notifyLocked(c.instances[e.Attachment.InstanceID])
	}
	return nil
}

// CreateTags sets tags on ENIs, instances or subnets.
func (c *Cloud) CreateTags(ids []string, tags map[string]string) *APIError {
	return c.editTags(ids, func(m map[string]string) {
		for k, v := range tags {
			m[k] = v
		}
	})
}

// DeleteTags removes tags; a tag given with a value is removed only if the
// value matches, as EC2 does.
func (c *Cloud) DeleteTags(ids []string, tags map[string]*string) *APIError {
	return c.editTags(ids, func(m map[string]string) {
		for k, v := range tags {
			if v == nil || m[k] == *v {
				delete(m, k)
			}
		}
	})
}

func (c *Cloud) editTags(ids []string, f func(map[string]string)) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	var maps []map[string]string
	for _, id := range ids {
		switch {
		case c.enis[id] != nil:
			maps = append(maps, c.enis[id].Tags)
		case c.instances[id] != nil:
			maps = append(maps, c.instances[id].Tags)
		case c.subnets[id] != nil:
			maps = append(maps, c.subnets[id].Tags)
		default:
			kind := "resource"
			if strings.HasPrefix(id, "eni-") {
				return apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
			}
			return apiErr("InvalidID", "The ID '%s' is not a valid %s", id, kind)
		}
	}
	for _, m := range maps {
		f(m)
	}
	return nil
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
