// Security groups: the model, its changes, and what the data plane must
// enforce.

package vpcsim

import (
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// SecurityGroup is a VPC security group. Egress is EC2's default (all
// allowed) and not modelled further; network ACLs are not modelled.
type SecurityGroup struct {
	ID, VPCID, Name, Description string
	Ingress                      []Permission
	Tags                         map[string]string
}

// Permission is one ingress permission: a protocol ("tcp", "udp", "icmp",
// "-1" for all), a port range for tcp and udp, and its sources.
type Permission struct {
	Protocol         string
	FromPort, ToPort int
	CIDRs            []netip.Prefix
	Groups           []string // source groups: any address of their member ENIs
}

// key identifies a permission's protocol and ports (its sources aside).
func (p Permission) key() string {
	if p.Protocol == "tcp" || p.Protocol == "udp" {
		return p.Protocol + ":" + strconv.Itoa(p.FromPort) + "-" + strconv.Itoa(p.ToPort)
	}
	return p.Protocol
}

func (p Permission) clone() Permission {
	p.CIDRs, p.Groups = slices.Clone(p.CIDRs), slices.Clone(p.Groups)
	return p
}

// validate checks a permission as EC2 does.
func (p *Permission) validate(c *Cloud, vpcID string) *APIError {
	switch p.Protocol {
	case "-1", "all", "icmp", "1", "icmpv6", "58":
		p.Protocol = map[string]string{"-1": "-1", "all": "-1", "icmp": "icmp", "1": "icmp", "icmpv6": "icmpv6", "58": "icmpv6"}[p.Protocol]
		p.FromPort, p.ToPort = -1, -1
	case "tcp", "udp", "6", "17":
		p.Protocol = map[string]string{"6": "tcp", "17": "udp", "tcp": "tcp", "udp": "udp"}[p.Protocol]
		if p.FromPort < 0 || p.ToPort > 65535 || p.FromPort > p.ToPort {
			return apiErr("InvalidParameterValue", "Invalid port range %d-%d for protocol %s", p.FromPort, p.ToPort, p.Protocol)
		}
	default:
		return apiErr("InvalidParameterValue", "Invalid value '%s' for IP protocol. Unknown protocol.", p.Protocol)
	}
	if len(p.CIDRs) == 0 && len(p.Groups) == 0 {
		return apiErr("MissingParameter", "Either 'ipRanges', 'ipv6Ranges' or 'groups' must be given for a permission")
	}
	for _, g := range p.Groups {
		if sg := c.sgs[g]; sg == nil || sg.VPCID != vpcID {
			return apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", g, vpcID)
		}
	}
	return nil
}

// groupVPCLocked is the VPC of a group ("" if it does not exist).
func (c *Cloud) groupVPCLocked(id string) string {
	if sg := c.sgs[id]; sg != nil {
		return sg.VPCID
	}
	return ""
}

func (c *Cloud) createGroupLocked(vpcID, name, desc string) (*SecurityGroup, *APIError) {
	if _, ok := c.vpcs[vpcID]; !ok {
		return nil, apiErr("InvalidVpcID.NotFound", "The vpc ID '%s' does not exist", vpcID)
	}
	id := newID("sg")
	if name == "" {
		// A group made by the Go API without a name is named as the
		// console's launch wizard names the groups it creates.
		name = c.launchWizardNameLocked(vpcID)
		if desc == "" {
			desc = name + " created " + c.now().UTC().Format("2006-01-02T15:04:05.000Z")
		}
	}
	for _, sg := range c.sgs {
		if sg.VPCID == vpcID && strings.EqualFold(sg.Name, name) {
			return nil, apiErr("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, vpcID)
		}
	}
	sg := &SecurityGroup{ID: id, VPCID: vpcID, Name: name, Description: desc, Tags: map[string]string{}}
	c.sgs[sg.ID] = sg
	return sg, nil
}

// launchWizardNameLocked is the first "launch-wizard-N" no group of the
// VPC has.
func (c *Cloud) launchWizardNameLocked(vpcID string) string {
	taken := map[string]bool{}
	for _, sg := range c.sgs {
		if sg.VPCID == vpcID {
			taken[sg.Name] = true
		}
	}
	for n := 1; ; n++ {
		if name := "launch-wizard-" + strconv.Itoa(n); !taken[name] {
			return name
		}
	}
}

// groupNamesLocked gives the names of groups by ID ("" for one that does
// not exist).
func (c *Cloud) groupNamesLocked(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		if sg := c.sgs[id]; sg != nil {
			out[i] = sg.Name
		}
	}
	return out
}

// GroupNames gives the names of groups by ID ("" for one that does not
// exist).
func (c *Cloud) GroupNames(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.groupNamesLocked(ids)
}

// groupText are the characters EC2 takes in a VPC security group's name
// and description, up to 255 of them.
var groupText = regexp.MustCompile(`^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{0,255}$`)

// checkGroupText refuses a name or description EC2 refuses: too long,
// other characters, a name starting with sg- or the reserved "default".
func checkGroupText(name, description string) *APIError {
	switch {
	case strings.EqualFold(name, "default"):
		return apiErr("InvalidGroup.Reserved", "The security group name 'default' is reserved")
	case strings.HasPrefix(strings.ToLower(name), "sg-"):
		return apiErr("InvalidParameterValue", "Group names may not be in the format sg-*")
	case !groupText.MatchString(name):
		return apiErr("InvalidParameterValue", "Invalid group name: up to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*")
	case !groupText.MatchString(description):
		return apiErr("InvalidParameterValue", "Invalid group description: up to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$*")
	}
	return nil
}

// CreateSecurityGroup creates a group with no ingress permission.
func (c *Cloud) CreateSecurityGroup(vpcID, name, description string) (string, *APIError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "" {
		return "", apiErr("MissingParameter", "The request must contain the parameter groupName")
	}
	if aerr := checkGroupText(name, description); aerr != nil {
		return "", aerr
	}
	sg, aerr := c.createGroupLocked(vpcID, name, description)
	if aerr != nil {
		return "", aerr
	}
	return sg.ID, nil
}

// AuthorizeIngress adds ingress permissions to a group; the data plane
// enforces them before the change is committed.
func (c *Cloud) AuthorizeIngress(groupID string, perms []Permission) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	sg := c.sgs[groupID]
	if sg == nil {
		return apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist", groupID)
	}
	next := slices.Clone(sg.Ingress)
	for _, p := range perms {
		p = p.clone()
		if aerr := p.validate(c, sg.VPCID); aerr != nil {
			return aerr
		}
		for _, have := range next {
			if have.key() != p.key() {
				continue
			}
			for _, cidr := range p.CIDRs {
				if slices.Contains(have.CIDRs, cidr) {
					return apiErr("InvalidPermission.Duplicate", "the specified rule \"peer: %s, %s\" already exists", cidr, p.key())
				}
			}
			for _, g := range p.Groups {
				if slices.Contains(have.Groups, g) {
					return apiErr("InvalidPermission.Duplicate", "the specified rule \"peer: %s, %s\" already exists", g, p.key())
				}
			}
		}
		next = append(next, p)
	}
	if v4, v6 := countRules(next); v4 > c.rulesPerG || v6 > c.rulesPerG {
		return apiErr("RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group (%d) has been reached.", c.rulesPerG)
	}
	old := sg.Ingress
	sg.Ingress = next
	if aerr := c.pushSecurityLocked(); aerr != nil {
		sg.Ingress = old
		return aerr
	}
	return nil
}

