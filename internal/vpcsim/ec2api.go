package vpcsim

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"log"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
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

type filter struct {
	name   string
	values []string
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
	aerr, lose := h.faults.admit(action)
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

// ------------------------------------------------------------ XML shapes

type xTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xPrivateIP struct {
	PrivateIPAddress string `xml:"privateIpAddress"`
	Primary          bool   `xml:"primary"`
}

type xPrefix struct {
	IPv4Prefix string `xml:"ipv4Prefix"`
}

type xAttachment struct {
	AttachmentID        string `xml:"attachmentId"`
	InstanceID          string `xml:"instanceId,omitempty"`
	InstanceOwnerID     string `xml:"instanceOwnerId,omitempty"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	Status              string `xml:"status"`
	AttachTime          string `xml:"attachTime,omitempty"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
}

type xENI struct {
	NetworkInterfaceID string       `xml:"networkInterfaceId"`
	SubnetID           string       `xml:"subnetId"`
	VpcID              string       `xml:"vpcId"`
	AvailabilityZone   string       `xml:"availabilityZone,omitempty"`
	Description        string       `xml:"description"`
	OwnerID            string       `xml:"ownerId,omitempty"`
	RequesterManaged   bool         `xml:"requesterManaged"`
	Status             string       `xml:"status"`
	MacAddress         string       `xml:"macAddress"`
	PrivateIPAddress   string       `xml:"privateIpAddress"`
	SourceDestCheck    bool         `xml:"sourceDestCheck"`
	InterfaceType      string       `xml:"interfaceType"`
	GroupSet           []xGroup     `xml:"groupSet>item"`
	Attachment         *xAttachment `xml:"attachment,omitempty"`
	TagSet             []xTag       `xml:"tagSet>item"`
	PrivateIPs         []xPrivateIP `xml:"privateIpAddressesSet>item"`
	IPv4Prefixes       []xPrefix    `xml:"ipv4PrefixSet>item"`
}

func tagList(m map[string]string) []xTag {
	var out []xTag
	for k, v := range m {
		out = append(out, xTag{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (h *EC2Handler) xmlENI(d eniDetail) xENI {
	x := xENI{NetworkInterfaceID: d.ID, SubnetID: d.SubnetID, VpcID: d.VPCID, AvailabilityZone: d.AZ,
		Description: d.Description, OwnerID: h.cloud.account, Status: d.Status, MacAddress: d.MAC,
		PrivateIPAddress: d.PrimaryIP.String(), SourceDestCheck: true, InterfaceType: "interface", TagSet: tagList(d.Tags)}
	for _, g := range d.Groups {
		x.GroupSet = append(x.GroupSet, xGroup{GroupID: g, GroupName: g})
	}
	x.PrivateIPs = append(x.PrivateIPs, xPrivateIP{PrivateIPAddress: d.PrimaryIP.String(), Primary: true})
	for _, a := range d.Secondary {
		x.PrivateIPs = append(x.PrivateIPs, xPrivateIP{PrivateIPAddress: a.String()})
	}
	for _, p := range d.Prefixes {
		x.IPv4Prefixes = append(x.IPv4Prefixes, xPrefix{IPv4Prefix: p.String()})
	}
	if d.AttachmentID != "" {
		x.Attachment = &xAttachment{AttachmentID: d.AttachmentID, InstanceID: d.InstanceID, InstanceOwnerID: h.cloud.account,
			DeviceIndex: d.DeviceIndex, Status: "attached", AttachTime: d.AttachTime, DeleteOnTermination: d.DeleteOnTermination}
	}
	return x
}

type xDescribeNetworkInterfaces struct {
	XMLName   xml.Name `xml:"DescribeNetworkInterfacesResponse"`
	XMLNS     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	Set       []xENI   `xml:"networkInterfaceSet>item"`
	NextToken string   `xml:"nextToken,omitempty"`
}

type xCreateNetworkInterface struct {
	XMLName     xml.Name `xml:"CreateNetworkInterfaceResponse"`
	XMLNS       string   `xml:"xmlns,attr"`
	RequestID   string   `xml:"requestId"`
	ENI         xENI     `xml:"networkInterface"`
	ClientToken string   `xml:"clientToken,omitempty"`
}

type xAttach struct {
	XMLName          xml.Name `xml:"AttachNetworkInterfaceResponse"`
	XMLNS            string   `xml:"xmlns,attr"`
	RequestID        string   `xml:"requestId"`
	AttachmentID     string   `xml:"attachmentId"`
	NetworkCardIndex int      `xml:"networkCardIndex"`
}

type xAssign struct {
	XMLName            xml.Name `xml:"AssignPrivateIpAddressesResponse"`
	XMLNS              string   `xml:"xmlns,attr"`
	RequestID          string   `xml:"requestId"`
	NetworkInterfaceID string   `xml:"networkInterfaceId"`
	Assigned           []struct {
		PrivateIPAddress string `xml:"privateIpAddress"`
	} `xml:"assignedPrivateIpAddressesSet>item"`
	Prefixes []xPrefix `xml:"assignedIpv4PrefixSet>item"`
}

type xReturn struct {
	XMLName   xml.Name
	XMLNS     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
	Return    bool   `xml:"return"`
}

func ok(action string) xReturn {
	return xReturn{XMLName: xml.Name{Local: action + "Response"}, XMLNS: ec2XMLNS, RequestID: requestID(), Return: true}
}

type xSubnet struct {
	SubnetID                string `xml:"subnetId"`
	SubnetArn               string `xml:"subnetArn"`
	State                   string `xml:"state"`
	VpcID                   string `xml:"vpcId"`
	OwnerID                 string `xml:"ownerId"`
	CidrBlock               string `xml:"cidrBlock"`
	AvailableIPAddressCount int    `xml:"availableIpAddressCount"`
	AvailabilityZone        string `xml:"availabilityZone"`
	DefaultForAz            bool   `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool   `xml:"mapPublicIpOnLaunch"`
	TagSet                  []xTag `xml:"tagSet>item"`
}

type xDescribeSubnets struct {
	XMLName   xml.Name  `xml:"DescribeSubnetsResponse"`
	XMLNS     string    `xml:"xmlns,attr"`
	RequestID string    `xml:"requestId"`
	Set       []xSubnet `xml:"subnetSet>item"`
	NextToken string    `xml:"nextToken,omitempty"`
}

type xNetworkCard struct {
	NetworkCardIndex         int `xml:"networkCardIndex"`
	MaximumNetworkInterfaces int `xml:"maximumNetworkInterfaces"`
}

type xInstanceType struct {
	InstanceType string `xml:"instanceType"`
	Hypervisor   string `xml:"hypervisor,omitempty"`
	BareMetal    bool   `xml:"bareMetal"`
	NetworkInfo  struct {
		MaximumNetworkInterfaces  int            `xml:"maximumNetworkInterfaces"`
		IPv4AddressesPerInterface int            `xml:"ipv4AddressesPerInterface"`
		MaximumNetworkCards       int            `xml:"maximumNetworkCards"`
		DefaultNetworkCardIndex   int            `xml:"defaultNetworkCardIndex"`
		NetworkCards              []xNetworkCard `xml:"networkCards>item"`
	} `xml:"networkInfo"`
}

type xDescribeInstanceTypes struct {
	XMLName   xml.Name        `xml:"DescribeInstanceTypesResponse"`
	XMLNS     string          `xml:"xmlns,attr"`
	RequestID string          `xml:"requestId"`
	Set       []xInstanceType `xml:"instanceTypeSet>item"`
	NextToken string          `xml:"nextToken,omitempty"`
}

type xInstanceENI struct {
	NetworkInterfaceID string       `xml:"networkInterfaceId"`
	SubnetID           string       `xml:"subnetId"`
	VpcID              string       `xml:"vpcId"`
	OwnerID            string       `xml:"ownerId"`
	Status             string       `xml:"status"`
	MacAddress         string       `xml:"macAddress"`
	PrivateIPAddress   string       `xml:"privateIpAddress"`
	SourceDestCheck    bool         `xml:"sourceDestCheck"`
	InterfaceType      string       `xml:"interfaceType"`
	GroupSet           []xGroup     `xml:"groupSet>item"`
	Attachment         xAttachment  `xml:"attachment"`
	PrivateIPs         []xPrivateIP `xml:"privateIpAddressesSet>item"`
	IPv4Prefixes       []xPrefix    `xml:"ipv4PrefixSet>item"`
}

type xInstance struct {
	InstanceID    string `xml:"instanceId"`
	ImageID       string `xml:"imageId"`
	InstanceState struct {
		Code int    `xml:"code"`
		Name string `xml:"name"`
	} `xml:"instanceState"`
	PrivateIPAddress string `xml:"privateIpAddress"`
	InstanceType     string `xml:"instanceType"`
	LaunchTime       string `xml:"launchTime"`
	Placement        struct {
		AvailabilityZone string `xml:"availabilityZone"`
	} `xml:"placement"`
	SubnetID     string         `xml:"subnetId"`
	VpcID        string         `xml:"vpcId"`
	Architecture string         `xml:"architecture"`
	Hypervisor   string         `xml:"hypervisor"`
	TagSet       []xTag         `xml:"tagSet>item"`
	ENIs         []xInstanceENI `xml:"networkInterfaceSet>item"`
}

type xReservation struct {
	ReservationID string      `xml:"reservationId"`
	OwnerID       string      `xml:"ownerId"`
	Instances     []xInstance `xml:"instancesSet>item"`
}

type xDescribeInstances struct {
	XMLName      xml.Name       `xml:"DescribeInstancesResponse"`
	XMLNS        string         `xml:"xmlns,attr"`
	RequestID    string         `xml:"requestId"`
	Reservations []xReservation `xml:"reservationSet>item"`
}

// -------------------------------------------------------------- dispatch

func (h *EC2Handler) dispatch(action string, q query) (any, *APIError) {
	switch action {
	case "DescribeNetworkInterfaces":
		return h.describeNetworkInterfaces(q)
	case "CreateNetworkInterface":
		return h.createNetworkInterface(q)
	case "AttachNetworkInterface":
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
	case "DetachNetworkInterface":
		if aerr := h.cloud.DetachNetworkInterface(q.str("AttachmentId")); aerr != nil {
			return nil, aerr
		}
		return ok(action), nil
	case "DeleteNetworkInterface":
		if aerr := h.cloud.DeleteNetworkInterface(q.str("NetworkInterfaceId")); aerr != nil {
			return nil, aerr
		}
		return ok(action), nil
	case "ModifyNetworkInterfaceAttribute":
		return h.modifyNetworkInterfaceAttribute(q)
	case "AssignPrivateIpAddresses":
		return h.assignPrivateIPs(q)
	case "UnassignPrivateIpAddresses":
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
		return ok(action), nil
	case "CreateTags":
		if aerr := h.cloud.CreateTags(q.list("ResourceId"), q.tags("Tag")); aerr != nil {
			return nil, aerr
		}
		return ok(action), nil
	case "DeleteTags":
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
		return ok(action), nil
	case "DescribeSubnets":
		return h.describeSubnets(q)
	case "DescribeInstances":
		return h.describeInstances(q)
	case "DescribeInstanceTypes":
		return h.describeInstanceTypes(q)
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

// paginate applies MaxResults/NextToken (the token is an offset).
func paginate[T any](q query, items []T) ([]T, string, *APIError) {
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
	if maxN < 5 || maxN > 1000 {
		return nil, "", apiErr("InvalidParameterValue", "Value (%d) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", maxN)
	}
	end := min(start+maxN, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return items[start:end], next, nil
}

func matchAny(v string, vals []string) bool {
	for _, x := range vals {
		if x == v || x == "*" {
			return true
		}
	}
	return false
}

func matchTags(f filter, tags map[string]string) (bool, bool) {
	switch {
	case f.name == "tag-key":
		for k := range tags {
			if matchAny(k, f.values) {
				return true, true
			}
		}
		return false, true
	case strings.HasPrefix(f.name, "tag:"):
		v, has := tags[strings.TrimPrefix(f.name, "tag:")]
		return has && matchAny(v, f.values), true
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
		if inst != nil && (e.Attachment == nil || !matchAny(e.Attachment.InstanceID, inst)) {
			return false
		}
		for k, vs := range tags {
			if v, ok := e.Tags[k]; !ok || !matchAny(v, vs) {
				return false
			}
		}
		return status == nil || matchAny(e.Status(), status)
	}
}

func (h *EC2Handler) describeNetworkInterfaces(q query) (any, *APIError) {
	ids := q.list("NetworkInterfaceId")
	all := h.cloud.eniDetails(preselect(ids, q.filters()))
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
	filters := q.filters()
	var out []xENI
	for _, d := range cand {
		keep := true
		for _, f := range filters {
			var m bool
			switch f.name {
			case "attachment.instance-id":
				m = d.InstanceID != "" && matchAny(d.InstanceID, f.values)
			case "attachment.attachment-id":
				m = d.AttachmentID != "" && matchAny(d.AttachmentID, f.values)
			case "attachment.device-index":
				m = d.AttachmentID != "" && matchAny(strconv.Itoa(d.DeviceIndex), f.values)
			case "status":
				m = matchAny(d.Status, f.values)
			case "vpc-id":
				m = matchAny(d.VPCID, f.values)
			case "subnet-id":
				m = matchAny(d.SubnetID, f.values)
			case "network-interface-id":
				m = matchAny(d.ID, f.values)
			case "description":
				m = matchAny(d.Description, f.values)
			case "mac-address":
				m = matchAny(d.MAC, f.values)
			case "availability-zone":
				m = matchAny(d.AZ, f.values)
			default:
				var known bool
				m, known = matchTags(f, d.Tags)
				if !known {
					return nil, apiErr("InvalidParameterValue", "The filter '%s' is invalid", f.name)
				}
			}
			if !m {
				keep = false
				break
			}
		}
		if keep {
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

func (h *EC2Handler) createNetworkInterface(q query) (any, *APIError) {
	if q.str("SubnetId") == "" {
		return nil, apiErr("MissingParameter", "The request must contain the parameter SubnetId")
	}
	in := createENIInput{SubnetID: q.str("SubnetId"), Groups: q.list("SecurityGroupId"), Description: q.str("Description"),
		ClientToken: q.str("ClientToken"), Tags: map[string]string{}}
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
	v, aerr := h.cloud.CreateNetworkInterface(in)
	if aerr != nil {
		return nil, aerr
	}
	d := eniDetail{ENIView: v, Description: in.Description}
	if s, found := h.subnet(v.SubnetID); found {
		d.AZ = s.AZ
	}
	return xCreateNetworkInterface{XMLNS: ec2XMLNS, RequestID: requestID(), ENI: h.xmlENI(d), ClientToken: in.ClientToken}, nil
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
	if q.str("SourceDestCheck.Value") != "" || q.str("Description.Value") != "" {
		if _, found := h.cloud.ENI(id); !found {
			return nil, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		}
		changed = true // accepted; the simulator always enforces the check
	}
	if !changed {
		if _, found := h.cloud.ENI(id); !found {
			return nil, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", id)
		}
		return nil, apiErr("MissingParameter", "An attribute to modify is required")
	}
	return ok("ModifyNetworkInterfaceAttribute"), nil
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

func (h *EC2Handler) describeSubnets(q query) (any, *APIError) {
	ids := q.list("SubnetId")
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
		keep := true
		for _, f := range q.filters() {
			var m bool
			switch f.name {
			case "vpc-id":
				m = matchAny(s.VPCID, f.values)
			case "availability-zone":
				m = matchAny(s.AZ, f.values)
			case "subnet-id":
				m = matchAny(s.ID, f.values)
			case "cidr-block", "cidrBlock", "cidr":
				m = matchAny(s.CIDR.String(), f.values)
			case "state":
				m = matchAny("available", f.values)
			default:
				var known bool
				m, known = matchTags(f, s.Tags)
				if !known {
					return nil, apiErr("InvalidParameterValue", "The filter '%s' is invalid", f.name)
				}
			}
			if !m {
				keep = false
				break
			}
		}
		if keep {
			out = append(out, xSubnet{SubnetID: s.ID, SubnetArn: "arn:aws:ec2:" + h.cloud.region + ":" + h.cloud.account + ":subnet/" + s.ID,
				State: "available", VpcID: s.VPCID, OwnerID: h.cloud.account, CidrBlock: s.CIDR.String(),
				AvailableIPAddressCount: s.Available, AvailabilityZone: s.AZ, TagSet: tagList(s.Tags)})
		}
	}
	page, next, aerr := paginate(q, out)
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeSubnets{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}

func (h *EC2Handler) describeInstances(q query) (any, *APIError) {
	ids := q.list("InstanceId")
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
		keep := true
		for _, f := range q.filters() {
			var m bool
			switch f.name {
			case "instance-id":
				m = matchAny(i.InstanceID, f.values)
			case "instance-type":
				m = matchAny(i.InstanceType, f.values)
			case "vpc-id":
				m = matchAny(i.VPCID, f.values)
			case "instance-state-name":
				m = matchAny("running", f.values)
			default:
				var isTag bool
				m, isTag = matchTags(f, i.Tags)
				if !isTag {
					return nil, apiErr("InvalidParameterValue", "The filter '%s' is invalid", f.name)
				}
			}
			if !m {
				keep = false
				break
			}
		}
		if !keep {
			continue
		}
		x := xInstance{InstanceID: i.InstanceID, ImageID: i.ImageID, PrivateIPAddress: i.PrimaryIP.String(),
			InstanceType: i.InstanceType, LaunchTime: i.Launched.UTC().Format("2006-01-02T15:04:05.000Z"),
			SubnetID: i.SubnetID, VpcID: i.VPCID, Architecture: "x86_64", Hypervisor: hypervisorName(i.Hypervisor), TagSet: tagList(i.Tags)}
		x.InstanceState.Code, x.InstanceState.Name = 16, "running"
		x.Placement.AvailabilityZone = i.AZ
		for _, e := range i.ENIs {
			d := details[e.ID]
			xe := h.xmlENI(d)
			x.ENIs = append(x.ENIs, xInstanceENI{NetworkInterfaceID: xe.NetworkInterfaceID, SubnetID: xe.SubnetID, VpcID: xe.VpcID,
				OwnerID: xe.OwnerID, Status: xe.Status, MacAddress: xe.MacAddress, PrivateIPAddress: xe.PrivateIPAddress,
				SourceDestCheck: true, InterfaceType: "interface", GroupSet: xe.GroupSet, Attachment: *xe.Attachment,
				PrivateIPs: xe.PrivateIPs, IPv4Prefixes: xe.IPv4Prefixes})
		}
		res = append(res, xReservation{ReservationID: "r-" + strings.TrimPrefix(i.InstanceID, "i-"), OwnerID: h.cloud.account, Instances: []xInstance{x}})
	}
	return xDescribeInstances{XMLNS: ec2XMLNS, RequestID: requestID(), Reservations: res}, nil
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
		x.NetworkInfo.MaximumNetworkInterfaces = l.MaxENIs
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
	page, next, aerr := paginate(q, out)
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeInstanceTypes{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}

var _ = log.Printf
