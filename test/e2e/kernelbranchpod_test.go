//go:build kernel

// A branch-ENI pod wired by the built vpc-bridge (run by libcni, as a
// runtime runs it) on the simulator's data plane, in the kernel tier's guest
// (802.1Q). The daemon is a small IPAM server that answers the branch the
// way vpcchaind does for a pod AWS's resource controller annotated; the
// rest is the chain's own code.

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// branchDaemon answers ADD with a branch for the pods in branches and with
// a primary-ENI address for any other; it keeps no state for a branch pod,
// as vpcchaind does not.
type branchDaemon struct {
	ipamclient.UnimplementedIPAM
	mu       sync.Mutex
	branches map[string]*ipamv1.BranchENI // by pod name
	plain    *ipamv1.Allocation
}

func (d *branchDaemon) Add(_ context.Context, r *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.branches[r.GetPodName()]; ok {
		return &ipamv1.AddReply{Branch: b}, nil
	}
	return &ipamv1.AddReply{Allocation: d.plain}, nil
}

func (d *branchDaemon) Del(_ context.Context, r *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	return &ipamv1.DelReply{}, ipamclient.CheckVersion(r.GetApiVersion())
}

func (d *branchDaemon) Check(_ context.Context, r *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	return &ipamv1.CheckReply{Allocation: d.plain}, ipamclient.CheckVersion(r.GetApiVersion())
}

// nodeLinksRulesRoutes lists the node namespace's links, rules and routes of every
// table, for a before/after comparison.
func nodeLinksRulesRoutes(t *testing.T, n ns.NetNS) string {
	return nodeLinksRulesRoutesOf(t, n, netlink.FAMILY_ALL)
}

