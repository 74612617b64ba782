package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Node is what the instance knows of itself, from IMDS.
type Node struct {
	InstanceID, InstanceType, AZ, Region, VPCID, SubnetID, PrimaryMAC string
	PrimaryIP                                                         netip.Addr
	VPCCIDRs                                                          []netip.Prefix
	// VPCIPv6CIDRs are the VPC's IPv6 blocks (none in an IPv4-only VPC).
	VPCIPv6CIDRs   []netip.Prefix
	SecurityGroups []string
	// ENIs as IMDS shows them (it may lag EC2), by device number.
	ENIs []ENI
}

// errMissing marks an IMDS path that does not exist (404).
var errMissing = errors.New("not in instance metadata")

// metadata reads one IMDS path (relative to latest/meta-data/).
func (c *Client) metadata(ctx context.Context, path string) (string, error) {
	out, err := c.imds.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return "", fmt.Errorf("IMDS %s: %w", path, errMissing)
		}
		return "", fmt.Errorf("IMDS %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("IMDS %s: read: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// metadataLines reads a list path; a missing path is an empty list.
func (c *Client) metadataLines(ctx context.Context, path string) ([]string, error) {
	s, err := c.metadata(ctx, path)
	if errors.Is(err, errMissing) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}

// MetadataNode describes the node from IMDS alone. An ENI whose metadata
// is still incomplete (IMDS lags EC2 after an attach) is left out; EC2 is
// the truth for ENIs (InstanceENIs).
func (c *Client) MetadataNode(ctx context.Context) (Node, error) {
	var n Node
	for _, f := range []struct {
		path string
		dst  *string
	}{
		{"instance-id", &n.InstanceID},
		{"instance-type", &n.InstanceType},
		{"placement/availability-zone", &n.AZ},
		{"mac", &n.PrimaryMAC},
	} {
		v, err := c.metadata(ctx, f.path)
		if err != nil {
			return Node{}, err
		}
		*f.dst = v
	}
	r, err := c.imds.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil {
		return Node{}, fmt.Errorf("IMDS region: %w", err)
	}
	n.Region = r.Region
	ip, err := c.metadata(ctx, "local-ipv4")
	if err != nil {
		return Node{}, err
	}
	if n.PrimaryIP, err = netip.ParseAddr(ip); err != nil {
		return Node{}, fmt.Errorf("IMDS local-ipv4 %q: %w", ip, err)
	}

	macs, err := c.metadataLines(ctx, "network/interfaces/macs/")
	if err != nil {
		return Node{}, err
	}
	foundPrimary := false
	for _, line := range macs {
		mac := strings.TrimSuffix(line, "/")
		primary := strings.EqualFold(mac, n.PrimaryMAC)
		m, err := c.metadataENI(ctx, mac)
		if err != nil {
			if !primary && errors.Is(err, errMissing) {
				c.logf("IMDS does not fully show ENI %s yet, left out: %v", mac, err)
				continue
			}
			return Node{}, err
		}
		if primary {
			// The primary ENI is device 0 whatever IMDS says.
			m.Primary, m.DeviceNumber, m.NetworkCard = true, 0, 0
			n.VPCID, n.SubnetID, n.VPCCIDRs, n.VPCIPv6CIDRs, n.SecurityGroups = m.vpcID, m.SubnetID, m.vpcCIDRs, m.vpcIPv6CIDRs, m.groups
			foundPrimary = true
		}
		n.ENIs = append(n.ENIs, m.ENI)
	}
	if !foundPrimary {
		return Node{}, fmt.Errorf("IMDS lists no interface with the primary MAC %s", n.PrimaryMAC)
	}
	sort.Slice(n.ENIs, func(i, j int) bool { return n.ENIs[i].DeviceNumber < n.ENIs[j].DeviceNumber })
	return n, nil
}

// eniMeta is one ENI as IMDS shows it, with what IMDS says of its VPC.
type eniMeta struct {
	ENI
	vpcID                  string
	vpcCIDRs, vpcIPv6CIDRs []netip.Prefix
	groups                 []string
}

// metadataENI reads network/interfaces/macs/<mac>/.
func (c *Client) metadataENI(ctx context.Context, mac string) (eniMeta, error) {
	base := "network/interfaces/macs/" + mac + "/"
	m := eniMeta{ENI: ENI{MAC: mac, Status: "in-use"}}
	dev, err := c.metadata(ctx, base+"device-number")
	if err != nil {
		return eniMeta{}, err
	}
	if m.DeviceNumber, err = strconv.Atoi(dev); err != nil {
		return eniMeta{}, fmt.Errorf("IMDS %sdevice-number %q: %w", base, dev, err)
	}
	// network-card exists only on types with several cards.
	if card, err := c.metadata(ctx, base+"network-card"); err == nil {
		if m.NetworkCard, err = strconv.Atoi(card); err != nil {
			return eniMeta{}, fmt.Errorf("IMDS %snetwork-card %q: %w", base, card, err)
		}
	} else if !errors.Is(err, errMissing) {
		return eniMeta{}, err
	}
	for _, f := range []struct {
		path string
		dst  *string
	}{{"interface-id", &m.ID}, {"subnet-id", &m.SubnetID}, {"vpc-id", &m.vpcID}} {
		if *f.dst, err = c.metadata(ctx, base+f.path); err != nil {
			return eniMeta{}, err
		}
	}
	cidr, err := c.metadata(ctx, base+"subnet-ipv4-cidr-block")
	if err != nil {
		return eniMeta{}, err
	}
	if m.SubnetCIDR, err = netip.ParsePrefix(cidr); err != nil {
		return eniMeta{}, fmt.Errorf("IMDS %ssubnet-ipv4-cidr-block %q: %w", base, cidr, err)
	}
	if m.groups, err = c.metadataLines(ctx, base+"security-group-ids"); err != nil {
		return eniMeta{}, err
	}
	ips, err := c.metadataLines(ctx, base+"local-ipv4s")
	if err != nil {
		return eniMeta{}, err
	}
	if len(ips) == 0 {
		return eniMeta{}, fmt.Errorf("IMDS %slocal-ipv4s: %w", base, errMissing)
	}
	addrs, err := parseAddrs(ips)
	if err != nil {
		return eniMeta{}, fmt.Errorf("IMDS %slocal-ipv4s: %w", base, err)
	}
	// The first address is the ENI's primary one.
	m.PrimaryIP, m.IPs = addrs[0], addrs[1:]
	// The prefix and CIDR lists; the IPv6 ones are absent (404) without
	// IPv6, which reads as empty.
	for _, f := range []struct {
		path string
		dst  *[]netip.Prefix
	}{{"ipv4-prefix", &m.Prefixes}, {"vpc-ipv4-cidr-blocks", &m.vpcCIDRs}, {"ipv6-prefix", &m.IPv6Prefixes},
		{"vpc-ipv6-cidr-blocks", &m.vpcIPv6CIDRs}} {
		lines, err := c.metadataLines(ctx, base+f.path)
		if err != nil {
			return eniMeta{}, err
		}
		if *f.dst, err = parsePrefixes(lines); err != nil {
			return eniMeta{}, fmt.Errorf("IMDS %s%s: %w", base, f.path, err)
		}
	}
	v6, err := c.metadataLines(ctx, base+"ipv6s")
	if err != nil {
		return eniMeta{}, err
	}
	if m.IPv6s, err = parseAddrs(v6); err != nil {
		return eniMeta{}, fmt.Errorf("IMDS %sipv6s: %w", base, err)
	}
	sub6, err := c.metadataLines(ctx, base+"subnet-ipv6-cidr-blocks")
	if err != nil {
		return eniMeta{}, err
	}
	if len(sub6) > 0 {
		if m.SubnetIPv6CIDR, err = netip.ParsePrefix(sub6[0]); err != nil {
			return eniMeta{}, fmt.Errorf("IMDS %ssubnet-ipv6-cidr-blocks %q: %w", base, sub6[0], err)
		}
	}
	return m, nil
}

func parseAddrs(ss []string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ss))
	for _, s := range ss {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}
