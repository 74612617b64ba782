package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// TestRebootStrictENIsReadOnlyProcSys restarts a node's daemon as after a
// reboot: the secondary ENIs it attached before come back with the
// distribution's strict rp_filter, and the daemon, unprivileged, has a
// read-only /proc/sys. It must come up by itself, with the pods on those
// ENIs reachable. Without the init step it cannot loosen them: it says so
// in STATUS (ready: those pods work) and the log, and a fix clears it; with
// the init step (vpcchaind --setup-node, as the DaemonSet runs it first)
// every ENI link is loose and the daemon finds nothing to say. A strict
// primary ENI, which does black-hole pods, makes it not ready instead.
func TestRebootStrictENIsReadOnlyProcSys(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"a", "b"}, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS=198.51.100.0/24")
	a, b := c.nodes["a"], c.nodes["b"]
	la, lb := a.chain(nil, a.snatConf()), b.chain(nil, b.snatConf())

	// Ten pods on a: the tenth cannot fit on the primary ENI's 9 addresses.
	var pods []*pod
	for i := 0; i < 10; i++ {
		p := a.newPod("default", fmt.Sprintf("app-%d", i))
		if err := p.addRetrying(la, time.Minute); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	owner := eniOfAddr(t, c.sim, a.vn.InstanceID)
	var prim, sec *pod
	for _, p := range pods {
		dev, ok := owner(p.ip)
		switch {
		case !ok:
			t.Fatalf("%s got %s, which EC2 has not assigned to node a", p.name, p.ip)
		case dev == 0 && prim == nil:
			prim = p
		case dev > 0 && sec == nil:
			sec = p
		}
	}
	if prim == nil || sec == nil {
		t.Fatal("need a pod on the primary and one on a secondary ENI")
	}
	peer := b.newPod("default", "peer")
	if err := peer.addRetrying(lb, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The simulator names an ENI's link eth<device index>.
	inet, _ := c.sim.Cloud.InstanceNetwork(a.vn.InstanceID)
	var links []string
	for _, e := range inet.ENIs {
		if e.DeviceIndex > 0 {
			links = append(links, fmt.Sprintf("eth%d", e.DeviceIndex))
		}
	}
	internet := netip.MustParseAddrPort("203.0.113.10:80")
	excluded := netip.MustParseAddrPort("198.51.100.10:80")
	for _, ap := range []netip.AddrPort{internet, excluded} {
		echoServer(t, c.sim.Fabric.DoInOutside, ap, "outside")
	}
	echoServer(t, peer.doIn, netip.AddrPortFrom(peer.ip, 8080), "peer")
	echoServer(t, sec.doIn, netip.AddrPortFrom(sec.ip, 8080), "sec")
	echoServer(t, prim.doIn, netip.AddrPortFrom(prim.ip, 8080), "prim")
	flows := func(t *testing.T, newPod *pod) {
		t.Helper()
		echoServer(t, newPod.doIn, netip.AddrPortFrom(newPod.ip, 8080), newPod.name)
		for _, tc := range []flowCase{
			{"secondary-ENI pod to another node's pod", sec.doIn, sec.ip, netip.AddrPortFrom(peer.ip, 8080), "peer"},
			{"another node's pod to secondary-ENI pod", peer.doIn, peer.ip, netip.AddrPortFrom(sec.ip, 8080), "sec"},
			{"another node's pod to primary-ENI pod", peer.doIn, peer.ip, netip.AddrPortFrom(prim.ip, 8080), "prim"},
			{"another node's pod to the pod added after the restart", peer.doIn, peer.ip, netip.AddrPortFrom(newPod.ip, 8080), newPod.name},
			{"secondary-ENI pod to the internet (SNAT)", sec.doIn, inet.PrimaryIP, internet, "outside"},
			{"secondary-ENI pod to an excluded CIDR", sec.doIn, sec.ip, excluded, "outside"},
		} {
			t.Run(tc.name, func(t *testing.T) { tc.expect(t, "") })
		}
	}
	readRPFilter := func(link string) string {
		t.Helper()
		var v string
		if err := a.do(func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + link + "/rp_filter")
			v = strings.TrimSpace(string(b))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	setRPFilter := func(key, v string) {
		t.Helper()
		if err := a.do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/conf/"+key+"/rp_filter", []byte(v), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
	}
	// reboot stops the daemon and leaves the node as a reboot does: the
	// secondary ENIs strict, and conf.all strict too (the simulator's is
	// loose, which would make the links' value moot). The primary ENI and
	// the default stay loose, as the earlier init step left them.
	reboot := func() {
		t.Helper()
		a.stop()
		setRPFilter("all", "1")
		for _, l := range links {
			setRPFilter(l, "1")
		}
	}
	vpcctlStatus := func() string {
		t.Helper()
		out, err := exec.Command(filepath.Join(c.bin, "vpcctl"), "status", "--socket", a.socket).CombinedOutput()
		if err != nil {
			t.Fatalf("vpcctl status: %v\n%s", err, out)
		}
		return string(out)
	}
	newPodAfter := func(name string) *pod {
		t.Helper()
		p := a.newPod("default", name)
		if err := p.addRetrying(la, time.Minute); err != nil {
			t.Fatalf("ADD after the restart: %v", err)
		}
		return p
	}

	// Without the init step: the daemon cannot loosen the links.
	reboot()
	a.readOnlyProcSys = true
	a.start()
	a.waitStatus(90*time.Second, 100*time.Millisecond, "does not report the strict ENIs", func(st *ipamv1.StatusReply) error {
		if !st.Ready {
			return errors.New("not ready: " + st.Reason)
		}
		if !strings.Contains(st.Reason, "rp_filter is 1, needs 2") {
			return fmt.Errorf("ready, reason %q does not name the strict links", st.Reason)
		}
		return nil
	})
	for _, l := range links {
		if v := readRPFilter(l); v != "1" {
			t.Fatalf("%s rp_filter = %s: the daemon's /proc/sys was not read-only", l, v)
		}
	}
	if out := vpcctlStatus(); !strings.HasPrefix(out, "ready: host networking: ") || !strings.Contains(out, "rp_filter is 1") {
		t.Errorf("vpcctl status does not say it:\n%s", out)
	}
	if log, _ := os.ReadFile(a.logPath); !strings.Contains(string(log), "carrying on") {
		t.Errorf("the daemon's log does not say it carries on:\n%s", tail(string(log), 20))
	}
	t.Run("strict ENIs, read-only /proc/sys", func(t *testing.T) { flows(t, newPodAfter("after-1")) })

	// The operator loosens the links: the next reconcile clears it.
	for _, l := range links {
		setRPFilter(l, "2")
	}
	a.waitStatus(30*time.Second, 200*time.Millisecond, "still reports a fixed sysctl", func(st *ipamv1.StatusReply) error {
		if !st.Ready || strings.Contains(st.Reason, "host networking") {
			return fmt.Errorf("ready %v, reason %q", st.Ready, st.Reason)
		}
		return nil
	})

	// A strict primary ENI drops the SNATed and NodePort replies of every
	// pod on a secondary ENI: that one makes the node not ready, until
	// fixed.
	reboot()
	setRPFilter("eth0", "1")
	a.start()
	a.waitStatus(90*time.Second, 100*time.Millisecond, "does not report the strict primary ENI", func(st *ipamv1.StatusReply) error {
		if st.Ready || !strings.Contains(st.Reason, "net.ipv4.conf.eth0.rp_filter is 1") {
			return fmt.Errorf("ready %v, reason %q", st.Ready, st.Reason)
		}
		return nil
	})
	if out := vpcctlStatus(); !strings.HasPrefix(out, "NOT READY: host networking: node: ") {
		t.Errorf("vpcctl status does not say it:\n%s", out)
	}
	setRPFilter("eth0", "2")
	a.waitStatus(30*time.Second, 200*time.Millisecond, "not ready after the primary ENI was fixed", func(st *ipamv1.StatusReply) error {
		if !st.Ready || strings.Contains(st.Reason, "eth0") {
			return fmt.Errorf("ready %v, reason %q", st.Ready, st.Reason)
		}
		return nil
	})

	// With the init step run first, as the DaemonSet does.
	reboot()
	a.setupNode()
	for _, l := range append([]string{"eth0"}, links...) {
		if v := readRPFilter(l); v != "2" {
			t.Errorf("after vpcchaind --setup-node, %s rp_filter = %s, want 2", l, v)
		}
	}
	a.start()
	a.waitStatus(90*time.Second, 100*time.Millisecond, "not ready", func(st *ipamv1.StatusReply) error {
		if !st.Ready {
			return errors.New(st.Reason)
		}
		// Ready comes after adoption: its first answer has every problem.
		if strings.Contains(st.Reason, "host networking") {
			t.Errorf("after the init step the daemon still reports %q", st.Reason)
		}
		return nil
	})
	t.Run("after the init step", func(t *testing.T) { flows(t, newPodAfter("after-2")) })
}
