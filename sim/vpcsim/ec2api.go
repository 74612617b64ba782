// The EC2 Query API endpoint: request parsing, faults, dispatch (the table
// ec2Actions) and EC2's error document. The XML shapes are in ec2xml.go, the
// actions in ec2describe.go, ec2eni.go, ec2sg.go, ec2ipv6.go and ec2trunk.go,
// filters in filters.go.

package vpcsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

const ec2XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"

// EC2Handler serves the EC2 Query API (Action=...&Version=..., XML replies
// and EC2's error document) for the region.
type EC2Handler struct {
	cloud  *Cloud
	faults *Faults
	logf   func(string, ...any)
}

// NewEC2Handler builds the EC2 endpoint for a cloud.
func NewEC2Handler(c *Cloud, f *Faults) *EC2Handler {
	return &EC2Handler{cloud: c, faults: f, logf: func(string, ...any) {}}
}

type query struct{ v map[string][]string }

func (q query) str(k string) string {
	if vs := q.v[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func (q query) intv(k string) (int, *APIError) {
	s := q.str(k)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, apiErr("InvalidParameterValue", "Invalid value '%s' for %s", s, k)
	}
	return n, nil
}

// list collects the flattened list Key.1, Key.2, ...
func (q query) list(k string) []string {
	var out []string
	for i := 1; ; i++ {
		vs, ok := q.v[fmt.Sprintf("%s.%d", k, i)]
		if !ok {
			return out
		}
		out = append(out, vs[0])
	}
}

func (q query) filters() []filter {
	var out []filter
	for i := 1; ; i++ {
		name := q.str(fmt.Sprintf("Filter.%d.Name", i))
		if name == "" {
			return out
		}
		out = append(out, filter{name: name, values: q.list(fmt.Sprintf("Filter.%d.Value", i))})
	}
}

func (q query) tags(prefix string) map[string]string {
	out := map[string]string{}
	for i := 1; ; i++ {
		k, ok := q.v[fmt.Sprintf("%s.%d.Key", prefix, i)]
		if !ok {
			return out
		}
		out[k[0]] = q.str(fmt.Sprintf("%s.%d.Value", prefix, i))
	}
}

// nodeKey is the request context's key for the node whose endpoint a
// request came through.
type nodeKey struct{}

// forNode is h serving node's own endpoint: its calls are counted for the
// node as well.
func (h *EC2Handler) forNode(node string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), nodeKey{}, node)))
	})
}

