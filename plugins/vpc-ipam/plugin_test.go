package main

// Plugin tests: the vpc-ipam binary is built once and run the way a runtime
// runs it (CNI_* environment, config on stdin, result or error JSON on
// stdout) against a fake daemon serving the real gRPC API on a unix socket.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
	"github.com/vpcchain/vpcchain/internal/vpcipam"
)

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vpc-ipam-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "vpc-ipam")
	out, err := exec.Command("go", "build", "-o", pluginBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build vpc-ipam: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeDaemon keeps allocations in memory with the daemon's semantics: the
// same key gets the same address, Check answers NotFound on any mismatch,
// GC releases the keys of a network that are not valid.
type fakeDaemon struct {
	ipamclient.UnimplementedIPAM

	mu        sync.Mutex
	free      []string
	byKey     map[string]*ipamv1.Allocation
	noAddress string            // when set, Add answers NoAddressStatus(noAddress)
	branch    *ipamv1.BranchENI // when set, Add answers with it (a branch-ENI pod)
	version   uint32            // the API version it speaks; 0 = ipamclient.APIVersion
	block     bool              // every RPC waits for the caller's deadline
	delErr    error             // Del answers this
	status    *ipamv1.StatusReply
	adds      []*ipamv1.AddRequest
	gcs       []*ipamv1.GCRequest
}

func newFakeDaemon() *fakeDaemon {
	return &fakeDaemon{
		free:   []string{"10.0.1.23", "10.0.1.24", "10.0.1.25"},
		byKey:  map[string]*ipamv1.Allocation{},
		status: &ipamv1.StatusReply{Ready: true, Available: 3},
	}
}

func mapKey(k *ipamv1.Key) string {
	return k.GetNetwork() + "|" + k.GetContainerId() + "|" + k.GetIfname()
}

// enter checks the version and blocks if told to; it returns with f.mu held.
func (f *fakeDaemon) enter(ctx context.Context, v uint32) error {
	f.mu.Lock()
	if f.block {
		f.mu.Unlock()
		<-ctx.Done()
		f.mu.Lock()
		return status.FromContextError(ctx.Err()).Err()
	}
	if f.version != 0 && v != f.version {
		return ipamclient.VersionMismatchStatus(v, f.version)
	}
	if f.version == 0 {
		return ipamclient.CheckVersion(v)
	}
	return nil
}

func (f *fakeDaemon) Add(ctx context.Context, r *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	defer f.mu.Unlock()
	if err := f.enter(ctx, r.GetApiVersion()); err != nil {
		return nil, err
	}
	f.adds = append(f.adds, r)
	if a, ok := f.byKey[mapKey(r.GetKey())]; ok {
		return &ipamv1.AddReply{Allocation: a}, nil
	}
	if f.noAddress != "" {
		return nil, ipamclient.NoAddressStatus(f.noAddress)
	}
	if f.branch != nil {
		return &ipamv1.AddReply{Branch: f.branch}, nil
	}
	if len(f.free) == 0 {
		return nil, ipamclient.NoAddressStatus("no free address on this node: pool exhausted")
	}
	ip := f.free[0]
	f.free = f.free[1:]
	a := &ipamv1.Allocation{Ip: ip, EniId: "eni-0abc", DeviceNumber: 2, RouteTable: 3,
		SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1", VpcCidrs: []string{"10.0.0.0/16"}}
	f.byKey[mapKey(r.GetKey())] = a
	return &ipamv1.AddReply{Allocation: a}, nil
}

func (f *fakeDaemon) Del(ctx context.Context, r *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	defer f.mu.Unlock()
	if err := f.enter(ctx, r.GetApiVersion()); err != nil {
		return nil, err
	}
	if f.delErr != nil {
		return nil, f.delErr
	}
	a, ok := f.byKey[mapKey(r.GetKey())]
	if !ok {
		return &ipamv1.DelReply{}, nil
	}
	delete(f.byKey, mapKey(r.GetKey()))
	f.free = append(f.free, a.GetIp())
	return &ipamv1.DelReply{Released: true, Allocation: a}, nil
}

func (f *fakeDaemon) Check(ctx context.Context, r *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	defer f.mu.Unlock()
	if err := f.enter(ctx, r.GetApiVersion()); err != nil {
		return nil, err
	}
	a, ok := f.byKey[mapKey(r.GetKey())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s holds no address", mapKey(r.GetKey()))
	}
	if r.GetIp() != a.GetIp() {
		return nil, status.Errorf(codes.NotFound, "%s holds %s, not %s", mapKey(r.GetKey()), a.GetIp(), r.GetIp())
	}
	return &ipamv1.CheckReply{Allocation: a}, nil
}

func (f *fakeDaemon) Status(ctx context.Context, r *ipamv1.StatusRequest) (*ipamv1.StatusReply, error) {
	defer f.mu.Unlock()
	if err := f.enter(ctx, r.GetApiVersion()); err != nil {
		return nil, err
	}
	return f.status, nil
}

func (f *fakeDaemon) GC(ctx context.Context, r *ipamv1.GCRequest) (*ipamv1.GCReply, error) {
	defer f.mu.Unlock()
	if err := f.enter(ctx, r.GetApiVersion()); err != nil {
		return nil, err
	}
	f.gcs = append(f.gcs, r)
	valid := map[string]bool{}
	for _, k := range r.GetValid() {
		valid[mapKey(k)] = true
	}
	reply := &ipamv1.GCReply{}
	for mk, a := range f.byKey {
		parts := strings.SplitN(mk, "|", 3)
		if parts[0] != r.GetNetwork() || valid[mk] {
			continue
		}
		delete(f.byKey, mk)
		f.free = append(f.free, a.GetIp())
		reply.Released = append(reply.Released, &ipamv1.Key{Network: parts[0], ContainerId: parts[1], Ifname: parts[2]})
	}
	return reply, nil
}

func (f *fakeDaemon) with(fn func(f *fakeDaemon)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// env is one test's node: a fake daemon on a socket in a private directory.
type env struct {
	t      *testing.T
	d      *fakeDaemon
	socket string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Not t.TempDir(): unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "vipam")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{t: t, d: newFakeDaemon(), socket: filepath.Join(dir, "run", "ipamd.sock")}
	l, err := ipamclient.Listen(e.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ipamclient.NewServer(e.d)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return e
}

// conf is a network configuration as vpc-bridge passes it to its IPAM
// plugin: vpc-bridge's own fields at the top, ours under "ipam".
func (e *env) conf(cniVersion string, extraIPAM map[string]any, extraTop map[string]any) string {
	ipam := map[string]any{"type": "vpc-ipam", "socket": e.socket}
	for k, v := range extraIPAM {
		ipam[k] = v
	}
	top := map[string]any{"cniVersion": cniVersion, "name": "vpcchain", "type": "vpc-bridge",
		"vethPrefix": "eni", "mtu": 9001, "ipam": ipam}
	for k, v := range extraTop {
		top[k] = v
	}
	b, err := json.Marshal(top)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

type outcome struct {
	stdout, stderr []byte
	err            *types.Error // the CNI error on stdout when the plugin failed
}

// run executes the plugin like a runtime. containerID "" means the
// variables of a per-attachment verb are not set (STATUS, GC).
func run(t *testing.T, command, containerID, args, stdin string) outcome {
	t.Helper()
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_PATH=" + filepath.Dir(pluginBin), "PATH=/usr/bin:/bin"}
	if containerID != "" {
		cmd.Env = append(cmd.Env, "CNI_CONTAINERID="+containerID, "CNI_IFNAME=eth0",
			"CNI_NETNS=/var/run/netns/cni-test-"+containerID, "CNI_ARGS="+args)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	o := outcome{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		o.err = &types.Error{}
		if jerr := json.Unmarshal(o.stdout, o.err); jerr != nil {
			t.Fatalf("%s failed (%v) without CNI error JSON on stdout: %q (stderr %q)", command, err, o.stdout, o.stderr)
		}
	default:
		t.Fatalf("run %s: %v", command, err)
	}
	return o
}

func (o outcome) wantOK(t *testing.T, what string) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("%s: code %d: %s (%s)", what, o.err.Code, o.err.Msg, o.err.Details)
	}
}

func (o outcome) wantCode(t *testing.T, what string, code uint, mentions ...string) {
	t.Helper()
	if o.err == nil {
		t.Fatalf("%s succeeded (stdout %q), want code %d", what, o.stdout, code)
	}
	if o.err.Code != code {
		t.Errorf("%s: code %d (%s), want %d", what, o.err.Code, o.err.Msg, code)
	}
	for _, m := range mentions {
		if !strings.Contains(o.err.Msg, m) {
			t.Errorf("%s: message %q does not mention %q", what, o.err.Msg, m)
		}
	}
}

// cniStatusUnavailable is code 50 of the CNI spec's error codes (SPEC.md of
// containernetworking/cni v1.3.0): "The plugin is not available (i.e.
// cannot service ADD requests)". The library does not define it yet.
const cniStatusUnavailable uint = 50

const podArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"

// add runs ADD and returns the parsed result (the IP) and extension.
func (e *env) add(t *testing.T, containerID, cniVersion string) (string, *cniext.Ext, outcome) {
	t.Helper()
	o := run(t, "ADD", containerID, podArgs, e.conf(cniVersion, nil, nil))
	o.wantOK(t, "ADD")
	res, ext, err := cniext.Parse(o.stdout)
	if err != nil {
		t.Fatalf("ADD stdout is not a result: %v: %q", err, o.stdout)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs: %s", len(res.IPs), o.stdout)
	}
	return res.IPs[0].Address.String(), ext, o
}

func TestAdd(t *testing.T) {
	for _, v := range []string{"1.1.0", "1.0.0", "0.4.0", "0.3.1"} {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t)
			addr, ext, o := e.add(t, "c1", v)
			if addr != "10.0.1.23/32" {
				t.Errorf("address %s, want 10.0.1.23/32", addr)
			}
			if ext == nil || ext.RouteTable != 3 || ext.ENIID != "eni-0abc" || ext.DeviceNumber != 2 {
				t.Errorf("extension %+v, want {3 eni-0abc 2}", ext)
			}
			var raw struct {
				CNIVersion string `json:"cniVersion"`
				IPs        []struct {
					Address, Gateway string
				} `json:"ips"`
				Routes     []any `json:"routes"`
				Interfaces []any `json:"interfaces"`
			}
			if err := json.Unmarshal(o.stdout, &raw); err != nil {
				t.Fatal(err)
			}
			if raw.CNIVersion != v {
				t.Errorf("result cniVersion %q, want the config's %q", raw.CNIVersion, v)
			}
			if raw.IPs[0].Gateway != "169.254.1.1" || len(raw.Routes) != 0 || len(raw.Interfaces) != 0 {
				t.Errorf("gateway %q routes %v interfaces %v: want 169.254.1.1, none, none", raw.IPs[0].Gateway, raw.Routes, raw.Interfaces)
			}
			// Nothing but the result on stdout: one JSON document.
			dec := json.NewDecoder(bytes.NewReader(o.stdout))
			var doc any
			if err := dec.Decode(&doc); err != nil || dec.More() {
				t.Errorf("stdout is not exactly one JSON document: %q", o.stdout)
			}
			if len(o.stderr) != 0 {
				t.Errorf("stderr on success: %q", o.stderr)
			}

			e.d.with(func(f *fakeDaemon) {
				if len(f.adds) != 1 {
					t.Fatalf("daemon saw %d Adds", len(f.adds))
				}
				r := f.adds[0]
				if k := r.GetKey(); k.GetNetwork() != "vpcchain" || k.GetContainerId() != "c1" || k.GetIfname() != "eth0" {
					t.Errorf("key %v, want vpcchain/c1/eth0", k)
				}
				if r.GetPodNamespace() != "default" || r.GetPodName() != "nginx" || r.GetNetns() != "/var/run/netns/cni-test-c1" {
					t.Errorf("pod %s/%s netns %s", r.GetPodNamespace(), r.GetPodName(), r.GetNetns())
				}
				if r.GetApiVersion() != ipamclient.APIVersion {
					t.Errorf("api_version %d", r.GetApiVersion())
				}
			})
		})
	}
}

