//go:build kernel

// Branch ENIs in the simulator's data plane, proved with packets in the
// kernel tier's guest (it has 802.1Q VLAN links). What is expected is EC2's
// documented behaviour for ENI trunking: a branch's traffic rides its
// trunk's link tagged with the branch's VLAN id, and a branch is an ENI of
// its own, with its own addresses, source/destination check and security
// groups.

package e2e

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

// dialNS connects to a from namespace n within timeout.
func dialNS(n ns.NetNS, a netip.AddrPort, timeout time.Duration) error {
	return n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", a.String(), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// listenIn accepts (and closes) connections to a inside n until the test
// ends.
func listenIn(t *testing.T, n ns.NetNS, a netip.AddrPort) {
	t.Helper()
	var l net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", a.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %v in %s: %v", a, nsName(n), err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// untag is a frame with an 802.1Q tag (icmpEchoFrame's) without it.
func untag(b []byte) []byte {
	return append(append([]byte(nil), b[:12]...), b[16:]...)
}

func getNS(t *testing.T, path string) ns.NetNS {
	t.Helper()
	n, err := ns.GetNS(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// branchVPC is the kernel tier's trunking setup, made through the
// simulator's EC2 API as a controller would: two m5.large nodes in one
// subnet whose group lets the VPC in on every port, a trunk ENI attached to
// node at device 1, and a branch ENI in a group that lets the VPC in on TCP
// 8080 only, associated with the trunk by VLAN 7.
type branchVPC struct {
	sim        *vpcsim.Sim
	node, peer vpcsim.Node
	ec2c       *ec2.Client
	trunk      *types.NetworkInterface
	branch     *types.NetworkInterface
	assoc      *ec2.AssociateTrunkInterfaceOutput
}

func newBranchVPC(ctx context.Context, t *testing.T) *branchVPC {
	t.Helper()
	bv := &branchVPC{sim: startSim(t, 0)}
	c := bv.sim.Cloud
	vpc, err := c.AddVPC("10.0.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	subnet, err := c.AddSubnet(vpc, "10.0.1.0/24", "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	vpcCIDR := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}
	nodeSG, aerr := c.CreateSecurityGroup(vpc, "nodes", "nodes")
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := c.AuthorizeIngress(nodeSG, []vpcsim.Permission{{Protocol: "-1", CIDRs: vpcCIDR}}); aerr != nil {
		t.Fatal(aerr)
	}
	branchSG, aerr := c.CreateSecurityGroup(vpc, "branch", "branch")
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := c.AuthorizeIngress(branchSG, []vpcsim.Permission{{Protocol: "tcp", FromPort: 8080, ToPort: 8080, CIDRs: vpcCIDR}}); aerr != nil {
		t.Fatal(aerr)
	}
	if bv.node, err = bv.sim.LaunchNode(vpcsim.LaunchSpec{Name: "trunk", InstanceType: "m5.large", SubnetID: subnet, GroupIDs: []string{nodeSG}}); err != nil {
		t.Fatal(err)
	}
	if bv.peer, err = bv.sim.LaunchNode(vpcsim.LaunchSpec{Name: "peer", InstanceType: "m5.large", SubnetID: subnet, GroupIDs: []string{nodeSG}}); err != nil {
		t.Fatal(err)
	}
	bv.ec2c = ec2.NewFromConfig(aws.Config{Region: "us-west-2", Credentials: credentials.NewStaticCredentialsProvider("AKIDE2E", "secret", "")},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(bv.sim.EC2URL) })
	create := func(typ types.NetworkInterfaceCreationType, group string) *types.NetworkInterface {
		out, err := bv.ec2c.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(subnet), InterfaceType: typ, Groups: []string{group}})
		if err != nil {
			t.Fatalf("create a %s ENI: %v", typ, err)
		}
		return out.NetworkInterface
	}
	bv.trunk = create(types.NetworkInterfaceCreationTypeTrunk, nodeSG)
	if _, err := bv.ec2c.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: bv.trunk.NetworkInterfaceId,
		InstanceId: aws.String(bv.node.InstanceID), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatalf("attach the trunk: %v", err)
	}
	bv.branch = create(types.NetworkInterfaceCreationTypeBranch, branchSG)
	if bv.assoc, err = bv.ec2c.AssociateTrunkInterface(ctx, &ec2.AssociateTrunkInterfaceInput{BranchInterfaceId: bv.branch.NetworkInterfaceId,
		TrunkInterfaceId: bv.trunk.NetworkInterfaceId, VlanId: aws.Int32(7)}); err != nil {
		t.Fatalf("associate the branch by VLAN 7: %v", err)
	}
	return bv
}

