package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

// inNodeHTTP is an HTTP client whose connections are opened from inside a
// node's network namespace, so 169.254.169.254 and the in-node EC2 endpoint
// are reached exactly as software on the node reaches them.
func inNodeHTTP(sim *vpcsim.Sim, node string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := sim.Fabric.DoInNode(node, func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

func inNodeSDK(sim *vpcsim.Sim, node vpcsim.Node) (*ec2.Client, *imds.Client) {
	hc := inNodeHTTP(sim, node.Name)
	cfg := aws.Config{Region: "us-west-2", HTTPClient: hc,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDE2E", "secret", "")}
	ec2c := ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(node.EC2Endpoint) })
	md := imds.New(imds.Options{HTTPClient: hc}) // default endpoint: http://169.254.169.254
	return ec2c, md
}

func errCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// startSim starts a simulator with a data plane and proves, on cleanup, that
// nothing of the run is left.
func startSim(t testing.TB, lag time.Duration) *vpcsim.Sim {
	t.Helper()
	requireRoot(t)
	runID := vpcsim.RandomRunID()
	sim, err := vpcsim.Start(vpcsim.Options{DataPlane: true, RunID: runID, IMDSLag: lag})
	if err != nil {
		t.Fatal(err)
	}
	unregister := onInterrupt(func() { _ = sim.Close() })
	t.Cleanup(func() {
		unregister()
		if err := sim.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		left, err := dataplane.Leftovers(runID)
		if err != nil || len(left) > 0 {
			t.Errorf("run %s left %v (%v)", runID, left, err)
		}
	})
	return sim
}

func TestSimulatorFromInsideANode(t *testing.T) {
	sim := startSim(t, 400*time.Millisecond)
	vpc, err := sim.Cloud.AddVPC("10.0.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := sim.Cloud.AddSubnet(vpc, "10.0.0.0/24", "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	n1, err := sim.LaunchNode(vpcsim.LaunchSpec{Name: "n1", InstanceType: "m5.large", SubnetID: sub})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.LaunchNode(vpcsim.LaunchSpec{Name: "n2", InstanceType: "m5.large", SubnetID: sub}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	client, md := inNodeSDK(sim, n1)

	// The node learns who it is from IMDS, as a daemon would.
	idOut, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
	if err != nil {
		t.Fatalf("IMDS from inside the node: %v", err)
	}
	if id := readAll(t, idOut.Content); id != n1.InstanceID {
		t.Fatalf("instance-id %q, want %q", id, n1.InstanceID)
	}

	created, err := client.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(sub)})
	if err != nil {
		t.Fatal(err)
	}
	eni := created.NetworkInterface
	if _, err := client.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: eni.NetworkInterfaceId,
		InstanceId: aws.String(n1.InstanceID), DeviceIndex: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	// The ENI is hot-plugged into the node with its MAC.
	var link netlink.Link
	if err := sim.Fabric.DoInNode("n1", func() error {
		var err error
		link, err = netlink.LinkByName("eth1")
		return err
	}); err != nil {
		t.Fatalf("eth1 in node: %v", err)
	}
	if got := link.Attrs().HardwareAddr.String(); got != *eni.MacAddress {
		t.Fatalf("eth1 MAC %s, want %s", got, *eni.MacAddress)
	}

	as, err := client.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni.NetworkInterfaceId,
		SecondaryPrivateIpAddressCount: aws.Int32(5)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{*eni.PrivateIpAddress}
	for _, a := range as.AssignedPrivateIpAddresses {
		want = append(want, *a.PrivateIpAddress)
	}
	sort.Strings(want)

	// EC2 knows at once; IMDS after its lag.
	d, err := client.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{*eni.NetworkInterfaceId}})
	if err != nil {
		t.Fatal(err)
	}
	var described []string
	for _, a := range d.NetworkInterfaces[0].PrivateIpAddresses {
		described = append(described, *a.PrivateIpAddress)
	}
	sort.Strings(described)
	if strings.Join(described, ",") != strings.Join(want, ",") {
		t.Fatalf("DescribeNetworkInterfaces %v, want %v", described, want)
	}
	path := "network/interfaces/macs/" + *eni.MacAddress + "/local-ipv4s"
	if _, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path}); err == nil {
		t.Error("IMDS knew the new ENI before its lag")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err == nil {
			got := strings.Fields(readAll(t, out.Content))
			sort.Strings(got)
			if strings.Join(got, ",") == strings.Join(want, ",") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("IMDS never showed %v", want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Limits, through the same in-node client.
	second, err := client.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(sub)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: second.NetworkInterface.NetworkInterfaceId,
		InstanceId: aws.String(n1.InstanceID), DeviceIndex: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	third, err := client.CreateNetworkInterface(ctx, &ec2.CreateNetworkInterfaceInput{SubnetId: aws.String(sub)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.AttachNetworkInterface(ctx, &ec2.AttachNetworkInterfaceInput{NetworkInterfaceId: third.NetworkInterface.NetworkInterfaceId,
		InstanceId: aws.String(n1.InstanceID), DeviceIndex: aws.Int32(3)})
	if errCode(err) != "AttachmentLimitExceeded" {
		t.Errorf("fourth ENI on m5.large: %v, want AttachmentLimitExceeded", err)
	}
	if _, err := client.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni.NetworkInterfaceId,
		SecondaryPrivateIpAddressCount: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	_, err = client.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{NetworkInterfaceId: eni.NetworkInterfaceId,
		SecondaryPrivateIpAddressCount: aws.Int32(1)})
	if errCode(err) != "PrivateIpAddressLimitExceeded" {
		t.Errorf("eleventh IPv4 on one ENI: %v, want PrivateIpAddressLimitExceeded", err)
	}

	// Data plane: a secondary address of eth1 reaches the internet and node 2
	// through eth1 while it is assigned to that ENI, and not once it is not.
	x := netip.MustParseAddr(*as.AssignedPrivateIpAddresses[0].PrivateIpAddress)
	eniIP := netip.MustParseAddr(*eni.PrivateIpAddress)
	gw := netip.MustParseAddr("10.0.0.1")
	if err := sim.Fabric.DoInNode("n1", func() error { return configureSecondaryENI(eniIP, x, gw) }); err != nil {
		t.Fatal(err)
	}
	seen := outsideListener(t, sim)
	if err := dialFrom(sim, "n1", x, seen.addr); err != nil {
		t.Fatalf("%s -> outside while assigned: %v", x, err)
	}
	if src := seen.last(t); src != x {
		t.Fatalf("outside saw %s, want the real source %s", src, x)
	}
	n2, _ := sim.Cloud.InstanceNetwork(sim.Nodes()["n2"].InstanceID)
	n2ln := nodeListener(t, sim, "n2", n2.PrimaryIP)
	if err := dialFrom(sim, "n1", x, n2ln.addr); err != nil {
		t.Fatalf("%s -> node 2 while assigned: %v", x, err)
	}
	if src := n2ln.last(t); src != x {
		t.Fatalf("node 2 saw %s, want %s", src, x)
	}
	// Leaving through the wrong ENI is dropped by the source/destination check.
	if err := sim.Fabric.DoInNode("n1", func() error { return setRuleTable(x, 254) }); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(sim, "n1", x, seen.addr); err == nil {
		t.Fatalf("%s left through eth0 and was not dropped", x)
	}
	if err := sim.Fabric.DoInNode("n1", func() error { return setRuleTable(x, 101) }); err != nil {
		t.Fatal(err)
	}
	if _, err := client.UnassignPrivateIpAddresses(ctx, &ec2.UnassignPrivateIpAddressesInput{NetworkInterfaceId: eni.NetworkInterfaceId,
		PrivateIpAddresses: []string{x.String()}}); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(sim, "n1", x, seen.addr); err == nil {
		t.Fatalf("%s still reached the outside after it was unassigned", x)
	}
}

func readAll(t *testing.T, r io.ReadCloser) string {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// configureSecondaryENI does, inside a node, what the CNI daemon will do for
// a secondary ENI: up, its primary address, its own route table 101, and a
// source rule for the pod address x.
func configureSecondaryENI(eniIP, x, gw netip.Addr) error {
	l, err := netlink.LinkByName("eth1")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: eniIP.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		return err
	}
	// x lives on lo so the test can bind to it; on a real node it is a pod's.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: x.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		return err
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK, Table: 101}); err != nil {
		return err
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice(), Table: 101}); err != nil {
		return err
	}
	return setRuleTable(x, 101)
}

