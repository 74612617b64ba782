package vpcsim

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// With a describe lag, DescribeNetworkInterfaces answers with the state of
// that long ago, as EC2's eventually consistent describes may: an address
// just assigned is missing, one just unassigned still shows, a new ENI is
// not found; after the lag, the answer is current.
func TestDescribeLag(t *testing.T) {
	r := newRegion(t, "10.0.2.0/24", Options{})
	ctx := context.Background()
	clock := &stepClock{t: time.Unix(1_000_000, 0)}
	r.sim.Cloud.describes.now = clock.now
	eni, _ := r.createAttach(t, 1)

	describe := func() ([]string, error) {
		d, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, a := range d.NetworkInterfaces[0].PrivateIpAddresses {
			if !*a.Primary {
				out = append(out, *a.PrivateIpAddress)
			}
		}
		return out, nil
	}

	r.sim.Cloud.SetDescribeLag(10 * time.Second)
	as, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		SecondaryPrivateIpAddressCount: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	assigned := []string{*as.AssignedPrivateIpAddresses[0].PrivateIpAddress, *as.AssignedPrivateIpAddresses[1].PrivateIpAddress}
	if got, err := describe(); err != nil || len(got) != 0 {
		t.Fatalf("right after assigning: describe shows %v (%v), want the state before: none", got, err)
	}
	clock.advance(9 * time.Second)
	if got, _ := describe(); len(got) != 0 {
		t.Fatalf("9s after assigning (lag 10s): %v, want none", got)
	}
	clock.advance(time.Second)
	if got, _ := describe(); !slices.Equal(got, assigned) {
		t.Fatalf("10s after assigning: %v, want %v", got, assigned)
	}

	if _, err := r.ec2.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		PrivateIpAddresses: assigned[:1]}); err != nil {
		t.Fatal(err)
	}
	if got, _ := describe(); !slices.Equal(got, assigned) {
		t.Fatalf("right after unassigning %s: %v, want it still there %v", assigned[0], got, assigned)
	}

	// A new ENI is not found until the lag has passed.
	c, err := r.ec2.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(r.subnet)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*c.NetworkInterface.NetworkInterfaceId}})
	if apiCode(err) != "InvalidNetworkInterfaceID.NotFound" {
		t.Fatalf("describe of an ENI created under lag: %v, want InvalidNetworkInterfaceID.NotFound", err)
	}
	clock.advance(10 * time.Second)
	if got, _ := describe(); !slices.Equal(got, assigned[1:]) {
		t.Fatalf("10s after unassigning: %v, want %v", got, assigned[1:])
	}
	if _, err := r.ec2.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*c.NetworkInterface.NetworkInterfaceId}}); err != nil {
		t.Fatalf("new ENI after the lag: %v", err)
	}

	// Lag 0: consistent at once.
	r.sim.Cloud.SetDescribeLag(0)
	if _, err := r.ec2.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: aws.String(eni),
		SecondaryPrivateIpAddressCount: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := describe(); len(got) != 2 {
		t.Fatalf("without lag: %v, want 2 secondary addresses", got)
	}
}
