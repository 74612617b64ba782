// The EC2 actions that create and change ENIs, and the tag actions.

package vpcsim

import (
	"fmt"
	"strconv"
)

func (h *EC2Handler) createNetworkInterface(q query) (any, *APIError) {
	if q.str("SubnetId") == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter SubnetId")
	}
	in := createENIInput{SubnetID: q.str("SubnetId"), Groups: q.list("SecurityGroupId"), Description: q.str("Description"),
		ClientToken: q.str("ClientToken"), Tags: map[string]string{}, InterfaceType: q.str("InterfaceType")}
	var aerr *APIError
	if in.SecondaryCount, aerr = q.intv("SecondaryPrivateIpAddressCount"); aerr != nil {
		return nil, aerr
	}
	if in.PrefixCount, aerr = q.intv("Ipv4PrefixCount"); aerr != nil {
		return nil, aerr
	}
	if in.SecondaryCount > 0 && in.PrefixCount > 0 {
		return nil, apiErr("InvalidParameterCombination", "SecondaryPrivateIpAddressCount cannot be combined with Ipv4PrefixCount")
	}
	if aerr := in.readPrivateAddresses(q); aerr != nil {
		return nil, aerr
	}
	for i := 1; ; i++ {
		rt := q.str(fmt.Sprintf("TagSpecification.%d.ResourceType", i))
		if rt == "" {
			break
		}
		if rt != "network-interface" {
			return nil, apiErr("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		for k, v := range q.tags(fmt.Sprintf("TagSpecification.%d.Tag", i)) {
			in.Tags[k] = v
		}
	}
	if aerr := checkTags(in.Tags); aerr != nil {
		return nil, aerr
	}
	v, aerr := h.cloud.CreateNetworkInterface(in)
	if aerr != nil {
		return nil, aerr
	}
	d := eniDetail{ENIView: v, GroupNames: h.cloud.GroupNames(v.Groups), Description: in.Description, SourceDestCheck: true}
	if s, found := h.subnet(v.SubnetID); found {
		d.AZ = s.AZ
	}
	return xCreateNetworkInterface{XMLNS: ec2XMLNS, RequestID: requestID(), ENI: h.xmlENI(d), ClientToken: in.ClientToken}, nil
}

// readPrivateAddresses reads PrivateIpAddress (the primary) and
// PrivateIpAddresses.N (PrivateIpAddress, Primary), which EC2 takes
// neither with a count of addresses or prefixes nor with two primaries.
func (in *createENIInput) readPrivateAddresses(q query) *APIError {
	if s := q.str("PrivateIpAddress"); s != "" {
		a, aerr := parseAddrs([]string{s})
		if aerr != nil {
			return aerr
		}
		in.PrimaryIP = a[0]
	}
	for i := 1; ; i++ {
		s := q.str(fmt.Sprintf("PrivateIpAddresses.%d.PrivateIpAddress", i))
		if s == "" {
			break
		}
		a, aerr := parseAddrs([]string{s})
		if aerr != nil {
			return aerr
		}
		if in.SecondaryCount > 0 || in.PrefixCount > 0 {
			return apiErr("InvalidParameterCombination", "PrivateIpAddresses cannot be combined with SecondaryPrivateIpAddressCount or Ipv4PrefixCount")
		}
		if q.str(fmt.Sprintf("PrivateIpAddresses.%d.Primary", i)) != "true" {
			in.PrivateIPs = append(in.PrivateIPs, a[0])
			continue
		}
		if in.PrimaryIP.IsValid() {
			return apiErr("InvalidParameterCombination", "Only one primary private IP address can be specified")
		}
		in.PrimaryIP = a[0]
	}
	return nil
}

func (h *EC2Handler) subnet(id string) (SubnetView, bool) {
	for _, s := range h.cloud.Subnets() {
		if s.ID == id {
			return s, true
		}
	}
	return SubnetView{}, false
}

func (h *EC2Handler) modifyNetworkInterfaceAttribute(q query) (any, *APIError) {
	id := q.str("NetworkInterfaceId")
	if id == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter NetworkInterfaceId")
	}
	// EC2 changes one attribute per call.
	given := 0
	for _, k := range []string{"Attachment.AttachmentId", "SecurityGroupId.1", "Description.Value", "SourceDestCheck.Value"} {
		if _, ok := q.v[k]; ok {
			given++
		}
	}
	if given > 1 {
		return nil, apiErr("InvalidParameterCombination", "Only one attribute can be modified at a time")
	}
	changed := false
	if att := q.str("Attachment.AttachmentId"); att != "" {
		dot := q.str("Attachment.DeleteOnTermination")
		v, err := strconv.ParseBool(dot)
		if err != nil {
			return nil, apiErr("InvalidParameterValue", "Invalid value '%s' for Attachment.DeleteOnTermination", dot)
		}
		if aerr := h.cloud.ModifyDeleteOnTermination(id, att, v); aerr != nil {
			return nil, aerr
		}
		changed = true
	}
	if groups := q.list("SecurityGroupId"); len(groups) > 0 {
		if aerr := h.cloud.ModifyGroups(id, groups); aerr != nil {
			return nil, aerr
		}
		changed = true
	}
	if v, ok := q.v["Description.Value"]; ok {
		if aerr := h.cloud.ModifyDescription(id, v[0]); aerr != nil {
			return nil, aerr
		}
		changed = true
	}
	if s := q.str("SourceDestCheck.Value"); s != "" {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return nil, apiErr("InvalidParameterValue", "Invalid value '%s' for SourceDestCheck", s)
		}
		// Described as set; the data plane delivers only an ENI's own
		// addresses either way.
		if aerr := h.cloud.ModifySourceDestCheck(id, v); aerr != nil {
			return nil, aerr
		}
		changed = true
	}
	if !changed {
		if _, found := h.cloud.ENI(id); !found {
			return nil, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		}
		return nil, apiErr("MissingParameter", "An attribute to modify is required")
	}
	return ok("ModifyNetworkInterfaceAttribute"), nil
}

