package cloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// ENI is one elastic network interface as EC2 (or IMDS) shows it.
type ENI struct {
	ID, MAC      string
	DeviceNumber int
	// NetworkCard is the card the ENI is attached to (0 on single-card
	// types); InterfaceType is EC2's ("interface", "efa", "trunk", ...;
	// "" when IMDS is the source).
	NetworkCard   int
	InterfaceType string
	SubnetID      string
	SubnetCIDR    netip.Prefix
	PrimaryIP     netip.Addr
	// IPs are the secondary addresses only, not PrimaryIP.
	IPs      []netip.Addr
	Prefixes []netip.Prefix
	// IPv6s and IPv6Prefixes (/80, Nitro only) are the ENI's IPv6
	// addresses; SubnetIPv6CIDR is its subnet's /64 (IMDS only).
	IPv6s          []netip.Addr
	IPv6Prefixes   []netip.Prefix
	SubnetIPv6CIDR netip.Prefix
	Tags           map[string]string
	// Description is EC2's (empty when IMDS is the source).
	Description  string
	AttachmentID string
	// AttachTime is when EC2 attached it (zero if unknown).
	AttachTime time.Time
	// DeleteOnTermination: the attachment goes with the instance (from
	// EC2's describe; IMDS does not say, and reads false).
	DeleteOnTermination bool
	Primary             bool
	Status              string
}

// Subnet is a VPC subnet.
type Subnet struct {
	ID        string
	VPCID     string
	CIDR      netip.Prefix
	AZ        string
	Available int
	Tags      map[string]string
}

// CreateENIInput says what ENI to create and where to attach it.
type CreateENIInput struct {
	SubnetID    string
	Groups      []string // nil: the VPC's default group
	InstanceID  string
	DeviceIndex int // >= 1
	// IPCount secondary addresses or PrefixCount /28 prefixes (not both).
	IPCount, PrefixCount int
	Description          string
}

// ------------------------------------------------------------ describing

func tagMap(ts []types.Tag) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// toENI converts EC2's view; the subnet CIDR comes from cidrs.
func toENI(ni types.NetworkInterface, cidrs map[string]netip.Prefix) (ENI, error) {
	e := ENI{ID: aws.ToString(ni.NetworkInterfaceId), MAC: aws.ToString(ni.MacAddress), SubnetID: aws.ToString(ni.SubnetId),
		Tags: tagMap(ni.TagSet), Status: string(ni.Status), DeviceNumber: -1, InterfaceType: string(ni.InterfaceType),
		Description: aws.ToString(ni.Description)}
	e.SubnetCIDR = cidrs[e.SubnetID]
	if ni.Attachment != nil {
		e.AttachmentID = aws.ToString(ni.Attachment.AttachmentId)
		e.DeleteOnTermination = aws.ToBool(ni.Attachment.DeleteOnTermination)
		e.AttachTime = aws.ToTime(ni.Attachment.AttachTime)
		e.DeviceNumber = int(aws.ToInt32(ni.Attachment.DeviceIndex))
		e.NetworkCard = int(aws.ToInt32(ni.Attachment.NetworkCardIndex))
		e.Primary = e.DeviceNumber == 0 && e.NetworkCard == 0
	}
	primary := aws.ToString(ni.PrivateIpAddress)
	for _, a := range ni.PrivateIpAddresses {
		ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress))
		if err != nil {
			return ENI{}, fmt.Errorf("ENI %s: address %q: %w", e.ID, aws.ToString(a.PrivateIpAddress), err)
		}
		if aws.ToBool(a.Primary) || (primary != "" && ip.String() == primary) {
			e.PrimaryIP = ip
			continue
		}
		e.IPs = append(e.IPs, ip)
	}
	if !e.PrimaryIP.IsValid() && primary != "" {
		ip, err := netip.ParseAddr(primary)
		if err != nil {
			return ENI{}, fmt.Errorf("ENI %s: primary address %q: %w", e.ID, primary, err)
		}
		e.PrimaryIP = ip
	}
	for _, p := range ni.Ipv4Prefixes {
		pp, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix))
		if err != nil {
			return ENI{}, fmt.Errorf("ENI %s: prefix %q: %w", e.ID, aws.ToString(p.Ipv4Prefix), err)
		}
		e.Prefixes = append(e.Prefixes, pp)
	}
	for _, a := range ni.Ipv6Addresses {
		ip, err := netip.ParseAddr(aws.ToString(a.Ipv6Address))
		if err != nil || !ip.Is6() {
			return ENI{}, fmt.Errorf("ENI %s: IPv6 address %q is not an IPv6 address", e.ID, aws.ToString(a.Ipv6Address))
		}
		e.IPv6s = append(e.IPv6s, ip)
	}
	for _, p := range ni.Ipv6Prefixes {
		pp, err := netip.ParsePrefix(aws.ToString(p.Ipv6Prefix))
		if err != nil || !pp.Addr().Is6() {
			return ENI{}, fmt.Errorf("ENI %s: IPv6 prefix %q is not an IPv6 prefix", e.ID, aws.ToString(p.Ipv6Prefix))
		}
		e.IPv6Prefixes = append(e.IPv6Prefixes, pp)
	}
	return e, nil
}

