package vpcsim

import (
	"net/netip"
	"sort"
)

// SubnetView is a copy of a subnet's state.
type SubnetView struct {
	ID        string
	VPCID     string
	AZ        string
	CIDR      netip.Prefix
	Tags      map[string]string
	Available int
	IPv6CIDR  netip.Prefix // the subnet's /64, if any
}

// Subnets returns copies of every subnet, sorted by ID.
func (c *Cloud) Subnets() []SubnetView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []SubnetView
	for _, s := range c.subnets {
		out = append(out, SubnetView{ID: s.ID, VPCID: s.VPCID, AZ: s.AZ, CIDR: s.CIDR, Tags: copyTags(s.Tags), Available: s.Available(), IPv6CIDR: s.IPv6CIDR})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// InstanceView is a copy of an instance with its attached ENIs.
type InstanceView struct {
	InstanceNetwork
	Hypervisor          string
	SubnetID            string
	Tags                map[string]string
	DeleteOnTermination map[string]bool // by ENI ID
}

// Instances returns copies of every instance, sorted by ID.
func (c *Cloud) Instances() []InstanceView {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []InstanceView
	for _, i := range c.instances {
		v := InstanceView{InstanceNetwork: c.instanceNetworkLocked(i), Hypervisor: i.Limits.Hypervisor,
			SubnetID: i.SubnetID, Tags: copyTags(i.Tags), DeleteOnTermination: map[string]bool{}}
		for _, id := range i.ENIs {
			v.DeleteOnTermination[id] = c.enis[id].Attachment.DeleteOnTermination
		}
		out = append(out, v)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].InstanceID < out[b].InstanceID })
	return out
}

// VPCCIDRs returns a VPC's CIDRs.
func (c *Cloud) VPCCIDRs(vpcID string) []netip.Prefix {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.vpcs[vpcID]; ok {
		return append([]netip.Prefix(nil), v.CIDRs...)
	}
	return nil
}

// eniDetail carries what DescribeNetworkInterfaces needs beyond ENIView.
type eniDetail struct {
	ENIView
	GroupNames          []string // by Groups' order
	Owner               string   // the account
	AZ                  string
	Description         string
	SourceDestCheck     bool
	DeleteOnTermination bool
	AttachTime          string
}

// eniDetails copies the ENIs that keep selects (nil: all), sorted by ID.
// Selecting before copying, under the lock, keeps a describe of one
// instance's ENIs from copying every ENI of the account: with a thousand
// nodes describing, copying all of them queued thousands of requests
// behind the lock.
func (c *Cloud) eniDetails(keep func(*ENI) bool) []eniDetail {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eniDetailsLocked(keep)
}

func (c *Cloud) eniDetailsLocked(keep func(*ENI) bool) []eniDetail {
	var out []eniDetail
	for _, e := range c.enis {
		if keep != nil && !keep(e) {
			continue
		}
		d := eniDetail{ENIView: c.viewLocked(e), GroupNames: c.groupNamesLocked(e.Groups), Owner: c.account, AZ: e.AZ, Description: e.Description,
			SourceDestCheck: !e.NoSourceDestCheck}
		if e.Attachment != nil {
			d.DeleteOnTermination = e.Attachment.DeleteOnTermination
			d.AttachTime = e.Attachment.AttachTime.UTC().Format("2006-01-02T15:04:05.000Z")
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
