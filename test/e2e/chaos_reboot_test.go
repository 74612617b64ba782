package e2e

// A node reboot, as the chaos tests model it for any CNI daemon. What a
// reboot takes away: every process (the daemon, the pods), every pod's
// network namespace (and with it the pod's veth pair and its routes), the
// kernel state the daemon and the plugins made on the node (addresses and
// routes of the secondary ENIs, policy rules, iptables rules, ipsets,
// conntrack) and /run, a tmpfs, where both our daemon and the AWS VPC CNI
// keep their state. What stays: EC2's view (the ENIs stay attached, with
// their addresses), the primary ENI's address and default route (the OS
// configures them at boot), the secondary ENIs' links (DOWN, no address, as
// the simulator attaches them) and /var/lib, where the runtime keeps its
// CNI cache. Sysctls stay as they were: both daemons set the ones they need
// at every start, and TestRebootStrictENIsReadOnlyProcSys covers a reboot
// that resets them.
//
// After the boot the daemon starts again, and the runtime deletes each old
// sandbox (CNI DEL without a netns, as containerd does once the namespace
// is gone) and creates every pod anew: same pod name, new sandbox.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// daemonOps are what a reboot does to a node's CNI daemon.
type daemonOps struct {
	kill    func() error // SIGKILL, no restart
	wipeRun func() error // its files in /run
	start   func() error // start it and wait until it serves
}

// ourDaemonOps: our daemon's state directory is /var/run/vpcchain on a
// node (the DaemonSet's hostPath); the test's runtime keeps its CNI cache
// there too, which on a node is /var/lib/cni and survives.
func ourDaemonOps(n *node) daemonOps {
	return daemonOps{
		kill: func() error { n.kill9(); return nil },
		wipeRun: func() error {
			return wipeDir(n.state, "cni-cache")
		},
		start: func() error { n.start(); return n.pollReady() },
	}
}

// wipeDir removes what dir holds but keep.
func wipeDir(dir string, keep ...string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wipe %s: %w", dir, err)
	}
	for _, e := range ents {
		if !contains(keep, e.Name()) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("wipe %s: %w", dir, err)
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// rebootChaosNode reboots cn's node while the other nodes' workers go on:
// its own workers wait (the node's runtime is down), its live pods are
// recreated after the boot, each under its old name. What the runtime
// meets (a failed DEL or ADD) goes to cn's problems; an error is the
// harness's.
func rebootChaosNode(cn *chaosNode, pods *chaosPods, d daemonOps) error {
	cn.up.Lock()
	defer cn.up.Unlock()
	old := cn.live()
	for _, p := range old {
		pods.gone(p)
	}
	if err := d.kill(); err != nil {
		return fmt.Errorf("kill the daemon: %w", err)
	}
	for _, p := range old {
		if err := killSandbox(p); err != nil {
			return err
		}
	}
	if err := rebootKernel(cn.n); err != nil {
		return err
	}
	if err := d.wipeRun(); err != nil {
		return err
	}
	if err := d.start(); err != nil {
		cn.problem(probServing, fmt.Errorf("after the reboot of %s: %w", cn.n.name, err))
	}

	// The runtime, pod by pod in parallel: the old sandbox's DEL, then
	// the new sandbox's ADD.
	steady := map[*pod]int{}
	for i, p := range cn.steady {
		steady[p] = i
	}
	fresh := make([]*pod, len(old))
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	for i, p := range old {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := delRetrying(p, cn.l, time.Minute, &cn.delFailed); err != nil {
				cn.problem(probDEL, fmt.Errorf("DEL %s's old sandbox after the reboot of %s: %w", p.name, cn.n.name, err))
			}
			if _, ok := steady[p]; ok {
				np, err := cn.startSteady(pods, p.name)
				if err != nil {
					cn.problem(probADD, err)
					return
				}
				fresh[i] = np
				return
			}
			np := cn.makePod(p.name)
			pods.register(np)
			if err := cn.addPod(np); err != nil {
				cn.problem(probADD, fmt.Errorf("ADD %s's new sandbox after the reboot of %s: %w", p.name, cn.n.name, err))
				// As kubelet does after a failed ADD.
				if derr := delRetrying(np, cn.l, time.Minute, &cn.delFailed); derr != nil {
					emu.Lock()
					errs = append(errs, derr)
					emu.Unlock()
				}
				return
			}
			pods.added(cn, np)
			fresh[i] = np
		}()
	}
	wg.Wait()
	for _, err := range errs {
		cn.problem(probDEL, err)
	}

	cn.mu.Lock()
	defer cn.mu.Unlock()
	var newSteady, burst []*pod
	for i, p := range old {
		np := fresh[i]
		if np == nil {
			continue // the pod failed to come back: the runtime retries it no more here
		}
		if _, ok := steady[p]; ok {
			delete(cn.first, p)
			cn.first[np] = np.ip
			newSteady = append(newSteady, np)
		} else {
			burst = append(burst, np)
		}
	}
	cn.steady, cn.burst = newSteady, burst
	return nil
}

