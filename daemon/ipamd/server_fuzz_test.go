package ipamd

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// newServerDaemon is a daemon over the simulator (control plane only) with a
// settled warm pool and no cooldown, so that a released address is
// available again at once; shared by the fuzz target's iterations.
func newServerDaemon(tb testing.TB) (*Daemon, *Server) {
	tb.Helper()
	f := newFixture(tb, map[string]string{"IP_COOLDOWN_PERIOD": "0", "WARM_IP_TARGET": "3", "MINIMUM_IP_TARGET": "3", "WARM_ENI_TARGET": "0"})
	f.t = silentTB{tb} // the fuzz target runs thousands of requests
	d := f.start()
	tb.Cleanup(func() { _ = d.Close() })
	for i := 0; i < 20 && d.Step(context.Background()); i++ {
	}
	if st := d.Stats(); st.Available == 0 {
		tb.Fatalf("pool did not fill: %+v", st)
	}
	srv, err := NewServer(d)
	if err != nil {
		tb.Fatal(err)
	}
	return d, srv
}

// silentTB drops the daemon's log lines.
type silentTB struct{ testing.TB }

func (silentTB) Logf(string, ...any) {}

// The request rules, written down independently of the server's code: the
// CNI spec's names (libcni/skel's rules), Linux interface names, the
// daemon's length bounds, Kubernetes-sized pod names and text-only fields.
var cniName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

func textField(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// wantRejected returns the field the server must name when it refuses the
// request, or "" when it must accept it.
func wantRejected(k *ipamv1.Key, podNS, podName, netns string) string {
	switch {
	case k == nil:
		return "key"
	case len(k.Network) > 256 || !cniName.MatchString(k.Network):
		return "network name"
	case len(k.ContainerId) > 256 || !cniName.MatchString(k.ContainerId):
		return "CNI_CONTAINERID"
	case k.Ifname == "" || len(k.Ifname) > 15 || k.Ifname == "." || k.Ifname == ".." || !textField(k.Ifname) ||
		strings.ContainsFunc(k.Ifname, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) }):
		return "CNI_IFNAME"
	case len(podNS) > 63 || !textField(podNS):
		return "K8S_POD_NAMESPACE"
	case len(podName) > 253 || !textField(podName):
		return "K8S_POD_NAME"
	case len(netns) > 4096 || !textField(netns) || (netns != "" && !strings.HasPrefix(netns, "/")):
		return "CNI_NETNS"
	}
	return ""
}

// residentNet holds one allocation that lives through the whole fuzz run:
// nothing but a GC of its own network may release it.
const residentNet = "resident"

var residentKey = &ipamv1.Key{Network: residentNet, ContainerId: "resident", Ifname: "eth0"}