// nodeLinksRulesRoutesOf is nodeLinksRulesRoutes with the rules and routes
// of one family (netlink.FAMILY_V4, _V6 or _ALL).
func nodeLinksRulesRoutesOf(t *testing.T, n ns.NetNS, family int) string {
	t.Helper()
	var out []string
	if err := n.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			out = append(out, "link "+l.Attrs().Name)
		}
		rules, err := netlink.RuleList(family)
		if err != nil {
			return err
		}
		for _, r := range rules {
			out = append(out, "rule "+r.String())
		}
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: 0}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			out = append(out, "route "+r.String())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func TestGuestBranchPod(t *testing.T) {
	requireGuest(t)
	ctx := context.Background()
	bin := binDir(t)
	bv := newBranchVPC(ctx, t)
	c, node, peer, ec2c, trunk, branch := bv.sim.Cloud, bv.node, bv.peer, bv.ec2c, bv.trunk, bv.branch
	nodeNet, _ := c.InstanceNetwork(node.InstanceID)
	peerNet, _ := c.InstanceNetwork(peer.InstanceID)
	peerIP := peerNet.PrimaryIP
	// The ordinary pod's address: a secondary address of the primary ENI,
	// as vpcchaind's pool hands out.
	assigned, err := ec2c.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{
		NetworkInterfaceId: aws.String(nodeNet.ENIs[0].ID), SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if err != nil || len(assigned.AssignedPrivateIpAddresses) != 1 {
		t.Fatalf("assign a secondary address to the primary ENI: %v", err)
	}
	plainIP := netip.MustParseAddr(aws.ToString(assigned.AssignedPrivateIpAddresses[0].PrivateIpAddress))
	branchIP := netip.MustParseAddr(aws.ToString(branch.PrivateIpAddress))

	var trunkMAC string
	for _, e := range nodeNet.ENIs {
		if e.ID == aws.ToString(trunk.NetworkInterfaceId) {
			trunkMAC = e.MAC
		}
	}
	if trunkMAC == "" {
		trunkMAC = aws.ToString(trunk.MacAddress)
	}
	d := &branchDaemon{
		branches: map[string]*ipamv1.BranchENI{"sgp": {EniId: aws.ToString(branch.NetworkInterfaceId), Mac: aws.ToString(branch.MacAddress),
			Ip: branchIP.String(), VlanId: 7, SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1",
			TrunkEniId: aws.ToString(trunk.NetworkInterfaceId), TrunkMac: trunkMAC, TrunkDeviceNumber: 1, VpcCidrs: []string{"10.0.0.0/16"}}},
		plain: &ipamv1.Allocation{Ip: plainIP.String(), EniId: nodeNet.ENIs[0].ID, DeviceNumber: 0, RouteTable: 254,
			SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1", VpcCidrs: []string{"10.0.0.0/16"}},
	}
	dir, err := os.MkdirTemp("", "vbr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "ipamd.sock")
	l, err := ipamclient.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ipamclient.NewServer(d)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })

	cni := libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(dir, "cache"), nil)
	nodeNS, peerNS := getNS(t, node.NetNSPath), getNS(t, peer.NetNSPath)
	// The trunk's eth1 stays down, as EC2 attaches it: the first branch
	// pod's ADD brings it up.
	// conf.all.rp_filter as the kernel and systemd leave it (0): strict
	// mode's VLAN link and host veth filter nothing, so the node's own
	// connections to the pod, which come back in by the VLAN link, get
	// through (the kernel applies the larger of conf.all and the link's).
	if err := nodeNS.Do(func(ns.NetNS) error {
		return errors.Join(os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644),
			os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("0"), 0o644))
	}); err != nil {
		t.Fatal(err)
	}
	before := nodeLinksRulesRoutes(t, nodeNS)
	inNode := func(f func() error) error { return nodeNS.Do(func(ns.NetNS) error { return f() }) }
	listenIn(t, peerNS, netip.AddrPortFrom(peerIP, 7070))

	// Each mode in turn, on the same node, the one's DEL leaving the node
	// as it was for the other's ADD.
	for _, mode := range []string{"strict", "standard"} {
		t.Run(mode, func(t *testing.T) {
			raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "plugins": []any{
				map[string]any{"type": "vpc-bridge", "mtu": 9001, "podSGEnforcingMode": mode, "ipam": map[string]any{"type": "vpc-ipam", "socket": socket}}}})
			list, err := libcni.ConfListFromBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			type sandbox struct {
				name string
				ns   ns.NetNS
			}
			rt := func(p sandbox) *libcni.RuntimeConf {
				return &libcni.RuntimeConf{ContainerID: "ctr-" + p.name, NetNS: p.ns.Path(), IfName: "eth0",
					Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.name}}}
			}
			sgp, plain := sandbox{"sgp", newNetNS(t)}, sandbox{"plain", newNetNS(t)}
			for _, p := range []sandbox{sgp, plain} {
				if err := inNode(func() error { _, err := cni.AddNetworkList(ctx, list, rt(p)); return err }); err != nil {
					t.Fatalf("ADD %s: %v\nnode: %s", p.name, err, nodeLinksRulesRoutes(t, nodeNS))
				}
			}
			check := func() error { return inNode(func() error { return cni.CheckNetworkList(ctx, list, rt(sgp)) }) }
			if err := check(); err != nil {
				t.Errorf("CHECK of the branch pod: %v", err)
			}
			// CHECK names a missing piece: strict mode's rule for what comes
			// in by the VLAN link, standard mode's rule for what the pod sends.
			rule := []string{"priority", "10", "iif", "vlan.eth.7", "lookup", "107"}
			want := `rule "10: from all iif vlan.eth.7 lookup 107" missing`
			if mode == "standard" {
				rule = []string{"priority", "1536", "from", branchIP.String(), "lookup", "107"}
				want = `rule "1536: from ` + branchIP.String() + `/32 lookup 107" missing`
			}
			ipIn(t, nodeNS, append([]string{"rule", "del"}, rule...)...)
			if err := check(); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("CHECK without the rule: %v, want %s", err, want)
			}
			ipIn(t, nodeNS, append([]string{"rule", "add"}, rule...)...)
			t.Logf("node after ADD:\n%s", nodeLinksRulesRoutes(t, nodeNS))

			for _, p := range []uint16{8080, 9090} {
				listenIn(t, sgp.ns, netip.AddrPortFrom(branchIP, p))
				listenIn(t, plain.ns, netip.AddrPortFrom(plainIP, p))
			}
			trunkWire := openCapture(t, nodeNS, "eth1")

			// Out: the branch pod reaches the peer through its VLAN.
			if err := dialNS(sgp.ns, netip.AddrPortFrom(peerIP, 7070), 5*time.Second); err != nil {
				var neigh []string
				_ = nodeNS.Do(func(ns.NetNS) error {
					ns, _ := netlink.NeighList(0, netlink.FAMILY_V4)
					for _, n := range ns {
						neigh = append(neigh, n.String())
					}
					return nil
				})
				t.Fatalf("branch pod to the peer's %v:7070: %v\nthe trunk's eth1: %v\nnode neighbours: %v", peerIP, err, trunkWire.all(), neigh)
			}
			fromPod := trunkWire.seen(func(f frame) bool { return f.proto == 6 && f.src == branchIP })
			if len(fromPod) == 0 {
				t.Errorf("no TCP from the branch pod's %v on the trunk's eth1: %v", branchIP, trunkWire.all())
			}
			for _, f := range fromPod {
				if f.vlan != 7 {
					t.Errorf("TCP from the branch pod on eth1 with VLAN id %d, want 7: %v", f.vlan, f)
				}
			}
			// In: the branch's group lets TCP 8080 in, tagged 7, and drops 9090.
			if err := dialNS(peerNS, netip.AddrPortFrom(branchIP, 8080), 5*time.Second); err != nil {
				t.Errorf("peer to the branch pod's %v:8080 (its group allows it): %v", branchIP, err)
			}
			for _, f := range trunkWire.seen(func(f frame) bool { return f.proto == 6 && f.dst == branchIP }) {
				if f.vlan != 7 {
					t.Errorf("TCP to the branch pod on eth1 with VLAN id %d, want 7: %v", f.vlan, f)
				}
			}
			var timeout net.Error
			if err := dialNS(peerNS, netip.AddrPortFrom(branchIP, 9090), 2*time.Second); !errors.As(err, &timeout) || !timeout.Timeout() {
				t.Errorf("peer to the branch pod's %v:9090 (not in its group): %v, want a timeout (dropped)", branchIP, err)
			}
			// From its own node and the node's other pod: strict mode sends
			// that through the VPC too (the group drops 9090), standard mode
			// delivers it directly (no group sees it).
			for _, from := range []struct {
				name string
				ns   ns.NetNS
			}{{"the node", nodeNS}, {"the ordinary pod on the same node", plain.ns}} {
				if err := dialNS(from.ns, netip.AddrPortFrom(branchIP, 8080), 5*time.Second); err != nil {
					t.Errorf("%s to the branch pod's %v:8080: %v", from.name, branchIP, err)
				}
				err := dialNS(from.ns, netip.AddrPortFrom(branchIP, 9090), 2*time.Second)
				switch {
				case mode == "standard" && err != nil:
					t.Errorf("%s to the branch pod's %v:9090 in standard mode: %v, want it delivered directly", from.name, branchIP, err)
				case mode == "strict" && (!errors.As(err, &timeout) || !timeout.Timeout()):
					t.Errorf("%s to the branch pod's %v:9090 in strict mode: %v, want a timeout (the branch's group drops it)", from.name, branchIP, err)
				}
			}
			// The ordinary pod on the same node: the nodes' group, both ways, untagged.
			if err := dialNS(plain.ns, netip.AddrPortFrom(peerIP, 7070), 5*time.Second); err != nil {
				t.Errorf("ordinary pod to the peer's %v:7070: %v", peerIP, err)
			}
			if err := dialNS(peerNS, netip.AddrPortFrom(plainIP, 9090), 5*time.Second); err != nil {
				t.Errorf("peer to the ordinary pod's %v:9090 (the nodes' group allows it): %v", plainIP, err)
			}
			if fs := trunkWire.seen(func(f frame) bool {
				return (f.src == plainIP || f.dst == plainIP) && f.src != branchIP && f.dst != branchIP
			}); len(fs) > 0 {
				t.Errorf("the ordinary pod's own traffic on the trunk's eth1: %v", fs)
			}

			// DEL, twice each: nothing of either pod is left.
			for _, p := range []sandbox{sgp, plain} {
				for i := 0; i < 2; i++ {
					if err := inNode(func() error { return cni.DelNetworkList(ctx, list, rt(p)) }); err != nil {
						t.Errorf("DEL %d of %s: %v", i+1, p.name, err)
					}
				}
			}
			if after := nodeLinksRulesRoutes(t, nodeNS); after != before {
				t.Errorf("the node after DEL differs from before ADD:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}