// subnetCIDRFor returns the CIDRs of the given subnets, asking EC2 only
// for those not seen before.
func (c *Client) subnetCIDRFor(ctx context.Context, ids ...string) (map[string]netip.Prefix, error) {
	out := map[string]netip.Prefix{}
	var missing []string
	c.mu.Lock()
	for _, id := range ids {
		if p, ok := c.subnetCIDRs[id]; ok {
			out[id] = p
		} else if _, dup := out[id]; !dup && id != "" {
			missing = append(missing, id)
			out[id] = netip.Prefix{}
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	res, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: missing})
	if err != nil {
		return nil, fmt.Errorf("describe subnets %v: %w", missing, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range res.Subnets {
		p, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
		if err != nil {
			return nil, fmt.Errorf("subnet %s: CIDR %q: %w", aws.ToString(s.SubnetId), aws.ToString(s.CidrBlock), err)
		}
		c.subnetCIDRs[aws.ToString(s.SubnetId)] = p
		out[aws.ToString(s.SubnetId)] = p
	}
	for _, id := range missing {
		if !out[id].IsValid() {
			return nil, fmt.Errorf("describe subnets: EC2 did not return subnet %s", id)
		}
	}
	return out, nil
}

func (c *Client) toENIs(ctx context.Context, nis []types.NetworkInterface) ([]ENI, error) {
	var ids []string
	for _, ni := range nis {
		ids = append(ids, aws.ToString(ni.SubnetId))
	}
	cidrs, err := c.subnetCIDRFor(ctx, ids...)
	if err != nil {
		return nil, err
	}
	out := make([]ENI, 0, len(nis))
	for _, ni := range nis {
		e, err := toENI(ni, cidrs)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// describeENIs pages through DescribeNetworkInterfaces with filters.
func (c *Client) describeENIs(ctx context.Context, filters ...types.Filter) ([]types.NetworkInterface, error) {
	// Paged by hand: the SDK's paginator takes the client as an interface,
	// which keeps every EC2 operation in the binary (docs/benchmarks.md,
	// "Against the AWS VPC CNI").
	in := &ec2.DescribeNetworkInterfacesInput{Filters: filters, MaxResults: aws.Int32(1000)}
	var out []types.NetworkInterface
	for {
		page, err := c.ec2.DescribeNetworkInterfaces(ctx, in)
		if err != nil {
			return nil, err
		}
		out = append(out, page.NetworkInterfaces...)
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

func filter(name string, values ...string) types.Filter {
	return types.Filter{Name: aws.String(name), Values: values}
}

// describeENI is one DescribeNetworkInterfaces by ID.
func (c *Client) describeENI(ctx context.Context, id string) (types.NetworkInterface, error) {
	out, err := c.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{id}})
	if err != nil {
		return types.NetworkInterface{}, err
	}
	if len(out.NetworkInterfaces) == 0 {
		return types.NetworkInterface{}, fmt.Errorf("%s: %w", id, errNoENI)
	}
	return out.NetworkInterfaces[0], nil
}

// InstanceENIs returns the ENIs EC2 has attached to the instance, by
// device number. EC2 is the truth; IMDS may lag it.
func (c *Client) InstanceENIs(ctx context.Context, instanceID string) ([]ENI, error) {
	nis, err := c.describeENIs(ctx, filter("attachment.instance-id", instanceID))
	if err != nil {
		return nil, fmt.Errorf("describe ENIs of %s: %w", instanceID, err)
	}
	enis, err := c.toENIs(ctx, nis)
	if err != nil {
		return nil, fmt.Errorf("ENIs of %s: %w", instanceID, err)
	}
	sort.Slice(enis, func(i, j int) bool { return enis[i].DeviceNumber < enis[j].DeviceNumber })
	return enis, nil
}

// DescribeENI returns one ENI as EC2 has it (IsNotFound if it is gone).
func (c *Client) DescribeENI(ctx context.Context, id string) (ENI, error) {
	ni, err := c.describeENI(ctx, id)
	if err != nil {
		return ENI{}, fmt.Errorf("describe ENI %s: %w", id, err)
	}
	enis, err := c.toENIs(ctx, []types.NetworkInterface{ni})
	if err != nil {
		return ENI{}, fmt.Errorf("ENI %s: %w", id, err)
	}
	return enis[0], nil
}

// Subnets lists the VPC's subnets in one availability zone.
func (c *Client) Subnets(ctx context.Context, vpcID, az string) ([]Subnet, error) {
	in := &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{filter("vpc-id", vpcID), filter("availability-zone", az)}, MaxResults: aws.Int32(1000)}
	var out []Subnet
	for more := true; more; {
		page, err := c.ec2.DescribeSubnets(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("describe subnets of %s in %s: %w", vpcID, az, err)
		}
		in.NextToken = page.NextToken
		more = aws.ToString(page.NextToken) != ""
		for _, s := range page.Subnets {
			cidr, err := netip.ParsePrefix(aws.ToString(s.CidrBlock))
			if err != nil {
				return nil, fmt.Errorf("subnet %s: CIDR %q: %w", aws.ToString(s.SubnetId), aws.ToString(s.CidrBlock), err)
			}
			out = append(out, Subnet{ID: aws.ToString(s.SubnetId), VPCID: aws.ToString(s.VpcId), CIDR: cidr, AZ: aws.ToString(s.AvailabilityZone),
				Available: int(aws.ToInt32(s.AvailableIpAddressCount)), Tags: tagMap(s.Tags)})
		}
	}
	c.mu.Lock()
	for _, s := range out {
		c.subnetCIDRs[s.ID] = s.CIDR
	}
	c.mu.Unlock()
	return out, nil
}

// ------------------------------------------------------------- creating

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "vpcchain-" + hex.EncodeToString(b)
}

func (c *Client) createTags(instanceID, token string) []types.Tag {
	tags := []types.Tag{
		{Key: aws.String(TagInstanceID), Value: aws.String(instanceID)},
		{Key: aws.String(TagCreatedAt), Value: aws.String(c.now().UTC().Format(time.RFC3339))},
		{Key: aws.String(TagCreateToken), Value: aws.String(token)},
	}
	if c.o.ClusterName != "" {
		tags = append(tags, types.Tag{Key: aws.String(TagClusterName), Value: aws.String(c.o.ClusterName)})
	}
	return tags
}

// CreateAndAttachENI creates an ENI and attaches it at in.DeviceIndex,
// without leaking it on any failure:
//   - the create carries a ClientToken (the SDK's retries of a lost response
//     get the same ENI back) and a create-token tag (if every attempt's
//     answer is lost, the ENI is found by that tag);
//   - a lost attach response is recovered by re-reading the ENI;
//   - if attaching fails, the ENI is detached and deleted, even if ctx is
//     cancelled meanwhile.
//
// The caller sets DeleteOnTermination (SetDeleteOnTermination) once it has
// wired the ENI, off the path of the pods waiting for it: until then the ENI
// outlives a terminated node only as a detached, tagged ENI, which the leak
// sweep deletes. The returned ENI is fully described, subnet CIDR included.
func (c *Client) CreateAndAttachENI(ctx context.Context, in CreateENIInput) (ENI, error) {
	switch {
	case in.SubnetID == "" || in.InstanceID == "":
		return ENI{}, errors.New("create ENI: subnet and instance are required")
	case in.DeviceIndex < 1:
		return ENI{}, fmt.Errorf("create ENI: device index %d: must be at least 1 (0 is the primary ENI)", in.DeviceIndex)
	case in.IPCount < 0 || in.PrefixCount < 0 || in.IPCount > 0 && in.PrefixCount > 0:
		return ENI{}, fmt.Errorf("create ENI: %d IPs and %d prefixes: want one kind, not negative", in.IPCount, in.PrefixCount)
	}
	// Learn the subnet CIDR first: an ENI we could not describe fully would
	// be of no use to the caller.
	cidrs, err := c.subnetCIDRFor(ctx, in.SubnetID)
	if err != nil {
		return ENI{}, fmt.Errorf("create ENI in %s: %w", in.SubnetID, err)
	}
	desc := in.Description
	if desc == "" {
		desc = "vpcchain-" + in.InstanceID
	}
	token := newToken()
	input := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(in.SubnetID), Groups: in.Groups,
		Description: aws.String(desc), ClientToken: aws.String(token),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface,
			Tags: c.createTags(in.InstanceID, token)}}}
	if in.IPCount > 0 {
		input.SecondaryPrivateIpAddressCount = aws.Int32(int32(in.IPCount))
	}
	if in.PrefixCount > 0 {
		input.Ipv4PrefixCount = aws.Int32(int32(in.PrefixCount))
	}
	var ni types.NetworkInterface
	out, err := c.ec2.CreateNetworkInterface(ctx, input)
	switch {
	case err == nil && out.NetworkInterface != nil:
		ni = *out.NetworkInterface
	case err == nil:
		return ENI{}, fmt.Errorf("create ENI in %s: %w", in.SubnetID, errNoENI)
	case !maybeApplied(err):
		return ENI{}, fmt.Errorf("create ENI in %s: %w", in.SubnetID, err)
	default:
		found, ferr := c.findCreated(ctx, token)
		if ferr != nil {
			return ENI{}, fmt.Errorf("create ENI in %s: %w (and looking for it by its create token: %w)", in.SubnetID, err, ferr)
		}
		how := "found by its create token"
		if found == nil {
			// A describe may not show an ENI made a moment ago. One more
			// create with the same ClientToken is safe either way: EC2
			// answers with the ENI the token made, or makes it now.
			again, aerr := c.ec2.CreateNetworkInterface(ctx, input)
			if aerr == nil && again.NetworkInterface == nil {
				aerr = errNoENI
			}
			if aerr != nil {
				return ENI{}, fmt.Errorf("create ENI in %s: %w (and once more with the same create token: %w)", in.SubnetID, err, aerr)
			}
			found, how = again.NetworkInterface, "answered to the same create token"
		}
		c.logf("create ENI in %s failed (%v), but EC2 made it: %s %s", in.SubnetID, err, how, aws.ToString(found.NetworkInterfaceId))
		ni = *found
	}
	id := aws.ToString(ni.NetworkInterfaceId)

	attID, dev, err := c.attach(ctx, id, in)
	if err != nil {
		return ENI{}, c.discard(ctx, id, attID, fmt.Errorf("attach %s to %s at device %d: %w", id, in.InstanceID, in.DeviceIndex, err))
	}
	e, err := toENI(ni, cidrs)
	if err != nil {
		return ENI{}, c.discard(ctx, id, attID, err)
	}
	e.AttachmentID, e.DeviceNumber, e.Primary, e.Status = attID, dev, false, string(types.NetworkInterfaceStatusInUse)
	return e, nil
}

