//go:build peer

package e2e

// Benchmarks side by side with the unmodified AWS VPC CNI v1.23.2
// (docs/benchmarks.md, "Against the AWS VPC CNI"): one simulator, nodes of
// the same instance type, the same EC2 latency, both systems in one run.
// Our daemon runs with its production loop intervals (not the harness's
// fast ones); the peer with its manifest's environment (peer_test.go).
//
//	make bench-peer

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// sideBySide is a simulator with a control plane on a node of its own
// (the peer's ipamd reads the API server; ours does not need one).
type sideBySide struct {
	c    *cluster
	k    *kube
	bins peerBins
}

func newSideBySide(b testing.TB) *sideBySide {
	b.Helper()
	bins := peerBinaries(b)
	c := newSimVPC(b, "10.0.0.0/20")
	api := c.addNode("m5.large", "api")
	k := startControlPlaneWith(b, api, bins.etcd, bins.apiserver, bins.kubectl, controlPlaneOpts{advertise: primaryIP(b, c, api)})
	installPeerCRDs(b, k)
	return &sideBySide{c: c, k: k, bins: bins}
}

// ours launches a node for our daemon (started by the caller), with the
// daemon's production loop intervals.
func (s *sideBySide) ours(typ, name string, env ...string) *node {
	return s.c.addNode(typ, name, append([]string{"VPCCHAIN_POOL_INTERVAL=1s", "VPCCHAIN_RECONCILE_INTERVAL=60s"}, env...)...)
}

// theirs launches a node registered with the API server, as kubelet
// registers it before the DaemonSet's pod starts; startPeer starts ipamd.
func (s *sideBySide) theirs(typ, name string) *node {
	n := s.c.addNode(typ, name)
	registerPeerNode(s.c.t, s.k, n)
	return n
}

// available is how many addresses ipamd holds that no pod has (including
// those cooling down: introspection does not tell them apart).
func (p *peerNode) available(t testing.TB) int {
	v := p.enis(t)
	return v.TotalIPs - v.AssignedIPs
}

// withoutPortmap is l without its portmap plugin (the peer's conflist
// always chains it).
func withoutPortmap(t testing.TB, l *libcni.NetworkConfigList) *libcni.NetworkConfigList {
	t.Helper()
	var keep []*libcni.PluginConfig
	for _, p := range l.Plugins {
		if p.Network.Type != "portmap" {
			keep = append(keep, p)
		}
	}
	out := *l
	out.Plugins = keep
	return &out
}

// BenchmarkPeerAddDel is BenchmarkChainAddDel with the peer as the
// reference: one pod's ADD+DEL through libcni on a warm pool, and 8 at once,
// both systems interleaved round by round on two m5.xlarge nodes whose pools
// hold 40 addresses (WARM_IP_TARGET=10, MINIMUM_IP_TARGET=40) with a 1 s
// cooldown on both (at the 30 s default a tight loop empties either pool).
// Variants: each side's chain as its manifest ships it (ours without
// portmap, theirs with it) is not a variant; portmap is in both chains or in
// neither; the peer logs at its manifest's DEBUG (files) or at INFO, ours at
// its default (info).
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerAddDel -benchtime 100x ./test/e2e/
func BenchmarkPeerAddDel(b *testing.B) {
	s := newSideBySide(b)
	pool := []string{"WARM_IP_TARGET=10", "MINIMUM_IP_TARGET=40", "IP_COOLDOWN_PERIOD=1"}
	portmap := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}
	for _, logs := range []struct {
		name string
		env  []string
	}{
		{"manifest", nil},
		{"info", []string{"AWS_VPC_K8S_CNI_LOGLEVEL=INFO", "AWS_VPC_K8S_PLUGIN_LOG_LEVEL=INFO"}},
	} {
		ours := s.ours("m5.xlarge", "ours-"+logs.name, pool...)
		ours.start()
		b.Cleanup(ours.stop)
		theirs := startPeer(b, s.bins, s.k, s.k.remoteServer, s.theirs("m5.xlarge", "theirs-"+logs.name), append(pool, logs.env...)...)
		theirs.waitReady(b, 90*time.Second)
		waitServing(ours, 40)
		waitFor(b, 2*time.Minute, "40 addresses in ipamd's pool", theirs.currentAgent().running, func() error {
			if a := theirs.available(b); a < 40 {
				return fmt.Errorf("%d available", a)
			}
			return nil
		})
		// Ours with the upstream plugins beside it, as on a node where
		// both are installed: the portmap the peer's image ships.
		ourRuntime := libcni.NewCNIConfigWithCacheDir([]string{ours.c.bin, filepath.Dir(s.bins.portmap)},
			filepath.Join(ours.state, "bench-cache"), &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: ours.pluginLog()}, PluginDecoder: version.PluginDecoder{}})
		for _, withPortmap := range []bool{false, true} {
			ourList, theirList := ours.chain(nil), withoutPortmap(b, theirs.conf)
			if withPortmap {
				ourList, theirList = ours.chain(nil, portmap), theirs.conf
			}
			for _, conc := range []int{1, 8} {
				b.Run(fmt.Sprintf("logs=%s/portmap=%v/concurrent=%d", logs.name, withPortmap, conc), func(b *testing.B) {
					sides := [2]benchSide{{name: "ours", list: ourList}, {name: "theirs", list: theirList}}
					for w := range conc {
						op := ours.newPod("bench", fmt.Sprintf("pod%d", w))
						op.cni = ourRuntime
						sides[0].pods = append(sides[0].pods, op)
						sides[1].pods = append(sides[1].pods, theirs.newPod(fmt.Sprintf("pod%d", w)))
					}
					benchSidesAddDel(b, sides, withPortmap, false)
				})
			}
		}
		if logs.name != "info" {
			continue
		}
		// A pod deleted and created again under the same name at once, as a
		// StatefulSet's pod is: the peer's next ADD meets the veth of the
		// one before, which the kernel is still removing with its namespace.
		b.Run("logs=info/same-pod-name", func(b *testing.B) {
			sides := [2]benchSide{{name: "ours", list: ours.chain(nil)}, {name: "theirs", list: withoutPortmap(b, theirs.conf)}}
			sides[0].pods = []*pod{ours.newPod("bench", "web-0")}
			sides[1].pods = []*pod{theirs.newPod("web-0")}
			benchSidesAddDel(b, sides, false, true)
		})
	}
}

