package imds

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// node is a metadata resource: a leaf with a value, or a directory whose
// listing names its children in order, sub-directories ending in "/".
type node struct {
	value    string
	names    []string
	children map[string]*node
	// dynamic, if set, renders the value at each GET (credentials that
	// expire).
	dynamic func() string
}

func leaf(v string) *node            { return &node{value: v} }
func lines(v []string) *node         { return leaf(strings.Join(v, "\n")) }
func dir() *node                     { return &node{children: make(map[string]*node)} }
func (n *node) isDir() bool          { return n.children != nil }
func (n *node) child(k string) *node { return n.children[k] }

func (n *node) add(name string, c *node) *node {
	if _, dup := n.children[name]; !dup {
		n.names = append(n.names, name)
	}
	n.children[name] = c
	return n
}

// body is what a GET of n returns.
func (n *node) body() string {
	if n.dynamic != nil {
		return n.dynamic()
	}
	if !n.isDir() {
		return n.value
	}
	var b strings.Builder
	for i, name := range n.names {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(name)
		if n.children[name].isDir() {
			b.WriteByte('/')
		}
	}
	return b.String()
}

// lookup walks path components from n; empty components are ignored, so
// directories answer with or without a trailing slash.
func (n *node) lookup(path string) *node {
	for _, p := range strings.Split(path, "/") {
		if p == "" {
			continue
		}
		if !n.isDir() {
			return nil
		}
		if n = n.child(p); n == nil {
			return nil
		}
	}
	return n
}

// privateDNSName is EC2's IP-based private DNS name of a private IPv4
// address (the default hostname type of a subnet): ip-10-0-0-5.ec2.internal
// in us-east-1, ip-10-0-0-5.<region>.compute.internal elsewhere.
func privateDNSName(ip, region string) string {
	host := "ip-" + strings.ReplaceAll(ip, ".", "-")
	if region == "us-east-1" {
		return host + ".ec2.internal"
	}
	return host + "." + region + ".compute.internal"
}

// identityDocument is the shape of /latest/dynamic/instance-identity/document.
type identityDocument struct {
	AccountID               string    `json:"accountId"`
	Architecture            string    `json:"architecture"`
	AvailabilityZone        string    `json:"availabilityZone"`
	BillingProducts         []string  `json:"billingProducts"`
	DevpayProductCodes      []string  `json:"devpayProductCodes"`
	MarketplaceProductCodes []string  `json:"marketplaceProductCodes"`
	ImageID                 string    `json:"imageId"`
	InstanceID              string    `json:"instanceId"`
	InstanceType            string    `json:"instanceType"`
	KernelID                *string   `json:"kernelId"`
	PendingTime             time.Time `json:"pendingTime"`
	PrivateIP               string    `json:"privateIp"`
	RamdiskID               *string   `json:"ramdiskId"`
	Region                  string    `json:"region"`
	Version                 string    `json:"version"`
}

func identityDocumentJSON(m *Metadata) string {
	b, err := json.MarshalIndent(identityDocument{
		AccountID:        m.AccountID,
		Architecture:     m.Architecture,
		AvailabilityZone: m.AZ,
		ImageID:          m.ImageID,
		InstanceID:       m.InstanceID,
		InstanceType:     m.InstanceType,
		PendingTime:      m.PendingTime.UTC(),
		PrivateIP:        m.LocalIPv4,
		Region:           m.Region,
		Version:          IdentityDocumentVersion,
	}, "", "  ")
	if err != nil { // cannot happen: plain strings and a time
		panic(err)
	}
	return string(b)
}