// SetDeleteOnTermination makes EC2 delete the ENI with the instance, so a
// terminated node leaves no ENI behind. It is idempotent.
func (c *Client) SetDeleteOnTermination(ctx context.Context, eniID, attachmentID string) error {
	if _, err := c.ec2.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{
		NetworkInterfaceId: aws.String(eniID),
		Attachment: &types.NetworkInterfaceAttachmentChanges{AttachmentId: aws.String(attachmentID),
			DeleteOnTermination: aws.Bool(true)}}); err != nil {
		return fmt.Errorf("set DeleteOnTermination on %s: %w", eniID, err)
	}
	return nil
}

// findCreated looks an ENI up by its create token (after a create whose
// answer was lost). It runs even if ctx is cancelled.
func (c *Client) findCreated(ctx context.Context, token string) (*types.NetworkInterface, error) {
	cctx, cancel := c.cleanupContext(ctx)
	defer cancel()
	nis, err := c.describeENIs(cctx, filter("tag:"+TagCreateToken, token))
	if err != nil {
		return nil, err
	}
	if len(nis) == 0 {
		return nil, nil
	}
	return &nis[0], nil
}

// attach attaches the ENI. If the call fails, the ENI is re-read: a lost
// answer (the SDK's retry then fails with "in use") leaves it attached to
// our instance, and that attachment is the result. On failure the returned
// attachment ID is the ENI's current one, if any, for the clean-up.
func (c *Client) attach(ctx context.Context, id string, in CreateENIInput) (string, int, error) {
	out, err := c.ec2.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(id),
		InstanceId: aws.String(in.InstanceID), DeviceIndex: aws.Int32(int32(in.DeviceIndex))})
	if err == nil {
		return aws.ToString(out.AttachmentId), in.DeviceIndex, nil
	}
	cctx, cancel := c.cleanupContext(ctx)
	defer cancel()
	ni, derr := c.describeENI(cctx, id)
	if derr != nil {
		return "", 0, fmt.Errorf("%w (and re-reading the ENI: %w)", err, derr)
	}
	if a := ni.Attachment; a != nil {
		if aws.ToString(a.InstanceId) == in.InstanceID {
			c.logf("attach %s failed (%v), but it is attached: using attachment %s", id, err, aws.ToString(a.AttachmentId))
			return aws.ToString(a.AttachmentId), int(aws.ToInt32(a.DeviceIndex)), nil
		}
		return aws.ToString(a.AttachmentId), 0, err
	}
	return "", 0, err
}

