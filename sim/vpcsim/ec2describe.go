// The describe actions.

package vpcsim

import (
	"sort"
	"strconv"
	"strings"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// eniFilters are DescribeNetworkInterfaces' filters.
var eniFilters = filterTable[eniDetail]{
	fields: map[string]func(eniDetail) []string{
		"attachment.instance-id":   func(d eniDetail) []string { return one(d.InstanceID) },
		"attachment.attachment-id": func(d eniDetail) []string { return one(d.AttachmentID) },
		"attachment.device-index": func(d eniDetail) []string {
			if d.AttachmentID == "" {
				return nil
			}
			return []string{strconv.Itoa(d.DeviceIndex)}
		},
		"attachment.network-card-index": func(d eniDetail) []string {
			if d.AttachmentID == "" {
				return nil
			}
			return []string{strconv.Itoa(d.NetworkCard)}
		},
		"interface-type":               func(d eniDetail) []string { return one(d.InterfaceType) },
		"status":                       func(d eniDetail) []string { return one(d.Status) },
		"vpc-id":                       func(d eniDetail) []string { return one(d.VPCID) },
		"subnet-id":                    func(d eniDetail) []string { return one(d.SubnetID) },
		"network-interface-id":         func(d eniDetail) []string { return one(d.ID) },
		"description":                  func(d eniDetail) []string { return []string{d.Description} },
		"mac-address":                  func(d eniDetail) []string { return one(d.MAC) },
		"availability-zone":            func(d eniDetail) []string { return one(d.AZ) },
		"group-id":                     func(d eniDetail) []string { return d.Groups },
		"group-name":                   func(d eniDetail) []string { return d.GroupNames },
		"private-ip-address":           eniAddresses,
		"addresses.private-ip-address": eniAddresses,
		"ipv6-addresses.ipv6-address": func(d eniDetail) []string {
			var out []string
			for _, a := range d.IPv6s {
				out = append(out, a.String())
			}
			return out
		},
		"owner-id":          func(d eniDetail) []string { return one(d.Owner) },
		"requester-managed": func(eniDetail) []string { return []string{"false"} },
		"source-dest-check": func(d eniDetail) []string { return []string{strconv.FormatBool(d.SourceDestCheck)} },
		"attachment.status": func(d eniDetail) []string {
			if d.AttachmentID == "" {
				return nil
			}
			return []string{"attached"}
		},
		"attachment.delete-on-termination": func(d eniDetail) []string {
			if d.AttachmentID == "" {
				return nil
			}
			return []string{strconv.FormatBool(d.DeleteOnTermination)}
		},
		"attachment.instance-owner-id": func(d eniDetail) []string {
			if d.AttachmentID == "" {
				return nil
			}
			return one(d.Owner)
		},
	},
	tags: func(d eniDetail) map[string]string { return d.Tags },
}

// eniAddresses are an ENI's private IPv4 addresses, the primary first.
func eniAddresses(d eniDetail) []string {
	out := []string{d.PrimaryIP.String()}
	for _, a := range d.Secondary {
		out = append(out, a.String())
	}
	return out
}

func (h *EC2Handler) describeNetworkInterfaces(q query) (any, *APIError) {
	ids := q.list("NetworkInterfaceId")
	filters := q.filters()
	if aerr := eniFilters.check(filters); aerr != nil {
		return nil, aerr
	}
	// Eventually consistent, as EC2: with a describe lag set, the answer
	// comes from the state of that long ago.
	all, lagged := h.cloud.describes.view()
	if !lagged {
		all = h.cloud.eniDetails(preselect(ids, filters))
	}
	byID := map[string]eniDetail{}
	for _, d := range all {
		byID[d.ID] = d
	}
	var cand []eniDetail
	if len(ids) > 0 {
		for _, id := range ids {
			d, found := byID[id]
			if !found {
				return nil, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
			}
			cand = append(cand, d)
		}
	} else {
		cand = all
	}
	var out []xENI
	for _, d := range cand {
		if eniFilters.match(filters, d) {
			out = append(out, h.xmlENI(d))
		}
	}
	if len(ids) > 0 && q.str("MaxResults") != "" {
		return nil, apiErr("InvalidParameterCombination", "The parameter NetworkInterfaceIds cannot be used with the parameter MaxResults")
	}
	page, next, aerr := paginate(q, out)
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeNetworkInterfaces{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}

// subnetFilters are DescribeSubnets' filters.
var subnetFilters = filterTable[SubnetView]{
	fields: map[string]func(SubnetView) []string{
		"vpc-id":            func(s SubnetView) []string { return one(s.VPCID) },
		"availability-zone": func(s SubnetView) []string { return one(s.AZ) },
		"subnet-id":         func(s SubnetView) []string { return one(s.ID) },
		"cidr-block":        func(s SubnetView) []string { return one(s.CIDR.String()) },
		"cidrBlock":         func(s SubnetView) []string { return one(s.CIDR.String()) },
		"cidr":              func(s SubnetView) []string { return one(s.CIDR.String()) },
		"state":             func(SubnetView) []string { return []string{"available"} },
	},
	tags: func(s SubnetView) map[string]string { return s.Tags },
}

func (h *EC2Handler) describeSubnets(q query) (any, *APIError) {
	ids := q.list("SubnetId")
	filters := q.filters()
	if aerr := subnetFilters.check(filters); aerr != nil {
		return nil, aerr
	}
	var out []xSubnet
	all := h.cloud.Subnets()
	seen := map[string]bool{}
	for _, s := range all {
		seen[s.ID] = true
	}
	for _, id := range ids {
		if !seen[id] {
			return nil, apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
		}
	}
	for _, s := range all {
		if len(ids) > 0 && !matchAny(s.ID, ids) {
			continue
		}
		if subnetFilters.match(filters, s) {
			out = append(out, h.xmlSubnet(s))
		}
	}
	page, next, aerr := paginate(q, out)
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeSubnets{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}

// instanceFilters are DescribeInstances' filters.
var instanceFilters = filterTable[InstanceView]{
	fields: map[string]func(InstanceView) []string{
		"instance-id":         func(i InstanceView) []string { return one(i.InstanceID) },
		"instance-type":       func(i InstanceView) []string { return one(i.InstanceType) },
		"vpc-id":              func(i InstanceView) []string { return one(i.VPCID) },
		"instance-state-name": func(InstanceView) []string { return []string{"running"} },
		"subnet-id":           func(i InstanceView) []string { return one(i.SubnetID) },
		"availability-zone":   func(i InstanceView) []string { return one(i.AZ) },
		"private-ip-address":  func(i InstanceView) []string { return one(i.PrimaryIP.String()) },
		"instance.group-id":   func(i InstanceView) []string { return primaryENI(i).Groups },
	},
	tags: func(i InstanceView) map[string]string { return i.Tags },
}

// primaryENI is an instance's interface at device 0 of card 0, whose
// groups are the instance's.
func primaryENI(i InstanceView) ENIView {
	for _, e := range i.ENIs {
		if e.DeviceIndex == 0 && e.NetworkCard == 0 {
			return e
		}
	}
	return ENIView{}
}

func (h *EC2Handler) describeInstances(q query) (any, *APIError) {
	ids := q.list("InstanceId")
	if len(ids) > 0 && q.str("MaxResults") != "" {
		return nil, apiErr("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	filters := q.filters()
	if aerr := instanceFilters.check(filters); aerr != nil {
		return nil, aerr
	}
	all := h.cloud.Instances()
	known := map[string]bool{}
	for _, i := range all {
		known[i.InstanceID] = true
	}
	for _, id := range ids {
		if !known[id] {
			return nil, apiErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	details := map[string]eniDetail{}
	for _, d := range h.cloud.eniDetails(nil) {
		details[d.ID] = d
	}
	var res []xReservation
	for _, i := range all {
		if len(ids) > 0 && !matchAny(i.InstanceID, ids) {
			continue
		}
		if !instanceFilters.match(filters, i) {
			continue
		}
		x := xInstance{InstanceID: i.InstanceID, ImageID: i.ImageID, PrivateIPAddress: i.PrimaryIP.String(),
			InstanceType: i.InstanceType, LaunchTime: i.Launched.UTC().Format("2006-01-02T15:04:05.000Z"),
			SubnetID: i.SubnetID, VpcID: i.VPCID, Architecture: "x86_64", Hypervisor: hypervisorName(i.Hypervisor), TagSet: tagList(i.Tags)}
		x.InstanceState.Code, x.InstanceState.Name = 16, "running"
		if p := details[primaryENI(i).ID]; p.ID != "" {
			for n, g := range p.Groups {
				x.GroupSet = append(x.GroupSet, xGroup{GroupID: g, GroupName: p.GroupNames[n]})
			}
		}
		x.Placement.AvailabilityZone = i.AZ
		for _, e := range i.ENIs {
			d := details[e.ID]
			xe := h.xmlENI(d)
			x.ENIs = append(x.ENIs, xInstanceENI{NetworkInterfaceID: xe.NetworkInterfaceID, SubnetID: xe.SubnetID, VpcID: xe.VpcID,
				OwnerID: xe.OwnerID, Status: xe.Status, MacAddress: xe.MacAddress, PrivateIPAddress: xe.PrivateIPAddress,
				SourceDestCheck: xe.SourceDestCheck, InterfaceType: xe.InterfaceType, GroupSet: xe.GroupSet, Attachment: *xe.Attachment,
				PrivateIPs: xe.PrivateIPs, IPv4Prefixes: xe.IPv4Prefixes})
		}
		res = append(res, xReservation{ReservationID: "r-" + strings.TrimPrefix(i.InstanceID, "i-"), OwnerID: h.cloud.account, Instances: []xInstance{x}})
	}
	page, next, aerr := paginate(q, res)
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeInstances{XMLNS: ec2XMLNS, RequestID: requestID(), Reservations: page, NextToken: next}, nil
}

func hypervisorName(h string) string {
	if h == "" {
		return "nitro" // bare metal and unknown types report nitro-class
	}
	return h
}

func (h *EC2Handler) describeInstanceTypes(q query) (any, *APIError) {
	types := q.list("InstanceType")
	if len(types) == 0 {
		types = instancelimits.Types()
	}
	var out []xInstanceType
	for _, t := range types {
		l, found := instancelimits.Lookup(t)
		if !found {
			return nil, apiErr("InvalidInstanceType", "The following supplied instance types do not exist: [%s]", t)
		}
		x := xInstanceType{InstanceType: t, Hypervisor: l.Hypervisor, BareMetal: l.BareMetal}
		x.NetworkInfo.MaximumNetworkInterfaces = l.TotalENIs()
		x.NetworkInfo.DefaultNetworkCardIndex = l.DefaultNetworkCard
		x.NetworkInfo.IPv4AddressesPerInterface = l.IPv4PerENI
		x.NetworkInfo.MaximumNetworkCards = max(1, len(l.NetworkCards))
		var cards []int
		for c := range l.NetworkCards {
			cards = append(cards, c)
		}
		sort.Ints(cards)
		for _, c := range cards {
			x.NetworkInfo.NetworkCards = append(x.NetworkInfo.NetworkCards, xNetworkCard{NetworkCardIndex: c, MaximumNetworkInterfaces: l.NetworkCards[c]})
		}
		out = append(out, x)
	}
	page, next, aerr := paginateUpTo(q, out, 100) // DescribeInstanceTypes' MaxResults is 5 to 100
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeInstanceTypes{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}
