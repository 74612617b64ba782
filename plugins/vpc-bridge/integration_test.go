package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/routing"
)

func podIPOf(t *testing.T, r types.Result) net.IP {
	t.Helper()
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs: %v", len(res.IPs), res.IPs)
	}
	return res.IPs[0].Address.IP.To4()
}

// wantVeth is the host veth name of each pod these tests wire, computed
// outside the code: "eni" + the first 11 hex digits of
// printf %s <namespace>.<pod> | sha1sum (the name Calico's Felix expects).
var wantVeth = map[string]string{
	"default/nginx":                        "enic440f455693",
	"kube-system/coredns-5d78c9869d-abcde": "eni4d5f75c480c",
	"default/owner":                        "eni25c131ae5c3",
	"default/retry":                        "enia79df20250a",
	"default/busy":                         "enid0418abe16f",
}

func vethOf(t *testing.T, namespace, name string) string {
	t.Helper()
	v, ok := wantVeth[namespace+"/"+name]
	if !ok {
		t.Fatalf("no precomputed host veth name for pod %s/%s: add it to wantVeth", namespace, name)
	}
	return v
}

// ownerAlias is the host veth's alias as docs/design.md writes it
// (internal/veth/owner.go): vpcchain:v1:<container ID>:<ifname>:<table>.
func ownerAlias(containerID, ifName string, table int) string {
	return fmt.Sprintf("vpcchain:v1:%s:%s:%d", containerID, ifName, table)
}