// discard frees an ENI that CreateAndAttachENI will not hand out, and
// returns cause with any clean-up failure joined to it.
func (c *Client) discard(ctx context.Context, id, attachmentID string, cause error) error {
	cctx, cancel := c.cleanupContext(ctx)
	defer cancel()
	if err := c.freeENI(cctx, id, attachmentID, true); err != nil {
		return fmt.Errorf("%w (and cleaning up %s, which the leak sweep will now have to delete: %w)", cause, id, err)
	}
	return cause
}

// ---------------------------------------------------------- addresses

// AssignIPs adds n secondary addresses to the ENI and returns them. The
// call is not retried after a lost answer (a retry would assign n more):
// the error is returned and the caller re-reads the ENI (DescribeENI) to
// learn what EC2 assigned.
func (c *Client) AssignIPs(ctx context.Context, eniID string, n int) ([]netip.Addr, error) {
	if n <= 0 {
		return nil, fmt.Errorf("assign %d IPs to %s: want at least one", n, eniID)
	}
	out, err := c.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID),
		SecondaryPrivateIpAddressCount: aws.Int32(int32(n))}, withoutBlindRetry)
	if err != nil {
		return nil, fmt.Errorf("assign %d IPs to %s: %w", n, eniID, err)
	}
	ips := make([]netip.Addr, 0, len(out.AssignedPrivateIpAddresses))
	for _, a := range out.AssignedPrivateIpAddresses {
		ip, err := netip.ParseAddr(aws.ToString(a.PrivateIpAddress))
		if err != nil {
			return nil, fmt.Errorf("assign IPs to %s: EC2 returned address %q: %w", eniID, aws.ToString(a.PrivateIpAddress), err)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

// AssignPrefixes adds n /28 prefixes to the ENI and returns them (Nitro
// instances only). Like AssignIPs, a lost answer is not retried.
func (c *Client) AssignPrefixes(ctx context.Context, eniID string, n int) ([]netip.Prefix, error) {
	if n <= 0 {
		return nil, fmt.Errorf("assign %d prefixes to %s: want at least one", n, eniID)
	}
	out, err := c.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID),
		Ipv4PrefixCount: aws.Int32(int32(n))}, withoutBlindRetry)
	if err != nil {
		return nil, fmt.Errorf("assign %d prefixes to %s: %w", n, eniID, err)
	}
	pfx := make([]netip.Prefix, 0, len(out.AssignedIpv4Prefixes))
	for _, p := range out.AssignedIpv4Prefixes {
		pp, err := netip.ParsePrefix(aws.ToString(p.Ipv4Prefix))
		if err != nil {
			return nil, fmt.Errorf("assign prefixes to %s: EC2 returned prefix %q: %w", eniID, aws.ToString(p.Ipv4Prefix), err)
		}
		pfx = append(pfx, pp)
	}
	return pfx, nil
}