// countRules counts a group's rules as EC2's quota does, IPv4 and IPv6
// apart: one per CIDR, and one of each per referenced group.
func countRules(perms []Permission) (v4, v6 int) {
	for _, p := range perms {
		for _, c := range p.CIDRs {
			if c.Addr().Is4() {
				v4++
			} else {
				v6++
			}
		}
		v4 += len(p.Groups)
		v6 += len(p.Groups)
	}
	return v4, v6
}

// SecurityGroups returns copies of every group, sorted by ID.
func (c *Cloud) SecurityGroups() []SecurityGroup {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]SecurityGroup, 0, len(c.sgs))
	for _, sg := range c.sgs {
		cp := *sg
		cp.Ingress, cp.Tags = nil, copyTags(sg.Tags)
		for _, p := range sg.Ingress {
			cp.Ingress = append(cp.Ingress, p.clone())
		}
		out = append(out, cp)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// pushSecurityLocked gives the data plane the whole security state: every
// group's permissions and the groups of every attached ENI and of every
// branch ENI the data plane carries.
func (c *Cloud) pushSecurityLocked() *APIError {
	if c.dp == nil {
		return nil
	}
	perms := map[string][]Permission{}
	for id, sg := range c.sgs {
		for _, p := range sg.Ingress {
			perms[id] = append(perms[id], p.clone())
		}
		if perms[id] == nil {
			perms[id] = []Permission{}
		}
	}
	enis := map[string][]string{}
	for id, e := range c.enis {
		if c.inDataPlaneLocked(e) {
			enis[id] = slices.Clone(e.Groups)
		}
	}
	if err := c.dp.SetSecurityGroups(perms, enis); err != nil {
		return apiErr("InternalError", "data plane: %v", err)
	}
	return nil
}
