// The XML shapes of the EC2 Query API responses the simulator writes.

package vpcsim

import (
	"encoding/xml"
	"sort"
)

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
	IPv6Addresses      []xIPv6      `xml:"ipv6AddressesSet>item"`
	IPv6Prefixes       []xPrefix6   `xml:"ipv6PrefixSet>item"`
}

type xIPv6 struct {
	IPv6Address string `xml:"ipv6Address"`
}

type xPrefix6 struct {
	IPv6Prefix string `xml:"ipv6Prefix"`
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
		PrivateIPAddress: d.PrimaryIP.String(), SourceDestCheck: d.SourceDestCheck, InterfaceType: d.InterfaceType, TagSet: tagList(d.Tags)}
	for i, g := range d.Groups {
		x.GroupSet = append(x.GroupSet, xGroup{GroupID: g, GroupName: d.GroupNames[i]})
	}
	x.PrivateIPs = append(x.PrivateIPs, xPrivateIP{PrivateIPAddress: d.PrimaryIP.String(), Primary: true})
	for _, a := range d.Secondary {
		x.PrivateIPs = append(x.PrivateIPs, xPrivateIP{PrivateIPAddress: a.String()})
	}
	for _, p := range d.Prefixes {
		x.IPv4Prefixes = append(x.IPv4Prefixes, xPrefix{IPv4Prefix: p.String()})
	}
	for _, a := range d.IPv6s {
		x.IPv6Addresses = append(x.IPv6Addresses, xIPv6{IPv6Address: a.String()})
	}
	for _, p := range d.IPv6Prefixes {
		x.IPv6Prefixes = append(x.IPv6Prefixes, xPrefix6{IPv6Prefix: p.String()})
	}
	if d.AttachmentID != "" {
		x.Attachment = &xAttachment{AttachmentID: d.AttachmentID, InstanceID: d.InstanceID, InstanceOwnerID: h.cloud.account,
			DeviceIndex: d.DeviceIndex, NetworkCardIndex: d.NetworkCard, Status: "attached", AttachTime: d.AttachTime, DeleteOnTermination: d.DeleteOnTermination}
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
	SubnetID                string             `xml:"subnetId"`
	SubnetArn               string             `xml:"subnetArn"`
	State                   string             `xml:"state"`
	VpcID                   string             `xml:"vpcId"`
	OwnerID                 string             `xml:"ownerId"`
	CidrBlock               string             `xml:"cidrBlock"`
	AvailableIPAddressCount int                `xml:"availableIpAddressCount"`
	AvailabilityZone        string             `xml:"availabilityZone"`
	DefaultForAz            bool               `xml:"defaultForAz"`
	MapPublicIPOnLaunch     bool               `xml:"mapPublicIpOnLaunch"`
	TagSet                  []xTag             `xml:"tagSet>item"`
	IPv6Associations        []xIPv6Association `xml:"ipv6CidrBlockAssociationSet>item"`
}

// xIPv6Association is a subnet's or VPC's IPv6 CIDR block association.
type xIPv6Association struct {
	AssociationID string `xml:"associationId"`
	IPv6CidrBlock string `xml:"ipv6CidrBlock"`
	State         string `xml:"ipv6CidrBlockState>state"`
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
	GroupSet     []xGroup       `xml:"groupSet>item"`
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
	NextToken    string         `xml:"nextToken,omitempty"`
}