// assertPodWired checks everything ADD promises, on both sides.
func assertPodWired(t *testing.T, h *host, p *pod, r types.Result, wantTable int) {
	t.Helper()
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	wantName := vethOf(t, p.namespace, p.name)
	if len(res.Interfaces) != 2 {
		t.Fatalf("result interfaces = %v, want host veth + pod interface", res.Interfaces)
	}
	hostItf, podItf := res.Interfaces[0], res.Interfaces[1]
	if hostItf.Name != wantName || hostItf.Sandbox != "" {
		t.Errorf("host interface in result = %+v, want name %s without sandbox", hostItf, wantName)
	}
	if podItf.Name != p.ifName || podItf.Sandbox != p.ns.Path() {
		t.Errorf("pod interface in result = %+v, want %s in %s", podItf, p.ifName, p.ns.Path())
	}
	ip := podIPOf(t, r)
	ipc := res.IPs[0]
	if ipc.Interface == nil || *ipc.Interface != 1 || ipc.Address.String() != ip.String()+"/32" || !ipc.Gateway.Equal(routing.PodGateway4) {
		t.Errorf("result IP config = %+v, want %s/32 on interface 1 gateway %s", ipc, ip, routing.PodGateway4)
	}
	if len(res.Routes) != 1 || res.Routes[0].Dst.String() != "0.0.0.0/0" || !res.Routes[0].GW.Equal(routing.PodGateway4) {
		t.Errorf("result routes = %v, want default via %s", res.Routes, routing.PodGateway4)
	}

	// Host side.
	hl := h.link(wantName)
	if _, ok := hl.(*netlink.Veth); !ok {
		t.Errorf("host %s is %s, want veth", wantName, hl.Type())
	}
	if hl.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host veth %s is down", wantName)
	}
	if hl.Attrs().HardwareAddr.String() != hostItf.Mac {
		t.Errorf("host veth MAC %s, result says %s", hl.Attrs().HardwareAddr, hostItf.Mac)
	}
	if hl.Attrs().HardwareAddr[0]&0x02 == 0 || hl.Attrs().HardwareAddr[0]&0x01 != 0 {
		t.Errorf("host veth MAC %s is not a locally administered unicast address", hl.Attrs().HardwareAddr)
	}
	if hl.Attrs().MTU != 9001 {
		t.Errorf("host veth MTU %d, want 9001", hl.Attrs().MTU)
	}
	wantAlias := ownerAlias(p.containerID, p.ifName, wantTable)
	if hl.Attrs().Alias != wantAlias {
		t.Errorf("host veth alias %q, want %q", hl.Attrs().Alias, wantAlias)
	}
	h.do(func() error {
		addrs, err := netlink.AddrList(hl, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		if len(addrs) != 0 {
			t.Errorf("host veth has addresses %v, want none", addrs)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
			&netlink.Route{Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Table: 254}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].LinkIndex != hl.Attrs().Index || routes[0].Scope != netlink.SCOPE_LINK {
			t.Errorf("host routes to %s/32 = %v, want one 'dev %s scope link'", ip, routes, wantName)
		}
		return nil
	})
	var has512, has1536 bool
	for _, r := range h.rules(ip) {
		switch {
		case r.Priority == 512 && r.Dst != nil && r.Src == nil && r.Table == 254:
			has512 = true
		case r.Priority == 1536 && r.Src != nil && r.Dst == nil && r.Table == wantTable:
			has1536 = true
		default:
			t.Errorf("unexpected rule for %s: %v", ip, r)
		}
	}
	if !has512 {
		t.Errorf("rule 512 'to %s/32 lookup main' missing", ip)
	}
	if has1536 != (wantTable != 254) {
		t.Errorf("rule 1536 'from %s/32 lookup %d' present=%v, want %v", ip, wantTable, has1536, wantTable != 254)
	}

	// Pod side.
	p.do(t, func() error {
		l, err := netlink.LinkByName(p.ifName)
		if err != nil {
			return err
		}
		if l.Attrs().HardwareAddr.String() != podItf.Mac {
			t.Errorf("pod MAC %s, result says %s", l.Attrs().HardwareAddr, podItf.Mac)
		}
		if l.Attrs().MTU != 9001 {
			t.Errorf("pod MTU %d, want 9001", l.Attrs().MTU)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String()+"/32" {
			t.Errorf("pod addresses %v, want %s/32", addrs, ip)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var gw, def bool
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "169.254.1.1/32" && r.Scope == netlink.SCOPE_LINK {
				gw = true
			}
			if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(routing.PodGateway4) {
				def = true
			}
		}
		if !gw || !def {
			t.Errorf("pod routes %v: want 169.254.1.1/32 scope link (%v) and default via 169.254.1.1 (%v)", routes, gw, def)
		}
		neighs, err := netlink.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		found := false
		for _, n := range neighs {
			if n.IP.Equal(routing.PodGateway4) && n.State == netlink.NUD_PERMANENT && n.HardwareAddr.String() == hl.Attrs().HardwareAddr.String() {
				found = true
			}
		}
		if !found {
			t.Errorf("pod neighbours %v: want 169.254.1.1 lladdr %s permanent", neighs, hl.Attrs().HardwareAddr)
		}
		return nil
	})
}

func TestTwoPodsAddCheckConnectDel(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.hostLocal("10.77.0.0/24"))
	a := h.newPod("default", "nginx")
	b := h.newPod("kube-system", "coredns-5d78c9869d-abcde")

	ra, err := h.add(list, a)
	if err != nil {
		t.Fatalf("ADD pod a: %v", err)
	}
	rb, err := h.add(list, b)
	if err != nil {
		t.Fatalf("ADD pod b: %v", err)
	}
	if !h.linkExists("enic440f455693") || !h.linkExists("eni4d5f75c480c") {
		t.Fatalf("host veths enic440f455693 / eni4d5f75c480c missing")
	}
	assertPodWired(t, h, a, ra, 254)
	assertPodWired(t, h, b, rb, 254)
	ipA, ipB := podIPOf(t, ra), podIPOf(t, rb)

	// Pod <-> pod and host -> pod, over TCP.
	serveTCP(t, a.ns, ipA.String()+":8080", "a")
	serveTCP(t, b.ns, ipB.String()+":8080", "b")
	for _, c := range []struct {
		from       string
		dialer     *pod
		to         string
		wantPrefix string
	}{
		{"pod a", a, ipB.String() + ":8080", "b ping"},
		{"pod b", b, ipA.String() + ":8080", "a ping"},
	} {
		got, err := dialTCP(c.dialer.ns, c.to)
		if err != nil || got != c.wantPrefix {
			t.Errorf("%s -> %s: reply %q, err %v", c.from, c.to, got, err)
		}
	}
	for _, to := range []string{ipA.String() + ":8080", ipB.String() + ":8080"} {
		if got, err := dialTCP(h.ns, to); err != nil || !strings.HasSuffix(got, " ping") {
			t.Errorf("host -> %s: reply %q, err %v", to, got, err)
		}
	}

	// CHECK passes on good pods ...
	if err := h.check(list, a); err != nil {
		t.Errorf("CHECK pod a: %v", err)
	}
	if err := h.check(list, b); err != nil {
		t.Errorf("CHECK pod b: %v", err)
	}
	// ... and names the broken piece.
	a.do(t, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.NeighDel(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, IP: routing.PodGateway4})
	})
	err = h.check(list, a)
	if err == nil {
		t.Fatalf("CHECK after deleting the neighbour entry succeeded")
	}
	e := cniCode(t, err)
	if !strings.Contains(e.Msg, "pod interface eth0 has no neighbour entry for 169.254.1.1") {
		t.Errorf("CHECK message %q does not name the missing neighbour", e.Msg)
	}
	t.Logf("CHECK error: %s", e.Msg)
	h.do(func() error {
		r := netlink.NewRule()
		r.Priority, r.Family, r.Table = 512, netlink.FAMILY_V4, 254
		r.Dst = &net.IPNet{IP: ipB, Mask: net.CIDRMask(32, 32)}
		return netlink.RuleDel(r)
	})
	if err := h.check(list, b); err == nil || !strings.Contains(cniCode(t, err).Msg, fmt.Sprintf(`rule "512: from all to %s/32 lookup main" missing`, ipB)) {
		t.Errorf("CHECK after deleting rule 512: %v", err)
	}

	// DEL twice succeeds; everything is gone.
	for i := 0; i < 2; i++ {
		if err := h.del(list, a); err != nil {
			t.Errorf("DEL pod a #%d: %v", i+1, err)
		}
		if err := h.del(list, b); err != nil {
			t.Errorf("DEL pod b #%d: %v", i+1, err)
		}
	}
	h.assertClean("after DEL")
	if left := h.ipamAllocations(); len(left) != 0 {
		t.Errorf("IPAM allocations left: %v", left)
	}
	a.do(t, func() error {
		if _, err := netlink.LinkByName("eth0"); err == nil {
			t.Errorf("pod a still has eth0")
		}
		return nil
	})
}

