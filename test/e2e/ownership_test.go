package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/vishvananda/netlink"
)

// attachOther creates an ENI with two secondary addresses and attaches it
// at card/device through EC2's API, as another tool on the node would.
func attachOther(t *testing.T, c *ec2.Client, subnet, instance, typ string, card, dev int, tags map[string]string) string {
	t.Helper()
	ctx := context.Background()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnet), SecondaryPrivateIpAddressCount: aws.Int32(2),
		InterfaceType: types.NetworkInterfaceCreationType(typ), Description: aws.String("another tool's")}
	if len(tags) > 0 {
		ts := types.TagSpecification{ResourceType: types.ResourceTypeNetworkInterface}
		for k, v := range tags {
			ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{ts}
	}
	out, err := c.CreateNetworkInterface(ctx, in)
	if err != nil {
		t.Fatalf("create %s ENI: %v", typ, err)
	}
	id := aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	if _, err := c.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: aws.String(id),
		InstanceId: aws.String(instance), DeviceIndex: aws.Int32(int32(dev)), NetworkCardIndex: aws.Int32(int32(card))}); err != nil {
		t.Fatalf("attach %s ENI at card %d device %d: %v", typ, card, dev, err)
	}
	return id
}

// ENIs attached behind the daemon's back (EFA, another network card,
// no_manage, another tool's) are never used, wired, detached or deleted:
// through start, pods, reconcile, a restart that scales the pool down, and
// the leaked-ENI sweep.
func TestDaemonLeavesOtherENIsAlone(t *testing.T) {
	c := newSimVPC(t, "10.0.0.0/20")
	// c6in.32xlarge: two network cards of 8 ENIs, 50 addresses per ENI.
	n := c.addNode("c6in.32xlarge", "own",
		// 55 warm addresses need an ENI of the daemon's own.
		"WARM_IP_TARGET=55", "IP_COOLDOWN_PERIOD=1", "VPCCHAIN_MIN_ENI_AGE=1s", "VPCCHAIN_SCALE_DOWN_INTERVAL=1s",
		"DISABLE_LEAKED_ENI_CLEANUP=false", "VPCCHAIN_LEAKED_ENI_SWEEP_INTERVAL=1s", "VPCCHAIN_LEAKED_ENI_MIN_AGE=1s")
	ec2c, _ := inNodeSDK(c.sim, n.vn)
	inst := n.vn.InstanceID
	type other struct{ why, link string }
	foreign := map[string]other{
		attachOther(t, ec2c, c.subnet, inst, "efa", 0, 1, nil):                                                                 {`interface type "efa"`, "eth1"},
		attachOther(t, ec2c, c.subnet, inst, "interface", 1, 1, nil):                                                           {"network card 1", "nc1eth1"},
		attachOther(t, ec2c, c.subnet, inst, "interface", 0, 2, map[string]string{"node.k8s.amazonaws.com/no_manage": "true"}): {"no_manage=true", "eth2"},
		attachOther(t, ec2c, c.subnet, inst, "interface", 0, 3, map[string]string{"team": "storage"}):                          {"not created by vpcchain", "eth3"},
	}
	fingerprint := func(id string) string {
		v, ok := c.sim.Cloud.ENI(id)
		if !ok {
			return "deleted"
		}
		return fmt.Sprintf("%s attachment=%s card=%d dev=%d %s %v", v.Status, v.AttachmentID, v.NetworkCard, v.DeviceIndex, v.PrimaryIP, v.Secondary)
	}
	before := map[string]string{}
	foreignAddrs := map[netip.Addr]string{}
	for id := range foreign {
		before[id] = fingerprint(id)
		v, _ := c.sim.Cloud.ENI(id)
		for _, a := range append(v.Secondary, v.PrimaryIP) {
			foreignAddrs[a] = id
		}
	}
	untouched := func(when string) {
		t.Helper()
		for id, want := range before {
			if got := fingerprint(id); got != want {
				t.Errorf("%s: EC2 shows %s changed:\n got %s\nwant %s", when, id, got, want)
			}
		}
		// The daemon wires an ENI it uses (link up, addresses, rules, a
		// route table); the node's links of the others stay as attached.
		if err := n.do(func() error {
			for id, o := range foreign {
				l, err := netlink.LinkByName(o.link)
				if err != nil {
					return fmt.Errorf("%s (%s): %w", o.link, id, err)
				}
				addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				if l.Attrs().Flags&net.FlagUp != 0 || len(addrs) > 0 {
					t.Errorf("%s: link %s of %s was set up (flags %v, addresses %v)", when, o.link, id, l.Attrs().Flags, addrs)
				}
			}
			rules, err := netlink.RuleList(netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, r := range rules {
				for _, p := range []*net.IPNet{r.Src, r.Dst} {
					if p == nil {
						continue
					}
					if a, ok := netip.AddrFromSlice(p.IP.To4()); ok && foreignAddrs[a] != "" {
						t.Errorf("%s: a policy rule names %s of %s: %v", when, a, foreignAddrs[a], r)
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	listed := func(when string) {
		t.Helper()
		got := map[string]string{}
		for _, u := range n.introspect().GetUnmanaged() {
			got[u.GetId()] = u.GetReason()
		}
		for id, o := range foreign {
			if !strings.Contains(got[id], o.why) {
				t.Errorf("%s: status lists %s as %q, want a reason naming %q", when, id, got[id], o.why)
			}
		}
		if len(got) != len(foreign) {
			t.Errorf("%s: status lists %d ENIs left alone, want %d: %v", when, len(got), len(foreign), got)
		}
	}

	n.start()
	t.Cleanup(n.stop)
	n.waitReady()
	l := n.chain(nil)
	var pods []*pod
	for i := 0; i < 6; i++ {
		p := n.newPod("default", fmt.Sprintf("own-%d", i))
		if err := p.addRetrying(l, time.Minute); err != nil {
			t.Fatal(err)
		}
		if id := foreignAddrs[p.ip]; id != "" {
			t.Fatalf("pod %s got %s, an address of %s", p.name, p.ip, id)
		}
		pods = append(pods, p)
	}
	// Pods talk to each other through the daemon's ENIs.
	echoServer(t, pods[0].doIn, netip.AddrPortFrom(pods[0].ip, 8080), pods[0].name)
	if got, err := dialEcho(pods[1].doIn, netip.AddrPortFrom(pods[0].ip, 8080)); err != nil || !strings.HasPrefix(got, pods[0].name+" "+pods[1].ip.String()) {
		t.Errorf("pod to pod: %q, %v", got, err)
	}
	// The pool grows to an ENI of its own, on a device nobody holds.
	deadline := time.Now().Add(time.Minute)
	for len(n.introspect().GetEnis()) < 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	for _, e := range n.introspect().GetEnis() {
		if !e.GetPrimary() && e.GetDeviceNumber() <= 3 {
			t.Errorf("the daemon attached %s at device %d, which another ENI holds", e.GetId(), e.GetDeviceNumber())
		}
	}
	if len(n.introspect().GetEnis()) < 2 {
		t.Fatalf("the pool did not grow an ENI of its own: %v", n.introspect().GetEnis())
	}
	listed("after start")
	untouched("after start")

	// Another tool attaches an ENI while the daemon runs: reconcile lists it.
	late := attachOther(t, ec2c, c.subnet, inst, "interface", 0, 6, nil)
	foreign[late] = other{"not created by vpcchain", "eth6"}
	before[late] = fingerprint(late)
	deadline = time.Now().Add(30 * time.Second)
	for len(n.introspect().GetUnmanaged()) < len(foreign) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	listed("after reconcile")

	// A leaked ENI of this daemon's making (detached, create-token tagged):
	// the sweep deletes it, and nothing else.
	leak, err := ec2c.CreateNetworkInterface(context.Background(), &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(c.subnet),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: []types.Tag{
			{Key: aws.String("node.k8s.amazonaws.com/instance_id"), Value: aws.String("i-0gone")},
			{Key: aws.String("node.k8s.amazonaws.com/createdAt"), Value: aws.String(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))},
			{Key: aws.String("vpcchain.io/create-token"), Value: aws.String("vpcchain-leaked")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	leakID := aws.ToString(leak.NetworkInterface.NetworkInterfaceId)
	// And the late tool's ENI detached: available, untagged, not ours.
	v, _ := c.sim.Cloud.ENI(late)
	if aerr := c.sim.Cloud.DetachNetworkInterface(v.AttachmentID); aerr != nil {
		t.Fatal(aerr)
	}
	delete(foreign, late)
	delete(before, late)
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := c.sim.Cloud.ENI(leakID); !ok {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, ok := c.sim.Cloud.ENI(leakID); ok {
		t.Error("the leak sweep did not delete the leaked ENI of this cluster within 30 s")
	}
	if _, ok := c.sim.Cloud.ENI(late); !ok {
		t.Error("the leak sweep deleted another tool's detached ENI")
	}

	// Restart with a small warm pool: the daemon gives back its own ENI,
	// and only its own.
	for _, p := range pods[2:] {
		if err := p.del(l); err != nil {
			t.Fatal(err)
		}
	}
	n.restart("WARM_IP_TARGET=2")
	deadline = time.Now().Add(time.Minute)
	for len(n.introspect().GetEnis()) > 1 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if enis := n.introspect().GetEnis(); len(enis) != 1 {
		t.Errorf("after scale down the daemon holds %d ENIs, want its primary only", len(enis))
	}
	listed("after restart and scale down")
	untouched("after restart and scale down")
	if got, err := dialEcho(pods[1].doIn, netip.AddrPortFrom(pods[0].ip, 8080)); err != nil || !strings.HasPrefix(got, pods[0].name) {
		t.Errorf("pod to pod after the restart: %q, %v", got, err)
	}
	for _, p := range pods[:2] {
		if err := p.del(l); err != nil {
			t.Fatal(err)
		}
	}
}
