// ENI trunking: branch ENIs associated with a trunk ENI, each by a VLAN ID
// or a GRE key, and what the trunk's instance and a data plane see of them.

package vpcsim

import (
	"fmt"
	"sort"
)

// TrunkAssociation is a branch ENI's association with a trunk ENI, as
// DescribeTrunkInterfaceAssociations gives it.
type TrunkAssociation struct {
	ID       string // trunk-assoc-...
	BranchID string
	TrunkID  string
	// Protocol is EC2's interfaceProtocol: "VLAN" (VLANID set) or "GRE"
	// (GREKey set).
	Protocol string
	VLANID   int
	GREKey   int
}

// The IEEE 802.1Q VLAN identifier is 12 bits, 0 (priority tag only) and
// 4095 reserved: EC2's API reference gives VlanId no range of its own.
const (
	MinVLANID = 1
	MaxVLANID = 4094
)

// MaxGREKey is the largest GRE key: the key field is 32 bits (RFC 2890).
const MaxGREKey = 1<<32 - 1

// AssociateTrunkInput is AssociateTrunkInterface's request: the branch and
// trunk ENIs and either a VLAN ID or a GRE key.
type AssociateTrunkInput struct {
	BranchID, TrunkID string
	VLANID, GREKey    *int
	ClientToken       string
}

// key is the request as a ClientToken's first use recorded it.
func (in AssociateTrunkInput) key() string {
	show := func(p *int) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return in.BranchID + " " + in.TrunkID + " " + show(in.VLANID) + " " + show(in.GREKey)
}

// trunkToken is a ClientToken's first successful request and its answer:
// a retry with the same request gets the answer again, whatever changed
// since; another request with the token is refused.
type trunkToken struct {
	request string
	assoc   TrunkAssociation
}

const (
	actAssociateTrunk    = "AssociateTrunkInterface"
	actDisassociateTrunk = "DisassociateTrunkInterface"
)

