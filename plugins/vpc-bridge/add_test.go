package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

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
