// Subnets: creation inside a VPC CIDR and EC2's address accounting.

package vpcsim

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

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