// buildTree renders a normalized Metadata into the resource tree served from
// the root ("/").
func buildTree(m *Metadata) *node {
	macs := dir()
	for i := range m.ENIs {
		e := &m.ENIs[i]
		d := dir().
			add("device-number", leaf(strconv.Itoa(e.DeviceNumber))).
			add("interface-id", leaf(e.InterfaceID))
		if len(e.IPv4Prefixes) > 0 {
			d.add("ipv4-prefix", lines(e.IPv4Prefixes))
		}
		if len(e.IPv6Prefixes) > 0 {
			d.add("ipv6-prefix", lines(e.IPv6Prefixes))
		}
		if len(e.IPv6s) > 0 {
			d.add("ipv6s", lines(e.IPv6s))
		}
		if e.SubnetIPv6CIDR != "" {
			d.add("subnet-ipv6-cidr-blocks", lines([]string{e.SubnetIPv6CIDR}))
		}
		if len(m.VPCIPv6CIDRs) > 0 {
			d.add("vpc-ipv6-cidr-blocks", lines(m.VPCIPv6CIDRs))
		}
		if len(e.LocalIPv4s) > 0 {
			d.add("local-hostname", leaf(privateDNSName(e.LocalIPv4s[0], m.Region)))
		}
		d.add("local-ipv4s", lines(e.LocalIPv4s)).
			add("mac", leaf(e.MAC)).
			add("network-card", leaf(strconv.Itoa(e.NetworkCard))).
			add("owner-id", leaf(m.AccountID)).
			add("security-group-ids", lines(e.SecurityGroupIDs)).
			add("subnet-id", leaf(e.SubnetID)).
			add("subnet-ipv4-cidr-block", leaf(e.SubnetCIDR)).
			add("vpc-id", leaf(e.VPCID))
		if len(m.VPCCIDRs) > 0 {
			d.add("vpc-ipv4-cidr-block", leaf(m.VPCCIDRs[0]))
		}
		d.add("vpc-ipv4-cidr-blocks", lines(m.VPCCIDRs))
		macs.add(e.MAC, d)
	}

	metaData := dir().
		add("ami-id", leaf(m.ImageID)).
		add("hostname", leaf(privateDNSName(m.LocalIPv4, m.Region))).
		add("instance-id", leaf(m.InstanceID)).
		add("instance-type", leaf(m.InstanceType)).
		add("local-hostname", leaf(privateDNSName(m.LocalIPv4, m.Region))).
		add("local-ipv4", leaf(m.LocalIPv4)).
		add("mac", leaf(m.MAC)).
		add("network", dir().add("interfaces", dir().add("macs", macs))).
		add("placement", dir().
			add("availability-zone", leaf(m.AZ)).
			add("region", leaf(m.Region)))

	if m.InstanceProfile != "" {
		metaData.add("iam", iamTree(m))
	}
	// ipv6: the primary ENI's first IPv6 address, when it has one.
	for _, e := range m.ENIs {
		if e.MAC == m.MAC && len(e.IPv6s) > 0 {
			metaData.add("ipv6", leaf(e.IPv6s[0]))
		}
	}

	dynamic := dir().add("instance-identity", dir().
		add("document", leaf(identityDocumentJSON(m))))

	latest := dir().
		add("dynamic", dynamic).
		add("meta-data", metaData)
	return dir().add("latest", latest)
}

// CredentialsLifetime is how long the instance profile's credentials IMDS
// hands out stay valid (EC2 rotates them hours before they expire).
const CredentialsLifetime = 6 * time.Hour

// iamTree is the instance profile's part: iam/info and
// iam/security-credentials/<role>, whose temporary credentials are issued
// at each GET, as EC2's rotate, so an SDK's instance-role provider never
// holds expired ones. The simulator's EC2 checks only that a request is
// signed, so any key works.
func iamTree(m *Metadata) *node {
	info, _ := json.MarshalIndent(map[string]string{
		"Code": "Success", "LastUpdated": m.PendingTime.UTC().Format(time.RFC3339),
		"InstanceProfileArn": "arn:aws:iam::" + m.AccountID + ":instance-profile/" + m.InstanceProfile,
		"InstanceProfileId":  "AIPA" + strings.ToUpper(strings.TrimPrefix(m.InstanceID, "i-")),
	}, "", "  ")
	creds := &node{dynamic: func() string {
		now := time.Now().UTC().Truncate(time.Second)
		b, _ := json.MarshalIndent(map[string]string{
			"Code": "Success", "LastUpdated": now.Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId":     "ASIA" + strings.ToUpper(strings.TrimPrefix(m.InstanceID, "i-")),
			"SecretAccessKey": "vpcsim-instance-profile-secret", "Token": "vpcsim-session-" + m.InstanceID,
			"Expiration": now.Add(CredentialsLifetime).Format(time.RFC3339),
		}, "", "  ")
		return string(b)
	}}
	return dir().
		add("info", leaf(string(info))).
		add("security-credentials", dir().add(m.InstanceProfile, creds))
}