func TestGuestBranchENI(t *testing.T) {
	requireGuest(t)
	ctx := context.Background()
	bv := newBranchVPC(ctx, t)
	sim, c, node, peer, ec2c, trunk, branch, assoc := bv.sim, bv.sim.Cloud, bv.node, bv.peer, bv.ec2c, bv.trunk, bv.branch, bv.assoc
	branchIP := netip.MustParseAddr(aws.ToString(branch.PrivateIpAddress))
	branchMAC, err := net.ParseMAC(aws.ToString(branch.MacAddress))
	if err != nil {
		t.Fatal(err)
	}
	nodeNet, _ := c.InstanceNetwork(node.InstanceID)
	peerNet, _ := c.InstanceNetwork(peer.InstanceID)
	nodeIP, peerIP := nodeNet.PrimaryIP, peerNet.PrimaryIP

	// The node as a trunking CNI sets it up: the trunk's eth1 up, on it a
	// VLAN link with id 7 and the branch's MAC, moved into the pod's
	// namespace with the branch's address.
	nodeNS, peerNS := getNS(t, node.NetNSPath), getNS(t, peer.NetNSPath)
	pod := newNetNS(t)
	ipIn(t, nodeNS, "link", "set", "eth1", "up")
	ipIn(t, nodeNS, "link", "add", "link", "eth1", "name", "br7", "address", branchMAC.String(), "type", "vlan", "id", "7")
	ipIn(t, nodeNS, "link", "set", "br7", "netns", nsName(pod))
	ipIn(t, pod, "link", "set", "lo", "up")
	ipIn(t, pod, "addr", "add", branchIP.String()+"/24", "dev", "br7")
	ipIn(t, pod, "link", "set", "br7", "up")
	ipIn(t, pod, "route", "add", "default", "via", "10.0.1.1")
	for _, p := range []uint16{8080, 9090} {
		listenIn(t, pod, netip.AddrPortFrom(branchIP, p))
	}
	listenIn(t, nodeNS, netip.AddrPortFrom(nodeIP, 9090))
	trunkWire := openCapture(t, nodeNS, "eth1")

	// The branch's group lets TCP 8080 in from the peer, and the router
	// delivers it over the trunk's link tagged with VLAN 7.
	if err := dialNS(peerNS, netip.AddrPortFrom(branchIP, 8080), 5*time.Second); err != nil {
		t.Fatalf("peer %v to the branch's %v:8080 (its group allows it): %v", peerIP, branchIP, err)
	}
	toBranch := trunkWire.seen(func(f frame) bool { return f.proto == 6 && f.dst == branchIP })
	if len(toBranch) == 0 {
		t.Errorf("no TCP to %v on the trunk's eth1: %v", branchIP, trunkWire.all())
	}
	for _, f := range toBranch {
		if f.vlan != 7 {
			t.Errorf("on the trunk's eth1, TCP to the branch with VLAN id %d, want 7: %v", f.vlan, f)
		}
	}
	// TCP 9090 is not in the branch's group: dropped, though the nodes'
	// group (the trunk's and the primary ENI's) lets it in to the node.
	if err := dialNS(peerNS, netip.AddrPortFrom(nodeIP, 9090), 5*time.Second); err != nil {
		t.Fatalf("peer to the node's primary %v:9090 (the nodes' group allows it): %v", nodeIP, err)
	}
	var timeout net.Error
	if err := dialNS(peerNS, netip.AddrPortFrom(branchIP, 9090), 2*time.Second); !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Errorf("peer to the branch's %v:9090 (not in its group): %v, want a timeout (dropped)", branchIP, err)
	}
	ping(t, pod, peerIP.String())

	// Frames from the node's eth1 to the router (the trunk's router link's
	// MAC), an echo request to the peer each: only a frame tagged 7 and
	// sourced from the branch's address reaches the peer, and an untagged
	// one from the trunk's own address (the trunk ENI's traffic).
	rlink, ok := sim.Fabric.RouterLinkName(aws.ToString(trunk.NetworkInterfaceId))
	if !ok {
		t.Fatal("no router link for the trunk")
	}
	router := getNS(t, dataplane.NetNSPath(sim.Fabric.RouterNetNSName()))
	routerMAC := ifaceIn(t, router, rlink).HardwareAddr
	peerWire := openCapture(t, peerNS, "eth0")
	base := uint16(mrand.N(20000) + 1)
	wrongVLAN, spoofed, untagged, good, trunkOwn := base, base+1, base+2, base+3, base+4
	sendFrame(t, nodeNS, "eth1", icmpEchoFrame(routerMAC, branchMAC, 8, branchIP, peerIP, wrongVLAN))
	sendFrame(t, nodeNS, "eth1", icmpEchoFrame(routerMAC, branchMAC, 7, nodeIP, peerIP, spoofed))
	tagged := icmpEchoFrame(routerMAC, branchMAC, 7, branchIP, peerIP, untagged)
	sendFrame(t, nodeNS, "eth1", untag(tagged))
	sendFrame(t, nodeNS, "eth1", icmpEchoFrame(routerMAC, branchMAC, 7, branchIP, peerIP, good))
	trunkIP := netip.MustParseAddr(aws.ToString(trunk.PrivateIpAddress))
	trunkMAC := ifaceIn(t, nodeNS, "eth1").HardwareAddr
	sendFrame(t, nodeNS, "eth1", untag(icmpEchoFrame(routerMAC, trunkMAC, 0, trunkIP, peerIP, trunkOwn)))
	if _, ok := peerWire.waitFor(5*time.Second, isICMPEcho(8, good)); !ok {
		t.Fatalf("the echo request tagged 7 from the branch's address did not reach the peer: %v", peerWire.all())
	}
	if _, ok := peerWire.waitFor(5*time.Second, isICMPEcho(8, trunkOwn)); !ok {
		t.Errorf("the untagged echo request from the trunk's own address %v did not reach the peer: %v", trunkIP, peerWire.all())
	}
	// The others were sent first: by now they would have arrived.
	for _, c := range []struct {
		what string
		id   uint16
	}{{"tagged 8", wrongVLAN}, {"tagged 7 from the node's primary IP", spoofed}, {"untagged from the branch's address", untagged}} {
		if fs := peerWire.seen(isICMPEcho(8, c.id)); len(fs) > 0 {
			t.Errorf("an echo request %s reached the peer: %v", c.what, fs)
		}
	}

	// Disassociated, the branch's address is unreachable and its VLAN link
	// in the router gone.
	brlink, _ := sim.Fabric.RouterLinkName(aws.ToString(branch.NetworkInterfaceId))
	if _, err := ec2c.DisassociateTrunkInterface(ctx, &ec2.DisassociateTrunkInterfaceInput{AssociationId: assoc.InterfaceAssociation.AssociationId}); err != nil {
		t.Fatal(err)
	}
	if err := dialNS(peerNS, netip.AddrPortFrom(branchIP, 8080), 2*time.Second); err == nil {
		t.Errorf("peer reached the disassociated branch's %v:8080", branchIP)
	}
	if out, err := exec.Command("ip", "-n", nsName(router), "-o", "link", "show", brlink).CombinedOutput(); err == nil {
		t.Errorf("router link %s still there after disassociation: %s", brlink, out)
	}
}
