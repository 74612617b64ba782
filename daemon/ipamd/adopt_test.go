package ipamd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// attachAsAWSVPCCNI creates and attaches an ENI the way the AWS VPC CNI's
// ipamd does for instance (its description "aws-K8S-<instance>", its
// instance and creation-time tags, and any extra tags), filled with the 9
// secondary addresses an m5.large ENI holds.
func (o *otherTool) attachAsAWSVPCCNI(dev int, instance string, extra map[string]string) string {
	o.t.Helper()
	tags := []types.Tag{
		{Key: aws.String(cloud.TagInstanceID), Value: aws.String(instance)},
		{Key: aws.String("node.k8s.amazonaws.com/createdAt"), Value: aws.String(time.Now().UTC().Format(time.RFC3339))},
	}
	for k, v := range extra {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	out, err := o.ec2.CreateNetworkInterface(context.Background(), &ec2.CreateNetworkInterfaceInput{
		SubnetId: aws.String(o.subnet), Description: aws.String("aws-K8S-" + instance), SecondaryPrivateIpAddressCount: aws.Int32(9),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeNetworkInterface, Tags: tags}}})
	if err != nil {
		o.t.Fatalf("create the AWS VPC CNI's ENI: %v", err)
	}
	id := aws.ToString(out.NetworkInterface.NetworkInterfaceId)
	if _, err := o.ec2.AttachNetworkInterface(context.Background(), &ec2.AttachNetworkInterfaceInput{
		NetworkInterfaceId: aws.String(id), InstanceId: aws.String(o.instance), DeviceIndex: aws.Int32(int32(dev))}); err != nil {
		o.t.Fatalf("attach the AWS VPC CNI's ENI at device %d: %v", dev, err)
	}
	return id
}

// A node moved from the AWS VPC CNI (drained, then switched) still has the
// ENIs its ipamd attached, full of secondary addresses. The daemon adopts
// them: their addresses go to pods and the warm pool, so none stays
// assigned in EC2 with nobody using it, and their attachment slots serve
// pods; status says where each came from. One the AWS VPC CNI of another
// cluster attached, or one tagged for another instance, stays foreign.
func TestDaemonAdoptsAWSVPCCNIENIs(t *testing.T) {
	f := newFixture(t, map[string]string{"CLUSTER_NAME": "prod"})
	f.now = time.Now() // the ENI's createdAt tag is written with the real clock
	o := newOtherTool(t, f)
	adopted := o.attachAsAWSVPCCNI(1, f.node.InstanceID, map[string]string{cloud.TagClusterName: "prod"})
	otherCluster := o.attachAsAWSVPCCNI(2, f.node.InstanceID, map[string]string{cloud.TagClusterName: "staging"})
	v, _ := f.sim.Cloud.ENI(adopted)
	awsAddrs := v.Secondary

	d := f.start()
	defer d.Close()
	settle(t, d)
	var found bool
	for _, e := range d.Introspect().GetEnis() {
		if e.GetId() != adopted {
			continue
		}
		found = true
		if !strings.Contains(e.GetOrigin(), "AWS VPC CNI") {
			t.Errorf("status gives %s the origin %q, want one naming the AWS VPC CNI", adopted, e.GetOrigin())
		}
		if len(e.GetIps()) != len(awsAddrs) {
			t.Errorf("the daemon holds %d of the %d addresses EC2 has on %s: %v", len(e.GetIps()), len(awsAddrs), adopted, e.GetIps())
		}
	}
	if !found {
		t.Fatalf("the daemon does not manage %s, the AWS VPC CNI's ENI of this node: unmanaged %v", adopted, d.Introspect().GetUnmanaged())
	}
	un := d.Introspect().GetUnmanaged()
	if len(un) != 1 || un[0].GetId() != otherCluster || !strings.Contains(un[0].GetReason(), `"staging"`) {
		t.Errorf("ENIs left alone: %v, want only %s (the AWS VPC CNI's, of cluster staging)", un, otherCluster)
	}

	// The primary's 9 addresses and the adopted ENI's 9: the pool needs no
	// new ENI for the first 18 pods, and the adopted ENI's addresses go to
	// pods.
	onAdopted := 0
	for i := range 18 {
		a, err := d.Add(key(string(rune('a'+i))), "default", string(rune('a'+i)), "")
		if err != nil {
			t.Fatal(err)
		}
		if a.ENIID == adopted {
			onAdopted++
		}
		settle(t, d)
	}
	if onAdopted != len(awsAddrs) {
		t.Errorf("%d pods got an address of the adopted ENI, want %d", onAdopted, len(awsAddrs))
	}

	// A restart adopts it again (nothing of it is in the daemon's store
	// but the pods' allocations).
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = f.start()
	settle(t, d)
	if un := d.Introspect().GetUnmanaged(); len(un) != 1 {
		t.Errorf("after a restart, ENIs left alone: %v, want only %s", un, otherCluster)
	}
}
