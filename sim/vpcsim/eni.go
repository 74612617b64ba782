// ENIs: creation, attachment, addresses, prefixes and attributes (their tags
// are in tags.go).

package vpcsim

import (
	"net/netip"
	"slices"
	"sort"
)

type createENIInput struct {
	SubnetID       string
	Groups         []string
	Description    string
	SecondaryCount int
	PrimaryIP      netip.Addr   // invalid: one picked from the subnet
	PrivateIPs     []netip.Addr // secondary addresses asked for
	PrefixCount    int
	Tags           map[string]string
	ClientToken    string
	InterfaceType  string // "" is "interface"
}

// interfaceTypes are the types CreateNetworkInterface accepts (EC2 creates
// "branch" ENIs through trunk association; the simulator takes it here so
// tests can place one).
var interfaceTypes = map[string]bool{"interface": true, "efa": true, "efa-only": true, "trunk": true, "branch": true}

func (c *Cloud) createENILocked(in createENIInput) (*ENI, *APIError) {
	s, ok := c.subnets[in.SubnetID]
	if !ok {
		return nil, apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", in.SubnetID)
	}
	if aerr := c.checkGroupCountLocked(in.Groups, "SecurityGroupsPerInterfaceLimitExceeded"); aerr != nil {
		return nil, aerr
	}
	for _, g := range in.Groups {
		if c.groupVPCLocked(g) != s.VPCID {
			return nil, apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", g, s.VPCID)
		}
	}
	if in.InterfaceType == "" {
		in.InterfaceType = "interface"
	}
	if !interfaceTypes[in.InterfaceType] {
		return nil, apiErr("InvalidParameterValue", "Value (%s) for parameter InterfaceType is invalid.", in.InterfaceType)
	}
	if in.SecondaryCount < 0 || in.PrefixCount < 0 {
		return nil, apiErr("InvalidParameterValue", "counts must not be negative")
	}
	// An unattached ENI is not yet bound to a type's limit; EC2 caps it at
	// the largest any type allows.
	if 1+in.SecondaryCount+len(in.PrivateIPs)+in.PrefixCount > 50 {
		return nil, apiErr("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	e := &ENI{ID: newID("eni"), SubnetID: s.ID, VPCID: s.VPCID, AZ: s.AZ, MAC: newMAC(), Description: in.Description, InterfaceType: in.InterfaceType,
		Groups: append([]string(nil), in.Groups...), Tags: copyTags(in.Tags), Created: c.now(), clientToken: in.ClientToken}
	rollback := func() {
		for a, owner := range s.used {
			if owner == e.ID {
				delete(s.used, a)
			}
		}
	}
	if in.PrimaryIP.IsValid() {
		if aerr := s.takeIP(in.PrimaryIP, e.ID); aerr != nil {
			return nil, aerr
		}
		e.PrimaryIP = in.PrimaryIP
	} else {
		pips, aerr := s.takeIPs(1, e.ID)
		if aerr != nil {
			return nil, aerr
		}
		e.PrimaryIP = pips[0]
	}
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
		s.release6(e.IPv6s, e.IPv6Prefixes)
	}
	delete(c.enis, e.ID)
}

// ENIView is a copy of an ENI's state.
type ENIView struct {
	ID            string
	MAC           string
	DeviceIndex   int
	NetworkCard   int
	InterfaceType string
	SubnetID      string
	SubnetCIDR    netip.Prefix
	VPCID         string
	Groups        []string
	PrimaryIP     netip.Addr
	Secondary     []netip.Addr
	Prefixes      []netip.Prefix
	IPv6s         []netip.Addr
	IPv6Prefixes  []netip.Prefix
	SubnetIPv6    netip.Prefix
	Tags          map[string]string
	Description   string
	Status        string
	AttachmentID  string
	InstanceID    string
	// TrunkAssociationID is a branch ENI's association with its trunk
	// ("" for none).
	TrunkAssociationID string
}