// AssignIPv6Prefix adds one IPv6 /80 prefix to the ENI (Nitro instances
// only) and returns it. Like AssignIPs, a lost answer is not retried: the
// caller describes the ENI before asking again.
func (c *Client) AssignIPv6Prefix(ctx context.Context, eniID string) (netip.Prefix, error) {
	out, err := c.ec2.AssignIpv6Addresses(ctx, &ec2.AssignIpv6AddressesInput{NetworkInterfaceId: aws.String(eniID),
		Ipv6PrefixCount: aws.Int32(1)}, withoutBlindRetry)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("assign an IPv6 prefix to %s: %w", eniID, err)
	}
	if len(out.AssignedIpv6Prefixes) != 1 {
		return netip.Prefix{}, fmt.Errorf("assign an IPv6 prefix to %s: EC2 returned %d prefixes, want 1", eniID, len(out.AssignedIpv6Prefixes))
	}
	p, err := netip.ParsePrefix(out.AssignedIpv6Prefixes[0])
	if err != nil || !p.Addr().Is6() || p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("assign an IPv6 prefix to %s: EC2 returned %q, not an IPv6 prefix", eniID, out.AssignedIpv6Prefixes[0])
	}
	return p, nil
}

// UnassignIPs gives secondary addresses back to the subnet. It is
// idempotent: addresses the ENI no longer has count as given back (a retry
// after a lost answer fails in EC2 for that reason).
func (c *Client) UnassignIPs(ctx context.Context, eniID string, ips []netip.Addr) error {
	err := unassign(ctx, ips, func(ctx context.Context, part []netip.Addr) error {
		_, err := c.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID),
			PrivateIpAddresses: texts(part)})
		return err
	})
	if err != nil {
		return fmt.Errorf("unassign %d IPs from %s: %w", len(ips), eniID, err)
	}
	return nil
}