func TestSecondaryENIRouteTable(t *testing.T) {
	h := newHost(t)
	ext := map[string]any{"routeTable": 3, "eniID": "eni-0123456789abcdef0", "deviceNumber": 2}
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.2.3/24"}, ext, nil))
	p := h.newPod("default", "nginx")

	r, err := h.add(list, p)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	assertPodWired(t, h, p, r, 3)
	ip := net.IPv4(10, 1, 2, 3).To4()
	var from []string
	for _, rule := range h.rules(ip) {
		if rule.Priority == 1536 {
			from = append(from, fmt.Sprintf("from %s lookup %d", rule.Src, rule.Table))
		}
	}
	if len(from) != 1 || from[0] != "from 10.1.2.3/32 lookup 3" {
		t.Fatalf("1536 rules = %v, want [from 10.1.2.3/32 lookup 3]", from)
	}
	if err := h.check(list, p); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	// CHECK notices a missing from-pod rule.
	h.do(func() error {
		r := netlink.NewRule()
		r.Priority, r.Family, r.Table = 1536, netlink.FAMILY_V4, 3
		r.Src = &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}
		return netlink.RuleDel(r)
	})
	if err := h.check(list, p); err == nil || !strings.Contains(cniCode(t, err).Msg, `rule "1536: from 10.1.2.3/32 lookup 3" missing`) {
		t.Fatalf("CHECK after deleting rule 1536: %v", err)
	}
	if err := h.del(list, p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	h.assertClean("after DEL")
	if !strings.Contains(h.fakeCalls(), "DEL "+p.containerID+" eth0") {
		t.Errorf("IPAM DEL not called; calls:\n%s", h.fakeCalls())
	}
}

func TestDelAfterNetnsDeleted(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.hostLocal("10.77.1.0/24"))
	p := h.newPod("default", "gone")
	r, err := h.add(list, p)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	ip := podIPOf(t, r)
	if len(h.rules(ip)) == 0 {
		t.Fatalf("no rules after ADD")
	}
	removeNS(p.ns) // the runtime removed the sandbox's netns before DEL
	if _, err := os.Stat(p.ns.Path()); !os.IsNotExist(err) {
		t.Fatalf("netns path %s still exists: %v", p.ns.Path(), err)
	}
	if err := h.del(list, p); err != nil {
		t.Fatalf("DEL after netns removal: %v", err)
	}
	if rules := h.rules(ip); len(rules) != 0 {
		t.Errorf("rules left for %s: %v", ip, rules)
	}
	h.assertClean("after DEL")
	if left := h.ipamAllocations(); len(left) != 0 {
		t.Errorf("IPAM allocations left: %v", left)
	}
}