// killSandbox ends a pod's sandbox as a reboot does: its network namespace
// (and so its veth pair) is gone. The links are deleted first: a socket
// still open in the namespace would otherwise keep it, and the veth,
// alive.
func killSandbox(p *pod) error {
	if p.closeEcho != nil {
		p.closeEcho()
	}
	err := p.netns.Do(func(ns.NetNS) error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("end %s's sandbox: %w", p.name, err)
	}
	_ = p.netns.Close()
	_ = testutils.UnmountNS(p.netns)
	p.gone = true
	return nil
}

// eniLink is the name the simulator gives an ENI's link on network card 0.
var eniLink = regexp.MustCompile(`^eth[0-9]+$`)

// The kernel's own policy rules, which a boot starts with.
var bootRules = map[int]bool{0: true, 32766: true, 32767: true}

// isDefault: a default route's destination, which the kernel may report
// as nil or as 0.0.0.0/0.
func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0 && dst.IP.IsUnspecified()
}

// rebootKernel leaves the node's network namespace as the boot finds it:
// the primary ENI configured, the other ENI links down without addresses,
// no other link, the kernel's default rules and routes only, empty
// iptables, no ipset, no conntrack entry.
func rebootKernel(n *node) error {
	err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		eth0 := -1
		for _, l := range links {
			name := l.Attrs().Name
			switch {
			case name == "lo":
			case name == "eth0":
				eth0 = l.Attrs().Index
			case eniLink.MatchString(name):
				addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				for _, a := range addrs {
					if err := netlink.AddrDel(l, &a); err != nil {
						return fmt.Errorf("flush %s: %w", name, err)
					}
				}
				if err := netlink.LinkSetDown(l); err != nil {
					return fmt.Errorf("%s down: %w", name, err)
				}
			default:
				if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					return fmt.Errorf("delete link %s: %w", name, err)
				}
			}
		}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rules, err := netlink.RuleList(fam)
			if err != nil {
				return err
			}
			for _, r := range rules {
				if !bootRules[r.Priority] {
					if err := netlink.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
						return fmt.Errorf("delete rule %v: %w", r, err)
					}
				}
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			boot := r.Table == unix.RT_TABLE_LOCAL ||
				r.Table == unix.RT_TABLE_MAIN && r.LinkIndex == eth0 && (r.Protocol == unix.RTPROT_KERNEL || isDefault(r.Dst) && r.Gw != nil)
			if !boot {
				if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("delete route %v: %w", r, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reboot %s's kernel state: %w", n.name, err)
	}
	// iptables-restore replaces each table it names: no rule, no chain of
	// anyone's, every policy ACCEPT.
	const empty = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n" +
		"*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n" +
		"*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n" +
		"*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	for _, tool := range []string{"iptables-restore", "ip6tables-restore"} {
		cmd := inNode(n.vn, tool, "-w")
		cmd.Stdin = strings.NewReader(empty)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s on %s: %w: %s", tool, n.name, err, out)
		}
	}
	for _, args := range [][]string{{"ipset", "destroy"}, {"conntrack", "-F"}} {
		if out, err := inNode(n.vn, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), n.name, err, out)
		}
	}
	return nil
}