func (c *Cloud) viewLocked(e *ENI) ENIView {
	v := ENIView{ID: e.ID, MAC: e.MAC, SubnetID: e.SubnetID, VPCID: e.VPCID,
		Groups: append([]string(nil), e.Groups...), PrimaryIP: e.PrimaryIP,
		Secondary: append([]netip.Addr(nil), e.Secondary...), Prefixes: append([]netip.Prefix(nil), e.Prefixes...),
		Tags: copyTags(e.Tags), Description: e.Description, Status: e.Status(), DeviceIndex: -1, InterfaceType: e.InterfaceType,
		IPv6s: slices.Clone(e.IPv6s), IPv6Prefixes: slices.Clone(e.IPv6Prefixes), TrunkAssociationID: e.trunkAssoc}
	if s := c.subnets[e.SubnetID]; s != nil {
		v.SubnetCIDR, v.SubnetIPv6 = s.CIDR, s.IPv6CIDR
	}
	if e.Attachment != nil {
		v.DeviceIndex = e.Attachment.DeviceIndex
		v.NetworkCard = e.Attachment.NetworkCard
		v.AttachmentID = e.Attachment.ID
		v.InstanceID = e.Attachment.InstanceID
	}
	return v
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
	defer c.changedLocked()
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
	defer c.changedLocked()
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
	if e.InterfaceType == "branch" || e.trunkAssoc != "" {
		return "", apiErr("InvalidParameterValue", "Interface %s is a branch interface: it is associated with a trunk, not attached.", eniID)
	}
	if e.AZ != inst.AZ || e.VPCID != inst.VPCID {
		return "", apiErr("InvalidParameterValue", "Interface %s is in a different availability zone or VPC than instance %s.", eniID, instanceID)
	}
	limit := inst.cardLimit(networkCard)
	if limit == 0 {
		return "", apiErr("InvalidParameterValue", "Invalid value '%d' for networkCardIndex: %s has no such network card.", networkCard, inst.Type)
	}
	// Device 0 of card 0 is the primary's; on another card, EC2 documents
	// device 0 for an EFA-only interface.
	minDevice := 1
	if networkCard > 0 && e.InterfaceType == "efa-only" {
		minDevice = 0
	}
	if deviceIndex < minDevice || deviceIndex > 99 {
		return "", apiErr("InvalidParameterValue", "Invalid value '%d' for deviceIndex.", deviceIndex)
	}
	slot := Slot{Card: networkCard, Device: deviceIndex}
	if _, taken := inst.ENIs[slot]; taken {
		return "", apiErr("InvalidParameterValue", "Instance '%s' already has an interface attached at device index '%d' on network card '%d'.", instanceID, deviceIndex, networkCard)
	}
	if inst.onCard(networkCard) >= limit {
		return "", apiErr("AttachmentLimitExceeded", "Interface count %d on network card %d exceeds the limit for %s", inst.onCard(networkCard)+1, networkCard, inst.Type)
	}
	if e.slots() > inst.Limits.IPv4PerENI {
		return "", apiErr("PrivateIpAddressLimitExceeded", "Number of private addresses will exceed limit.")
	}
	if len(e.Prefixes) > 0 && !inst.Limits.SupportsPrefixDelegation() {
		return "", apiErr("InvalidParameterValue", "Instance type %s does not support IPv4 prefixes (Nitro only).", inst.Type)
	}
	if c.dp != nil {
		s := c.subnets[e.SubnetID]
		if err := c.dp.AttachENI(inst.Name, e.ID, mustMAC(e.MAC), slot, e.PrimaryIP, s.CIDR); err != nil {
			return "", apiErr("InternalError", "data plane: %v", err)
		}
		if err := c.dp.SetENIAddresses(e.ID, e.Secondary, e.Prefixes); err != nil {
			_ = c.dp.DetachENI(e.ID)
			return "", apiErr("InternalError", "data plane: %v", err)
		}
		if len(e.IPv6s)+len(e.IPv6Prefixes) > 0 {
			if err := c.dp.SetENIIPv6(e.ID, e.IPv6s, e.IPv6Prefixes); err != nil {
				_ = c.dp.DetachENI(e.ID)
				return "", apiErr("InternalError", "data plane: %v", err)
			}
		}
	}
	e.Attachment = &Attachment{ID: newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: deviceIndex, NetworkCard: networkCard,
		Status: "attached", AttachTime: c.now()}
	inst.ENIs[slot] = e.ID
	c.notifyLocked(inst)
	// The ENI is attached either way; a failure here leaves its groups
	// unenforced until the next security change re-pushes the state.
	if aerr := c.pushSecurityLocked(); aerr != nil {
		return e.Attachment.ID, aerr
	}
	return e.Attachment.ID, nil
}