func TestDelWhenIPAMFails(t *testing.T) {
	h := newHost(t)
	ext := map[string]any{"routeTable": 5, "eniID": "eni-0aaa"}
	good := conflist(t, nil, h.fakeIPAM([]string{"10.1.3.7/24"}, ext, nil))
	p := h.newPod("default", "ipam-down")
	if _, err := h.add(good, p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	ip := net.IPv4(10, 1, 3, 7).To4()

	// A transient IPAM failure is returned (so the runtime retries) ...
	busy := conflist(t, nil, h.fakeIPAM([]string{"10.1.3.7/24"}, ext, map[string]any{"DEL": map[string]any{"code": 11, "msg": "daemon busy"}}))
	err := h.del(busy, p)
	if err == nil {
		t.Fatalf("DEL with failing IPAM succeeded")
	}
	if e := cniCode(t, err); e.Code != types.ErrTryAgainLater || e.Msg != "daemon busy" {
		t.Errorf("DEL error = %+v, want the IPAM plugin's code 11 'daemon busy'", e)
	}
	// ... but the host side is already clean.
	if rules := h.rules(ip); len(rules) != 0 {
		t.Errorf("rules left after DEL with failing IPAM: %v", rules)
	}
	h.assertClean("after DEL with failing IPAM")

	// Daemon unreachable: DEL succeeds (the daemon reclaims on reconcile).
	down := conflist(t, nil, h.fakeIPAM([]string{"10.1.3.7/24"}, ext,
		map[string]any{"DEL": map[string]any{"code": cniext.ErrDaemonUnreachable, "msg": "dial unix /run/vpcchain/ipam.sock: connect: no such file or directory"}}))
	if err := h.del(down, p); err != nil {
		t.Errorf("DEL with unreachable IPAM daemon: %v", err)
	}
	// The retry with a working IPAM releases the address.
	if err := h.del(good, p); err != nil {
		t.Errorf("DEL with working IPAM: %v", err)
	}
	if left := h.ipamAllocations(); len(left) != 0 {
		t.Errorf("IPAM allocations left: %v", left)
	}
	h.assertClean("end")
}

func TestDelWithoutPrevResult(t *testing.T) {
	h := newHost(t)
	ext := map[string]any{"routeTable": 4}
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.4.9/24"}, ext, nil))
	p := h.newPod("default", "no-cache")
	if _, err := h.add(list, p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	// A DEL without prevResult (e.g. the runtime lost its cache): the
	// address is found from the host veth's /32 route and the pod's eth0.
	conf := `{"cniVersion":"1.1.0","name":"vpctest","type":"vpc-bridge","ipam":{"type":"fakeipam","stateDir":"` + h.stateDir + `"}}`
	env := map[string]string{
		"CNI_COMMAND": "DEL", "CNI_CONTAINERID": p.containerID, "CNI_NETNS": p.ns.Path(), "CNI_IFNAME": "eth0",
		"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=no-cache",
	}
	if _, e := h.exec(env, []byte(conf)); e != nil {
		t.Fatalf("DEL without prevResult: %v", e)
	}
	if rules := h.rules(net.IPv4(10, 1, 4, 9)); len(rules) != 0 {
		t.Errorf("rules left: %v", rules)
	}
	h.assertClean("after DEL without prevResult")
	// DEL without CNI_NETNS (allowed for DEL) is a no-op success.
	delete(env, "CNI_NETNS")
	if _, e := h.exec(env, []byte(conf)); e != nil {
		t.Fatalf("DEL without netns: %v", e)
	}
}

func TestAddBadInputsLeaveNothing(t *testing.T) {
	h := newHost(t)
	p := h.newPod("default", "bad")
	base := func(extra string, ipam string) []byte {
		return []byte(`{"cniVersion":"1.1.0","name":"vpctest","type":"vpc-bridge"` + extra + `,"ipam":` + ipam + `}`)
	}
	fake := func(ips []string, fail string) string {
		b, _ := json.Marshal(ips)
		s := `{"type":"fakeipam","stateDir":"` + h.stateDir + `","ips":` + string(b)
		if fail != "" {
			s += `,"fail":` + fail
		}
		return s + `}`
	}
	hostLocal := `{"type":"host-local","dataDir":"` + h.dataDir + `","ranges":[[{"subnet":"10.77.2.0/24"}]]}`

	tests := []struct {
		name     string
		stdin    []byte
		ifName   string
		netns    string
		wantCode uint
		wantMsg  []string
		ipamDEL  bool // the IPAM plugin was called and must have been released
	}{
		{name: "malformed JSON", stdin: []byte(`{"cniVersion":"1.1.0","name":"vpctest","type":"vpc-bridge",`),
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"unexpected end of JSON input"}},
		{name: "vethPrefix vlan", stdin: base(`,"vethPrefix":"vlan"`, hostLocal),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`vethPrefix: veth prefix "vlan" is reserved`}},
		{name: "vethPrefix toolong", stdin: base(`,"vethPrefix":"toolong"`, hostLocal),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`vethPrefix: veth prefix "toolong" is 7 characters: it must be 1 to 4 characters`}},
		{name: "mtu 70000", stdin: base(`,"mtu":70000`, hostLocal),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"mtu 70000 is out of range: allowed 576..9001 (default 9001)"}},
		{name: "ifname of 16 bytes", stdin: base("", hostLocal), ifName: "abcdefghijklmnop",
			wantCode: types.ErrInvalidEnvironmentVariables, wantMsg: []string{`CNI_IFNAME`, `"abcdefghijklmnop" is 16 bytes`}},
		{name: "netns path missing", stdin: base("", hostLocal), netns: "/var/run/netns/vpc-bridge-test-missing-" + randHex(4),
			wantCode: types.ErrInvalidNetNS, wantMsg: []string{"CNI_NETNS", "/var/run/netns/vpc-bridge-test-missing-", "does not exist"}},
		{name: "ipam plugin not installed", stdin: base("", `{"type":"no-such-ipam"}`),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{`ipam.type "no-such-ipam": IPAM plugin not found in CNI_PATH`}},
		{name: "IPAM ADD fails", stdin: base("", fake([]string{"10.1.5.5/24"}, `{"ADD":{"code":11,"msg":"no free addresses, pool refilling"}}`)),
			wantCode: types.ErrTryAgainLater, wantMsg: []string{"no free addresses, pool refilling"}},
		{name: "IPAM returns both families", stdin: base("", fake([]string{"10.1.5.6/24", "2001:db8::6/64"}, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"2001:db8::6/64", "returned 2 addresses", "dual-stack pods are not supported"}, ipamDEL: true},
		{name: "IPAM returns two IPv4", stdin: base("", fake([]string{"10.1.5.7/24", "10.1.5.8/24"}, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"returned 2 addresses", "exactly one"}, ipamDEL: true},
		{name: "IPAM returns two IPv6", stdin: base("", fake([]string{"2001:db8::7/128", "2001:db8::8/128"}, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"returned 2 addresses", "exactly one"}, ipamDEL: true},
		{name: "IPAM returns a link-local IPv6", stdin: base("", fake([]string{"fe80::5/64"}, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"fe80::5/64", "must be a global unicast address"}, ipamDEL: true},
		{name: "IPAM returns a multicast IPv6", stdin: base("", fake([]string{"ff02::1/128"}, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"ff02::1/128", "must be a global unicast address"}, ipamDEL: true},
		{name: "IPAM returns no address", stdin: base("", fake(nil, "")),
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"returned 0 addresses"}, ipamDEL: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = os.Remove(filepath.Join(h.stateDir, "calls"))
			ifName, netnsPath := "eth0", p.ns.Path()
			if tt.ifName != "" {
				ifName = tt.ifName
			}
			if tt.netns != "" {
				netnsPath = tt.netns
			}
			env := map[string]string{
				"CNI_COMMAND": "ADD", "CNI_CONTAINERID": p.containerID, "CNI_NETNS": netnsPath, "CNI_IFNAME": ifName,
				"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad",
			}
			out, e := h.exec(env, tt.stdin)
			if e == nil {
				t.Fatalf("ADD succeeded: %s", out)
			}
			if e.Code != tt.wantCode {
				t.Errorf("code %d, want %d (%s)", e.Code, tt.wantCode, e.Msg)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(e.Msg, m) {
					t.Errorf("message %q does not contain %q", e.Msg, m)
				}
			}
			t.Logf("error %d: %s", e.Code, e.Msg)
			h.assertClean(tt.name)
			if left := h.ipamAllocations(); len(left) != 0 {
				t.Errorf("IPAM allocations left: %v", left)
			}
			if tt.ipamDEL && !strings.Contains(h.fakeCalls(), "DEL "+p.containerID) {
				t.Errorf("IPAM DEL not called on rollback; calls:\n%s", h.fakeCalls())
			}
			p.do(t, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Errorf("pod has eth0 after failed ADD")
				}
				return nil
			})
		})
	}
}