type benchSide struct {
	name string
	list *libcni.NetworkConfigList
	pods []*pod // one per concurrent worker
}

// benchSidesAddDel runs b.N ADD+DELs on each side, its pods at once,
// alternating the sides' order round by round so drift on a shared machine
// hits both alike, and reports both sides' percentiles and ours/theirs.
//
// Every ADD gets a new sandbox namespace, removed after its DEL, as a
// runtime does (outside the timing, like the runtime's own work): the
// peer's DEL leaves the pod's veth to the namespace's removal, and a
// namespace used again would have its next ADD delete the old one. Each
// round's pods have new names (a Deployment's), unless sameName: then a
// failed ADD is counted (and cleaned up with DEL) instead of failing.
func benchSidesAddDel(b *testing.B, sides [2]benchSide, hostPort, sameName bool) {
	for _, sd := range sides {
		for w, p := range sd.pods {
			if hostPort {
				p.caps = map[string]any{"portMappings": []map[string]any{
					{"hostPort": 30080 + w, "containerPort": 80, "protocol": "tcp"}}}
			}
		}
	}
	conc := len(sides[0].pods)
	type sample struct{ add, addDel time.Duration }
	samples := [2][]sample{}
	var failed [2]int
	var mu sync.Mutex
	b.ResetTimer()
	for round := 0; round*conc < b.N; round++ {
		for k := range 2 {
			si := (round + k) % 2
			var wg sync.WaitGroup
			errs := make(chan error, conc)
			for w, p := range sides[si].pods {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.id = fmt.Sprintf("bench-%d-%d-%d", si, round, w)
					if !sameName {
						p.name = fmt.Sprintf("pod%d-%d", w, round)
					}
					sandbox, err := testutils.NewNS()
					if err != nil {
						errs <- err
						return
					}
					p.netns = sandbox
					unregister := onInterrupt(func() { _ = testutils.UnmountNS(sandbox) })
					defer func() { unregister(); _ = sandbox.Close(); _ = testutils.UnmountNS(sandbox) }()
					start := time.Now()
					if _, err := p.add(sides[si].list); err != nil {
						if !sameName {
							errs <- fmt.Errorf("%s ADD: %w", sides[si].name, err)
							return
						}
						b.Logf("%s ADD of %s: %v", sides[si].name, p.name, err)
						mu.Lock()
						failed[si]++
						mu.Unlock()
						if err := p.del(sides[si].list); err != nil {
							errs <- fmt.Errorf("%s DEL after a failed ADD: %w", sides[si].name, err)
						}
						return
					}
					mid := time.Now()
					if err := p.del(sides[si].list); err != nil {
						errs <- fmt.Errorf("%s DEL: %w", sides[si].name, err)
						return
					}
					mu.Lock()
					samples[si] = append(samples[si], sample{add: mid.Sub(start), addDel: time.Since(start)})
					mu.Unlock()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatalf("round %d: %v", round, err)
			}
		}
	}
	b.StopTimer()
	var p50, p99 [2]time.Duration
	for si, sd := range sides {
		var add, addDel []time.Duration
		for _, s := range samples[si] {
			add = append(add, s.add)
			addDel = append(addDel, s.addDel)
		}
		if len(addDel) == 0 {
			b.Errorf("%s: no ADD succeeded", sd.name)
			return
		}
		p50[si], p99[si] = percentile(addDel, 0.50), percentile(addDel, 0.99)
		b.ReportMetric(ms(p50[si]), sd.name+"-p50-ms")
		b.ReportMetric(ms(p99[si]), sd.name+"-p99-ms")
		b.ReportMetric(ms(percentile(add, 0.50)), sd.name+"-add-p50-ms")
		if sameName {
			b.ReportMetric(float64(failed[si]), sd.name+"-failed-adds")
		}
	}
	b.ReportMetric(float64(p50[0])/float64(p50[1]), "ratio-p50")
	b.ReportMetric(float64(p99[0])/float64(p99[1]), "ratio-p99")
}