// AssociateTrunkInterface associates a branch ENI with a trunk ENI. The
// trunk must be attached to an instance whose type takes trunking, the
// branch must be free and in the trunk's VPC and Availability Zone, the
// VLAN ID (or GRE key) free on the trunk, and the trunk under its type's
// branch limit.
func (c *Cloud) AssociateTrunkInterface(in AssociateTrunkInput) (TrunkAssociation, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	if in.ClientToken != "" {
		if first, ok := c.trunkTokens[actAssociateTrunk+" "+in.ClientToken]; ok {
			if first.request != in.key() {
				return TrunkAssociation{}, apiErr("IdempotentParameterMismatch", "The client token '%s' was used with a different request.", in.ClientToken)
			}
			return first.assoc, nil
		}
	}
	a := TrunkAssociation{BranchID: in.BranchID, TrunkID: in.TrunkID}
	switch {
	case in.VLANID != nil && in.GREKey != nil:
		return TrunkAssociation{}, apiErr("InvalidParameterCombination", "VlanId and GreKey cannot both be given: an association is either VLAN or GRE.")
	case in.VLANID != nil:
		if *in.VLANID < MinVLANID || *in.VLANID > MaxVLANID {
			return TrunkAssociation{}, apiErr("InvalidParameterValue", "Value (%d) for parameter VlanId is invalid. Expecting a value between %d and %d.", *in.VLANID, MinVLANID, MaxVLANID)
		}
		a.Protocol, a.VLANID = "VLAN", *in.VLANID
	case in.GREKey != nil:
		if *in.GREKey < 0 || int64(*in.GREKey) > MaxGREKey {
			return TrunkAssociation{}, apiErr("InvalidParameterValue", "Value (%d) for parameter GreKey is invalid.", *in.GREKey)
		}
		a.Protocol, a.GREKey = "GRE", *in.GREKey
	default:
		return TrunkAssociation{}, apiErr("MissingParameter", "The request must contain the parameter VlanId or GreKey")
	}
	trunk, aerr := c.eniLocked(in.TrunkID)
	if aerr != nil {
		return TrunkAssociation{}, aerr
	}
	branch, aerr := c.eniLocked(in.BranchID)
	if aerr != nil {
		return TrunkAssociation{}, aerr
	}
	if trunk.InterfaceType != "trunk" {
		return TrunkAssociation{}, apiErr("InvalidParameterValue", "Interface %s is of type '%s', not a trunk interface.", trunk.ID, trunk.InterfaceType)
	}
	// EC2's reference asks for a trunk created as such, and only "a
	// network interface" for each branch: AWS's VPC resource controller
	// creates its branches with no InterfaceType, as plain interfaces.
	if branch.InterfaceType != "branch" && branch.InterfaceType != "interface" {
		return TrunkAssociation{}, apiErr("InvalidParameterValue", "Interface %s is of type '%s', which cannot be a branch interface.", branch.ID, branch.InterfaceType)
	}
	if trunk.Attachment == nil {
		return TrunkAssociation{}, apiErr("IncorrectState", "Trunk interface %s is not attached to an instance.", trunk.ID)
	}
	inst := c.instances[trunk.Attachment.InstanceID]
	if !inst.Limits.TrunkingCompatible {
		return TrunkAssociation{}, apiErr("UnsupportedOperation", "Instance type %s of instance %s does not support network interface trunking.", inst.Type, inst.ID)
	}
	if branch.VPCID != trunk.VPCID || branch.AZ != trunk.AZ {
		return TrunkAssociation{}, apiErr("InvalidParameterValue", "Branch interface %s is in a different VPC or Availability Zone than trunk interface %s.", branch.ID, trunk.ID)
	}
	if branch.trunkAssoc != "" {
		return TrunkAssociation{}, apiErr("InvalidNetworkInterface.InUse", "Branch interface %s is already associated (%s).", branch.ID, branch.trunkAssoc)
	}
	branches := c.branchesLocked(trunk.ID)
	for _, b := range branches {
		if b.Protocol == a.Protocol && b.VLANID == a.VLANID && b.GREKey == a.GREKey {
			if a.Protocol == "VLAN" {
				return TrunkAssociation{}, apiErr("InvalidParameterValue", "VLAN %d is already in use on trunk interface %s (%s).", a.VLANID, trunk.ID, b.ID)
			}
			return TrunkAssociation{}, apiErr("InvalidParameterValue", "GRE key %d is already in use on trunk interface %s (%s).", a.GREKey, trunk.ID, b.ID)
		}
	}
	if len(branches) >= inst.Limits.BranchInterfaces {
		return TrunkAssociation{}, apiErr("AttachmentLimitExceeded", "Trunk interface %s has %d branch interfaces, the limit of instance type %s.", trunk.ID, len(branches), inst.Type)
	}
	if c.dp != nil && a.Protocol == "VLAN" {
		s := c.subnets[branch.SubnetID]
		if err := c.dp.AssociateBranch(trunk.ID, branch.ID, mustMAC(branch.MAC), a.VLANID, branch.PrimaryIP, s.CIDR); err != nil {
			return TrunkAssociation{}, apiErr("InternalError", "data plane: %v", err)
		}
		if err := c.dp.SetENIAddresses(branch.ID, branch.Secondary, branch.Prefixes); err != nil {
			_ = c.dp.DisassociateBranch(branch.ID)
			return TrunkAssociation{}, apiErr("InternalError", "data plane: %v", err)
		}
	}
	a.ID = newID("trunk-assoc")
	c.assocs[a.ID] = &a
	branch.trunkAssoc = a.ID
	if in.ClientToken != "" {
		c.trunkTokens[actAssociateTrunk+" "+in.ClientToken] = trunkToken{request: in.key(), assoc: a}
	}
	// Associated either way; a failure here leaves the branch's groups
	// unenforced until the next security change, as for an attached ENI.
	if aerr := c.pushSecurityLocked(); aerr != nil {
		return a, aerr
	}
	return a, nil
}