func TestAddRollbackAtEveryStep(t *testing.T) {
	h := newHostWithBin(t, faultBinDir)
	ext := map[string]any{"routeTable": 3}
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.6.6/24"}, ext, nil))
	for _, step := range []string{"veth", "pod", "route", "rules", "result"} {
		t.Run(step, func(t *testing.T) {
			p := h.newPod("default", "rollback-"+step)
			_ = os.Remove(filepath.Join(h.stateDir, "calls"))
			t.Setenv(FaultEnv, step) // inherited by the plugin through libcni
			_, err := h.add(list, p)
			if err == nil {
				t.Fatalf("ADD with fault at %s succeeded", step)
			}
			if e := cniCode(t, err); !strings.Contains(e.Msg, fmt.Sprintf("injected fault at step %q", step)) {
				t.Errorf("error %q is not the original error", e.Msg)
			}
			h.assertClean("rollback at " + step)
			if left := h.ipamAllocations(); len(left) != 0 {
				t.Errorf("IPAM allocations left: %v", left)
			}
			if calls := h.fakeCalls(); !strings.Contains(calls, "ADD "+p.containerID) || !strings.Contains(calls, "DEL "+p.containerID) {
				t.Errorf("want IPAM ADD then DEL; calls:\n%s", calls)
			}
			p.do(t, func() error {
				if _, err := netlink.LinkByName("eth0"); err == nil {
					t.Errorf("pod has eth0 after rollback")
				}
				return nil
			})
		})
	}
}