// UnassignPrefixes gives /28 prefixes back to the subnet, idempotently.
func (c *Client) UnassignPrefixes(ctx context.Context, eniID string, p []netip.Prefix) error {
	err := unassign(ctx, p, func(ctx context.Context, part []netip.Prefix) error {
		_, err := c.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eniID),
			Ipv4Prefixes: texts(part)})
		return err
	})
	if err != nil {
		return fmt.Errorf("unassign %d prefixes from %s: %w", len(p), eniID, err)
	}
	return nil
}

// unassign runs one UnassignPrivateIpAddresses call for list. EC2 refuses
// the whole call when any item is no longer on the ENI (a retry after a
// lost answer, or someone else's unassign); that answer comes from the
// API's own state, unlike a describe, which may lag. So a refused single
// item is given back, and a refused batch is split into single calls, each
// of which settles its item.
func unassign[T any](ctx context.Context, list []T, call func(context.Context, []T) error) error {
	if len(list) == 0 {
		return nil
	}
	err := call(ctx, list)
	if !IsNotAssigned(err) {
		return err
	}
	if len(list) == 1 {
		return nil
	}
	var errs []error
	for _, x := range list {
		if err := call(ctx, []T{x}); err != nil && !IsNotAssigned(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func texts[T fmt.Stringer](list []T) []string {
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = x.String()
	}
	return out
}

// -------------------------------------------------------------- freeing

// FreeENI detaches the ENI (if attachmentID is set, or if EC2 shows it
// attached when attachmentID is ""), waits until it is available and
// deletes it. An ENI that is already gone counts as freed. A describe
// that does not find the ENI proves nothing (it may lag behind an ENI made
// a moment ago): only the delete's answer says it is gone.
func (c *Client) FreeENI(ctx context.Context, eniID, attachmentID string) error {
	return c.freeENI(ctx, eniID, attachmentID, attachmentID != "")
}

// freeENI: known says attachmentID is authoritative ("" = not attached).
func (c *Client) freeENI(ctx context.Context, eniID, attachmentID string, known bool) error {
	if !known {
		ni, err := c.describeENI(ctx, eniID)
		if IsNotFound(err) {
			// Gone, or too new for the describe: the delete tells, and
			// refuses an ENI still attached, whose attachment we cannot
			// learn yet.
			_, err := c.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
			if err == nil || IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("free ENI %s, which EC2's describe does not show yet: %w", eniID, err)
		}
		if err != nil {
			return fmt.Errorf("free ENI %s: %w", eniID, err)
		}
		if a := ni.Attachment; a != nil {
			if aws.ToInt32(a.DeviceIndex) == 0 {
				return fmt.Errorf("free ENI %s: it is the instance's primary ENI", eniID)
			}
			attachmentID = aws.ToString(a.AttachmentId)
		}
	}
	detached := false
	if attachmentID != "" {
		_, err := c.ec2.DetachNetworkInterface(ctx, &ec2.DetachNetworkInterfaceInput{AttachmentId: aws.String(attachmentID)})
		if err != nil && !IsNotFound(err) {
			return fmt.Errorf("detach ENI %s (%s): %w", eniID, attachmentID, err)
		}
		detached = true
	}
	deadline := c.now().Add(c.o.DetachTimeout)
	delay := 100 * time.Millisecond
	for {
		// After a detach, wait until EC2 shows the ENI available: deleting
		// while it is still detaching fails.
		if detached {
			ni, err := c.describeENI(ctx, eniID)
			switch {
			case IsNotFound(err):
				// Not described yet, or gone: the delete tells (and
				// answers InUse while it is still detaching).
			case err != nil:
				return fmt.Errorf("free ENI %s: wait for detach: %w", eniID, err)
			case ni.Attachment != nil && aws.ToString(ni.Attachment.AttachmentId) != attachmentID:
				return fmt.Errorf("free ENI %s: attached again meanwhile (%s)", eniID, aws.ToString(ni.Attachment.AttachmentId))
			case ni.Status != types.NetworkInterfaceStatusAvailable:
				if c.now().After(deadline) {
					return fmt.Errorf("free ENI %s: still %s %s after detaching", eniID, ni.Status, c.o.DetachTimeout)
				}
				if err := sleepCtx(ctx, delay); err != nil {
					return fmt.Errorf("free ENI %s: wait for detach: %w", eniID, err)
				}
				delay = min(2*delay, 2*time.Second)
				continue
			}
		}
		_, err := c.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(eniID)})
		switch {
		case err == nil || IsNotFound(err):
			return nil
		case ErrorCode(err) == "InvalidNetworkInterface.InUse" && c.now().Before(deadline):
			detached = true // still detaching: poll again
			if err := sleepCtx(ctx, delay); err != nil {
				return fmt.Errorf("delete ENI %s: %w", eniID, err)
			}
		default:
			return fmt.Errorf("delete ENI %s: %w", eniID, err)
		}
	}
}