// DetachNetworkInterface detaches by attachment ID.
func (c *Cloud) DetachNetworkInterface(attachmentID string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	for _, e := range c.enis {
		if e.Attachment == nil || e.Attachment.ID != attachmentID {
			continue
		}
		if e.Attachment.DeviceIndex == 0 && e.Attachment.NetworkCard == 0 {
			return apiErr("OperationNotPermitted", "The network interface at device index 0 cannot be detached.")
		}
		// A trunk carries its branches only while attached; its
		// associations go first.
		if n := len(c.branchesLocked(e.ID)); n > 0 {
			return apiErr("OperationNotPermitted", "Trunk interface %s has %d branch interfaces associated: disassociate them first.", e.ID, n)
		}
		inst := c.instances[e.Attachment.InstanceID]
		if c.dp != nil {
			if err := c.dp.DetachENI(e.ID); err != nil {
				return apiErr("InternalError", "data plane: %v", err)
			}
		}
		delete(inst.ENIs, Slot{Card: e.Attachment.NetworkCard, Device: e.Attachment.DeviceIndex})
		e.Attachment = nil
		c.notifyLocked(inst)
		return nil
	}
	return apiErr("InvalidAttachmentID.NotFound", "The attachment ID '%s' does not exist", attachmentID)
}

// DeleteNetworkInterface deletes an available ENI and frees its addresses.
// A branch ENI is deleted with its trunk association, as EC2 lets a branch
// be deleted without a DisassociateTrunkInterface first.
func (c *Cloud) DeleteNetworkInterface(id string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(id)
	if aerr != nil {
		return aerr
	}
	if e.Attachment != nil {
		return apiErr("InvalidNetworkInterface.InUse", "The network interface '%s' is currently in use.", id)
	}
	if a := c.assocs[e.trunkAssoc]; a != nil {
		_ = c.disassociateLocked(a)
	}
	c.deleteENILocked(e)
	return nil
}

// ModifyDeleteOnTermination sets the attachment's DeleteOnTermination.
func (c *Cloud) ModifyDeleteOnTermination(eniID, attachmentID string, v bool) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
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

// ModifyDescription sets the ENI's description.
func (c *Cloud) ModifyDescription(eniID, desc string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	e.Description = desc
	return nil
}

// ModifySourceDestCheck sets whether the ENI's source/destination check is
// enabled.
func (c *Cloud) ModifySourceDestCheck(eniID string, enabled bool) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	e.NoSourceDestCheck = !enabled
	return nil
}

// ModifyGroups replaces the ENI's security groups.
func (c *Cloud) ModifyGroups(eniID string, groups []string) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	if aerr := c.checkGroupCountLocked(groups, "SecurityGroupsPerInterfaceLimitExceeded"); aerr != nil {
		return aerr
	}
	for _, g := range groups {
		if c.groupVPCLocked(g) != e.VPCID {
			return apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", g, e.VPCID)
		}
	}
	old := e.Groups
	e.Groups = append([]string(nil), groups...)
	if aerr := c.pushSecurityLocked(); aerr != nil {
		e.Groups = old
		return aerr
	}
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
	defer c.changedLocked()
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
	if c.dp != nil && c.inDataPlaneLocked(e) {
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
	defer c.changedLocked()
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
	if c.dp != nil && c.inDataPlaneLocked(e) {
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
