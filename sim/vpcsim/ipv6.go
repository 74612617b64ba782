// IPv6: a VPC's Amazon-provided /56, subnets' /64s, and the IPv6 addresses
// and /80 prefixes of ENIs, as EC2 hands them out; the data plane delivers
// them to the ENI they are assigned to.

package vpcsim

import (
	"crypto/rand"
	"net/netip"
	"slices"
)

// amazonIPv6Pool is where the simulator's Amazon-provided /56s come from
// (a range EC2 uses for VPCs).
var amazonIPv6Pool = netip.MustParsePrefix("2600:1f14::/32")

// AssociateVPCIPv6 gives a VPC an Amazon-provided /56 (one per VPC here).
func (c *Cloud) AssociateVPCIPv6(vpcID string) (netip.Prefix, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vpcs[vpcID]
	if !ok {
		return netip.Prefix{}, apiErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	if v.IPv6CIDR.IsValid() {
		return netip.Prefix{}, apiErr("InvalidParameterValue", "The VPC %s already has an IPv6 CIDR block %s", vpcID, v.IPv6CIDR)
	}
	for {
		b := amazonIPv6Pool.Addr().As16()
		_, _ = rand.Read(b[4:7])
		p := netip.PrefixFrom(netip.AddrFrom16(b), 56).Masked()
		taken := false
		for _, o := range c.vpcs {
			taken = taken || o.IPv6CIDR == p
		}
		if !taken {
			v.IPv6CIDR = p
			for _, i := range c.instances {
				if i.VPCID == vpcID {
					c.notifyLocked(i)
				}
			}
			return p, nil
		}
	}
}

// AssociateSubnetIPv6 gives a subnet a /64 of its VPC's /56.
func (c *Cloud) AssociateSubnetIPv6(subnetID string, cidr netip.Prefix) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.subnets[subnetID]
	if !ok {
		return apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", subnetID)
	}
	v := c.vpcs[s.VPCID]
	switch {
	case s.IPv6CIDR.IsValid():
		return apiErr("InvalidParameterValue", "The subnet %s already has an IPv6 CIDR block %s", subnetID, s.IPv6CIDR)
	case !v.IPv6CIDR.IsValid():
		return apiErr("InvalidParameterValue", "The VPC %s has no IPv6 CIDR block", v.ID)
	case !cidr.IsValid() || !cidr.Addr().Is6() || cidr.Addr().Is4In6() || cidr.Bits() != 64 || cidr.Masked() != cidr:
		return apiErr("InvalidParameterValue", "The IPv6 CIDR '%s' is invalid: a subnet takes a /64", cidr)
	case !v.IPv6CIDR.Contains(cidr.Addr()):
		return apiErr("InvalidSubnet.Range", "The IPv6 CIDR '%s' is not within the VPC's %s", cidr, v.IPv6CIDR)
	}
	for _, o := range c.subnets {
		if o.IPv6CIDR == cidr {
			return apiErr("InvalidSubnet.Conflict", "The IPv6 CIDR '%s' conflicts with subnet %s", cidr, o.ID)
		}
	}
	if c.dp != nil {
		if err := c.dp.AddSubnet(cidr); err != nil {
			return apiErr("InternalError", "data plane: %v", err)
		}
	}
	s.IPv6CIDR = cidr
	s.used6 = map[netip.Addr]string{}
	s.prefixes6 = map[netip.Prefix]string{}
	for _, i := range c.instances {
		if i.VPCID == s.VPCID {
			c.notifyLocked(i)
		}
	}
	return nil
}

// reserved6 reports whether EC2 keeps the address: the first four and the
// last of every subnet's IPv6 block.
func (s *Subnet) reserved6(a netip.Addr) bool {
	b := a.As16()
	low := b[8:]
	first := true
	for i := 0; i < 7; i++ {
		first = first && low[i] == 0
	}
	last := true
	for _, x := range low {
		last = last && x == 0xff
	}
	return first && low[7] < 4 || last
}

