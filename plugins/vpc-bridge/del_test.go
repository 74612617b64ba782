package main

import (
	"net"
	"os"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/cniext"
)

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
