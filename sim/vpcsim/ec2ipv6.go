// The EC2 actions on IPv6 blocks and addresses.

package vpcsim

import (
	"encoding/xml"
	"net/netip"
)

type xAssignIPv6 struct {
	XMLName            xml.Name `xml:"AssignIpv6AddressesResponse"`
	XMLNS              string   `xml:"xmlns,attr"`
	RequestID          string   `xml:"requestId"`
	NetworkInterfaceID string   `xml:"networkInterfaceId"`
	Addresses          []string `xml:"assignedIpv6Addresses>item"`
	Prefixes           []string `xml:"assignedIpv6PrefixSet>item"`
}

type xUnassignIPv6 struct {
	XMLName            xml.Name `xml:"UnassignIpv6AddressesResponse"`
	XMLNS              string   `xml:"xmlns,attr"`
	RequestID          string   `xml:"requestId"`
	NetworkInterfaceID string   `xml:"networkInterfaceId"`
	Addresses          []string `xml:"unassignedIpv6Addresses>item"`
	Prefixes           []string `xml:"unassignedIpv6PrefixSet>item"`
}

type xAssociateSubnetCidrBlock struct {
	XMLName     xml.Name         `xml:"AssociateSubnetCidrBlockResponse"`
	XMLNS       string           `xml:"xmlns,attr"`
	RequestID   string           `xml:"requestId"`
	SubnetID    string           `xml:"subnetId"`
	Association xIPv6Association `xml:"ipv6CidrBlockAssociation"`
}

type xAssociateVpcIPv6 struct {
	XMLName     xml.Name         `xml:"AssociateVpcCidrBlockResponse"`
	XMLNS       string           `xml:"xmlns,attr"`
	RequestID   string           `xml:"requestId"`
	VpcID       string           `xml:"vpcId"`
	Association xIPv6Association `xml:"ipv6CidrBlockAssociation"`
}

func parseAddrs6(ss []string) ([]netip.Addr, *APIError) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is6() || a.Is4In6() {
			return nil, apiErr("InvalidParameterValue", "Invalid IPv6 address '%s'", s)
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePrefixes6(ss []string) ([]netip.Prefix, *APIError) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is6() || p.Bits() != 80 || p.Masked() != p {
			return nil, apiErr("InvalidParameterValue", "Invalid IPv6 prefix '%s': want a /80", s)
		}
		out = append(out, p)
	}
	return out, nil
}

func (h *EC2Handler) assignIPv6(q query) (any, *APIError) {
	id := q.str("NetworkInterfaceId")
	if id == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter NetworkInterfaceId")
	}
	count, aerr := q.intv("Ipv6AddressCount")
	if aerr != nil {
		return nil, aerr
	}
	prefixes, aerr := q.intv("Ipv6PrefixCount")
	if aerr != nil {
		return nil, aerr
	}
	if len(q.list("Ipv6Prefix")) > 0 {
		return nil, apiErr("InvalidParameterValue", "explicit Ipv6Prefix values are not supported by the simulator: ask for Ipv6PrefixCount")
	}
	explicit, aerr := parseAddrs6(q.list("Ipv6Addresses"))
	if aerr != nil {
		return nil, aerr
	}
	addrs, pfx, aerr := h.cloud.AssignIPv6(id, count, explicit, prefixes)
	if aerr != nil {
		return nil, aerr
	}
	out := xAssignIPv6{XMLNS: ec2XMLNS, RequestID: requestID(), NetworkInterfaceID: id}
	for _, a := range addrs {
		out.Addresses = append(out.Addresses, a.String())
	}
	for _, p := range pfx {
		out.Prefixes = append(out.Prefixes, p.String())
	}
	return out, nil
}

func (h *EC2Handler) unassignIPv6(q query) (any, *APIError) {
	id := q.str("NetworkInterfaceId")
	addrs, aerr := parseAddrs6(q.list("Ipv6Addresses"))
	if aerr != nil {
		return nil, aerr
	}
	pfx, aerr := parsePrefixes6(q.list("Ipv6Prefix"))
	if aerr != nil {
		return nil, aerr
	}
	if id == "" || len(addrs)+len(pfx) == 0 {
		return nil, apiErr("MissingParameter", "NetworkInterfaceId and Ipv6Addresses or Ipv6Prefix are required")
	}
	if aerr := h.cloud.UnassignIPv6(id, addrs, pfx); aerr != nil {
		return nil, aerr
	}
	return xUnassignIPv6{XMLNS: ec2XMLNS, RequestID: requestID(), NetworkInterfaceID: id,
		Addresses: q.list("Ipv6Addresses"), Prefixes: q.list("Ipv6Prefix")}, nil
}

func (h *EC2Handler) associateSubnetCidrBlock(q query) (any, *APIError) {
	id, v6 := q.str("SubnetId"), q.str("Ipv6CidrBlock")
	if id == "" || v6 == "" {
		return nil, apiErr("MissingParameter", "SubnetId and Ipv6CidrBlock are required")
	}
	p, err := netip.ParsePrefix(v6)
	if err != nil {
		return nil, apiErr("InvalidParameterValue", "The IPv6 CIDR '%s' is invalid", v6)
	}
	if aerr := h.cloud.AssociateSubnetIPv6(id, p); aerr != nil {
		return nil, aerr
	}
	return xAssociateSubnetCidrBlock{XMLNS: ec2XMLNS, RequestID: requestID(), SubnetID: id,
		Association: xIPv6Association{AssociationID: newID("subnet-cidr-assoc"), IPv6CidrBlock: p.String(), State: "associated"}}, nil
}

// associateVPCIPv6 is AssociateVpcCidrBlock with AmazonProvidedIpv6CidrBlock.
func (h *EC2Handler) associateVPCIPv6(q query) (any, *APIError) {
	vpc := q.str("VpcId")
	p, aerr := h.cloud.AssociateVPCIPv6(vpc)
	if aerr != nil {
		return nil, aerr
	}
	return xAssociateVpcIPv6{XMLNS: ec2XMLNS, RequestID: requestID(), VpcID: vpc,
		Association: xIPv6Association{AssociationID: newID("vpc-cidr-assoc"), IPv6CidrBlock: p.String(), State: "associated"}}, nil
}
