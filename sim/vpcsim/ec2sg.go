// The EC2 actions on security groups, VPC CIDRs and subnets.

package vpcsim

import (
	"encoding/xml"
	"fmt"
	"net/netip"
)

type xIPRange struct {
	CidrIP string `xml:"cidrIp"`
}

type xIPv6Range struct {
	CidrIPv6 string `xml:"cidrIpv6"`
}

type xGroupPair struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

type xPermission struct {
	IPProtocol string       `xml:"ipProtocol"`
	FromPort   *int         `xml:"fromPort,omitempty"`
	ToPort     *int         `xml:"toPort,omitempty"`
	Groups     []xGroupPair `xml:"groups>item"`
	IPRanges   []xIPRange   `xml:"ipRanges>item"`
	IPv6Ranges []xIPv6Range `xml:"ipv6Ranges>item"`
}

type xSecurityGroup struct {
	OwnerID     string        `xml:"ownerId"`
	GroupID     string        `xml:"groupId"`
	GroupName   string        `xml:"groupName"`
	Description string        `xml:"groupDescription"`
	VpcID       string        `xml:"vpcId"`
	Ingress     []xPermission `xml:"ipPermissions>item"`
	Egress      []xPermission `xml:"ipPermissionsEgress>item"`
	TagSet      []xTag        `xml:"tagSet>item"`
}

type xDescribeSecurityGroups struct {
	XMLName   xml.Name         `xml:"DescribeSecurityGroupsResponse"`
	XMLNS     string           `xml:"xmlns,attr"`
	RequestID string           `xml:"requestId"`
	Set       []xSecurityGroup `xml:"securityGroupInfo>item"`
}

type xCreateSecurityGroup struct {
	XMLName   xml.Name `xml:"CreateSecurityGroupResponse"`
	XMLNS     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	Return    bool     `xml:"return"`
	GroupID   string   `xml:"groupId"`
}

type xAssociateVpcCidrBlock struct {
	XMLName     xml.Name `xml:"AssociateVpcCidrBlockResponse"`
	XMLNS       string   `xml:"xmlns,attr"`
	RequestID   string   `xml:"requestId"`
	VpcID       string   `xml:"vpcId"`
	Association struct {
		AssociationID string `xml:"associationId"`
		CidrBlock     string `xml:"cidrBlock"`
		State         string `xml:"cidrBlockState>state"`
	} `xml:"cidrBlockAssociation"`
}

type xCreateSubnet struct {
	XMLName   xml.Name `xml:"CreateSubnetResponse"`
	XMLNS     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	Subnet    xSubnet  `xml:"subnet"`
}

// sgFilters are DescribeSecurityGroups' filters.
var sgFilters = filterTable[SecurityGroup]{
	fields: map[string]func(SecurityGroup) []string{
		"group-id":   func(g SecurityGroup) []string { return one(g.ID) },
		"group-name": func(g SecurityGroup) []string { return one(g.Name) },
		"vpc-id":     func(g SecurityGroup) []string { return one(g.VPCID) },
	},
	tags: func(g SecurityGroup) map[string]string { return g.Tags },
}

