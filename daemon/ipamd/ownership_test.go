package ipamd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// otherTool attaches ENIs behind the daemon's back through EC2's API, the
// way another tool (an EFA installer, a trunk controller, a user) does.
type otherTool struct {
	t        *testing.T
	ec2      *ec2.Client
	subnet   string
	instance string
}

func newOtherTool(t *testing.T, f *fixture) *otherTool {
	c := ec2.New(ec2.Options{Region: "us-west-2", BaseEndpoint: aws.String(f.node.EC2Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDOTHER", "secret", "")})
	return &otherTool{t: t, ec2: c, subnet: f.sim.Cloud.Subnets()[0].ID, instance: f.node.InstanceID}
}

// attach creates an ENI of the given type with two secondary addresses and
// tags, and attaches it at card/device.
func (o *otherTool) attach(typ string, card, dev int, tags map[string]string) string {
	o.t.Helper()
	in := &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(o.subnet), SecondaryPrivateIpAddressCount: aws.Int32(2),
		InterfaceType: types.NetworkInterfaceCreationType(typ)}
	if len(tags) > 0 {
		ts := types.TagSpecification{ResourceType: types.ResourceTypeNetworkInterface}
		for k, v := range tags {
			ts.Tags = append(ts.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in.TagSpecifications = []types.TagSpecification{ts}
	}
	out, err := o.ec2.CreateNetworkInterface(context.Background(), in)
	if err != nil {
		o.t.Fatalf("create %s ENI: %v", typ, err)
	}
	id := aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	if _, err := o.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(id), InstanceId: aws.String(o.instance),
		DeviceIndex: aws.Int32(int32(dev)), NetworkCardIndex: aws.Int32(int32(card))}); err != nil {
		o.t.Fatalf("attach %s ENI at card %d device %d: %v", typ, card, dev, err)
	}
	return id
}

// eniState is what must not change on an ENI the daemon leaves alone.
func eniFingerprint(t *testing.T, f *fixture, id string) string {
	t.Helper()
	v, ok := f.sim.Cloud.ENI(id)
	if !ok {
		return "deleted"
	}
	return fmt.Sprintf("%s attachment=%s card=%d dev=%d primary=%s secondary=%v prefixes=%v",
		v.Status, v.AttachmentID, v.NetworkCard, v.DeviceIndex, v.PrimaryIP, v.Secondary, v.Prefixes)
}

func TestDaemonLeavesOtherENIsAlone(t *testing.T) {
	// c6in.32xlarge: two network cards of 8 ENIs, 50 addresses per ENI.
	f := newFixtureOfType(t, "c6in.32xlarge", nil)
	// The ENIs' creation time comes from EC2's side (a tag written with the
	// real clock): the fixture's clock must not be behind it.
	f.now = time.Now()
	o := newOtherTool(t, f)
	ownTags := map[string]string{cloud.TagInstanceID: f.node.InstanceID, cloud.TagCreateToken: "vpcchain-0123"}
	foreign := map[string]string{ // ENI -> the reason the daemon must give
		o.attach("efa", 0, 1, nil): `interface type "efa"`,
		// Tagged as the daemon tags its own: the card and the tag decide.
		o.attach("interface", 1, 1, ownTags): "network card 1",
		o.attach("interface", 0, 2, map[string]string{cloud.TagNoManage: "true", cloud.TagInstanceID: f.node.InstanceID,
			cloud.TagCreateToken: "vpcchain-4567"}): "no_manage=true",
		o.attach("trunk", 0, 3, nil): `interface type "trunk"`,
	}
	before := map[string]string{}
	var foreignIPs []string
	for id := range foreign {
		before[id] = eniFingerprint(t, f, id)
		v, _ := f.sim.Cloud.ENI(id)
		for _, a := range v.Secondary {
			foreignIPs = append(foreignIPs, a.String())
		}
	}
	check := func(when string) {
		t.Helper()
		for id, want := range before {
			if got := eniFingerprint(t, f, id); got != want {
				t.Errorf("%s: %s changed:\n got %s\nwant %s", when, id, got, want)
			}
		}
	}
	checkListed := func(d *Daemon, when string) {
		t.Helper()
		got := map[string]string{}
		for _, u := range d.Introspect().GetUnmanaged() {
			got[u.GetId()] = u.GetReason()
		}
		for id, why := range foreign {
			if !strings.Contains(got[id], why) {
				t.Errorf("%s: status lists %s as %q, want a reason naming %q", when, id, got[id], why)
			}
		}
		if len(got) != len(foreign) {
			t.Errorf("%s: status lists %d ENIs left alone, want %d: %v", when, len(got), len(foreign), got)
		}
	}

	d := f.start()
	settle(t, d)
	// 60 pods need a second ENI of the daemon's own.
	for i := 0; i < 60; i++ {
		a, err := d.Add(key(fmt.Sprint("p", i)), "default", fmt.Sprint("p", i), "")
		if err != nil {
			t.Fatal(err)
		}
		if foreign[a.ENIID] != "" || slices.Contains(foreignIPs, a.IP.String()) {
			t.Fatalf("pod %d got %s on %s, an ENI the daemon does not own", i, a.IP, a.ENIID)
		}
		settle(t, d)
	}
	for _, e := range d.Introspect().GetEnis() {
		if !e.GetPrimary() && e.GetDeviceNumber() <= 3 {
			t.Errorf("the daemon attached %s at device %d, which another ENI holds", e.GetId(), e.GetDeviceNumber())
		}
	}
	checkListed(d, "after start")
	check("after start and 60 pods")

	// Another tool attaches an ENI while the daemon runs: reconcile sees it
	// and leaves it alone.
	other := o.attach("interface", 0, 7, map[string]string{"team": "storage"})
	foreign[other] = "not created by vpcchain"
	before[other] = eniFingerprint(t, f, other)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkListed(d, "after reconcile")
	if n := d.Counters()["reconcile_enis_adopted"]; n != 0 {
		t.Errorf("reconcile adopted %d ENIs, want 0", n)
	}

	// Every pod goes; the pool scales down to its warm target.
	for i := 0; i < 60; i++ {
		if _, _, err := d.Del(key(fmt.Sprint("p", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ {
		f.advance(time.Minute)
		settle(t, d)
	}
	if n := d.Counters()["pool_DeleteENI"]; n == 0 {
		t.Errorf("the pool freed none of its own ENIs after every pod left (counters %v)", d.Counters())
	}
	check("after scale down")

	// A restart rediscovers the node from EC2.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = f.start()
	defer d.Close()
	settle(t, d)
	checkListed(d, "after restart")
	check("after restart")

	// The other tool detaches its ENI: available and untagged, the leak
	// sweep must not take it for one of ours.
	v, _ := f.sim.Cloud.ENI(other)
	if aerr := f.sim.Cloud.DetachNetworkInterface(v.AttachmentID); aerr != nil {
		t.Fatal(aerr)
	}
	delete(before, other)
	if _, err := f.cloud.SweepLeakedENIs(context.Background(), v.VPCID, 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.sim.Cloud.ENI(other); !ok {
		t.Error("the leak sweep deleted another tool's detached ENI")
	}
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	delete(foreign, other)
	checkListed(d, "after the other tool's ENI left")
	check("at the end")
}

// ENIs the daemon leaves alone still take attachment slots: on an m5.large
// (3 ENIs) with one of them taken, the daemon grows to one ENI of its own
// and then says the pool cannot grow, without a refused attach.
func TestForeignENIsTakeAttachmentSlots(t *testing.T) {
	f := newFixture(t, nil)
	o := newOtherTool(t, f)
	o.attach("interface", 0, 1, nil)
	d := f.start()
	defer d.Close()
	settle(t, d)
	n := fillNode(t, d, 0, 40)
	// EC2's table: an m5.large has 10 addresses per ENI, 9 for pods; two
	// ENIs (the primary and one of the daemon's) hold 18.
	if n != 18 {
		t.Errorf("the node served %d pods, want 18 (2 ENIs x 9)", n)
	}
	if fails := d.Counters()["pool_errors"]; fails != 0 {
		t.Errorf("%d pool actions failed: the daemon tried to attach beyond the instance's limit", fails)
	}
	if _, reason, _ := d.Ready(); strings.Contains(reason, "EC2 error") {
		t.Errorf("reason %q: the pool ran into EC2's limit instead of knowing it", reason)
	}
}

// fillNode adds pods p<from>, p<from+1>... until the node has no address
// (at most max pods), letting the pool grow after each; it returns how
// many got one.
func fillNode(t *testing.T, d *Daemon, from, max int) int {
	t.Helper()
	for n := 0; n < max; n++ {
		_, err := d.Add(key(fmt.Sprint("p", from+n)), "default", fmt.Sprint("p", from+n), "")
		var none *ErrNoAddress
		if errors.As(err, &none) {
			return n
		}
		if err != nil {
			t.Fatal(err)
		}
		settle(t, d)
	}
	return max
}

// A daemon killed between creating an ENI and attaching it (or between
// detaching and deleting one) leaves the ENI available. The next run on
// the node deletes it as it starts, even with the cluster's leaked-ENI
// sweep off, rather than leaving it for that sweep's minimum age.
func TestRunDeletesENIsAnEarlierRunLeftDetached(t *testing.T) {
	f := newFixture(t, map[string]string{"DISABLE_LEAKED_ENI_CLEANUP": "true"})
	inet, _ := f.sim.Cloud.InstanceNetwork(f.node.InstanceID)
	// What the killed run left: created and attached (or about to be
	// deleted), then detached, a minute ago.
	eni, err := f.cloud.CreateAndAttachENI(context.Background(), cloud.CreateENIInput{SubnetID: inet.ENIs[0].SubnetID,
		InstanceID: f.node.InstanceID, DeviceIndex: 1, IPCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if aerr := f.sim.Cloud.DetachNetworkInterface(eni.AttachmentID); aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := f.sim.Cloud.CreateTags([]string{eni.ID}, map[string]string{
		cloud.TagCreatedAt: time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)}); aerr != nil {
		t.Fatal(aerr)
	}

	d := f.start()
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); d.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := f.sim.Cloud.ENI(eni.ID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s, left detached by an earlier run, still exists", eni.ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := d.Counters()["leaked_enis_deleted"]; n != 1 {
		t.Errorf("leaked_enis_deleted = %d, want 1", n)
	}
}

// An ENI call of this run that fails after EC2 made an ENI (here: the
// attach refused, then the delete of the unwired ENI refused too) leaves
// it detached; the next reconcile deletes it, even with the cluster's
// leaked-ENI sweep off, rather than leaving it for that sweep's minimum age.
func TestReconcileDeletesENIsAFailedCallLeft(t *testing.T) {
	f := newFixture(t, map[string]string{"DISABLE_LEAKED_ENI_CLEANUP": "true"})
	d := f.start()
	defer d.Close()
	settle(t, d)
	left := func() []string {
		var ids []string
		for _, e := range f.sim.Cloud.ENIs() {
			if e.Status == "available" && e.Tags[cloud.TagInstanceID] == f.node.InstanceID {
				ids = append(ids, e.ID)
			}
		}
		return ids
	}
	f.sim.Faults.Inject("AttachNetworkInterface", "AttachmentLimitExceeded", 1)
	f.sim.Faults.Deny("DeleteNetworkInterface", true)
	fillNode(t, d, 0, 30)
	if len(left()) == 0 {
		t.Fatal("the faults left no detached ENI: the test shows nothing")
	}
	f.sim.Faults.Deny("DeleteNetworkInterface", false)
	if err := d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := left(); len(ids) > 0 {
		t.Fatalf("detached ENIs of this node after a reconcile: %v", ids)
	}
	if n := d.Counters()["leaked_enis_deleted"]; n < 1 {
		t.Errorf("leaked_enis_deleted = %d, want at least 1", n)
	}
}