// BenchmarkPeerBurst is BenchmarkBurstFreshNode for both systems: a burst
// of 27 pods (what an m5.large holds in secondary-IP mode) on a node that
// has just joined, with every EC2 call answered after 300 ms, at default
// knobs and with prefix delegation. A fresh node each time: the latency is
// set before it is launched and its daemon started, and the burst starts
// the moment the daemon serves (ours: gRPC health SERVING; theirs: the
// same check on ipamd.sock, which its entrypoint waits for before it
// writes the conflist and the node turns ready). Pods retry as kubelet
// does, after 100 ms: ours when told to (CNI code 11), theirs on any
// failure (the peer answers "failed to assign an IP address" while its
// pool grows). The runs alternate between the systems.
//
// Reported per system: the last pod's wait (first ADD of the burst to the
// last success), p50, pods that waited, EC2 calls from the daemon's start
// to the last pod up (all and mutating, counted by the simulator for the
// node's own endpoint), and daemon start to serving and to the first pod's
// address (a node's start).
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerBurst -benchtime 2x ./test/e2e/
func BenchmarkPeerBurst(b *testing.B) {
	const typ, lat = "m5.large", 300 * time.Millisecond
	lim, ok := instancelimits.Lookup(typ)
	if !ok {
		b.Fatalf("no limits for %s", typ)
	}
	pods := lim.MaxENIs * (lim.IPv4PerENI - 1)
	s := newSideBySide(b)
	s.c.sim.Faults.SetLatency("*", lat)
	runs := 0
	for _, k := range []struct {
		name string
		env  []string
	}{{"default", nil}, {"prefix-delegation", []string{"ENABLE_PREFIX_DELEGATION=true"}}} {
		b.Run(fmt.Sprintf("latency=%dms/knobs=%s", lat.Milliseconds(), k.name), func(b *testing.B) {
			results := map[string][]peerBurstResult{}
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				for j := range 2 {
					runs++
					system := []string{"ours", "theirs"}[(i+j)%2]
					results[system] = append(results[system], s.burst(b, system, fmt.Sprintf("%s-%d", system, runs), typ, pods, k.env))
				}
			}
			var last [2]float64
			for si, system := range []string{"ours", "theirs"} {
				var waits []time.Duration
				var lastWait, calls, mutating, serving, first []float64
				waited := 0
				for _, r := range results[system] {
					var max time.Duration
					for _, p := range r.pods {
						if p.err != nil {
							b.Errorf("%s: %v", system, p.err)
							continue
						}
						waits = append(waits, p.wait)
						max = maxDur(max, p.wait)
						if p.attempts > 1 {
							waited++
						}
					}
					lastWait = append(lastWait, ms(max))
					calls = append(calls, float64(r.calls))
					mutating = append(mutating, float64(r.mutating))
					serving = append(serving, ms(r.serving))
					first = append(first, ms(r.firstPod))
				}
				if len(waits) == 0 {
					return
				}
				n := float64(len(results[system]))
				last[si] = mean(lastWait)
				b.ReportMetric(last[si], system+"-last-pod-ms")
				b.ReportMetric(ms(percentile(waits, 0.5)), system+"-p50-wait-ms")
				b.ReportMetric(float64(waited)/n, system+"-pods-waited")
				b.ReportMetric(mean(calls), system+"-ec2-calls")
				b.ReportMetric(mean(mutating), system+"-ec2-mutating")
				b.ReportMetric(mean(serving), system+"-serving-ms")
				b.ReportMetric(mean(first), system+"-first-pod-ms")
			}
			b.ReportMetric(last[0]/last[1], "ratio-last-pod")
		})
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

type peerBurstResult struct {
	pods              []burstPod
	serving, firstPod time.Duration // from the daemon's start
	calls, mutating   int64         // the node's EC2 calls, daemon start to the last pod up
}

// burst launches a fresh node named name for system, starts its daemon
// with env and runs the burst once it serves; the daemon is stopped after.
func (s *sideBySide) burst(b *testing.B, system, name, typ string, pods int, env []string) peerBurstResult {
	b.Helper()
	var n *node
	if system == "ours" {
		n = s.ours(typ, name, env...)
	} else {
		n = s.theirs(typ, name)
	}
	// The sandboxes exist before the daemon starts: the burst meets the
	// daemon, not the making of namespaces.
	ps := make([]*pod, pods)
	for i := range ps {
		ps[i] = n.newPod("burst", fmt.Sprintf("pod-%02d", i))
	}
	var add func(*pod) burstPod
	var waitServe, stop func()
	started := time.Now()
	if system == "ours" {
		l := n.chain(nil)
		add = func(p *pod) burstPod { return addLikeRuntime(p, l, 100*time.Millisecond, 2*time.Minute) }
		n.start()
		b.Cleanup(n.stop)
		stop = n.stop
		waitServe = func() { waitServing(n, 0) }
	} else {
		p := startPeer(b, s.bins, s.k, s.k.remoteServer, n, env...)
		rt := p.runtime()
		for _, pd := range ps {
			pd.cni = rt
		}
		add = func(pd *pod) burstPod { return addAnyRetry(pd, p.conf, 100*time.Millisecond, 2*time.Minute) }
		stop = p.stop
		waitServe = func() {
			for err := p.health(); err != nil; err = p.health() {
				if time.Since(started) > 2*time.Minute {
					b.Fatalf("%s does not serve after 2m: %v", name, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	waitServe()
	res := peerBurstResult{serving: time.Since(started)}
	res.pods = make([]burstPod, pods)
	var firstOnce sync.Once
	var wg sync.WaitGroup
	b.StartTimer()
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.pods[i] = add(p)
			if res.pods[i].err == nil {
				firstOnce.Do(func() { res.firstPod = time.Since(started) })
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	calls := s.c.sim.Faults.CallsFrom(n.name)
	res.calls = calls[""]
	for a, v := range calls {
		if a != "" && vpcsim.IsMutating(a) {
			res.mutating += v
		}
	}
	b.Logf("%s (%s): serving after %v, first pod after %v, EC2 calls %v", name, system, res.serving.Round(time.Millisecond),
		res.firstPod.Round(time.Millisecond), calls)
	stop()
	return res
}

// addAnyRetry is addLikeRuntime for a plugin that does not say when to
// try again: any failed ADD is cleaned up with DEL and retried after pause,
// as kubelet retries a sandbox.
func addAnyRetry(p *pod, l *libcni.NetworkConfigList, pause, within time.Duration) burstPod {
	return named(p, retryADD(p, l, pause, within, anyError))
}

func anyError(error) bool { return true }

// BenchmarkPeerResources is BenchmarkDaemonResources for both daemons at
// once, on two m5.large nodes with the same pool settings
// (WARM_IP_TARGET=5, IP_COOLDOWN_PERIOD=5) and 20 pods each: resident
// memory and CPU while idle, then under churn (two workers per node adding
// and deleting a pod continuously), sampled over the same window.
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerResources -benchtime 1x ./test/e2e/
func BenchmarkPeerResources(b *testing.B) {
	s := newSideBySide(b)
	pool := []string{"WARM_IP_TARGET=5", "IP_COOLDOWN_PERIOD=5"}
	ours := s.ours("m5.large", "ours", pool...)
	ours.start()
	b.Cleanup(ours.stop)
	ours.waitReady()
	theirs := startPeer(b, s.bins, s.k, s.k.remoteServer, s.theirs("m5.large", "theirs"), pool...)
	theirs.waitReady(b, 90*time.Second)
	ol := ours.chain(nil)
	for i := range 20 {
		if err := ours.newPod("res", fmt.Sprintf("steady-%d", i)).addRetrying(ol, time.Minute); err != nil {
			b.Fatal(err)
		}
		if err := addAsKubelet(theirs.newPod(fmt.Sprintf("steady-%d", i)), theirs.conf, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	pids := [2]int{ours.cmd.Process.Pid, theirs.currentAgent().cmd.Process.Pid}
	loads := [2]func(stop <-chan struct{}) int{
		func(stop <-chan struct{}) int { return churnPods(b, ours, ol, stop) },
		func(stop <-chan struct{}) int {
			return churn(b, [2]*pod{theirs.newPod("churn-w0"), theirs.newPod("churn-w1")},
				func(p *pod) error { return addAsKubelet(p, theirs.conf, time.Minute) },
				func(p *pod) error { return p.del(theirs.conf) }, stop)
		},
	}
	const window = 20 * time.Second
	for i := 0; i < b.N; i++ {
		var idle, busy [2]procSample
		var events [2]int
		both := func(f func(si int)) {
			var wg sync.WaitGroup
			for si := range 2 {
				wg.Add(1)
				go func() { defer wg.Done(); f(si) }()
			}
			wg.Wait()
		}
		both(func(si int) { idle[si] = sampleProc(b, pids[si], window, nil) })
		both(func(si int) {
			busy[si] = sampleProc(b, pids[si], window, func(stop <-chan struct{}) { events[si] = loads[si](stop) })
		})
		for si, name := range []string{"ours", "theirs"} {
			b.ReportMetric(idle[si].rssMiB, name+"-idle-rss-MiB")
			b.ReportMetric(idle[si].cpuPct, name+"-idle-cpu-%")
			b.ReportMetric(busy[si].rssMiB, name+"-churn-rss-MiB")
			b.ReportMetric(busy[si].hwmMiB, name+"-churn-peak-rss-MiB")
			b.ReportMetric(busy[si].cpuPct, name+"-churn-cpu-%")
			b.ReportMetric(float64(events[si])/window.Seconds(), name+"-churn-events/s")
			if events[si] > 0 {
				b.ReportMetric(busy[si].cpuSec/float64(events[si])*1000, name+"-cpu-ms/event")
			}
		}
		for si, name := range []string{"ours", "theirs"} {
			anon, file := procRSSKinds(b, pids[si])
			b.ReportMetric(anon, name+"-anon-rss-MiB")
			b.ReportMetric(file, name+"-file-rss-MiB")
		}
		b.ReportMetric(idle[0].rssMiB/idle[1].rssMiB, "ratio-idle-rss")
		b.ReportMetric(busy[0].rssMiB/busy[1].rssMiB, "ratio-churn-rss")
	}
}

// BenchmarkPeerThroughput is BenchmarkThroughput for both systems: pod to
// pod TCP (iperf3, one stream) on the same node and across two nodes, for
// ours on two m5.large nodes and theirs on two more, each path once per
// iteration in rotating order; median Gbit/s and ours/theirs.
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerThroughput -benchtime 5x ./test/e2e/
func BenchmarkPeerThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is not installed (make deps installs it)")
	}
	s := newSideBySide(b)
	var ourPods, theirPods [3]*pod // client, server on the same node, server on the other
	for i, name := range []string{"ours-a", "ours-b"} {
		n := s.ours("m5.large", name)
		n.start()
		b.Cleanup(n.stop)
		n.waitReady()
		l := n.chain(nil)
		for _, j := range [][]int{{0, 1}, {2}}[i] {
			p := n.newPod("tp", fmt.Sprintf("p%d", j))
			if err := p.addRetrying(l, time.Minute); err != nil {
				b.Fatal(err)
			}
			ourPods[j] = p
		}
	}
	for i, name := range []string{"theirs-a", "theirs-b"} {
		p := startPeer(b, s.bins, s.k, s.k.remoteServer, s.theirs("m5.large", name))
		p.waitReady(b, 90*time.Second)
		for _, j := range [][]int{{0, 1}, {2}}[i] {
			pd := p.newPod(fmt.Sprintf("p%d", j))
			if err := addAsKubelet(pd, p.conf, time.Minute); err != nil {
				b.Fatal(err)
			}
			theirPods[j] = pd
		}
	}
	paths := []struct {
		name           string
		client, server *pod
	}{
		{"ours-same-node", ourPods[0], ourPods[1]}, {"theirs-same-node", theirPods[0], theirPods[1]},
		{"ours-cross-node", ourPods[0], ourPods[2]}, {"theirs-cross-node", theirPods[0], theirPods[2]},
	}
	gbps := make([][]float64, len(paths))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range paths {
			j := (i + k) % len(paths)
			bps, err := iperf3(paths[j].client.netns.Path(), paths[j].server.netns.Path(), paths[j].server.ip)
			if err != nil {
				b.Fatalf("%s: %v", paths[j].name, err)
			}
			gbps[j] = append(gbps[j], bps/1e9)
		}
	}
	b.StopTimer()
	for j := 0; j < len(paths); j += 2 {
		o, t := median(gbps[j]), median(gbps[j+1])
		b.ReportMetric(o, paths[j].name+"-Gbps")
		b.ReportMetric(t, paths[j+1].name+"-Gbps")
		b.ReportMetric(o/t, paths[j].name[len("ours-"):]+"-ratio")
	}
}

// BenchmarkPeerChurn is the steady churn of BenchmarkChurnSteady
// (daemon/ipamd), run in real time on real processes: both systems at once
// (after 90 s of warm-up events, past a fresh node's start-up),
// on two m5.large nodes at default knobs (WARM_ENI_TARGET=1, 30 s
// cooldown), each with a population of 15 pods. At every interval one pod
// is created and a random live one (seeded, the same sequence on both
// sides) is deleted at a random instant within the interval. A pod whose
// ADD fails is retried every 200 ms (ours when told to try again; theirs on
// any failure) and "waited". Measured after warm-up events, per system:
// mutating EC2 calls per 1,000 events (the node's own endpoint), mean idle
// addresses (the secondary addresses EC2 lists on the node's ENIs, minus
// the pods that have one, sampled at every create and delete), pods that
// waited and the longest wait.
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerChurn -benchtime 1x ./test/e2e/
func BenchmarkPeerChurn(b *testing.B) {
	s := newSideBySide(b)
	// Pool settings, each a pair of nodes running at once: the defaults
	// (WARM_ENI_TARGET=1), the same WARM_IP_TARGET=2 on both, and each
	// side's best at this rate by the simulated churn (ours adaptive,
	// theirs WARM_IP_TARGET=2). At 1 event/s every setting holds all an
	// m5.large has (the cooldown keeps them), so only the defaults run.
	type knobs struct{ name, ours, theirs string }
	all := []knobs{{"default", "", ""}, {"warm-ip-target-2", "WARM_IP_TARGET=2", "WARM_IP_TARGET=2"},
		{"ours-adaptive", "WARM_POOL_MODE=adaptive", "WARM_IP_TARGET=2"}}
	for _, iv := range []struct {
		interval        time.Duration
		warmup, measure int
		knobs           []knobs
	}{{time.Second, 90, 120, all[:1]}, {5 * time.Second, 18, 30, all}} {
		b.Run(fmt.Sprintf("interval=%v", iv.interval), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				var sides []*churnSide
				for _, k := range iv.knobs {
					tag := fmt.Sprintf("%ds-%s-%d", int(iv.interval.Seconds()), k.name, i)
					var oursEnv, theirsEnv []string
					if k.ours != "" {
						oursEnv, theirsEnv = []string{k.ours}, []string{k.theirs}
					}
					ours := s.ours("m5.large", "c-ours-"+tag, oursEnv...)
					ours.start()
					b.Cleanup(ours.stop)
					ours.waitReady()
					theirs := startPeer(b, s.bins, s.k, s.k.remoteServer, s.theirs("m5.large", "c-theirs-"+tag), theirsEnv...)
					theirs.waitReady(b, 90*time.Second)
					ol := ours.chain(nil)
					sides = append(sides,
						&churnSide{name: k.name + "/ours", n: ours, newPod: func(name string) *pod { return ours.newPod("churn", name) },
							add: func(p *pod) error { _, err := p.add(ol); return err }, del: func(p *pod) error { return p.del(ol) },
							retry: isTryAgain},
						&churnSide{name: k.name + "/theirs", n: theirs.node, newPod: theirs.newPod,
							add: func(p *pod) error { _, err := p.add(theirs.conf); return err }, del: func(p *pod) error { return p.del(theirs.conf) },
							retry: anyError})
				}
				var wg sync.WaitGroup
				for _, sd := range sides {
					wg.Add(1)
					go func() { defer wg.Done(); sd.run(b, s.c, iv.interval, 15, iv.warmup, iv.measure, 1) }()
				}
				wg.Wait()
				for _, sd := range sides {
					b.ReportMetric(float64(sd.mutating)*1000/float64(iv.measure), sd.name+"-mutating/1k-events")
					b.ReportMetric(mean(sd.idle), sd.name+"-idle-mean")
					b.ReportMetric(float64(sd.waited), sd.name+"-pods-waited")
					b.ReportMetric(ms(sd.maxWait), sd.name+"-max-wait-ms")
				}
			}
		})
	}
}

// churnSide is one system's node in the churn benchmark and what it
// measured.
type churnSide struct {
	name   string
	n      *node
	newPod func(name string) *pod
	add    func(*pod) error
	del    func(*pod) error
	retry  func(error) bool // whether a failed ADD is retried (else it fails the run)

	mu       sync.Mutex
	running  int
	idle     []float64
	waited   int
	maxWait  time.Duration
	mutating int64
}

// churnPod is a pod of the churn: alive until deleted; a deletion while
// its ADD is still being retried ends the retries.
type churnPod struct {
	p       *pod
	mu      sync.Mutex
	deleted bool
	up      bool
	done    chan struct{} // closed once the ADD loop has ended
}

func (sd *churnSide) sample(c *cluster, measuring bool) {
	if !measuring {
		return
	}
	inet, ok := c.sim.Cloud.InstanceNetwork(sd.n.vn.InstanceID)
	if !ok {
		return
	}
	held := 0
	for _, e := range inet.ENIs {
		held += len(e.Secondary)
	}
	sd.mu.Lock()
	sd.idle = append(sd.idle, float64(held-sd.running))
	sd.mu.Unlock()
}

// run creates population pods, then runs warmup+measure events of one
// create and one seeded random deletion each, interval apart.
func (sd *churnSide) run(b *testing.B, c *cluster, interval time.Duration, population, warmup, measure int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	var live []*churnPod
	var measuring atomic.Bool
	var wg sync.WaitGroup
	made := 0
	create := func() *churnPod {
		cp := &churnPod{p: sd.newPod(fmt.Sprintf("c%03d", made)), done: make(chan struct{})}
		made++
		created := time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(cp.done)
			for attempt := 1; ; attempt++ {
				err := sd.add(cp.p)
				cp.mu.Lock()
				gone := cp.deleted
				if err == nil && !gone {
					cp.up = true
				}
				cp.mu.Unlock()
				if err == nil {
					if gone {
						return // deleted while the ADD ran: the DEL below cleans up
					}
					sd.mu.Lock()
					sd.running++
					if measuring.Load() {
						if attempt > 1 {
							sd.waited++
						}
						sd.maxWait = maxDur(sd.maxWait, time.Since(created))
					}
					sd.mu.Unlock()
					sd.sample(c, measuring.Load())
					return
				}
				if !sd.retry(err) {
					b.Errorf("%s: ADD %s: %v", sd.name, cp.p.name, err)
					return
				}
				_ = sd.del(cp.p)
				if gone {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		return cp
	}
	remove := func(cp *churnPod) {
		cp.mu.Lock()
		cp.deleted = true
		wasUp := cp.up
		cp.mu.Unlock()
		<-cp.done
		if err := sd.del(cp.p); err != nil {
			b.Errorf("%s: DEL %s: %v", sd.name, cp.p.name, err)
		}
		if wasUp {
			sd.mu.Lock()
			sd.running--
			sd.mu.Unlock()
		}
		sd.sample(c, measuring.Load())
	}
	for range population {
		live = append(live, create())
	}
	for _, cp := range live {
		<-cp.done
	}
	var before map[string]int64
	next := time.Now()
	for ev := 0; ev < warmup+measure; ev++ {
		if ev == warmup {
			before = c.sim.Faults.CallsFrom(sd.n.name)
			measuring.Store(true)
		}
		time.Sleep(time.Until(next))
		live = append(live, create())
		victim := rng.IntN(len(live))
		cp := live[victim]
		live = append(live[:victim], live[victim+1:]...)
		at := time.Duration(rng.Int64N(int64(interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(at)
			remove(cp)
		}()
		next = next.Add(interval)
	}
	time.Sleep(time.Until(next))
	measuring.Store(false)
	after := c.sim.Faults.CallsFrom(sd.n.name)
	var calls []string
	for a, v := range after {
		if a != "" && vpcsim.IsMutating(a) {
			sd.mutating += v - before[a]
		}
		if a != "" && v > before[a] {
			calls = append(calls, fmt.Sprintf("%s=%d", a, v-before[a]))
		}
	}
	sort.Strings(calls)
	b.Logf("%s: EC2 calls while measured: %v", sd.name, calls)
	wg.Wait()
}

// BenchmarkPeerScaleOut starts a fleet of nodes of each system against one
// account's EC2 buckets, one system after the other with the buckets full
// at the start: EC2's documented default request limits (mutating actions
// 200 tokens refilled at 5/s, non-mutating 100 at 20/s; the simulator
// keeps one bucket per class where EC2 keeps one per action, so it is the
// stricter). VPCCHAIN_PEER_SCALE_NODES m5.large nodes (20 by default: 20
// real ipamd processes) are launched and registered first; their daemons
// then start evenly over 10 s, and each node's 10 pods are created as soon
// as its daemon serves and retried every 1 s as kubelet does (ours when
// told to try again, theirs on any failure). Reported per system: EC2's
// RequestLimitExceeded answers, calls and mutating calls, the time from the
// first daemon's start until every pod has an address, and per node from
// its daemon's start until its pods have theirs (p50, max).
//
//	VPCCHAIN_BIN=$PWD/bin go test -tags peer -run '^$' -bench PeerScaleOut -benchtime 1x -timeout 30m ./test/e2e/
func BenchmarkPeerScaleOut(b *testing.B) {
	nodes := 20
	if v := os.Getenv("VPCCHAIN_PEER_SCALE_NODES"); v != "" {
		if _, err := fmt.Sscan(v, &nodes); err != nil || nodes < 1 {
			b.Fatalf("VPCCHAIN_PEER_SCALE_NODES=%q: want a positive number", v)
		}
	}
	const typ, pods, window = "m5.large", 10, 10 * time.Second
	s := newSideBySide(b)
	results := map[string][]scaleResult{}
	for i := 0; i < b.N; i++ {
		for j := range 2 {
			system := []string{"ours", "theirs"}[(i+j)%2]
			s.c.sim.Faults.SetRateLimit("mutating", 5, 200)
			s.c.sim.Faults.SetRateLimit("describe", 20, 100)
			results[system] = append(results[system], s.scaleOut(b, system, fmt.Sprintf("%s-%d", system, i), typ, nodes, pods, window))
		}
	}
	for _, system := range []string{"ours", "theirs"} {
		var total, p50, worst, throttled, calls, mutating []float64
		for _, r := range results[system] {
			total = append(total, ms(r.total))
			p50 = append(p50, ms(percentile(r.perNode, 0.5)))
			worst = append(worst, ms(percentile(r.perNode, 1)))
			throttled = append(throttled, float64(r.throttled))
			calls = append(calls, float64(r.calls))
			mutating = append(mutating, float64(r.mutating))
		}
		b.ReportMetric(mean(total), system+"-all-pods-ms")
		b.ReportMetric(mean(p50), system+"-node-p50-ms")
		b.ReportMetric(mean(worst), system+"-node-max-ms")
		b.ReportMetric(mean(throttled), system+"-throttled")
		b.ReportMetric(mean(calls), system+"-ec2-calls")
		b.ReportMetric(mean(mutating), system+"-ec2-mutating")
	}
	b.ReportMetric(float64(nodes), "nodes")
}

type scaleResult struct {
	total                      time.Duration   // first daemon start to the last pod's address
	perNode                    []time.Duration // a node's daemon start to its last pod's address
	throttled, calls, mutating int64
}

func (s *sideBySide) scaleOut(b *testing.B, system, tag, typ string, nodes, pods int, window time.Duration) scaleResult {
	b.Helper()
	type fleetNode struct {
		n     *node
		pods  []*pod
		start func() (add func(*pod) burstPod, ready func() error, stop func())
	}
	fleet := make([]*fleetNode, nodes)
	for i := range fleet {
		name := fmt.Sprintf("%s-%02d", tag, i)
		fn := &fleetNode{}
		if system == "ours" {
			n := s.ours(typ, name)
			fn.n = n
			fn.start = func() (func(*pod) burstPod, func() error, func()) {
				l := n.chain(nil)
				n.start()
				b.Cleanup(n.stop)
				serving := func() error { _, err := n.status(); return err }
				return func(p *pod) burstPod { return addLikeRuntime(p, l, time.Second, 5*time.Minute) }, serving, n.stop
			}
		} else {
			n := s.theirs(typ, name)
			fn.n = n
			fn.start = func() (func(*pod) burstPod, func() error, func()) {
				p := startPeer(b, s.bins, s.k, s.k.remoteServer, n)
				rt := p.runtime()
				for _, pd := range fn.pods {
					pd.cni = rt
				}
				return func(pd *pod) burstPod { return addAnyRetry(pd, p.conf, time.Second, 5*time.Minute) }, p.health, p.stop
			}
		}
		for j := range pods {
			fn.pods = append(fn.pods, fn.n.newPod("scale", fmt.Sprintf("p%02d", j)))
		}
		fleet[i] = fn
	}
	var names []string
	for _, fn := range fleet {
		names = append(names, fn.n.name)
	}
	before := map[string]map[string]int64{}
	beforeThrottled := map[string]int64{}
	for _, name := range names {
		before[name] = s.c.sim.Faults.CallsFrom(name)
		beforeThrottled[name] = s.c.sim.Faults.ThrottledFrom(name)[""]
	}

	res := scaleResult{perNode: make([]time.Duration, nodes)}
	var stops []func()
	var mu sync.Mutex
	var wg sync.WaitGroup
	first := time.Now()
	for i, fn := range fleet {
		time.Sleep(time.Until(first.Add(window * time.Duration(i) / time.Duration(nodes))))
		started := time.Now()
		add, ready, stop := fn.start()
		stops = append(stops, stop)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for err := ready(); err != nil; err = ready() {
				if time.Since(started) > 5*time.Minute {
					b.Errorf("%s does not serve after 5m: %v", fn.n.name, err)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			var pw sync.WaitGroup
			for _, p := range fn.pods {
				pw.Add(1)
				go func() {
					defer pw.Done()
					if r := add(p); r.err != nil {
						b.Errorf("%s: %v", fn.n.name, r.err)
					}
				}()
			}
			pw.Wait()
			mu.Lock()
			res.perNode[i] = time.Since(started)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.total = time.Since(first)
	for _, name := range names {
		for a, v := range s.c.sim.Faults.CallsFrom(name) {
			if a == "" {
				res.calls += v - before[name][a]
			} else if vpcsim.IsMutating(a) {
				res.mutating += v - before[name][a]
			}
		}
		res.throttled += s.c.sim.Faults.ThrottledFrom(name)[""] - beforeThrottled[name]
	}
	b.Logf("%s: %d nodes x %d pods in %v; %d EC2 calls (%d mutating), %d throttled", system, nodes, pods,
		res.total.Round(time.Millisecond), res.calls, res.mutating, res.throttled)
	// The fleet leaves before the other system's starts: its pools would
	// otherwise keep calling EC2 against the same buckets.
	for _, stop := range stops {
		stop()
	}
	return res
}

// procRSSKinds splits pid's resident memory into anonymous (heap, stacks)
// and file-backed (the binary's pages) in MiB, from smaps_rollup.
func procRSSKinds(b *testing.B, pid int) (anon, file float64) {
	f := procMiB(b, fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	return f["Anonymous"], f["Rss"] - f["Anonymous"]
}
