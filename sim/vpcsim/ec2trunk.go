// The EC2 actions of ENI trunking: AssociateTrunkInterface,
// DisassociateTrunkInterface and DescribeTrunkInterfaceAssociations.

package vpcsim

import (
	"encoding/xml"
	"strconv"
)

// xTrunkAssociation is EC2's TrunkInterfaceAssociation: vlanId with the
// VLAN protocol, greKey with GRE.
type xTrunkAssociation struct {
	AssociationID     string `xml:"associationId"`
	BranchInterfaceID string `xml:"branchInterfaceId"`
	TrunkInterfaceID  string `xml:"trunkInterfaceId"`
	InterfaceProtocol string `xml:"interfaceProtocol"`
	VlanID            *int   `xml:"vlanId,omitempty"`
	GreKey            *int   `xml:"greKey,omitempty"`
}

func xmlTrunkAssociation(a TrunkAssociation) xTrunkAssociation {
	x := xTrunkAssociation{AssociationID: a.ID, BranchInterfaceID: a.BranchID, TrunkInterfaceID: a.TrunkID, InterfaceProtocol: a.Protocol}
	if a.Protocol == "VLAN" {
		x.VlanID = &a.VLANID
	} else {
		x.GreKey = &a.GREKey
	}
	return x
}

type xAssociateTrunkInterface struct {
	XMLName     xml.Name          `xml:"AssociateTrunkInterfaceResponse"`
	XMLNS       string            `xml:"xmlns,attr"`
	RequestID   string            `xml:"requestId"`
	Association xTrunkAssociation `xml:"interfaceAssociation"`
	ClientToken string            `xml:"clientToken,omitempty"`
}

type xDisassociateTrunkInterface struct {
	XMLName     xml.Name `xml:"DisassociateTrunkInterfaceResponse"`
	XMLNS       string   `xml:"xmlns,attr"`
	RequestID   string   `xml:"requestId"`
	Return      bool     `xml:"return"`
	ClientToken string   `xml:"clientToken,omitempty"`
}

type xDescribeTrunkInterfaceAssociations struct {
	XMLName   xml.Name            `xml:"DescribeTrunkInterfaceAssociationsResponse"`
	XMLNS     string              `xml:"xmlns,attr"`
	RequestID string              `xml:"requestId"`
	Set       []xTrunkAssociation `xml:"interfaceAssociationSet>item"`
	NextToken string              `xml:"nextToken,omitempty"`
}

// optInt reads an optional integer parameter: nil when absent.
func (q query) optInt(k string) (*int, *APIError) {
	if _, given := q.v[k]; !given {
		return nil, nil
	}
	n, err := strconv.Atoi(q.str(k))
	if err != nil {
		return nil, apiErr("InvalidParameterValue", "Invalid value '%s' for %s", q.str(k), k)
	}
	return &n, nil
}

// checkAssociationIDs refuses an association ID not of EC2's form
// (trunk-assoc- and 8 or 17 hex digits) before any lookup, as validate.go
// does for the other resource IDs. The parameter is checked here, not
// there: other EC2 actions name other associations AssociationId.
func checkAssociationIDs(ids ...string) *APIError {
	for _, id := range ids {
		if !wellFormed(id, "trunk-assoc") {
			return apiErr("InvalidAssociationID.Malformed", "Invalid id: \"%s\" (expecting \"trunk-assoc-...\")", id)
		}
	}
	return nil
}

func (h *EC2Handler) associateTrunkInterface(q query) (any, *APIError) {
	if aerr := q.required("BranchInterfaceId", "TrunkInterfaceId"); aerr != nil {
		return nil, aerr
	}
	in := AssociateTrunkInput{BranchID: q.str("BranchInterfaceId"), TrunkID: q.str("TrunkInterfaceId"), ClientToken: q.str("ClientToken")}
	var aerr *APIError
	if in.VLANID, aerr = q.optInt("VlanId"); aerr != nil {
		return nil, aerr
	}
	if in.GREKey, aerr = q.optInt("GreKey"); aerr != nil {
		return nil, aerr
	}
	a, aerr := h.cloud.AssociateTrunkInterface(in)
	if aerr != nil {
		return nil, aerr
	}
	return xAssociateTrunkInterface{XMLNS: ec2XMLNS, RequestID: requestID(), Association: xmlTrunkAssociation(a), ClientToken: in.ClientToken}, nil
}

func (h *EC2Handler) disassociateTrunkInterface(q query) (any, *APIError) {
	if aerr := q.required("AssociationId"); aerr != nil {
		return nil, aerr
	}
	id := q.str("AssociationId")
	if aerr := checkAssociationIDs(id); aerr != nil {
		return nil, aerr
	}
	if aerr := h.cloud.DisassociateTrunkInterface(id, q.str("ClientToken")); aerr != nil {
		return nil, aerr
	}
	return xDisassociateTrunkInterface{XMLNS: ec2XMLNS, RequestID: requestID(), Return: true, ClientToken: q.str("ClientToken")}, nil
}

// trunkAssociationFilters are DescribeTrunkInterfaceAssociations' filters:
// the API reference's gre-key and interface-protocol, and
// trunk-interface-association.trunk-interface-id, which AWS's VPC resource
// controller gives to list one trunk's branches.
var trunkAssociationFilters = filterTable[TrunkAssociation]{
	fields: map[string]func(TrunkAssociation) []string{
		"gre-key": func(a TrunkAssociation) []string {
			if a.Protocol != "GRE" {
				return nil
			}
			return []string{strconv.Itoa(a.GREKey)}
		},
		"interface-protocol":                             func(a TrunkAssociation) []string { return one(a.Protocol) },
		"trunk-interface-association.trunk-interface-id": func(a TrunkAssociation) []string { return one(a.TrunkID) },
	},
	// An association carries no tags here: AssociateTrunkInterface takes
	// none.
	tags: func(TrunkAssociation) map[string]string { return nil },
}

func (h *EC2Handler) describeTrunkInterfaceAssociations(q query) (any, *APIError) {
	ids := q.list("AssociationId")
	if aerr := checkAssociationIDs(ids...); aerr != nil {
		return nil, aerr
	}
	filters := q.filters()
	if aerr := trunkAssociationFilters.check(filters); aerr != nil {
		return nil, aerr
	}
	all := h.cloud.TrunkAssociations()
	known := map[string]bool{}
	for _, a := range all {
		known[a.ID] = true
	}
	for _, id := range ids {
		if !known[id] {
			return nil, apiErr("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
		}
	}
	var out []xTrunkAssociation
	for _, a := range all {
		if len(ids) > 0 && !matchAny(a.ID, ids) || !trunkAssociationFilters.match(filters, a) {
			continue
		}
		out = append(out, xmlTrunkAssociation(a))
	}
	page, next, aerr := paginateUpTo(q, out, 255) // DescribeTrunkInterfaceAssociations' MaxResults is 5 to 255
	if aerr != nil {
		return nil, aerr
	}
	return xDescribeTrunkInterfaceAssociations{XMLNS: ec2XMLNS, RequestID: requestID(), Set: page, NextToken: next}, nil
}