// --------------------------------------------------------- leak sweep

// SweepLeakedENIs deletes ENIs that this cluster's daemons created (create
// token and instance tags, cluster tag equal to ClusterName, or absent when
// ClusterName is "") and that sit available in vpcID for at least minAge
// after creation. An ENI without a creation time is tagged now and left
// for a later sweep. It returns the IDs it deleted; errors on single ENIs
// do not stop the sweep and are returned joined.
func (c *Client) SweepLeakedENIs(ctx context.Context, vpcID string, minAge time.Duration) ([]string, error) {
	now := c.now()
	return c.sweep(ctx, vpcID, "", func(created time.Time) bool { return now.Sub(created) >= minAge })
}

// SweepNodeENIs deletes the ENIs that an earlier run of this node's daemon
// left detached when it was killed between creating an ENI and attaching
// it, or between detaching and deleting one: available in vpcID, tagged
// as SweepLeakedENIs wants and with instanceID, created before
// createdBefore (the caller's start, on this client's clock, so no ENI the
// caller is creating itself). Their age does not matter: only a daemon of
// this node makes such ENIs, and the one that made them is gone.
func (c *Client) SweepNodeENIs(ctx context.Context, vpcID, instanceID string, createdBefore time.Time) ([]string, error) {
	// Creation times are tagged in whole seconds.
	before := createdBefore.Truncate(time.Second)
	return c.sweep(ctx, vpcID, instanceID, func(created time.Time) bool { return created.Before(before) })
}

