// What EC2 checks of a request before it looks anything up: the form of
// resource IDs.

package vpcsim

import "regexp"

// idParam is a request parameter carrying a resource ID (alone, or as the
// list Param.N), the ID's prefix and EC2's code for a malformed one.
type idParam struct{ param, prefix, code string }

var idParams = []idParam{
	{"NetworkInterfaceId", "eni", "InvalidNetworkInterfaceId.Malformed"},
	{"BranchInterfaceId", "eni", "InvalidNetworkInterfaceId.Malformed"},
	{"TrunkInterfaceId", "eni", "InvalidNetworkInterfaceId.Malformed"},
	{"InstanceId", "i", "InvalidInstanceID.Malformed"},
	{"SubnetId", "subnet", "InvalidSubnetID.Malformed"},
	{"VpcId", "vpc", "InvalidVpcID.Malformed"},
	{"GroupId", "sg", "InvalidGroupId.Malformed"},
	{"SecurityGroupId", "sg", "InvalidGroupId.Malformed"},
	{"AttachmentId", "eni-attach", "InvalidNetworkInterfaceAttachmentId.Malformed"},
	{"Attachment.AttachmentId", "eni-attach", "InvalidNetworkInterfaceAttachmentId.Malformed"},
}

// idForm is EC2's resource ID: its prefix, a hyphen and 8 (older) or 17
// lower-case hexadecimal digits.
var idForm = regexp.MustCompile(`^([a-z]+(?:-[a-z]+)?)-([0-9a-f]{8}|[0-9a-f]{17})$`)

// wellFormed reports whether id is an ID of the resource type prefix.
func wellFormed(id, prefix string) bool {
	m := idForm.FindStringSubmatch(id)
	return m != nil && m[1] == prefix
}

// checkIDs refuses a malformed resource ID in any parameter that carries
// one; an empty value is left to the action (a required one is
// MissingParameter there).
func (q query) checkIDs() *APIError {
	for _, p := range idParams {
		vals := q.list(p.param)
		if v := q.str(p.param); v != "" {
			vals = append(vals, v)
		}
		for _, v := range vals {
			if v != "" && !wellFormed(v, p.prefix) {
				return apiErr(p.code, "Invalid id: \"%s\" (expecting \"%s-...\")", v, p.prefix)
			}
		}
	}
	return nil
}

// required refuses a request without the parameters names, as EC2 does.
func (q query) required(names ...string) *APIError {
	for _, n := range names {
		if q.str(n) == "" {
			return apiErr("MissingParameter", "The request must contain the parameter %s", n)
		}
	}
	return nil
}