func (h *EC2Handler) describeSecurityGroups(q query) (any, *APIError) {
	ids := q.list("GroupId")
	filters := q.filters()
	if aerr := sgFilters.check(filters); aerr != nil {
		return nil, aerr
	}
	all := h.cloud.SecurityGroups()
	byID := map[string]bool{}
	for _, g := range all {
		byID[g.ID] = true
	}
	for _, id := range ids {
		if !byID[id] {
			return nil, apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		}
	}
	out := xDescribeSecurityGroups{XMLNS: ec2XMLNS, RequestID: requestID()}
	for _, g := range all {
		if len(ids) > 0 && !matchAny(g.ID, ids) || !sgFilters.match(filters, g) {
			continue
		}
		x := xSecurityGroup{OwnerID: h.cloud.account, GroupID: g.ID, GroupName: g.Name, Description: g.Description, VpcID: g.VPCID, TagSet: tagList(g.Tags),
			Egress: []xPermission{{IPProtocol: "-1", IPRanges: []xIPRange{{CidrIP: "0.0.0.0/0"}}}}}
		for _, p := range g.Ingress {
			xp := xPermission{IPProtocol: p.Protocol}
			if p.Protocol == "tcp" || p.Protocol == "udp" {
				from, to := p.FromPort, p.ToPort
				xp.FromPort, xp.ToPort = &from, &to
			}
			for _, c := range p.CIDRs {
				if c.Addr().Is6() {
					xp.IPv6Ranges = append(xp.IPv6Ranges, xIPv6Range{CidrIPv6: c.String()})
				} else {
					xp.IPRanges = append(xp.IPRanges, xIPRange{CidrIP: c.String()})
				}
			}
			for _, sg := range p.Groups {
				xp.Groups = append(xp.Groups, xGroupPair{GroupID: sg, UserID: h.cloud.account})
			}
			x.Ingress = append(x.Ingress, xp)
		}
		out.Set = append(out.Set, x)
	}
	return out, nil
}

func (h *EC2Handler) createSecurityGroup(q query) (any, *APIError) {
	if q.str("VpcId") == "" || q.str("GroupName") == "" || q.str("GroupDescription") == "" {
		return nil, apiErr("MissingParameter", "VpcId, GroupName and GroupDescription are required")
	}
	id, aerr := h.cloud.CreateSecurityGroup(q.str("VpcId"), q.str("GroupName"), q.str("GroupDescription"))
	if aerr != nil {
		return nil, aerr
	}
	return xCreateSecurityGroup{XMLNS: ec2XMLNS, RequestID: requestID(), Return: true, GroupID: id}, nil
}

// authorizeIngress reads IpPermissions.N (IpProtocol, FromPort, ToPort,
// IpRanges.M.CidrIp, Ipv6Ranges.M.CidrIpv6, Groups.M.GroupId), as the SDKs
// send them.
func (h *EC2Handler) authorizeIngress(q query) (any, *APIError) {
	group := q.str("GroupId")
	if group == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter GroupId")
	}
	var perms []Permission
	for i := 1; ; i++ {
		base := fmt.Sprintf("IpPermissions.%d.", i)
		proto := q.str(base + "IpProtocol")
		if proto == "" {
			break
		}
		p := Permission{Protocol: proto}
		var aerr *APIError
		if p.FromPort, aerr = q.intv(base + "FromPort"); aerr != nil {
			return nil, aerr
		}
		if p.ToPort, aerr = q.intv(base + "ToPort"); aerr != nil {
			return nil, aerr
		}
		for j := 1; ; j++ {
			s := q.str(fmt.Sprintf("%sIpRanges.%d.CidrIp", base, j))
			if s == "" {
				break
			}
			pfx, err := netip.ParsePrefix(s)
			if err != nil || !pfx.Addr().Is4() || pfx.Masked() != pfx {
				return nil, apiErr("InvalidParameterValue", "CIDR block %s is malformed", s)
			}
			p.CIDRs = append(p.CIDRs, pfx)
		}
		for j := 1; ; j++ {
			s := q.str(fmt.Sprintf("%sIpv6Ranges.%d.CidrIpv6", base, j))
			if s == "" {
				break
			}
			pfx, err := netip.ParsePrefix(s)
			if err != nil || !pfx.Addr().Is6() || pfx.Addr().Is4In6() || pfx.Masked() != pfx {
				return nil, apiErr("InvalidParameterValue", "IPv6 CIDR block %s is malformed", s)
			}
			p.CIDRs = append(p.CIDRs, pfx)
		}
		for j := 1; ; j++ {
			g := q.str(fmt.Sprintf("%sGroups.%d.GroupId", base, j))
			if g == "" {
				break
			}
			if !wellFormed(g, "sg") {
				return nil, apiErr("InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", g)
			}
			p.Groups = append(p.Groups, g)
		}
		perms = append(perms, p)
	}
	if len(perms) == 0 {
		return nil, apiErr("MissingParameter", "The request must contain the parameter IpPermissions")
	}
	if aerr := h.cloud.AuthorizeIngress(group, perms); aerr != nil {
		return nil, aerr
	}
	return ok("AuthorizeSecurityGroupIngress"), nil
}

