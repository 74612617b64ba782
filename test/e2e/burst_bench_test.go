package e2e

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/instancelimits"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// BenchmarkBurstFreshNode measures a burst of pods on a node that has just
// joined (docs/benchmarks.md, "Burst on a fresh node"): a new m5.large whose daemon starts against
// an EC2 that answers every call after 100, 300 or 1000 ms, with default
// knobs, WARM_IP_TARGET=5 and prefix delegation.
//
// A fresh node: the simulator's latency is set before the node is launched
// and its daemon started, so the daemon's discovery and first pool steps pay
// it too. The burst starts the moment the daemon serves (its gRPC health says
// SERVING right then, which is when vpcchain-install writes the .conflist
// and the kubelet calls the node network-ready), not once it holds
// addresses: the pods meet the pool while it is still being filled.
//
// Every pod is created at once (one goroutine each) and retried the way a
// runtime does: an ADD failing with CNI code 11 (try again later) is cleaned
// up with DEL and retried after 100 ms, for at most 2 minutes. A pod's wait is
// the time from its first ADD to its successful one; it "waited" when it
// needed more than one ADD.
//
// The burst is 30 pods where they fit: in secondary-IP mode an m5.large has
// 3 ENIs x (10 - 1) = 27 pod addresses (kubelet's max-pods 29 counts the two
// host-network DaemonSet pods, kube-proxy and ours), so the scheduler places
// 27 of the 30 there; with prefix delegation all 30 fit.
//
// The reference (reference=prewarmed) is the same 27-pod burst on a node that
// already holds every address it needs (MINIMUM_IP_TARGET=27, started once
// it has them): what is left is the runtime's and the chain's own cost of
// that many concurrent ADDs on this machine, the floor of every wait.
//
// Reported per sub-benchmark: pods, p50/p90/max wait, pods that waited, the
// EC2 calls from the daemon's start to the last pod's success (all, and the
// mutating ones), the mutating calls once the pool has settled after the
// burst, and when the daemon started serving. ns/op is the burst itself
// (first ADD to last success). Meant for -benchtime 1x: every iteration
// builds a fresh simulator and node.
//
//	make build
//	VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench BurstFreshNode -benchtime 1x -timeout 30m ./test/e2e/
func BenchmarkBurstFreshNode(b *testing.B) {
	const typ, burst = "m5.large", 30
	lim, ok := instancelimits.Lookup(typ)
	if !ok {
		b.Fatalf("no limits for %s", typ)
	}
	podIPs := lim.MaxENIs * (lim.IPv4PerENI - 1) // secondary-IP mode
	type run struct {
		name    string
		lat     time.Duration
		env     []string
		pods    int
		prewarm int
	}
	// The reference: the same burst on a node that already holds every
	// address it needs, so what remains is the runtime's and the chain's own
	// cost of 27 concurrent ADDs on this machine.
	runs := []run{{name: "reference=prewarmed", pods: min(burst, podIPs), prewarm: min(burst, podIPs),
		env: []string{fmt.Sprintf("MINIMUM_IP_TARGET=%d", min(burst, podIPs))}}}
	for _, lat := range []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, time.Second} {
		for _, k := range []struct {
			name   string
			env    []string
			prefix bool
		}{
			{"default", nil, false},
			{"warm-ip-target-5", []string{"WARM_IP_TARGET=5"}, false},
			{"prefix-delegation", []string{"ENABLE_PREFIX_DELEGATION=true"}, true},
			{"adaptive", []string{"WARM_POOL_MODE=adaptive"}, false},
		} {
			pods := burst
			if !k.prefix {
				pods = min(burst, podIPs)
			}
			runs = append(runs, run{name: fmt.Sprintf("latency=%dms/knobs=%s", lat.Milliseconds(), k.name),
				lat: lat, env: k.env, pods: pods})
		}
	}
	for _, k := range runs {
		b.Run(k.name, func(b *testing.B) {
			var all []burstPod
			var calls, mutating, settled, serving []float64
			b.StopTimer()
			for i := 0; i < b.N; i++ {
				r := runBurst(b, typ, k.lat, k.pods, k.prewarm, k.env)
				all = append(all, r.pods...)
				calls = append(calls, float64(r.calls))
				mutating = append(mutating, float64(r.mutating))
				settled = append(settled, float64(r.settledMutating))
				serving = append(serving, float64(r.serving.Milliseconds()))
			}
			var waits []time.Duration
			waited, failed := 0, 0
			for _, p := range all {
				if p.err != nil {
					failed++
					continue
				}
				waits = append(waits, p.wait)
				if p.attempts > 1 {
					waited++
				}
			}
			if failed > 0 {
				for _, p := range all {
					if p.err != nil {
						b.Log(p.err)
					}
				}
				b.Errorf("%d of %d pods never got an address", failed, len(all))
			}
			if len(waits) == 0 {
				return
			}
			n := float64(b.N)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(float64(len(all))/n, "pods")
			b.ReportMetric(ms(percentile(waits, 0.50)), "p50-wait-ms")
			b.ReportMetric(ms(percentile(waits, 0.90)), "p90-wait-ms")
			b.ReportMetric(ms(percentile(waits, 1)), "max-wait-ms")
			b.ReportMetric(float64(waited)/n, "pods-waited")
			b.ReportMetric(mean(calls), "ec2-calls")
			b.ReportMetric(mean(mutating), "ec2-mutating-calls")
			b.ReportMetric(mean(settled), "ec2-mutating-settled")
			b.ReportMetric(mean(serving), "serving-ms")
		})
	}
}

