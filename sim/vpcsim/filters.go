// EC2's Filter.N semantics, one mechanism for every describe action.

package vpcsim

import "strings"

// filter is one Filter.N of a request: a name and the values any of which
// may match (OR); a request's filters must all match (AND).
type filter struct {
	name   string
	values []string
}

// filterTable maps the filter names a describe action supports to the
// values an item has for them; tag:<key> and tag-key are supported for
// every resource through its tags.
type filterTable[T any] struct {
	fields map[string]func(T) []string
	tags   func(T) map[string]string
}

// check refuses a filter name the action does not support, as EC2 does
// (even when nothing would be described).
func (ft filterTable[T]) check(filters []filter) *APIError {
	for _, f := range filters {
		if _, ok := ft.fields[f.name]; ok || f.name == "tag-key" || strings.HasPrefix(f.name, "tag:") {
			continue
		}
		return apiErr("InvalidParameterValue", "The filter '%s' is invalid", f.name)
	}
	return nil
}

// match reports whether item passes every filter (check them first).
func (ft filterTable[T]) match(filters []filter, item T) bool {
	for _, f := range filters {
		var m bool
		if get, ok := ft.fields[f.name]; ok {
			for _, v := range get(item) {
				if matchPatterns(v, f.values) {
					m = true
					break
				}
			}
		} else {
			m, _ = matchTags(f, ft.tags(item))
		}
		if !m {
			return false
		}
	}
	return true
}

// one is a field with a single value; an empty one (an unattached ENI's
// instance ID) matches nothing.
func one(v string) []string {
	if v == "" {
		return nil
	}
	return []string{v}
}

// matchAny reports whether v is one of vals (IDs asked for).
func matchAny(v string, vals []string) bool {
	for _, x := range vals {
		if x == v {
			return true
		}
	}
	return false
}

// matchPatterns reports whether v matches any of a filter's values.
func matchPatterns(v string, patterns []string) bool {
	for _, p := range patterns {
		if globMatch(p, v) {
			return true
		}
	}
	return false
}

// globMatch matches s against an EC2 filter value: * is any run of
// characters, ? exactly one, and a backslash makes the next character
// literal.
func globMatch(pattern, s string) bool {
	type tok struct {
		r    rune
		kind byte // 'l'iteral, '*', '?'
	}
	var toks []tok
	pr := []rune(pattern)
	for i := 0; i < len(pr); i++ {
		switch {
		case pr[i] == '\\' && i+1 < len(pr):
			i++
			toks = append(toks, tok{pr[i], 'l'})
		case pr[i] == '*':
			toks = append(toks, tok{kind: '*'})
		case pr[i] == '?':
			toks = append(toks, tok{kind: '?'})
		default:
			toks = append(toks, tok{pr[i], 'l'})
		}
	}
	sr := []rune(s)
	// Backtracking on the last star: linear in practice.
	ti, si, starT, starS := 0, 0, -1, 0
	for si < len(sr) {
		switch {
		case ti < len(toks) && (toks[ti].kind == '?' || toks[ti].kind == 'l' && toks[ti].r == sr[si]):
			ti++
			si++
		case ti < len(toks) && toks[ti].kind == '*':
			starT, starS = ti, si
			ti++
		case starT >= 0:
			starS++
			ti, si = starT+1, starS
		default:
			return false
		}
	}
	for ti < len(toks) && toks[ti].kind == '*' {
		ti++
	}
	return ti == len(toks)
}

func matchTags(f filter, tags map[string]string) (bool, bool) {
	switch {
	case f.name == "tag-key":
		for k := range tags {
			if matchPatterns(k, f.values) {
				return true, true
			}
		}
		return false, true
	case strings.HasPrefix(f.name, "tag:"):
		v, has := tags[strings.TrimPrefix(f.name, "tag:")]
		return has && matchPatterns(v, f.values), true
	}
	return false, false
}

// preselect narrows DescribeNetworkInterfaces to the ENIs that can match,
// cheaply: by the IDs asked for, else by the instance, status and tag:<key>
// filters (the daemon's per-instance describes, its lookup by create token
// and the leak sweep). The full filter pass below still decides.
func preselect(ids []string, filters []filter) func(*ENI) bool {
	if len(ids) > 0 {
		return func(e *ENI) bool { return matchAny(e.ID, ids) }
	}
	var inst, status []string
	tags := map[string][]string{}
	for _, f := range filters {
		switch {
		case f.name == "attachment.instance-id":
			inst = f.values
		case f.name == "status":
			status = f.values
		case strings.HasPrefix(f.name, "tag:"):
			tags[strings.TrimPrefix(f.name, "tag:")] = f.values
		}
	}
	if inst == nil && status == nil && len(tags) == 0 {
		return nil
	}
	return func(e *ENI) bool {
		if inst != nil && (e.Attachment == nil || !matchPatterns(e.Attachment.InstanceID, inst)) {
			return false
		}
		for k, vs := range tags {
			if v, ok := e.Tags[k]; !ok || !matchPatterns(v, vs) {
				return false
			}
		}
		return status == nil || matchPatterns(e.Status(), status)
	}
}