func (h *EC2Handler) attachNetworkInterface(q query) (any, *APIError) {
	dev, aerr := q.intv("DeviceIndex")
	if aerr != nil {
		return nil, aerr
	}
	card, aerr := q.intv("NetworkCardIndex")
	if aerr != nil {
		return nil, aerr
	}
	if q.str("NetworkInterfaceId") == "" || q.str("InstanceId") == "" || q.str("DeviceIndex") == "" {
		return nil, apiErr("MissingParameter", "NetworkInterfaceId, InstanceId and DeviceIndex are required")
	}
	id, aerr := h.cloud.AttachNetworkInterface(q.str("NetworkInterfaceId"), q.str("InstanceId"), dev, card)
	if aerr != nil {
		return nil, aerr
	}
	return xAttach{XMLNS: ec2XMLNS, RequestID: requestID(), AttachmentID: id, NetworkCardIndex: card}, nil
}

func (h *EC2Handler) detachNetworkInterface(q query) (any, *APIError) {
	if aerr := q.required("AttachmentId"); aerr != nil {
		return nil, aerr
	}
	if aerr := h.cloud.DetachNetworkInterface(q.str("AttachmentId")); aerr != nil {
		return nil, aerr
	}
	return ok("DetachNetworkInterface"), nil
}

func (h *EC2Handler) deleteNetworkInterface(q query) (any, *APIError) {
	if aerr := q.required("NetworkInterfaceId"); aerr != nil {
		return nil, aerr
	}
	if aerr := h.cloud.DeleteNetworkInterface(q.str("NetworkInterfaceId")); aerr != nil {
		return nil, aerr
	}
	return ok("DeleteNetworkInterface"), nil
}

func (h *EC2Handler) assignPrivateIPs(q query) (any, *APIError) {
	id := q.str("NetworkInterfaceId")
	if id == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter NetworkInterfaceId")
	}
	count, aerr := q.intv("SecondaryPrivateIpAddressCount")
	if aerr != nil {
		return nil, aerr
	}
	pc, aerr := q.intv("Ipv4PrefixCount")
	if aerr != nil {
		return nil, aerr
	}
	explicit, aerr := parseAddrs(q.list("PrivateIpAddress"))
	if aerr != nil {
		return nil, aerr
	}
	if len(explicit) > 0 && count > 0 {
		return nil, apiErr("InvalidParameterCombination", "PrivateIpAddress cannot be combined with SecondaryPrivateIpAddressCount")
	}
	if len(q.list("Ipv4Prefix")) > 0 {
		return nil, apiErr("InvalidParameterValue", "explicit Ipv4Prefix values are not supported by the simulator; use Ipv4PrefixCount")
	}
	_, ips, pfx, aerr := h.cloud.AssignPrivateIPs(id, count, explicit, pc)
	if aerr != nil {
		return nil, aerr
	}
	out := xAssign{XMLNS: ec2XMLNS, RequestID: requestID(), NetworkInterfaceID: id}
	for _, a := range ips {
		out.Assigned = append(out.Assigned, struct {
			PrivateIPAddress string `xml:"privateIpAddress"`
		}{a.String()})
	}
	for _, p := range pfx {
		out.Prefixes = append(out.Prefixes, xPrefix{IPv4Prefix: p.String()})
	}
	return out, nil
}

func (h *EC2Handler) unassignPrivateIPs(q query) (any, *APIError) {
	if aerr := q.required("NetworkInterfaceId"); aerr != nil {
		return nil, aerr
	}
	ips, aerr := parseAddrs(q.list("PrivateIpAddress"))
	if aerr != nil {
		return nil, aerr
	}
	pfx, aerr := parsePrefixes(q.list("Ipv4Prefix"))
	if aerr != nil {
		return nil, aerr
	}
	if aerr := h.cloud.UnassignPrivateIPs(q.str("NetworkInterfaceId"), ips, pfx); aerr != nil {
		return nil, aerr
	}
	return ok("UnassignPrivateIpAddresses"), nil
}

func (h *EC2Handler) createTags(q query) (any, *APIError) {
	if aerr := q.required("ResourceId.1"); aerr != nil {
		return nil, aerr
	}
	if _, given := q.v["Tag.1.Key"]; !given {
		return nil, apiErr("MissingParameter", "The request must contain the parameter Tag")
	}
	if aerr := h.cloud.CreateTags(q.list("ResourceId"), q.tags("Tag")); aerr != nil {
		return nil, aerr
	}
	return ok("CreateTags"), nil
}

// deleteTags reads Tag.N.Key with an optional Tag.N.Value: without a value
// the tag goes whatever its value, with one only if it matches.
func (h *EC2Handler) deleteTags(q query) (any, *APIError) {
	tags := map[string]*string{}
	for i := 1; ; i++ {
		k, found := q.v[fmt.Sprintf("Tag.%d.Key", i)]
		if !found {
			break
		}
		if v, hasV := q.v[fmt.Sprintf("Tag.%d.Value", i)]; hasV {
			val := v[0]
			tags[k[0]] = &val
		} else {
			tags[k[0]] = nil
		}
	}
	if aerr := h.cloud.DeleteTags(q.list("ResourceId"), tags); aerr != nil {
		return nil, aerr
	}
	return ok("DeleteTags"), nil
}