// FuzzServerRequests feeds arbitrary request fields to the gRPC handlers
// in-process. Invariants: no panic; a request is refused exactly when the
// rules above say so, with InvalidArgument naming the field (FailedPrecondition
// for another API version); a refused request leaves no allocation; an
// accepted Add is held, checked, introspected (the reply still marshals:
// every stored string is valid UTF-8) and released by Del, leaving the pool
// as before; GC releases exactly the unlisted keys of its network.
func FuzzServerRequests(f *testing.F) {
	type seed struct {
		api                                        uint32
		network, id, ifname, podNS, podName, netns string
		checkIP, valid                             string
	}
	for _, s := range []seed{
		{1, "vpcchain", "abc123", "eth0", "default", "web", "/var/run/netns/cni-1", "", ""},
		{1, "vpcchain", "abc123", "eth0", "", "", "", "10.0.0.1", "abc123/eth0"},
		{1, residentNet, "other", "eth0", "default", "web", "/proc/1/ns/net", "", "resident/eth0"},
		{1, residentNet, "other", "eth0", "default", "web", "", "", "nope/eth0"},
		{0, "vpcchain", "abc123", "eth0", "default", "web", "", "", ""},
		{2, "vpcchain", "abc123", "eth0", "default", "web", "", "", ""},
		{1, "", "abc123", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc", "", "", "", "", "", ""},
		{1, "vpc\x00chain", "abc", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc\x00def", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc", "eth\x000", "", "", "", "", ""},
		{1, "vpcchain", strings.Repeat("a", 40000), "eth0", "", "", "", "", ""},
		{1, strings.Repeat("n", 257), "abc", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc", "eth0123456789abcdef", "", "", "", "", ""},
		{1, "vpcchain", "abc", "..", "", "", "", "", ""},
		{1, "vpcchain", "abc", "eth 0", "", "", "", "", ""},
		{1, "vpcchain", "../../etc", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc;reboot", "eth0", "", "", "", "", ""},
		{1, "vpcchain", "abc", "eth0", "default\n", "web", "", "", ""},
		{1, "vpcchain", "abc", "eth0", "default", "\xff\xfe", "", "", ""},
		{1, "vpcchain", "abc", "eth0", "default", strings.Repeat("p", 300), "", "", ""},
		{1, "vpcchain", "abc", "eth0", "default", "web", "../../etc/passwd", "", ""},
		{1, "vpcchain", "abc", "eth0", "default", "web", "/" + strings.Repeat("x", 5000), "", ""},
		{1, "vpcchain", "abc", "eth0", "default", "web", "/var/run/netns/\x00x", "", ""},
		{1, "vpcchain", "abc", "eth0", "", "", "", "not-an-ip", ""},
		{1, "vpcchain", "abc", "eth0", "", "", "", "::1", ""},
		{1, "vpcchain", "abc", "eth0", "", "", "", "", "abc/eth0,\x00/\x00,/"},
	} {
		f.Add(s.api, s.network, s.id, s.ifname, s.podNS, s.podName, s.netns, s.checkIP, s.valid)
	}
	d, srv := newServerDaemon(f)
	ctx := context.Background()
	const v = ipamclient.APIVersion
	if _, err := srv.Add(ctx, &ipamv1.AddRequest{ApiVersion: v, Key: residentKey}); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, api uint32, network, id, ifname, podNS, podName, netns, checkIP, valid string) {
		key := &ipamv1.Key{Network: network, ContainerId: id, Ifname: ifname}
		sk := store.Key{Network: network, ContainerID: id, IfName: ifname}
		before := d.Stats()
		_, heldBefore := d.Get(sk)

		add, err := srv.Add(ctx, &ipamv1.AddRequest{ApiVersion: api, Key: key, PodNamespace: podNS, PodName: podName, Netns: netns})
		field := wantRejected(key, podNS, podName, netns)
		keyField := wantRejected(key, "", "", "") // Del has only the key
		switch {
		case api != v:
			wantCode(t, "Add", err, codes.FailedPrecondition, "version")
		case field != "":
			wantCode(t, "Add", err, codes.InvalidArgument, field)
		case err != nil:
			t.Fatalf("Add of a valid request refused: %v", err)
		}
		if err != nil {
			if _, held := d.Get(sk); held != heldBefore {
				t.Fatalf("refused Add changed what %v holds", sk)
			}
			if after := d.Stats(); after.Assigned != before.Assigned {
				t.Fatalf("refused Add changed the assigned count %d -> %d", before.Assigned, after.Assigned)
			}
		} else {
			a, held := d.Get(sk)
			if !held || a.IP.String() != add.GetAllocation().GetIp() {
				t.Fatalf("Add returned %v but the daemon holds %v (%v)", add.GetAllocation().GetIp(), a.IP, held)
			}
			if _, err := proto.Marshal(add); err != nil {
				t.Fatalf("Add reply does not marshal: %v", err)
			}
			// Check with the fuzzed address: OK for "" or the held one,
			// NotFound for another address, InvalidArgument for garbage.
			_, err := srv.Check(ctx, &ipamv1.CheckRequest{ApiVersion: v, Key: key, Ip: checkIP})
			ip, perr := netip.ParseAddr(checkIP)
			switch {
			case checkIP == "" || (perr == nil && ip == a.IP):
				if err != nil {
					t.Fatalf("Check of the held address: %v", err)
				}
			case perr != nil:
				wantCode(t, "Check", err, codes.InvalidArgument, "ip")
			default:
				wantCode(t, "Check", err, codes.NotFound, a.IP.String())
			}
			if _, err := proto.Marshal(srv.d.Introspect()); err != nil {
				t.Fatalf("Introspect reply does not marshal after Add: %v", err)
			}
		}

		// Del: releases what this Add took; never touches anything else.
		del, err := srv.Del(ctx, &ipamv1.DelRequest{ApiVersion: api, Key: key})
		switch {
		case api != v:
			wantCode(t, "Del", err, codes.FailedPrecondition, "version")
		case keyField != "":
			wantCode(t, "Del", err, codes.InvalidArgument, keyField)
		case err != nil:
			t.Fatalf("Del: %v", err)
		case del.GetReleased() != (add != nil || heldBefore):
			t.Fatalf("Del released %v, Add held %v", del.GetReleased(), add != nil)
		}
		if _, held := d.Get(sk); held && api == v {
			t.Fatalf("%v still held after Del", sk)
		}
		if after := d.Stats(); api == v && (after.Assigned != before.Assigned-b2i(heldBefore) || after.Available < before.Available) {
			t.Fatalf("pool after Add+Del: %+v, before: %+v", after, before)
		}

		// GC of the fuzzed network with a fuzzed valid list.
		var list []*ipamv1.Key
		listed := map[store.Key]bool{}
		for _, e := range strings.Split(valid, ",") {
			cid, ifn, _ := strings.Cut(e, "/")
			list = append(list, &ipamv1.Key{ContainerId: cid, Ifname: ifn})
			listed[store.Key{Network: network, ContainerID: cid, IfName: ifn}] = true
		}
		resident := store.Key{Network: residentNet, ContainerID: "resident", IfName: "eth0"}
		if _, held := d.Get(resident); !held {
			// This iteration's Del was of the resident key itself.
			if _, err := srv.Add(ctx, &ipamv1.AddRequest{ApiVersion: v, Key: residentKey}); err != nil {
				t.Fatal(err)
			}
		}
		gc, err := srv.GC(ctx, &ipamv1.GCRequest{ApiVersion: api, Network: network, Valid: list})
		switch {
		case api != v:
			wantCode(t, "GC", err, codes.FailedPrecondition, "version")
			return
		case network == "":
			wantCode(t, "GC", err, codes.InvalidArgument, "network")
			return
		case err != nil:
			t.Fatalf("GC: %v", err)
		}
		wantResident := network == residentNet && !listed[resident]
		if got := len(gc.GetReleased()); got != b2i(wantResident) {
			t.Fatalf("GC of %q with %v released %v", network, list, gc.GetReleased())
		}
		if wantResident {
			if _, err := srv.Add(ctx, &ipamv1.AddRequest{ApiVersion: v, Key: residentKey}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// wantCode asserts a gRPC status with code whose message names what.
func wantCode(t *testing.T, rpc string, err error, code codes.Code, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s accepted, want %v naming %q", rpc, code, what)
	}
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), what) {
		t.Fatalf("%s: %v, want %v naming %q", rpc, err, code, what)
	}
}

// TestServerRefusesHostileRequests: each refused request gets
// InvalidArgument naming the field, and the daemon holds nothing for it.
func TestServerRefusesHostileRequests(t *testing.T) {
	d, srv := newServerDaemon(t)
	ctx := context.Background()
	const v = ipamclient.APIVersion
	ok := func(mod func(r *ipamv1.AddRequest)) *ipamv1.AddRequest {
		r := &ipamv1.AddRequest{ApiVersion: v, Key: &ipamv1.Key{Network: "vpcchain", ContainerId: "0123abcd", Ifname: "eth0"},
			PodNamespace: "default", PodName: "web", Netns: "/var/run/netns/cni-0123"}
		if mod != nil {
			mod(r)
		}
		return r
	}
	cases := []struct {
		name string
		req  *ipamv1.AddRequest
		want string // "" accepted, else a text the InvalidArgument message contains
	}{
		{"valid", ok(nil), ""},
		{"no key", ok(func(r *ipamv1.AddRequest) { r.Key = nil }), "key"},
		{"empty network", ok(func(r *ipamv1.AddRequest) { r.Key.Network = "" }), "network name"},
		{"empty container ID", ok(func(r *ipamv1.AddRequest) { r.Key.ContainerId = "" }), "CNI_CONTAINERID"},
		{"empty ifname", ok(func(r *ipamv1.AddRequest) { r.Key.Ifname = "" }), "CNI_IFNAME"},
		{"NUL in network", ok(func(r *ipamv1.AddRequest) { r.Key.Network = "a\x00b" }), "network name"},
		{"NUL in container ID", ok(func(r *ipamv1.AddRequest) { r.Key.ContainerId = "a\x00b" }), "CNI_CONTAINERID"},
		{"container ID beyond bbolt's key size", ok(func(r *ipamv1.AddRequest) { r.Key.ContainerId = strings.Repeat("a", 40000) }), "at most 256"},
		{"container ID path traversal", ok(func(r *ipamv1.AddRequest) { r.Key.ContainerId = "../../etc" }), "CNI_CONTAINERID"},
		{"ifname too long", ok(func(r *ipamv1.AddRequest) { r.Key.Ifname = "eth0123456789abcdef" }), "CNI_IFNAME"},
		{"ifname with a slash", ok(func(r *ipamv1.AddRequest) { r.Key.Ifname = "eth/0" }), "CNI_IFNAME"},
		{"pod name not UTF-8", ok(func(r *ipamv1.AddRequest) { r.PodName = "\xff" }), "K8S_POD_NAME"},
		{"pod namespace with a newline", ok(func(r *ipamv1.AddRequest) { r.PodNamespace = "a\nb" }), "K8S_POD_NAMESPACE"},
		{"relative netns", ok(func(r *ipamv1.AddRequest) { r.Netns = "proc/1/ns/net" }), "CNI_NETNS"},
		{"netns beyond PATH_MAX", ok(func(r *ipamv1.AddRequest) { r.Netns = "/" + strings.Repeat("x", 5000) }), "CNI_NETNS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := d.Stats().Assigned
			_, err := srv.Add(ctx, tc.req)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if _, err := srv.Del(ctx, &ipamv1.DelRequest{ApiVersion: v, Key: tc.req.Key}); err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, "Add", err, codes.InvalidArgument, tc.want)
			if after := d.Stats().Assigned; after != before {
				t.Fatalf("assigned %d -> %d after a refused Add", before, after)
			}
			if tc.req.Key != nil {
				_, err := srv.Check(ctx, &ipamv1.CheckRequest{ApiVersion: v, Key: tc.req.Key})
				if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument && st.Code() != codes.NotFound {
					t.Fatalf("Check after a refused Add: %v", err)
				}
			}
		})
	}
}