func TestAddIdempotent(t *testing.T) {
	e := newEnv(t)
	first, _, _ := e.add(t, "c1", "1.1.0")
	again, _, _ := e.add(t, "c1", "1.1.0")
	other, _, _ := e.add(t, "c2", "1.1.0")
	if first != again {
		t.Errorf("same key: %s then %s", first, again)
	}
	if other == first {
		t.Errorf("another key got the same address %s", other)
	}
}

func TestAddNoAddress(t *testing.T) {
	e := newEnv(t)
	reason := "no free address on this node: max pods (29) reached for m5.large"
	e.d.with(func(f *fakeDaemon) { f.noAddress = reason })
	o := run(t, "ADD", "c1", podArgs, e.conf("1.1.0", nil, nil))
	o.wantCode(t, "ADD with an empty pool", types.ErrTryAgainLater, reason)
}

// A pod with a branch ENI (security groups for pods) fails the vpc-ipam
// binary with its own code, naming the branch: only vpc-bridge, which runs
// vpc-ipam in-process, wires the branch's VLAN, and a pool address would
// bypass its security groups.
func TestAddBranchENI(t *testing.T) {
	e := newEnv(t)
	e.d.with(func(f *fakeDaemon) {
		f.branch = &ipamv1.BranchENI{EniId: "eni-0b1", Mac: "02:00:00:00:00:b1", Ip: "10.0.1.77", VlanId: 1,
			SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1", TrunkEniId: "eni-0t1", TrunkMac: "02:00:00:00:00:01", TrunkDeviceNumber: 2}
	})
	o := run(t, "ADD", "c1", podArgs, e.conf("1.1.0", nil, nil))
	o.wantCode(t, "ADD for a branch-ENI pod", vpcipam.ErrBranchENINotWired, "eni-0b1")
	o.wantCode(t, "ADD for a branch-ENI pod", vpcipam.ErrBranchENINotWired, "only vpc-bridge")
}

func TestDaemonDown(t *testing.T) {
	e := newEnv(t)
	missing := filepath.Join(filepath.Dir(e.socket), "nope.sock")
	conf := e.conf("1.1.0", map[string]any{"socket": missing}, nil)

	run(t, "ADD", "c1", podArgs, conf).wantCode(t, "ADD", types.ErrTryAgainLater, missing, "no such file", "is the daemon running?")

	o := run(t, "DEL", "c1", podArgs, conf)
	o.wantOK(t, "DEL with the daemon down")
	if !strings.Contains(string(o.stderr), missing) || len(o.stdout) != 0 {
		t.Errorf("DEL: stdout %q, stderr %q: want nothing on stdout and a note naming the socket on stderr", o.stdout, o.stderr)
	}

	prev := e.conf("1.1.0", map[string]any{"socket": missing}, map[string]any{"prevResult": prevResult("10.0.1.23/32")})
	run(t, "CHECK", "c1", podArgs, prev).wantCode(t, "CHECK", types.ErrTryAgainLater, missing)
	run(t, "STATUS", "", "", conf).wantCode(t, "STATUS", cniStatusUnavailable, missing)
	gc := e.conf("1.1.0", map[string]any{"socket": missing}, map[string]any{"cni.dev/valid-attachments": []any{}})
	run(t, "GC", "", "", gc).wantCode(t, "GC", types.ErrTryAgainLater, missing)
}

func TestDaemonDeadSocket(t *testing.T) {
	// A socket file that nobody listens on: a crashed daemon.
	e := newEnv(t)
	dead := filepath.Join(filepath.Dir(e.socket), "dead.sock")
	l, err := ipamclient.Listen(dead)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close()
	conf := e.conf("1.1.0", map[string]any{"socket": dead}, nil)
	run(t, "ADD", "c1", podArgs, conf).wantCode(t, "ADD", types.ErrTryAgainLater, dead, "daemon unavailable")
	run(t, "DEL", "c1", podArgs, conf).wantOK(t, "DEL")
	run(t, "STATUS", "", "", conf).wantCode(t, "STATUS", cniStatusUnavailable, dead)
}

func TestDel(t *testing.T) {
	e := newEnv(t)
	e.add(t, "c1", "1.1.0")
	conf := e.conf("1.1.0", nil, map[string]any{"prevResult": prevResult("10.0.1.23/32")})
	run(t, "DEL", "c1", podArgs, conf).wantOK(t, "DEL")
	e.d.with(func(f *fakeDaemon) {
		if len(f.byKey) != 0 {
			t.Errorf("daemon still holds %v", f.byKey)
		}
	})
	// Again, and for a key that never existed: success.
	run(t, "DEL", "c1", podArgs, conf).wantOK(t, "second DEL")
	run(t, "DEL", "never", "", e.conf("1.1.0", nil, nil)).wantOK(t, "DEL of an unknown key")

	// A daemon that is up but fails is not swallowed: the runtime retries.
	e.d.with(func(f *fakeDaemon) { f.delErr = status.Error(codes.Internal, "store write failed") })
	run(t, "DEL", "c1", podArgs, conf).wantCode(t, "DEL with a failing daemon", types.ErrInternal, "store write failed")
	e.d.with(func(f *fakeDaemon) { f.delErr = status.Error(codes.NotFound, "gone") })
	run(t, "DEL", "c1", podArgs, conf).wantOK(t, "DEL answered NotFound")
}

// prevResult is the chain's result as the runtime passes it to CHECK/DEL.
func prevResult(addr string) map[string]any {
	return map[string]any{
		"cniVersion": "1.1.0",
		"interfaces": []any{map[string]any{"name": "enic440f455693"}, map[string]any{"name": "eth0", "sandbox": "/var/run/netns/x"}},
		"ips":        []any{map[string]any{"address": addr, "gateway": "169.254.1.1", "interface": 1}},
		"routes":     []any{map[string]any{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}},
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t)
	addr, _, _ := e.add(t, "c1", "1.1.0")
	ok := e.conf("1.1.0", nil, map[string]any{"prevResult": prevResult(addr)})
	run(t, "CHECK", "c1", podArgs, ok).wantOK(t, "CHECK")

	wrong := e.conf("1.1.0", nil, map[string]any{"prevResult": prevResult("10.0.1.99/32")})
	run(t, "CHECK", "c1", podArgs, wrong).wantCode(t, "CHECK with another address", vpcipam.ErrAllocationNotFound,
		"does not hold 10.0.1.99", "holds 10.0.1.23, not 10.0.1.99")
	run(t, "CHECK", "c9", podArgs, ok).wantCode(t, "CHECK of an unknown key", vpcipam.ErrAllocationNotFound,
		`network "vpcchain" container c9 ifname eth0`, "holds no address")

	run(t, "CHECK", "c1", podArgs, e.conf("1.1.0", nil, nil)).wantCode(t, "CHECK without prevResult",
		types.ErrInvalidNetworkConfig, "prevResult")
	two := prevResult(addr)
	two["ips"] = append(two["ips"].([]any), map[string]any{"address": "10.0.1.50/32"})
	run(t, "CHECK", "c1", podArgs, e.conf("1.1.0", nil, map[string]any{"prevResult": two})).wantCode(t,
		"CHECK with two addresses", types.ErrInvalidNetworkConfig, "2 addresses")
}

// IPv6 mode: the daemon's /128 comes back as a /128 with the link-local
// gateway vpc-bridge answers (fe80::1), and CHECK takes the IPv6 address.
func TestIPv6(t *testing.T) {
	e := newEnv(t)
	e.d.with(func(f *fakeDaemon) { f.free = []string{"2600:1f14:a4ff:a300:3cfa:9e1:77:5"} })
	addr, ext, o := e.add(t, "c1", "1.1.0")
	if addr != "2600:1f14:a4ff:a300:3cfa:9e1:77:5/128" {
		t.Errorf("address %s, want 2600:1f14:a4ff:a300:3cfa:9e1:77:5/128", addr)
	}
	if ext == nil || ext.RouteTable != 3 {
		t.Errorf("extension %+v", ext)
	}
	var raw struct {
		IPs []struct{ Address, Gateway string } `json:"ips"`
	}
	if err := json.Unmarshal(o.stdout, &raw); err != nil || len(raw.IPs) != 1 || raw.IPs[0].Gateway != "fe80::1" {
		t.Errorf("result %s (%v): want one IPv6 address with gateway fe80::1", o.stdout, err)
	}
	ok := e.conf("1.1.0", nil, map[string]any{"prevResult": prevResult(addr)})
	run(t, "CHECK", "c1", podArgs, ok).wantOK(t, "CHECK of an IPv6 attachment")
	wrong := e.conf("1.1.0", nil, map[string]any{"prevResult": prevResult("2600:1f14:a4ff:a300:3cfa:9e1:77:6/128")})
	run(t, "CHECK", "c1", podArgs, wrong).wantCode(t, "CHECK with another IPv6 address", vpcipam.ErrAllocationNotFound,
		"does not hold 2600:1f14:a4ff:a300:3cfa:9e1:77:6")
	// The daemon answering garbage is the daemon's fault, named as such.
	e.d.with(func(f *fakeDaemon) { f.free = []string{"2600:1f14::zz"} })
	run(t, "ADD", "c2", podArgs, e.conf("1.1.0", nil, nil)).wantCode(t, "ADD with a malformed daemon address",
		types.ErrInternal, `address "2600:1f14::zz" is not an IP address`)
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	conf := e.conf("1.1.0", nil, nil)
	run(t, "STATUS", "", "", conf).wantOK(t, "STATUS")

	e.d.with(func(f *fakeDaemon) {
		f.status = &ipamv1.StatusReply{Ready: false, Reason: "waiting for IMDS to show eni-0abc"}
	})
	run(t, "STATUS", "", "", conf).wantCode(t, "STATUS not ready", cniStatusUnavailable,
		"not ready", "waiting for IMDS to show eni-0abc")

	// A full pool is not a network that is not ready: a runtime that sees
	// STATUS fail (containerd 2.x) reports the whole node NotReady.
	e.d.with(func(f *fakeDaemon) {
		f.status = &ipamv1.StatusReply{Ready: true, Available: 0, Reason: "max pods (29) reached"}
	})
	run(t, "STATUS", "", "", conf).wantOK(t, "STATUS of a ready daemon without free addresses")

	e.d.with(func(f *fakeDaemon) { f.version = ipamclient.APIVersion + 1 })
	run(t, "STATUS", "", "", conf).wantCode(t, "STATUS against another API version", cniStatusUnavailable, "version mismatch")

	// STATUS needs a 1.1.0 configuration (skel enforces it).
	run(t, "STATUS", "", "", e.conf("1.0.0", nil, nil)).wantCode(t, "STATUS with cniVersion 1.0.0", types.ErrIncompatibleCNIVersion)
}

func TestGC(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"keep", "stale1", "stale2"} {
		e.add(t, id, "1.1.0")
	}
	conf := e.conf("1.1.0", nil, map[string]any{
		"cni.dev/valid-attachments": []any{map[string]any{"containerID": "keep", "ifname": "eth0"}, map[string]any{"containerID": "gone", "ifname": "net1"}},
		"cni.dev/attachments":       []any{map[string]any{"containerID": "keep", "ifname": "eth0"}, map[string]any{"containerID": "gone", "ifname": "net1"}},
	})
	o := run(t, "GC", "", "", conf)
	o.wantOK(t, "GC")
	e.d.with(func(f *fakeDaemon) {
		if len(f.gcs) != 1 {
			t.Fatalf("daemon saw %d GCs", len(f.gcs))
		}
		r := f.gcs[0]
		var valid []string
		for _, k := range r.GetValid() {
			valid = append(valid, mapKey(k))
		}
		if r.GetNetwork() != "vpcchain" || strings.Join(valid, " ") != "vpcchain|keep|eth0 vpcchain|gone|net1" {
			t.Errorf("GC network %q valid %v", r.GetNetwork(), valid)
		}
		var left []string
		for k := range f.byKey {
			left = append(left, k)
		}
		sort.Strings(left)
		if strings.Join(left, " ") != "vpcchain|keep|eth0" {
			t.Errorf("daemon holds %v after GC", left)
		}
	})
	if !strings.Contains(string(o.stderr), "released 2 stale allocation(s)") || len(o.stdout) != 0 {
		t.Errorf("GC stdout %q stderr %q", o.stdout, o.stderr)
	}

	// Without the list GC refuses instead of releasing every address.
	run(t, "GC", "", "", e.conf("1.1.0", nil, nil)).wantCode(t, "GC without valid-attachments",
		types.ErrInvalidNetworkConfig, "cni.dev/valid-attachments", "refusing")
	e.d.with(func(f *fakeDaemon) {
		if len(f.gcs) != 1 || len(f.byKey) != 1 {
			t.Errorf("GC without the list reached the daemon: %d GCs, %d allocations", len(f.gcs), len(f.byKey))
		}
	})

	// An empty list is a runtime without attachments: everything goes.
	run(t, "GC", "", "", e.conf("1.1.0", nil, map[string]any{"cni.dev/valid-attachments": []any{}})).wantOK(t, "GC with an empty list")
	e.d.with(func(f *fakeDaemon) {
		if len(f.byKey) != 0 {
			t.Errorf("daemon still holds %v", f.byKey)
		}
	})
}

