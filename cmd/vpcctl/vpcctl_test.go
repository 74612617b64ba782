package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMaxPods(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--instance-type", "m5.large"}, "29\n"},
		{[]string{"--instance-type", "t3.medium"}, "17\n"},
		{[]string{"--instance-type", "c5.18xlarge"}, "737\n"},
		{[]string{"--instance-type", "t2.micro"}, "4\n"},
		{[]string{"--instance-type", "m5.large", "--prefix-delegation"}, "434\n"},
		{[]string{"--instance-type", "m5.large", "--prefix-delegation", "--cni-cap"}, "110\n"},
		{[]string{"--instance-type", "c5.18xlarge", "--cni-cap"}, "250\n"},
		{[]string{"--instance-type", "m5.large", "--custom-networking"}, "20\n"},
		{[]string{"--instance-type", "m5.large", "--max-eni", "2"}, "20\n"},
		// IPv6 mode: EKS's figure for IPv6 nodes (the prefix-delegation
		// count with the calculator's cap), whatever the ENI options.
		{[]string{"--instance-type", "m5.large", "--ipv6"}, "110\n"},
		{[]string{"--instance-type", "c5.18xlarge", "--ipv6"}, "250\n"},
		{[]string{"--instance-type", "t3.medium", "--ipv6", "--max-eni", "1"}, "110\n"},
	}
	for _, tt := range tests {
		code, out, errs := runCLI(t, append([]string{"max-pods"}, tt.args...)...)
		if code != 0 || out != tt.want {
			t.Errorf("max-pods %v: code %d, stdout %q, stderr %q; want %q", tt.args, code, out, errs, tt.want)
		}
	}
}

func TestMaxPodsErrors(t *testing.T) {
	tests := []struct {
		args    []string
		code    int
		wantErr string
	}{
		{[]string{"--instance-type", "m5.larg"}, 1, `unknown instance type "m5.larg" (did you mean m5.large`},
		{[]string{"--instance-type", "t2.micro", "--prefix-delegation"}, 1, "prefix delegation needs a Nitro"},
		{[]string{"--instance-type", "m4.large", "--ipv6"}, 1, "IPv6 pods need a Nitro-based"},
		{[]string{"--instance-type", "m5.large", "--ipv6", "--custom-networking"}, 1, "custom networking does not apply"},
		{[]string{}, 2, "exactly one of --instance-type or --all"},
		{[]string{"--all", "--instance-type", "m5.large"}, 2, "exactly one of"},
		{[]string{"--instance-type", "m5.large", "--max-eni", "-1"}, 2, "must not be negative"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		code, out, errs := runCLI(t, append([]string{"max-pods"}, tt.args...)...)
		if code != tt.code || out != "" || !strings.Contains(errs, tt.wantErr) {
			t.Errorf("max-pods %v: code %d, stdout %q, stderr %q; want code %d and %q", tt.args, code, out, errs, tt.code, tt.wantErr)
		}
	}
}

func TestMaxPodsAll(t *testing.T) {
	code, out, errs := runCLI(t, "max-pods", "--all", "--prefix-delegation", "--cni-cap")
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 1000 || !strings.HasPrefix(lines[0], "INSTANCE-TYPE") {
		t.Fatalf("%d lines, first %q", len(lines), lines[0])
	}
	want := map[string][]string{
		"m5.large":    {"m5.large", "3", "10", "110", "434", "110"},
		"c5.18xlarge": {"c5.18xlarge", "15", "50", "250", "11762", "250"},
		"t2.micro":    {"t2.micro", "2", "2", "n/a", "n/a", "n/a"},
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if w, ok := want[f[0]]; ok {
			if strings.Join(f, " ") != strings.Join(w, " ") {
				t.Errorf("row %q, want %q", l, w)
			}
			delete(want, f[0])
		}
	}
	if len(want) > 0 {
		t.Errorf("rows missing: %v", want)
	}
}

func TestUnknownCommand(t *testing.T) {
	if code, _, errs := runCLI(t, "frobnicate"); code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("code %d, stderr %q", code, errs)
	}
	if code, _, _ := runCLI(t); code != 2 {
		t.Errorf("no args: code %d", code)
	}
}

