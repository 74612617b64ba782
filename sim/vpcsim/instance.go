// Instances: launch, termination and the network view IMDS serves.

package vpcsim

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// LaunchSpec describes an instance to start.
type LaunchSpec struct {
	Name         string // node name in the data plane; defaults to the ID
	InstanceType string
	SubnetID     string
	GroupIDs     []string // defaults to the VPC's default group
	// IPv6AddressCount is RunInstances' Ipv6AddressCount: IPv6 addresses of
	// the primary ENI (its subnet needs an IPv6 block); the node's OS
	// configures them as after DHCPv6.
	IPv6AddressCount int
}

// LaunchInstance starts an instance with its primary ENI (device 0,
// DeleteOnTermination) and, with a data plane, its node namespace.
func (c *Cloud) LaunchInstance(spec LaunchSpec) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
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
	if aerr := c.checkGroupCountLocked(groups, "SecurityGroupsPerInstanceLimitExceeded"); aerr != nil {
		return "", aerr
	}
	inst := &Instance{ID: newID("i"), Type: spec.InstanceType, Limits: lim, AZ: s.AZ, SubnetID: s.ID,
		VPCID: s.VPCID, ImageID: "ami-0vpcsim000000000", State: "running", Launched: c.now(),
		Tags: map[string]string{}, ENIs: map[Slot]string{}}
	inst.Name = spec.Name
	if inst.Name == "" {
		inst.Name = inst.ID
	}
	for _, other := range c.instances {
		if other.Name == inst.Name {
			return "", fmt.Errorf("an instance named %q exists", inst.Name)
		}
	}
	if spec.IPv6AddressCount < 0 || spec.IPv6AddressCount > 0 && !s.IPv6CIDR.IsValid() {
		return "", apiErr("InvalidParameterValue", "Ipv6AddressCount %d needs a subnet with an IPv6 CIDR block", spec.IPv6AddressCount)
	}
	if spec.IPv6AddressCount > lim.IPv4PerENI {
		return "", apiErr("InvalidParameterValue", "Ipv6AddressCount %d exceeds the limit of %s", spec.IPv6AddressCount, spec.InstanceType)
	}
	eni, aerr := c.createENILocked(createENIInput{SubnetID: s.ID, Groups: groups, Description: "Primary network interface"})
	if aerr != nil {
		return "", aerr
	}
	if spec.IPv6AddressCount > 0 {
		eni.IPv6s = s.takeIPv6s(spec.IPv6AddressCount, eni.ID)
	}
	if c.dp != nil {
		if err := c.dp.AddNode(inst.Name); err != nil {
			c.deleteENILocked(eni)
			return "", fmt.Errorf("data plane: %w", err)
		}
		if err := c.dp.AttachENI(inst.Name, eni.ID, mustMAC(eni.MAC), Slot{}, eni.PrimaryIP, s.CIDR); err != nil {
			_ = c.dp.RemoveNode(inst.Name)
			c.deleteENILocked(eni)
			return "", fmt.Errorf("data plane: %w", err)
		}
		if len(eni.IPv6s) > 0 {
			if err := c.dp.SetENIIPv6(eni.ID, eni.IPv6s, nil); err != nil {
				_ = c.dp.RemoveNode(inst.Name)
				c.deleteENILocked(eni)
				return "", fmt.Errorf("data plane: %w", err)
			}
		}
	}
	eni.Attachment = &Attachment{ID: newID("eni-attach"), InstanceID: inst.ID, DeviceIndex: 0, Status: "attached",
		DeleteOnTermination: true, AttachTime: c.now()}
	inst.ENIs[Slot{}] = eni.ID
	c.instances[inst.ID] = inst
	c.notifyLocked(inst)
	if aerr := c.pushSecurityLocked(); aerr != nil {
		return inst.ID, aerr
	}
	return inst.ID, nil
}

// TerminateInstance stops an instance: ENIs with DeleteOnTermination are
// deleted, the others are detached and left "available" (how ENIs leak).
func (c *Cloud) TerminateInstance(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	inst, ok := c.instances[id]
	if !ok {
		return apiErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	for _, eniID := range inst.ENIs {
		e := c.enis[eniID]
		// A trunk leaves with its instance: its branches are left
		// available (and deleted with it under DeleteOnTermination).
		c.disassociateTrunkLocked(e.ID)
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
	VPCIPv6CIDR  netip.Prefix
	PrimaryIP    netip.Addr
	PrimaryMAC   string
	ENIs         []ENIView // by network card, then device index
}

func (c *Cloud) instanceNetworkLocked(inst *Instance) InstanceNetwork {
	n := InstanceNetwork{InstanceID: inst.ID, Name: inst.Name, InstanceType: inst.Type, Region: c.region, AZ: inst.AZ,
		Account: c.account, ImageID: inst.ImageID, Launched: inst.Launched, VPCID: inst.VPCID,
		VPCCIDRs: append([]netip.Prefix(nil), c.vpcs[inst.VPCID].CIDRs...), VPCIPv6CIDR: c.vpcs[inst.VPCID].IPv6CIDR}
	var slots []Slot
	for s := range inst.ENIs {
		slots = append(slots, s)
	}
	sort.Slice(slots, func(a, b int) bool {
		return slots[a].Card < slots[b].Card || slots[a].Card == slots[b].Card && slots[a].Device < slots[b].Device
	})
	for _, s := range slots {
		e := c.enis[inst.ENIs[s]]
		n.ENIs = append(n.ENIs, c.viewLocked(e))
		if s == (Slot{}) {
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