type burstPod struct {
	wait     time.Duration
	attempts int
	err      error
}

type burstResult struct {
	pods            []burstPod
	serving         time.Duration // daemon start to serving
	calls           int64         // EC2 calls, daemon start to the last pod up
	mutating        int64         // the mutating ones among them
	settledMutating int64         // mutating calls once the pool stopped changing
}

// runBurst builds a fresh node under EC2 latency lat, then creates pods pods
// at once as soon as its daemon serves; with prewarm > 0 it first waits
// until the daemon holds that many free addresses, and counts EC2 calls from
// the burst on (the reference). The timer runs during the burst only.
func runBurst(b *testing.B, typ string, lat time.Duration, pods, prewarm int, env []string) burstResult {
	b.Helper()
	// A simulator with a VPC and a subnet, no node yet.
	c := newCluster(b, typ, nil)
	c.sim.Faults.SetLatency("*", lat)
	n := c.addNode(typ, "burst", env...)
	l := n.chain(nil)
	ps := make([]*pod, pods)
	for i := range ps {
		ps[i] = n.newPod("burst", fmt.Sprintf("pod-%02d", i))
	}
	before := c.sim.Faults.Calls()
	started := time.Now()
	n.start()
	b.Cleanup(n.stop)
	waitServing(n, 0)
	res := burstResult{serving: time.Since(started)}
	if prewarm > 0 {
		waitServing(n, prewarm)
		before = c.sim.Faults.Calls()
	}

	res.pods = make([]burstPod, pods)
	var wg sync.WaitGroup
	b.StartTimer()
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.pods[i] = addLikeRuntime(p, l, 100*time.Millisecond, 2*time.Minute)
		}()
	}
	wg.Wait()
	b.StopTimer()

	res.calls, res.mutating = ec2CallsSince(c.sim.Faults, before)
	// Let the pool finish what the burst started (the warm targets refill
	// after it): settled once no mutating call came for a few round trips.
	quiet := max(3*lat, 2*time.Second)
	last, lastChange := res.mutating, time.Now()
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, m := ec2CallsSince(c.sim.Faults, before)
		if m != last {
			last, lastChange = m, time.Now()
		}
		if time.Since(lastChange) >= quiet {
			break
		}
	}
	res.settledMutating = last
	var parts []string
	for a, v := range c.sim.Faults.Calls() {
		if a != "" && v-before[a] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", a, v-before[a]))
		}
	}
	sort.Strings(parts)
	b.Logf("EC2 calls up to settling: %s", strings.Join(parts, " "))
	return res
}

// waitServing waits until the daemon answers on its socket at all, with or
// without addresses (it serves only once its start-up is done, and its
// health service says SERVING from then on), and holds at least avail free
// addresses.
func waitServing(n *node, avail int) {
	n.c.t.Helper()
	n.waitStatus(2*time.Minute, 20*time.Millisecond, "does not serve", func(st *ipamv1.StatusReply) error {
		if int(st.GetAvailable()) < avail {
			return fmt.Errorf("%d addresses available, want %d", st.GetAvailable(), avail)
		}
		return nil
	})
}

// addLikeRuntime runs ADD until it succeeds; an ADD failing with code 11 is
// cleaned up with DEL and retried after pause, for at most within.
func addLikeRuntime(p *pod, l *libcni.NetworkConfigList, pause, within time.Duration) burstPod {
	return named(p, retryADD(p, l, pause, within, isTryAgain))
}

// named puts the pod's name and the attempt on a failed result.
func named(p *pod, r burstPod) burstPod {
	if r.err != nil {
		r.err = fmt.Errorf("%s: ADD %d: %w", p.name, r.attempts, r.err)
	}
	return r
}

// ec2CallsSince counts the EC2 calls since before: all, and the mutating
// ones (what EC2 throttles in its mutating bucket).
func ec2CallsSince(f *vpcsim.Faults, before map[string]int64) (all, mutating int64) {
	for a, v := range f.Calls() {
		if a == "" {
			all = v - before[""]
			continue
		}
		if vpcsim.IsMutating(a) {
			mutating += v - before[a]
		}
	}
	return all, mutating
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