func sampleReply() *ipamv1.IntrospectReply {
	return &ipamv1.IntrospectReply{
		Mode: "secondary-ip", Total: 18, Assigned: 2, Cooling: 1, Available: 15, MaxPods: 29,
		LastDecision: "pool within warm target",
		Enis: []*ipamv1.IntrospectENI{
			{Id: "eni-0aaa", DeviceNumber: 0, Primary: true, PrimaryIp: "10.0.1.10",
				Ips: []string{"10.0.1.11", "10.0.1.12", "10.0.1.13"}, RouteTable: 254, SubnetCidr: "10.0.1.0/24",
				Origin: "the node's primary ENI"},
			{Id: "eni-0bbb", DeviceNumber: 1, PrimaryIp: "10.0.2.10",
				Prefixes: []string{"10.0.2.16/28"}, RouteTable: 1001, SubnetCidr: "10.0.2.0/24", Origin: "created by vpcchain"},
			{Id: "eni-0eee", DeviceNumber: 3, PrimaryIp: "10.0.2.20", Ips: []string{"10.0.2.21"}, RouteTable: 1003,
				SubnetCidr: "10.0.2.0/24", Origin: "adopted: created by the AWS VPC CNI"},
		},
		Allocations: []*ipamv1.IntrospectAllocation{
			{Key: &ipamv1.Key{ContainerId: "c1"}, Ip: "10.0.1.11", EniId: "eni-0aaa",
				PodNamespace: "default", PodName: "web-1", AssignedUnix: 1700000000},
			{Key: &ipamv1.Key{ContainerId: "0123456789abcdef"}, Ip: "10.0.2.17", EniId: "eni-0bbb"},
		},
		Unmanaged: []*ipamv1.IntrospectUnmanagedENI{
			{Id: "eni-0ccc", DeviceNumber: 2, Reason: `interface type "efa"`},
			{Id: "eni-0ddd", DeviceNumber: 1, NetworkCard: 1, Reason: "on network card 1"},
		},
	}
}

const wantStatus = `mode secondary-ip  total 18  assigned 2  cooling 1  available 15  max-pods 29
last decision: pool within warm target

ENIs (3):
DEVICE  ENI                 PRIMARY-IP  ROUTE-TABLE  SUBNET       ADDRESSES  UNASSIGNED  ORIGIN
0       eni-0aaa (primary)  10.0.1.10   254          10.0.1.0/24  3          2           the node's primary ENI
1       eni-0bbb            10.0.2.10   1001         10.0.2.0/24  16         15          created by vpcchain
3       eni-0eee            10.0.2.20   1003         10.0.2.0/24  1          1           adopted: created by the AWS VPC CNI

ENIs left alone (2):
CARD  DEVICE  ENI       WHY
0     2       eni-0ccc  interface type "efa"
1     1       eni-0ddd  on network card 1

Allocations (2):
POD                     IP         ENI       ASSIGNED
default/web-1           10.0.1.11  eni-0aaa  2023-11-14T22:13:20Z
container 0123456789ab  10.0.2.17  eni-0bbb  -
`

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	if err := printStatus(&b, sampleReply(), &ipamv1.StatusReply{Ready: true, Available: 15}); err != nil {
		t.Fatal(err)
	}
	if b.String() != wantStatus {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), wantStatus)
	}
	for _, c := range []struct {
		cn   *ipamv1.IntrospectCustomNetworking
		want string
	}{
		{&ipamv1.IntrospectCustomNetworking{Eniconfig: "us-west-2a", ChosenBy: `label "topology.kubernetes.io/zone"`,
			Subnet: "subnet-0123abcd", SecurityGroups: []string{"sg-0123abcd", "sg-4567ef01"}},
			"custom networking: ENIConfig us-west-2a (label \"topology.kubernetes.io/zone\"): new ENIs in subnet-0123abcd with sg-0123abcd,sg-4567ef01\n"},
		{&ipamv1.IntrospectCustomNetworking{Eniconfig: "us-west-2b", Problem: `ENIConfig "us-west-2b" (label) does not exist`},
			"custom networking: no new ENIs: ENIConfig \"us-west-2b\" (label) does not exist\n"},
	} {
		b.Reset()
		if err := printStatus(&b, &ipamv1.IntrospectReply{CustomNetworking: c.cn}, nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("custom networking %v: got\n%s\nwant a line %q", c.cn, b.String(), c.want)
		}
	}
	b.Reset()
	if err := printStatus(&b, &ipamv1.IntrospectReply{}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "mode -  total 0") {
		t.Errorf("empty reply: %q", b.String())
	}
}