func setRuleTable(x netip.Addr, table int) error {
	r := netlink.NewRule()
	r.Src = &net.IPNet{IP: x.AsSlice(), Mask: net.CIDRMask(32, 32)}
	r.Priority = 1536
	_ = netlink.RuleDel(r)
	r.Table = table
	return netlink.RuleAdd(r)
}

type sourceLog struct {
	addr netip.AddrPort
	ch   chan netip.Addr
}

func (s *sourceLog) last(t *testing.T) netip.Addr {
	t.Helper()
	select {
	case a := <-s.ch:
		return a
	case <-time.After(2 * time.Second):
		t.Fatal("listener saw no connection")
		return netip.Addr{}
	}
}

func serveSources(t *testing.T, ln net.Listener) *sourceLog {
	s := &sourceLog{addr: netip.MustParseAddrPort(ln.Addr().String()), ch: make(chan netip.Addr, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.ch <- netip.MustParseAddrPort(c.RemoteAddr().String()).Addr()
			_, _ = c.Write([]byte("ok\n"))
			_ = c.Close()
		}
	}()
	return s
}

func outsideListener(t *testing.T, sim *vpcsim.Sim) *sourceLog {
	ln, err := sim.Fabric.ListenTCPOutside(netip.MustParseAddrPort(dataplane.OutsideAddr + ":8080"))
	if err != nil {
		t.Fatal(err)
	}
	return serveSources(t, ln)
}

func nodeListener(t *testing.T, sim *vpcsim.Sim, node string, a netip.Addr) *sourceLog {
	ln, err := sim.Fabric.ListenTCP(node, netip.AddrPortFrom(a, 8081))
	if err != nil {
		t.Fatal(err)
	}
	return serveSources(t, ln)
}

// dialFrom opens a TCP connection from src inside node to dst and reads the
// greeting; any drop shows up as a timeout. 3 s: a link set up just before
// may still lose the first SYN (retransmitted after 1 s) on a loaded machine.
func dialFrom(sim *vpcsim.Sim, node string, src netip.Addr, dst netip.AddrPort) error {
	var c net.Conn
	err := sim.Fabric.DoInNode(node, func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}