// free6 reports whether a is unused: not an address, not inside a prefix.
func (s *Subnet) free6(a netip.Addr) bool {
	if _, taken := s.used6[a]; taken || s.reserved6(a) {
		return false
	}
	for p := range s.prefixes6 {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// randomIn returns a random address of p.
func randomIn(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	var r [16]byte
	_, _ = rand.Read(r[:])
	for i := 0; i < 16; i++ {
		keep := 0
		if bits := p.Bits() - 8*i; bits >= 8 {
			keep = 0xff
		} else if bits > 0 {
			keep = 0xff << (8 - bits) & 0xff
		}
		b[i] = b[i]&byte(keep) | r[i]&^byte(keep)
	}
	return netip.AddrFrom16(b)
}

func (s *Subnet) takeIPv6(a netip.Addr, owner string) *APIError {
	if !s.IPv6CIDR.Contains(a) {
		return apiErr("InvalidParameterValue", "Address %s is not within the subnet's IPv6 CIDR %s", a, s.IPv6CIDR)
	}
	if !s.free6(a) {
		return apiErr("InvalidIPAddress.InUse", "Address %s is in use.", a)
	}
	s.used6[a] = owner
	return nil
}

// takeIPv6s picks n random free addresses (a /64 never runs out).
func (s *Subnet) takeIPv6s(n int, owner string) []netip.Addr {
	var out []netip.Addr
	for len(out) < n {
		if a := randomIn(s.IPv6CIDR); s.free6(a) {
			s.used6[a] = owner
			out = append(out, a)
		}
	}
	return out
}

// takeIPv6Prefixes picks n random /80s clear of every address and prefix
// in use.
func (s *Subnet) takeIPv6Prefixes(n int, owner string) []netip.Prefix {
	var out []netip.Prefix
	for len(out) < n {
		p := netip.PrefixFrom(randomIn(s.IPv6CIDR), 80).Masked()
		clear := true
		for q := range s.prefixes6 {
			clear = clear && !q.Overlaps(p)
		}
		for a := range s.used6 {
			clear = clear && !p.Contains(a)
		}
		if clear && !p.Contains(s.IPv6CIDR.Addr()) {
			s.prefixes6[p] = owner
			out = append(out, p)
		}
	}
	return out
}

func (s *Subnet) release6(addrs []netip.Addr, prefixes []netip.Prefix) {
	for _, a := range addrs {
		delete(s.used6, a)
	}
	for _, p := range prefixes {
		delete(s.prefixes6, p)
	}
}

// AssignIPv6 adds IPv6 addresses (by count or explicitly) or /80 prefixes
// to an ENI; its subnet must have an IPv6 block, prefixes need a Nitro
// type, and addresses plus prefixes count against the type's per-ENI limit.
func (c *Cloud) AssignIPv6(eniID string, count int, explicit []netip.Addr, prefixCount int) ([]netip.Addr, []netip.Prefix, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return nil, nil, aerr
	}
	s := c.subnets[e.SubnetID]
	n := count + len(explicit) + prefixCount
	switch {
	case count < 0 || prefixCount < 0 || n == 0:
		return nil, nil, apiErr("InvalidParameterValue", "Ipv6AddressCount, Ipv6Addresses or Ipv6PrefixCount must ask for at least one")
	case prefixCount > 0 && (count > 0 || len(explicit) > 0):
		return nil, nil, apiErr("InvalidParameterCombination", "Ipv6PrefixCount cannot be combined with IPv6 addresses")
	case count > 0 && len(explicit) > 0:
		return nil, nil, apiErr("InvalidParameterCombination", "Ipv6AddressCount cannot be combined with Ipv6Addresses")
	case !s.IPv6CIDR.IsValid():
		return nil, nil, apiErr("InvalidParameterValue", "The subnet %s has no IPv6 CIDR block", s.ID)
	case prefixCount > 0 && e.Attachment != nil && !c.instances[e.Attachment.InstanceID].Limits.SupportsPrefixDelegation():
		return nil, nil, apiErr("InvalidParameterValue", "Instance type %s does not support IPv6 prefixes (Nitro only).",
			c.instances[e.Attachment.InstanceID].Type)
	case len(e.IPv6s)+len(e.IPv6Prefixes)+n > c.limitLocked(e):
		return nil, nil, apiErr("PrivateIpAddressLimitExceeded", "Number of IPv6 addresses will exceed limit.")
	}
	var addrs []netip.Addr
	for _, a := range explicit {
		if aerr := s.takeIPv6(a, e.ID); aerr != nil {
			s.release6(addrs, nil)
			return nil, nil, aerr
		}
		addrs = append(addrs, a)
	}
	addrs = append(addrs, s.takeIPv6s(count, e.ID)...)
	prefixes := s.takeIPv6Prefixes(prefixCount, e.ID)
	if aerr := c.pushIPv6Locked(e, append(slices.Clone(e.IPv6s), addrs...), append(slices.Clone(e.IPv6Prefixes), prefixes...)); aerr != nil {
		s.release6(addrs, prefixes)
		return nil, nil, aerr
	}
	e.IPv6s = append(e.IPv6s, addrs...)
	e.IPv6Prefixes = append(e.IPv6Prefixes, prefixes...)
	if e.Attachment != nil {
		c.notifyLocked(c.instances[e.Attachment.InstanceID])
	}
	return addrs, prefixes, nil
}

// UnassignIPv6 removes IPv6 addresses and prefixes from an ENI; each must
// be the ENI's.
func (c *Cloud) UnassignIPv6(eniID string, addrs []netip.Addr, prefixes []netip.Prefix) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	e, aerr := c.eniLocked(eniID)
	if aerr != nil {
		return aerr
	}
	for _, a := range addrs {
		if !slices.Contains(e.IPv6s, a) {
			return apiErr("InvalidParameterValue", "Address %s is not assigned to interface %s", a, eniID)
		}
	}
	for _, p := range prefixes {
		if !slices.Contains(e.IPv6Prefixes, p) {
			return apiErr("InvalidParameterValue", "Prefix %s is not assigned to interface %s", p, eniID)
		}
	}
	keepAddrs := slices.DeleteFunc(slices.Clone(e.IPv6s), func(a netip.Addr) bool { return slices.Contains(addrs, a) })
	keepPfx := slices.DeleteFunc(slices.Clone(e.IPv6Prefixes), func(p netip.Prefix) bool { return slices.Contains(prefixes, p) })
	if aerr := c.pushIPv6Locked(e, keepAddrs, keepPfx); aerr != nil {
		return aerr
	}
	e.IPv6s, e.IPv6Prefixes = keepAddrs, keepPfx
	c.subnets[e.SubnetID].release6(addrs, prefixes)
	if e.Attachment != nil {
		c.notifyLocked(c.instances[e.Attachment.InstanceID])
	}
	return nil
}

// pushIPv6Locked tells the data plane an attached ENI's new IPv6 addresses
// and prefixes before they are committed.
func (c *Cloud) pushIPv6Locked(e *ENI, addrs []netip.Addr, prefixes []netip.Prefix) *APIError {
	if c.dp == nil || e.Attachment == nil {
		return nil
	}
	if err := c.dp.SetENIIPv6(e.ID, addrs, prefixes); err != nil {
		return apiErr("InternalError", "data plane: %v", err)
	}
	return nil
}