func TestAddRefusesAddressInUse(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.7.7/24"}, map[string]any{"routeTable": 3}, nil))
	a := h.newPod("default", "owner")
	ra, err := h.add(list, a)
	if err != nil {
		t.Fatalf("ADD a: %v", err)
	}
	// A broken IPAM hands the same address to pod b: refused, and pod a's
	// routes and rules survive b's rollback.
	b := h.newPod("default", "intruder")
	_, err = h.add(list, b)
	if err == nil {
		t.Fatalf("ADD b with a duplicate address succeeded")
	}
	wantMsg := "address 10.1.7.7 from IPAM is already in use on this node: it is routed to interface " +
		vethOf(t, "default", "owner") + " (container " + a.containerID + " ifname eth0)"
	if e := cniCode(t, err); !strings.Contains(e.Msg, wantMsg) {
		t.Errorf("error %q, want containing %q", e.Msg, wantMsg)
	}
	assertPodWired(t, h, a, ra, 3)
	if err := h.check(list, a); err != nil {
		t.Errorf("CHECK a after b's failed ADD: %v", err)
	}
	// A late DEL of b (which never got the address) must not touch a either.
	if err := h.del(list, b); err != nil {
		t.Errorf("DEL b: %v", err)
	}
	assertPodWired(t, h, a, ra, 3)
	if err := h.del(list, a); err != nil {
		t.Errorf("DEL a: %v", err)
	}
	h.assertClean("end")
}

func TestAddReplacesLeftoverOfSameAttachment(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.hostLocal("10.77.3.0/24"))
	p := h.newPod("default", "retry")
	name := vethOf(t, "default", "retry")
	// An earlier ADD of this attachment died after creating the veth.
	h.do(func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "leftover" + randHex(2)}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		return netlink.LinkSetAlias(l, ownerAlias(p.containerID, "eth0", 254))
	})
	r, err := h.add(list, p)
	if err != nil {
		t.Fatalf("ADD over a leftover of the same attachment: %v", err)
	}
	assertPodWired(t, h, p, r, 254)
	if err := h.del(list, p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	h.assertClean("end")
}

