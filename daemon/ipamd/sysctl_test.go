package ipamd

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/vpcchain/vpcchain/daemon/hostnet"
)

func roSysctl(key, have, want string) error {
	return &hostnet.SysctlError{Problems: []hostnet.SysctlProblem{{Key: key, Have: have, Want: want, Err: syscall.EROFS}}}
}

// After a reboot the daemon, unprivileged, finds sysctls it cannot set. It
// starts all the same and says so in STATUS: a strict secondary ENI leaves
// the node ready (its pods work), forwarding off does not; a successful
// SNAT sync does not hide either; a fix is seen on the next recheck.
func TestSysctlProblemsAreReportedNotFatal(t *testing.T) {
	// More addresses than the primary ENI of an m5.large holds (9).
	f := newFixture(t, map[string]string{"MINIMUM_IP_TARGET": "12", "WARM_IP_TARGET": "12"})
	d := f.start()
	settle(t, d) // attaches a secondary ENI (device 1)
	if !f.host.setup[1] {
		t.Fatal("no secondary ENI attached on a fresh node")
	}
	d.Close()

	f.host.eniErr = map[int]error{1: roSysctl("net.ipv4.conf.eth1.rp_filter", "1", "2")}
	d = f.start() // fails here without the fix
	ready, reason, avail := d.Ready()
	if !ready || avail == 0 || !strings.Contains(reason, "net.ipv4.conf.eth1.rp_filter is 1, needs 2") {
		t.Fatalf("Ready() = %v %q %d; want ready, with addresses, naming the strict link", ready, reason, avail)
	}
	if _, err := d.Add(key("p"), "default", "p", ""); err != nil {
		t.Fatalf("ADD with a strict secondary ENI: %v", err)
	}
	if n := d.Counters()["host_sysctl_problems"]; n != 1 {
		t.Errorf("host_sysctl_problems = %d, want 1", n)
	}

	d.Close()
	f.host.nodeErr = roSysctl("net.ipv4.ip_forward", "0", "1")
	d = f.start()
	if ready, reason, _ := d.Ready(); ready || !strings.Contains(reason, "net.ipv4.ip_forward is 0") {
		t.Fatalf("Ready() with forwarding off = %v %q; want not ready, naming it", ready, reason)
	}
	if err := d.SyncSNAT(); err != nil {
		t.Fatal(err)
	}
	if ready, reason, _ := d.Ready(); ready {
		t.Fatalf("a successful SNAT sync cleared the sysctl problem: %q", reason)
	}

	// The operator fixes the node: the next recheck clears both.
	f.host.mu.Lock()
	f.host.nodeErr, f.host.eniErr = nil, nil
	f.host.mu.Unlock()
	d.recheckSysctls(context.Background())
	if ready, reason, _ := d.Ready(); !ready || reason != "" {
		t.Fatalf("Ready() after the fix = %v %q; want ready, no reason", ready, reason)
	}

	// Any other host failure still stops the start.
	d.Close()
	f.host.eniErr = map[int]error{1: errors.New("netlink: operation not permitted")}
	if _, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock}); err == nil {
		t.Fatal("New succeeded with an ENI that cannot be wired")
	}
}