// sweep deletes the available ENIs of vpcID that carry the create token,
// this cluster's tag and, if instanceID is set, that instance's tag, and
// whose creation time old accepts.
func (c *Client) sweep(ctx context.Context, vpcID, instanceID string, old func(created time.Time) bool) ([]string, error) {
	filters := []types.Filter{filter("vpc-id", vpcID), filter("status", "available"), filter("tag-key", TagCreateToken)}
	if c.o.ClusterName != "" {
		filters = append(filters, filter("tag:"+TagClusterName, c.o.ClusterName))
	}
	if instanceID != "" {
		filters = append(filters, filter("tag:"+TagInstanceID, instanceID))
	}
	nis, err := c.describeENIs(ctx, filters...)
	if err != nil {
		return nil, fmt.Errorf("list leaked ENIs in %s: %w", vpcID, err)
	}
	now := c.now()
	var deleted []string
	var errs []error
	for _, ni := range nis {
		id, tags := aws.ToString(ni.NetworkInterfaceId), tagMap(ni.TagSet)
		if ni.Status != types.NetworkInterfaceStatusAvailable || ni.Attachment != nil {
			continue
		}
		if node, ours := tags[TagInstanceID]; !ours || tags[TagClusterName] != c.o.ClusterName || instanceID != "" && node != instanceID {
			continue
		}
		created, err := time.Parse(time.RFC3339, tags[TagCreatedAt])
		if err != nil {
			// Start its clock now rather than guess its age.
			if _, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id},
				Tags: []types.Tag{{Key: aws.String(TagCreatedAt), Value: aws.String(now.UTC().Format(time.RFC3339))}}}); err != nil && !IsNotFound(err) {
				errs = append(errs, fmt.Errorf("tag %s with its creation time: %w", id, err))
			}
			continue
		}
		if !old(created) {
			continue
		}
		_, err = c.ec2.DeleteNetworkInterface(ctx, &ec2.DeleteNetworkInterfaceInput{NetworkInterfaceId: aws.String(id)})
		switch {
		case err == nil:
			deleted = append(deleted, id)
		case IsNotFound(err) || ErrorCode(err) == "InvalidNetworkInterface.InUse":
			// Gone already, or attached since we listed it: not leaked.
		default:
			errs = append(errs, fmt.Errorf("delete leaked ENI %s: %w", id, err))
		}
	}
	return deleted, errors.Join(errs...)
}