func TestVersionMismatch(t *testing.T) {
	e := newEnv(t)
	e.d.with(func(f *fakeDaemon) { f.version = ipamclient.APIVersion + 1 })
	o := run(t, "ADD", "c1", podArgs, e.conf("1.1.0", nil, nil))
	o.wantCode(t, "ADD", vpcipam.ErrAPIVersionMismatch, "plugin speaks v1", "daemon speaks v2")
	if !strings.Contains(o.err.Details, "same release") {
		t.Errorf("details %q", o.err.Details)
	}
	run(t, "DEL", "c1", podArgs, e.conf("1.1.0", nil, nil)).wantCode(t, "DEL", vpcipam.ErrAPIVersionMismatch, "daemon speaks v2")
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	e.d.with(func(f *fakeDaemon) { f.block = true })
	start := time.Now()
	o := run(t, "ADD", "c1", podArgs, e.conf("1.1.0", map[string]any{"timeout": "300ms"}, nil))
	o.wantCode(t, "ADD against a hung daemon", types.ErrTryAgainLater, e.socket, "timed out", "ipam.timeout 300ms")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ADD took %v with a 300ms timeout", d)
	}
	// A hung daemon is not an unreachable one: DEL reports it.
	run(t, "DEL", "c1", podArgs, e.conf("1.1.0", map[string]any{"timeout": "300ms"}, nil)).wantCode(t,
		"DEL against a hung daemon", types.ErrTryAgainLater, "timed out")
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name     string
		args     string
		stdin    string
		code     uint
		mentions string
	}{
		{"malformed JSON", podArgs, `{"cniVersion":"1.1.0","name":"vpcchain","ipam":{`, types.ErrDecodingFailure, "network config"}, // skel rejects it before us
		{"timeout as a number", podArgs, e.conf("1.1.0", map[string]any{"timeout": 5}, nil), types.ErrDecodingFailure, "ipam.timeout"},
		{"bad duration", podArgs, e.conf("1.1.0", map[string]any{"timeout": "5 seconds"}, nil), types.ErrInvalidNetworkConfig, `"5 seconds"`},
		{"unknown field", podArgs, e.conf("1.1.0", map[string]any{"pool": "a"}, nil), types.ErrUnsupportedField, "ipam.pool"},
		{"relative socket", podArgs, e.conf("1.1.0", map[string]any{"socket": "ipamd.sock"}, nil), types.ErrInvalidNetworkConfig, `"ipamd.sock"`},
		{"malformed CNI_ARGS", "K8S_POD_NAME", e.conf("1.1.0", nil, nil), types.ErrInvalidEnvironmentVariables, "CNI_ARGS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run(t, "ADD", "c1", tt.args, tt.stdin).wantCode(t, "ADD", tt.code, tt.mentions)
		})
	}
	e.d.with(func(f *fakeDaemon) {
		if len(f.adds) != 0 {
			t.Errorf("bad input reached the daemon %d times", len(f.adds))
		}
	})
}

func TestVersionCommand(t *testing.T) {
	o := run(t, "VERSION", "", "", "")
	o.wantOK(t, "VERSION")
	var v struct {
		Supported []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(o.stdout, &v); err != nil || !strings.Contains(strings.Join(v.Supported, ","), "1.1.0") {
		t.Errorf("VERSION: %q (%v), want 1.1.0 among the supported versions", o.stdout, err)
	}
}