// DisassociateTrunkInterface removes an association; the branch ENI is
// left available. A repeated ClientToken with the same association succeeds
// again, even once it is gone.
func (c *Cloud) DisassociateTrunkInterface(id, clientToken string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	if clientToken != "" {
		if first, ok := c.trunkTokens[actDisassociateTrunk+" "+clientToken]; ok {
			if first.request != id {
				return apiErr("IdempotentParameterMismatch", "The client token '%s' was used with a different request.", clientToken)
			}
			return nil
		}
	}
	a, ok := c.assocs[id]
	if !ok {
		return apiErr("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
	}
	if err := c.disassociateLocked(a); err != nil {
		return apiErr("InternalError", "data plane: %v", err)
	}
	if clientToken != "" {
		c.trunkTokens[actDisassociateTrunk+" "+clientToken] = trunkToken{request: id, assoc: *a}
	}
	return c.pushSecurityLocked()
}

// disassociateLocked removes an association from the data plane, then
// from the state. Callers that remove it regardless (the branch or the
// trunk's instance is going) ignore the data plane's error.
func (c *Cloud) disassociateLocked(a *TrunkAssociation) error {
	if c.dp != nil && a.Protocol == "VLAN" {
		if err := c.dp.DisassociateBranch(a.BranchID); err != nil {
			return err
		}
	}
	if b := c.enis[a.BranchID]; b != nil {
		b.trunkAssoc = ""
	}
	delete(c.assocs, a.ID)
	return nil
}

// inDataPlaneLocked tells whether the data plane carries an ENI: attached,
// or a branch associated by a VLAN ID (GRE associations have no data
// plane).
func (c *Cloud) inDataPlaneLocked(e *ENI) bool {
	if e.Attachment != nil {
		return true
	}
	a := c.assocs[e.trunkAssoc]
	return a != nil && a.Protocol == "VLAN"
}

// disassociateTrunkLocked removes every association of a trunk (its
// instance is gone).
func (c *Cloud) disassociateTrunkLocked(trunkID string) {
	for _, a := range c.assocs {
		if a.TrunkID == trunkID {
			_ = c.disassociateLocked(a)
		}
	}
}

// branchesLocked are a trunk's associations by VLAN ID, then GRE key.
func (c *Cloud) branchesLocked(trunkID string) []TrunkAssociation {
	var out []TrunkAssociation
	for _, a := range c.assocs {
		if a.TrunkID == trunkID {
			out = append(out, *a)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Protocol != out[j].Protocol {
			return out[i].Protocol > out[j].Protocol // VLAN first
		}
		return out[i].VLANID < out[j].VLANID || out[i].VLANID == out[j].VLANID && out[i].GREKey < out[j].GREKey
	})
	return out
}

// TrunkAssociations returns every association, sorted by ID.
func (c *Cloud) TrunkAssociations() []TrunkAssociation {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]TrunkAssociation, 0, len(c.assocs))
	for _, a := range c.assocs {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Branch is one branch ENI as its trunk carries it: the association (the
// VLAN ID or GRE key its frames are tagged with) and the branch ENI (its
// MAC, addresses, subnet and its own security groups).
type Branch struct {
	TrunkAssociation
	ENI ENIView
}

// TrunkView is a trunk ENI, the instance it is attached to and its
// branches: what a data plane needs to deliver each branch's traffic
// through the trunk's link, tagged, and to enforce each branch's groups.
type TrunkView struct {
	ENI        ENIView
	InstanceID string // "" while detached
	Node       string // the instance's node name
	Branches   []Branch
}

func (c *Cloud) trunkViewLocked(e *ENI) TrunkView {
	v := TrunkView{ENI: c.viewLocked(e)}
	if e.Attachment != nil {
		v.InstanceID = e.Attachment.InstanceID
		v.Node = c.instances[v.InstanceID].Name
	}
	for _, a := range c.branchesLocked(e.ID) {
		v.Branches = append(v.Branches, Branch{TrunkAssociation: a, ENI: c.viewLocked(c.enis[a.BranchID])})
	}
	return v
}

// Trunk returns a trunk ENI with its branches.
func (c *Cloud) Trunk(id string) (TrunkView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.enis[id]
	if !ok || e.InterfaceType != "trunk" {
		return TrunkView{}, false
	}
	return c.trunkViewLocked(e), true
}

// Trunks returns every trunk ENI with its branches, sorted by ID.
func (c *Cloud) Trunks() []TrunkView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []TrunkView
	for _, e := range c.enis {
		if e.InterfaceType == "trunk" {
			out = append(out, c.trunkViewLocked(e))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ENI.ID < out[j].ENI.ID })
	return out
}
