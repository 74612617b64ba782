// Tags on ENIs, instances, subnets and security groups, within EC2's
// restrictions.

package vpcsim

import (
	"strings"
	"unicode/utf8"
)

// CreateTags sets tags on ENIs, instances, subnets or security groups,
// within EC2's tag restrictions.
func (c *Cloud) CreateTags(ids []string, tags map[string]string) *APIError {
	if aerr := checkTags(tags); aerr != nil {
		return aerr
	}
	return c.editTags(ids, func(m map[string]string) *APIError {
		n := len(m)
		for k := range tags {
			if _, ok := m[k]; !ok {
				n++
			}
		}
		if n > MaxTagsPerResource {
			return apiErr("TagLimitExceeded", "The maximum number of tags (%d) for a resource has been reached.", MaxTagsPerResource)
		}
		return nil
	}, func(m map[string]string) {
		for k, v := range tags {
			m[k] = v
		}
	})
}

// EC2's tag restrictions.
const (
	MaxTagsPerResource = 50
	MaxTagKeyLength    = 128
	MaxTagValueLength  = 256
)

// checkTags refuses tags EC2 refuses: an empty key, a key with the aws:
// prefix (reserved), a key or value over EC2's lengths (in characters),
// more tags than a resource takes.
func checkTags(tags map[string]string) *APIError {
	if len(tags) > MaxTagsPerResource {
		return apiErr("TagLimitExceeded", "The maximum number of tags (%d) for a resource has been reached.", MaxTagsPerResource)
	}
	for k, v := range tags {
		switch {
		case k == "" || strings.HasPrefix(strings.ToLower(k), "aws:"):
			return apiErr("InvalidTagKey.Malformed", "Tag keys cannot be empty or start with 'aws:': %q", k)
		case utf8.RuneCountInString(k) > MaxTagKeyLength:
			return apiErr("InvalidParameterValue", "Tag key exceeds the maximum length of %d characters", MaxTagKeyLength)
		case utf8.RuneCountInString(v) > MaxTagValueLength:
			return apiErr("InvalidParameterValue", "Tag value exceeds the maximum length of %d characters", MaxTagValueLength)
		}
	}
	return nil
}

// DeleteTags removes tags; a tag given with a value is removed only if the
// value matches, as EC2 does.
func (c *Cloud) DeleteTags(ids []string, tags map[string]*string) *APIError {
	return c.editTags(ids, nil, func(m map[string]string) {
		for k, v := range tags {
			if v == nil || m[k] == *v {
				delete(m, k)
			}
		}
	})
}

// editTags applies f to the tags of every resource of ids once check (if
// any) accepts each; an ID of nothing is that resource type's NotFound,
// and what is no resource ID InvalidID, as in EC2.
func (c *Cloud) editTags(ids []string, check func(map[string]string) *APIError, f func(map[string]string)) *APIError {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.changedLocked()
	var maps []map[string]string
	for _, id := range ids {
		switch {
		case c.enis[id] != nil:
			maps = append(maps, c.enis[id].Tags)
		case c.instances[id] != nil:
			maps = append(maps, c.instances[id].Tags)
		case c.subnets[id] != nil:
			maps = append(maps, c.subnets[id].Tags)
		case c.sgs[id] != nil:
			maps = append(maps, c.sgs[id].Tags)
		case wellFormed(id, "eni"):
			return apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		case wellFormed(id, "i"):
			return apiErr("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		case wellFormed(id, "subnet"):
			return apiErr("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", id)
		case wellFormed(id, "sg"):
			return apiErr("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
		default:
			return apiErr("InvalidID", "The ID '%s' is not valid", id)
		}
	}
	if check != nil {
		for _, m := range maps {
			if aerr := check(m); aerr != nil {
				return aerr
			}
		}
	}
	for _, m := range maps {
		f(m)
	}
	return nil
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