// Security groups for pods: the trunk the controller attached and each
// branch with the pod it belongs to; before the trunk, what is missing.
func TestPrintPodENI(t *testing.T) {
	for _, tc := range []struct {
		name string
		pe   *ipamv1.IntrospectPodENI
		want string
	}{
		{"trunk and a branch", &ipamv1.IntrospectPodENI{
			Trunk:    &ipamv1.IntrospectUnmanagedENI{Id: "eni-0t", DeviceNumber: 2, Reason: `interface type "trunk"`},
			TrunkMac: "02:00:00:00:00:0t",
			Branches: []*ipamv1.IntrospectBranch{{PodNamespace: "shop", PodName: "db-0", EniId: "eni-0b", VlanId: 1,
				Ip: "10.0.1.40", Mac: "02:00:00:00:00:0b"}}}, `
Security groups for pods (trunk and branch ENIs of the VPC resource controller):
DEVICE  ENI     VLAN  IP         MAC                ORIGIN
2       eni-0t  -     -          02:00:00:00:00:0t  trunk
-       eni-0b  1     10.0.1.40  02:00:00:00:00:0b  branch of pod shop/db-0
`},
		{"no trunk yet", &ipamv1.IntrospectPodENI{Problem: "the instance type t2.micro does not support ENI trunking"}, `
Security groups for pods (trunk and branch ENIs of the VPC resource controller):
  the instance type t2.micro does not support ENI trunking
DEVICE  ENI  VLAN  IP  MAC  ORIGIN
-       -    -     -   -    trunk: not attached yet
`},
	} {
		var b bytes.Buffer
		if err := printStatus(&b, &ipamv1.IntrospectReply{PodEni: tc.pe}, nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s: got\n%s\nwant it to contain\n%s", tc.name, b.String(), tc.want)
		}
	}
}

type fakeDaemon struct {
	ipamclient.UnimplementedIPAM
	reply  *ipamv1.IntrospectReply
	status *ipamv1.StatusReply // nil: Status is not implemented
}

func (f *fakeDaemon) Status(ctx context.Context, r *ipamv1.StatusRequest) (*ipamv1.StatusReply, error) {
	if f.status == nil {
		return f.UnimplementedIPAM.Status(ctx, r)
	}
	return f.status, nil
}

func (f *fakeDaemon) Introspect(_ context.Context, r *ipamv1.IntrospectRequest) (*ipamv1.IntrospectReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	return f.reply, nil
}

func TestStatusAgainstDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "ipamd.sock")
	l, err := ipamclient.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ipamclient.NewServer(&fakeDaemon{reply: sampleReply()})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })

	code, out, errs := runCLI(t, "status", "--socket", path)
	if code != 0 || out != wantStatus {
		t.Errorf("code %d, stderr %q, stdout:\n%s", code, errs, out)
	}
}

// A node that is not ready, or ready with something to say (a sysctl the
// daemon cannot set), says so first.
func TestStatusSaysWhyNotReady(t *testing.T) {
	for _, tc := range []struct {
		st   *ipamv1.StatusReply
		want string
	}{
		{&ipamv1.StatusReply{Ready: true, Available: 15}, "mode secondary-ip"},
		{&ipamv1.StatusReply{Reason: "host networking: node: sysctl net.ipv4.ip_forward is 0, needs 1"},
			"NOT READY: host networking: node: sysctl net.ipv4.ip_forward is 0, needs 1\nmode secondary-ip"},
		{&ipamv1.StatusReply{Ready: true, Available: 15, Reason: "host networking: eni-0bbb (device 1): sysctl net.ipv4.conf.eth1.rp_filter is 1"},
			"ready: host networking: eni-0bbb (device 1): sysctl net.ipv4.conf.eth1.rp_filter is 1\nmode secondary-ip"},
	} {
		path := filepath.Join(t.TempDir(), "ipamd.sock")
		l, err := ipamclient.Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := ipamclient.NewServer(&fakeDaemon{reply: sampleReply(), status: tc.st})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(context.Background(), l) //nolint:errcheck // ends with Close
		code, out, errs := runCLI(t, "status", "--socket", path)
		srv.Close()
		if code != 0 || !strings.HasPrefix(out, tc.want) {
			t.Errorf("status %v: code %d, stderr %q, stdout:\n%s\nwant it to start with %q", tc.st, code, errs, out, tc.want)
		}
	}
}

func TestStatusNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipamd.sock")
	code, out, errs := runCLI(t, "status", "--socket", path)
	if code != 1 || out != "" || !strings.Contains(errs, path+": no such file (is the daemon running?)") {
		t.Errorf("code %d, stdout %q, stderr %q", code, out, errs)
	}
}
