package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// podAddr reads the IPv4 address configured on the pod's eth0.
func (p *pod) podAddr() (netip.Addr, error) {
	var a netip.Addr
	err := p.netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("eth0 has no IPv4 address (%v)", err)
		}
		a, _ = netip.AddrFromSlice(addrs[0].IP.To4())
		return nil
	})
	return a, err
}

// TestDaemonKill9DuringBurst kills the daemon with SIGKILL while pods are
// being added and deleted concurrently, restarts it, and checks the
// invariants users rely on: no address on two pods, no live pod lost its
// address, nothing leaked once the burst is over and GC has run.
func TestDaemonKill9DuringBurst(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"k"}, "WARM_IP_TARGET=6", "MINIMUM_IP_TARGET=10",
		// 38 pods pass through a 27-address node: short cooldowns keep it quick.
		"IP_COOLDOWN_PERIOD=3")
	n := c.nodes["k"]
	l := n.chain(nil)

	// Pods that live through the whole test.
	var live []*pod
	for i := 0; i < 6; i++ {
		p := n.newPod("default", fmt.Sprintf("steady-%d", i))
		if err := p.addRetrying(l, time.Minute); err != nil {
			t.Fatal(err)
		}
		live = append(live, p)
	}
	before := map[*pod]netip.Addr{}
	for _, p := range live {
		before[p] = p.ip
	}

	// The burst: workers add pods, delete every other one, while the daemon
	// is killed and restarted underneath them.
	const workers, perWorker = 8, 4
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*2)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				p := n.newPod("burst", fmt.Sprintf("w%d-%d", w, j))
				if err := p.addRetrying(l, 2*time.Minute); err != nil {
					errs <- fmt.Errorf("ADD %s: %w", p.name, err)
					continue
				}
				if j%2 == 1 {
					// DEL must succeed even while the daemon is down.
					if err := p.del(l); err != nil {
						errs <- fmt.Errorf("DEL %s: %w", p.name, err)
					}
					continue
				}
				mu.Lock()
				live = append(live, p)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	n.kill9()
	time.Sleep(500 * time.Millisecond)
	n.start()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n.waitReady()

	// The runtime's GC: everything not live is released.
	var valid []types.GCAttachment
	for _, p := range live {
		valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
	}
	if err := n.do(func() error {
		return n.cni().GCNetworkList(context.Background(), l, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}

	r := n.introspect()
	held := map[string]string{} // container ID -> IP
	owners := map[string]string{}
	for _, a := range r.Allocations {
		if o, dup := owners[a.Ip]; dup {
			t.Errorf("%s is held by %s and %s", a.Ip, o, a.Key.ContainerId)
		}
		owners[a.Ip] = a.Key.ContainerId
		held[a.Key.ContainerId] = a.Ip
	}
	seen := map[netip.Addr]string{}
	for _, p := range live {
		got, err := p.podAddr()
		if err != nil {
			t.Errorf("live pod %s: %v", p.name, err)
			continue
		}
		if old, ok := before[p]; ok && got != old {
			t.Errorf("live pod %s had %s before the crash, now %s", p.name, old, got)
		}
		if held[p.id] != got.String() {
			t.Errorf("live pod %s uses %s but the daemon holds %q for it", p.name, got, held[p.id])
		}
		if o, dup := seen[got]; dup {
			t.Errorf("%s is configured in live pods %s and %s", got, o, p.name)
		}
		seen[got] = p.name
	}
	if len(r.Allocations) != len(live) {
		t.Errorf("daemon holds %d allocations, %d pods are live: leaked %d", len(r.Allocations), len(live), len(r.Allocations)-len(live))
	}
	// Every held address is still EC2's on this node.
	owner := eniOfAddr(t, c.sim, n.vn.InstanceID)
	for ip := range owners {
		if _, ok := owner(netip.MustParseAddr(ip)); !ok {
			t.Errorf("daemon holds %s, which EC2 has not assigned to the node", ip)
		}
	}
}