func TestAddRefusesNameOfOtherAttachment(t *testing.T) {
	h := newHost(t)
	list := conflist(t, nil, h.fakeIPAM([]string{"10.1.8.8/24"}, nil, nil))
	p := h.newPod("default", "busy")
	name := vethOf(t, "default", "busy")

	cases := []struct {
		name     string
		alias    string
		wantCode uint
		wantMsg  string
	}{
		{"older sandbox of the same pod", ownerAlias("old-sandbox", "eth0", 254),
			types.ErrTryAgainLater, `host veth name "` + name + `" is in use by another attachment (container old-sandbox ifname eth0)`},
		{"foreign interface", "", types.ErrInternal, `host veth name "` + name + `" is taken by an interface that vpc-bridge did not create`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.do(func() error {
				d := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
				if err := netlink.LinkAdd(d); err != nil {
					return err
				}
				if c.alias != "" {
					return netlink.LinkSetAlias(d, c.alias)
				}
				return nil
			})
			_ = os.Remove(filepath.Join(h.stateDir, "calls"))
			_, err := h.add(list, p)
			if err == nil {
				t.Fatalf("ADD succeeded")
			}
			e := cniCode(t, err)
			if e.Code != c.wantCode || !strings.Contains(e.Msg, c.wantMsg) {
				t.Errorf("error %d %q, want %d containing %q", e.Code, e.Msg, c.wantCode, c.wantMsg)
			}
			if h.fakeCalls() != "" {
				t.Errorf("IPAM was called before the name conflict was detected:\n%s", h.fakeCalls())
			}
			l := h.link(name)
			if l.Attrs().Alias != c.alias {
				t.Errorf("the existing interface was modified: alias %q", l.Attrs().Alias)
			}
			// DEL of our attachment must not delete the other one's link.
			if err := h.del(list, p); err != nil {
				t.Errorf("DEL: %v", err)
			}
			if !h.linkExists(name) {
				t.Errorf("DEL removed an interface of another attachment")
			}
			h.do(func() error { return netlink.LinkDel(l) })
			h.assertClean(c.name)
		})
	}
}

func TestFallbackNameWithoutK8sArgs(t *testing.T) {
	h := newHost(t)
	list := conflist(t, map[string]any{"vethPrefix": "vpc", "mtu": 1500}, h.hostLocal("10.77.4.0/24"))
	p := h.newPod("", "")
	p.containerID = "ctr-fallback"
	r, err := h.add(list, p)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	res, _ := types100.NewResultFromResult(r)
	// "vpc" + the first 11 hex digits of printf %s ctr-fallback.eth0 | sha1sum.
	const want = "vpcf7ca8afde7e"
	if res.Interfaces[0].Name != want || !h.linkExists(want) {
		t.Errorf("host veth %q, want %q", res.Interfaces[0].Name, want)
	}
	if mtu := h.link(want).Attrs().MTU; mtu != 1500 {
		t.Errorf("MTU %d, want 1500", mtu)
	}
	if err := h.check(list, p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := h.del(list, p); err != nil {
		t.Errorf("DEL: %v", err)
	}
	h.assertClean("end")
}

func TestStatusDelegatesToIPAM(t *testing.T) {
	h := newHost(t)
	if err := h.status(conflist(t, nil, h.hostLocal("10.77.5.0/24"))); err != nil {
		t.Errorf("STATUS with host-local: %v", err)
	}
	bad := conflist(t, nil, h.fakeIPAM(nil, nil, map[string]any{"STATUS": map[string]any{"code": 50, "msg": "daemon not ready: warm pool empty"}}))
	err := h.status(bad)
	if err == nil {
		t.Fatalf("STATUS with unavailable IPAM succeeded")
	}
	if e := cniCode(t, err); e.Code != 50 || e.Msg != "daemon not ready: warm pool empty" {
		t.Errorf("STATUS error %+v, want the IPAM plugin's code 50", e)
	}
}

// Guard against the test harness itself ever touching the root netns: the
// helpers only run plugin code inside namespaces created by testutils.NewNS.
func TestHarnessUsesOwnNamespaces(t *testing.T) {
	requireRoot(t)
	h := newHost(t)
	if !strings.HasPrefix(filepath.Base(h.ns.Path()), "cnitest-") {
		t.Fatalf("host netns %s is not a test namespace", h.ns.Path())
	}
	cur, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	registerNS(cur)
	removeNS(cur)
	if _, err := os.Stat(cur.Path()); !os.IsNotExist(err) {
		t.Fatalf("removeNS left %s", cur.Path())
	}
}