// associateVpcCidrBlock serves AssociateVpcCidrBlock: an Amazon-provided
// IPv6 /56 (ec2ipv6.go) or a secondary IPv4 CIDR.
func (h *EC2Handler) associateVpcCidrBlock(q query) (any, *APIError) {
	if q.str("AmazonProvidedIpv6CidrBlock") == "true" {
		return h.associateVPCIPv6(q)
	}
	return h.associateVPCIPv4(q)
}

// associateVPCIPv4 is AssociateVpcCidrBlock with a CidrBlock.
func (h *EC2Handler) associateVPCIPv4(q query) (any, *APIError) {
	vpc, cidr := q.str("VpcId"), q.str("CidrBlock")
	if vpc == "" || cidr == "" {
		return nil, apiErr("MissingParameter", "VpcId and CidrBlock are required")
	}
	if err := h.cloud.AddVPCCIDR(vpc, cidr); err != nil {
		return nil, asAPIError(err)
	}
	out := xAssociateVpcCidrBlock{XMLNS: ec2XMLNS, RequestID: requestID(), VpcID: vpc}
	out.Association.AssociationID = newID("vpc-cidr-assoc")
	out.Association.CidrBlock = cidr
	out.Association.State = "associated"
	return out, nil
}

func (h *EC2Handler) createSubnet(q query) (any, *APIError) {
	vpc, cidr, az := q.str("VpcId"), q.str("CidrBlock"), q.str("AvailabilityZone")
	if vpc == "" || cidr == "" || az == "" {
		return nil, apiErr("MissingParameter", "VpcId, CidrBlock and AvailabilityZone are required")
	}
	id, err := h.cloud.AddSubnet(vpc, cidr, az, nil)
	if err != nil {
		return nil, asAPIError(err)
	}
	if v6 := q.str("Ipv6CidrBlock"); v6 != "" {
		p, err := netip.ParsePrefix(v6)
		if err != nil {
			return nil, apiErr("InvalidParameterValue", "The IPv6 CIDR '%s' is invalid", v6)
		}
		if aerr := h.cloud.AssociateSubnetIPv6(id, p); aerr != nil {
			return nil, aerr // the subnet stays, IPv4 only, as when EC2 fails the association
		}
	}
	s, _ := h.subnet(id)
	return xCreateSubnet{XMLNS: ec2XMLNS, RequestID: requestID(), Subnet: h.xmlSubnet(s)}, nil
}

func (h *EC2Handler) xmlSubnet(s SubnetView) xSubnet {
	x := xSubnet{SubnetID: s.ID, SubnetArn: "arn:aws:ec2:" + h.cloud.region + ":" + h.cloud.account + ":subnet/" + s.ID,
		State: "available", VpcID: s.VPCID, OwnerID: h.cloud.account, CidrBlock: s.CIDR.String(),
		AvailableIPAddressCount: s.Available, AvailabilityZone: s.AZ, TagSet: tagList(s.Tags)}
	if s.IPv6CIDR.IsValid() {
		x.IPv6Associations = []xIPv6Association{{AssociationID: "subnet-cidr-assoc-" + s.ID[len("subnet-"):],
			IPv6CidrBlock: s.IPv6CIDR.String(), State: "associated"}}
	}
	return x
}

// asAPIError keeps EC2's error or makes an internal one.
func asAPIError(err error) *APIError {
	if ae, ok := err.(*APIError); ok {
		return ae
	}
	return apiErr("InternalError", "%v", err)
}
