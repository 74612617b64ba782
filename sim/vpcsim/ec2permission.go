// CreateNetworkInterfacePermission: AWS's VPC resource controller grants
// INSTANCE-ATTACH on each trunk and branch ENI it creates before attaching
// or associating it.

package vpcsim

import "encoding/xml"

// InterfacePermission is EC2's NetworkInterfacePermission.
type InterfacePermission struct {
	ID, ENIID, Account, Permission, State string
}

type xInterfacePermission struct {
	ID         string `xml:"networkInterfacePermissionId"`
	ENIID      string `xml:"networkInterfaceId"`
	Account    string `xml:"awsAccountId"`
	Permission string `xml:"permission"`
	State      string `xml:"permissionState>state"`
}

type xCreateNetworkInterfacePermission struct {
	XMLName    xml.Name             `xml:"CreateNetworkInterfacePermissionResponse"`
	XMLNS      string               `xml:"xmlns,attr"`
	RequestID  string               `xml:"requestId"`
	Permission xInterfacePermission `xml:"interfacePermission"`
}

// createNetworkInterfacePermission follows EC2's API reference: the
// NetworkInterfaceId and Permission (INSTANCE-ATTACH or EIP-ASSOCIATE) are
// required, AwsAccountId is optional (the caller's account when absent, as
// the controller sends it) and AwsService "currently not supported".
func (h *EC2Handler) createNetworkInterfacePermission(q query) (any, *APIError) {
	for _, k := range []string{"NetworkInterfaceId", "Permission"} {
		if aerr := q.required(k); aerr != nil {
			return nil, aerr
		}
	}
	if q.str("AwsService") != "" {
		return nil, apiErr("InvalidParameterValue", "The parameter AwsService is not supported")
	}
	p, aerr := h.cloud.CreateInterfacePermission(q.str("NetworkInterfaceId"), q.str("AwsAccountId"), q.str("Permission"))
	if aerr != nil {
		return nil, aerr
	}
	return xCreateNetworkInterfacePermission{XMLNS: ec2XMLNS, RequestID: requestID(), Permission: xInterfacePermission{
		ID: p.ID, ENIID: p.ENIID, Account: p.Account, Permission: p.Permission, State: p.State}}, nil
}

// CreateInterfacePermission grants account (the region's own when "")
// permission on the ENI; it is granted at once and lives as long as the
// ENI. The simulator has one account, so the grant changes nothing else.
func (c *Cloud) CreateInterfacePermission(eniID, account, permission string) (InterfacePermission, *APIError) {
	if permission != "INSTANCE-ATTACH" && permission != "EIP-ASSOCIATE" {
		return InterfacePermission{}, apiErr("InvalidParameterValue",
			"Value (%s) for parameter permission is invalid. Valid values: INSTANCE-ATTACH, EIP-ASSOCIATE", permission)
	}
	if account == "" {
		account = c.account
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.enis[eniID]
	if !found {
		return InterfacePermission{}, apiErr("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID '%s' does not exist", eniID)
	}
	p := InterfacePermission{ID: newID("eni-perm"), ENIID: e.ID, Account: account, Permission: permission, State: "granted"}
	e.permissions = append(e.permissions, p)
	return p, nil
}

// InterfacePermissions are the permissions granted on an ENI.
func (c *Cloud) InterfacePermissions(eniID string) []InterfacePermission {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.enis[eniID]; e != nil {
		return append([]InterfacePermission(nil), e.permissions...)
	}
	return nil
}