func (h *EC2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeError(w, apiErr("MalformedQueryString", "%v", err))
		return
	}
	q := query{v: r.Form}
	action := q.str("Action")
	if action == "" {
		writeError(w, apiErr("MissingAction", "The request must contain the parameter Action"))
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		h.faults.countError("AuthFailure")
		writeError(w, apiErr("AuthFailure", "AWS was not able to validate the provided access credentials"))
		return
	}
	node, _ := r.Context().Value(nodeKey{}).(string)
	aerr, lose := h.faults.admit(node, action)
	if aerr != nil {
		h.faults.countError(aerr.Code)
		writeError(w, aerr)
		return
	}
	body, aerr := h.dispatch(action, q)
	if aerr != nil {
		h.faults.countError(aerr.Code)
		h.logf("ec2 %s: %s", action, aerr)
		writeError(w, aerr)
		return
	}
	if lose {
		// The change is made; the caller never hears of it.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	out, err := xml.Marshal(body)
	if err != nil {
		writeError(w, apiErr("InternalError", "encoding response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(out)
}

func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

type xErrorResponse struct {
	XMLName   xml.Name `xml:"Response"`
	Code      string   `xml:"Errors>Error>Code"`
	Message   string   `xml:"Errors>Error>Message"`
	RequestID string   `xml:"RequestID"`
}

func writeError(w http.ResponseWriter, e *APIError) {
	out, _ := xml.Marshal(xErrorResponse{Code: e.Code, Message: e.Message, RequestID: requestID()})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(out)
}

// ec2Actions is the endpoint's dispatch table: every action served, by name,
// to the method that serves it; any other action gets InvalidAction. The
// actions are in ec2describe.go, ec2eni.go, ec2sg.go, ec2ipv6.go,
// ec2trunk.go and ec2permission.go. Whether an action is throttled as mutating or as a describe is
// IsMutating's rule on its name, which also covers the actions not served
// (they are admitted, counted and throttled before dispatch refuses them).
var ec2Actions = map[string]func(*EC2Handler, query) (any, *APIError){
	"DescribeNetworkInterfaces":       (*EC2Handler).describeNetworkInterfaces,
	"CreateNetworkInterface":          (*EC2Handler).createNetworkInterface,
	"AttachNetworkInterface":          (*EC2Handler).attachNetworkInterface,
	"DetachNetworkInterface":          (*EC2Handler).detachNetworkInterface,
	"DeleteNetworkInterface":          (*EC2Handler).deleteNetworkInterface,
	"ModifyNetworkInterfaceAttribute": (*EC2Handler).modifyNetworkInterfaceAttribute,
	"AssignPrivateIpAddresses":        (*EC2Handler).assignPrivateIPs,
	"UnassignPrivateIpAddresses":      (*EC2Handler).unassignPrivateIPs,
	"CreateTags":                      (*EC2Handler).createTags,
	"DeleteTags":                      (*EC2Handler).deleteTags,
	"DescribeSecurityGroups":          (*EC2Handler).describeSecurityGroups,
	"CreateSecurityGroup":             (*EC2Handler).createSecurityGroup,
	"AuthorizeSecurityGroupIngress":   (*EC2Handler).authorizeIngress,
	"AssociateVpcCidrBlock":           (*EC2Handler).associateVpcCidrBlock,
	"AssociateSubnetCidrBlock":        (*EC2Handler).associateSubnetCidrBlock,
	"AssignIpv6Addresses":             (*EC2Handler).assignIPv6,
	"UnassignIpv6Addresses":           (*EC2Handler).unassignIPv6,
	"CreateSubnet":                    (*EC2Handler).createSubnet,
	"DescribeSubnets":                 (*EC2Handler).describeSubnets,
	"DescribeInstances":               (*EC2Handler).describeInstances,
	"DescribeInstanceTypes":           (*EC2Handler).describeInstanceTypes,

	"AssociateTrunkInterface":            (*EC2Handler).associateTrunkInterface,
	"DisassociateTrunkInterface":         (*EC2Handler).disassociateTrunkInterface,
	"DescribeTrunkInterfaceAssociations": (*EC2Handler).describeTrunkInterfaceAssociations,
	"CreateNetworkInterfacePermission":   (*EC2Handler).createNetworkInterfacePermission,
}

func (h *EC2Handler) dispatch(action string, q query) (any, *APIError) {
	if aerr := q.checkIDs(); aerr != nil {
		return nil, aerr
	}
	// Permission was granted (admit refuses a denied action): a dry run
	// stops here, as on EC2, having changed nothing.
	if q.str("DryRun") == "true" {
		return nil, apiErr("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	if serve, found := ec2Actions[action]; found {
		return serve(h, q)
	}
	return nil, apiErr("InvalidAction", "The action %s is not valid for this web service.", action)
}

func parseAddrs(ss []string) ([]netip.Addr, *APIError) {
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, apiErr("InvalidParameterValue", "Invalid IPv4 address: %s", s)
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, *APIError) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Bits() != 28 || p.Masked() != p {
			return nil, apiErr("InvalidParameterValue", "Invalid IPv4 prefix: %s", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// paginate applies MaxResults/NextToken (the token is an offset), with
// MaxResults 5 to 1000, as most describe actions take it.
func paginate[T any](q query, items []T) ([]T, string, *APIError) {
	return paginateUpTo(q, items, 1000)
}

// paginateUpTo is paginate for an action whose MaxResults is 5 to most.
func paginateUpTo[T any](q query, items []T, most int) ([]T, string, *APIError) {
	start := 0
	if tok := q.str("NextToken"); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", apiErr("InvalidNextToken", "The token '%s' is invalid", tok)
		}
		start = n
	}
	maxN, aerr := q.intv("MaxResults")
	if aerr != nil {
		return nil, "", aerr
	}
	if maxN == 0 {
		return items[start:], "", nil
	}
	if maxN < 5 || maxN > most {
		return nil, "", apiErr("InvalidParameterValue", "Value (%d) for parameter maxResults is invalid. Expecting a value between 5 and %d.", maxN, most)
	}
	end := min(start+maxN, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}
