package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// buildUpstream builds the reference plugins (ptp, host-local, portmap) at the
// version pinned by the test tools module (test/tools) into dir.
func buildUpstream(b *testing.B, dir string) {
	b.Helper()
	// The same flags `make build` uses for ours, so both start alike.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/",
		"github.com/containernetworking/plugins/plugins/main/ptp",
		"github.com/containernetworking/plugins/plugins/ipam/host-local",
		"github.com/containernetworking/plugins/plugins/meta/portmap")
	cmd.Dir = "../tools"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the upstream reference plugins: %v\n%s", err, out)
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1))]
}

// BenchmarkChainAddDel measures one pod's ADD+DEL through libcni, the way a
// runtime runs it, for our chain with a warm pool and for the upstream
// ptp + host-local chain (the reference for the kernel work), interleaved in
// one run on the same simulated node: every round runs both chains, in
// alternating order, so drift on a shared machine hits both alike. Variants:
// with the upstream portmap chained after both (a pod with a hostPort, as
// kubelet passes it), and with 8 pods' ADD+DEL running at once.
//
//	make bench   (or: VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench ChainAddDel -benchtime 200x ./test/e2e/)
func BenchmarkChainAddDel(b *testing.B) {
	// m5.xlarge (56 pod addresses) with 40 held from the start: 8 concurrent
	// pods plus those cooling down never run the pool dry, so the benchmark
	// measures the per-pod path, not pool refills. A 1 s cooldown (instead of
	// 30 s) keeps a tight ADD/DEL loop from parking the pool in cooldown.
	c := newCluster(b, "m5.xlarge", []string{"bench"}, "WARM_IP_TARGET=10", "MINIMUM_IP_TARGET=40", "IP_COOLDOWN_PERIOD=1")
	n := c.nodes["bench"]
	waitServing(n, 40)
	ref := b.TempDir()
	buildUpstream(b, ref)
	cni := libcni.NewCNIConfigWithCacheDir([]string{c.bin, ref}, filepath.Join(n.state, "bench-cache"), nil)

	portmap := map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true}
	for _, withPortmap := range []bool{false, true} {
		chains := [2]benchChain{{name: "vpcchain", list: n.chain(nil)}, {name: "ptp+host-local", list: ptpRefList(b, n, "10.99.0.0/16")}}
		if withPortmap {
			chains = [2]benchChain{{name: "vpcchain", list: n.chain(nil, portmap)}, {name: "ptp+host-local", list: ptpRefList(b, n, "10.99.0.0/16", portmap)}}
		}
		for _, conc := range []int{1, 8} {
			b.Run(fmt.Sprintf("portmap=%v/concurrent=%d", withPortmap, conc), func(b *testing.B) {
				benchInterleaved(b, n, cni, chains, conc, withPortmap)
			})
		}
	}
}

// ptpRefList is the reference chain on node n: upstream ptp with
// host-local (addresses from subnet, state in the node's directory), then
// any chained plugins.
func ptpRefList(tb testing.TB, n *node, subnet string, chained ...any) *libcni.NetworkConfigList {
	tb.Helper()
	plugins := append([]any{map[string]any{"type": "ptp", "mtu": 9001, "ipam": map[string]any{"type": "host-local",
		"ranges": []any{[]any{map[string]any{"subnet": subnet}}}, "dataDir": filepath.Join(n.state, "host-local")}}},
		chained...)
	raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "ptp-ref", "plugins": plugins})
	l, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

type benchChain struct {
	name string
	list *libcni.NetworkConfigList
}

// benchInterleaved runs b.N ADD+DELs of each chain, conc pods at a time,
// alternating the chains round by round, and reports both chains' latency
// percentiles and the p50 ratio.
func benchInterleaved(b *testing.B, n *node, cni *libcni.CNIConfig, chains [2]benchChain, conc int, hostPort bool, prep ...func(*pod) error) {
	pods := make([]*pod, conc)
	for w := range pods {
		pods[w] = n.newPod("bench", fmt.Sprintf("pod%d", w))
		for _, f := range prep {
			if err := f(pods[w]); err != nil {
				b.Fatal(err)
			}
		}
		if hostPort {
			pods[w].caps = map[string]any{"portMappings": []map[string]any{
				{"hostPort": 30080 + w, "containerPort": 80, "protocol": "tcp"}}}
		}
	}
	type sample struct{ add, addDel time.Duration }
	samples := [2][]sample{}
	var mu sync.Mutex
	b.ResetTimer()
	for round := 0; round*conc < b.N; round++ {
		for k := 0; k < 2; k++ {
			ci := (round + k) % 2
			var wg sync.WaitGroup
			errs := make(chan error, conc)
			for w, p := range pods {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rt := p.rt()
					rt.ContainerID = fmt.Sprintf("bench-%d-%d-%d", ci, round, w)
					start := time.Now()
					err := n.do(func() error {
						if _, err := cni.AddNetworkList(context.Background(), chains[ci].list, rt); err != nil {
							return fmt.Errorf("%s ADD: %w", chains[ci].name, err)
						}
						mid := time.Now()
						if err := cni.DelNetworkList(context.Background(), chains[ci].list, rt); err != nil {
							return fmt.Errorf("%s DEL: %w", chains[ci].name, err)
						}
						mu.Lock()
						samples[ci] = append(samples[ci], sample{add: mid.Sub(start), addDel: time.Since(start)})
						mu.Unlock()
						return nil
					})
					if err != nil {
						errs <- err
					}
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
	p50 := [2]time.Duration{}
	for ci, ch := range chains {
		var add, addDel []time.Duration
		for _, s := range samples[ci] {
			add = append(add, s.add)
			addDel = append(addDel, s.addDel)
		}
		p50[ci] = percentile(addDel, 0.50)
		short := map[string]string{"vpcchain": "ours", "ptp+host-local": "ref"}[ch.name]
		b.ReportMetric(ms(p50[ci]), short+"-p50-ms")
		b.ReportMetric(ms(percentile(addDel, 0.99)), short+"-p99-ms")
		b.ReportMetric(ms(percentile(add, 0.50)), short+"-add-p50-ms")
	}
	b.ReportMetric(float64(p50[0])/float64(p50[1]), "ratio-p50")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkChainAddDelIPv6 is BenchmarkChainAddDel for IPv6 pods: our chain
// on a node in IPv6 mode (vpc-bridge with vpc-ipam, without and with
// vpc-egress-v4) against upstream ptp + host-local on an IPv6 range,
// interleaved in one run on the same node.
//
//	VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench ChainAddDelIPv6 -benchtime 200x ./test/e2e/
func BenchmarkChainAddDelIPv6(b *testing.B) {
	c := newIPv6Cluster(b, "m5.xlarge", []string{"bench6"})
	n := c.nodes["bench6"]
	ref := b.TempDir()
	buildUpstream(b, ref)
	cni := libcni.NewCNIConfigWithCacheDir([]string{c.bin, ref}, filepath.Join(n.state, "bench-cache"), nil)
	ptp6 := ptpRefList(b, n, "fd00:99::/64")
	egress := egressV4Conf(n)
	for _, withEgress := range []bool{false, true} {
		ours := n.chain(nil)
		if withEgress {
			ours = n.chain(nil, egress)
		}
		chains := [2]benchChain{{name: "vpcchain", list: ours}, {name: "ptp+host-local", list: ptp6}}
		for _, conc := range []int{1, 8} {
			b.Run(fmt.Sprintf("egress-v4=%v/concurrent=%d", withEgress, conc), func(b *testing.B) {
				benchInterleaved(b, n, cni, chains, conc, false)
			})
		}
	}
	// ptp waits for DAD to end on the pod's address (about 1.7 s here);
	// with DAD off in the pod's namespace beforehand it does not, and what
	// is left is the plugins' own path.
	dadOff := func(p *pod) error {
		return p.doIn(func() error {
			for _, k := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/accept_dad", []byte("0"), 0o644); err != nil {
					return err
				}
			}
			return nil
		})
	}
	chains := [2]benchChain{{name: "vpcchain", list: n.chain(nil)}, {name: "ptp+host-local", list: ptp6}}
	for _, conc := range []int{1, 8} {
		b.Run(fmt.Sprintf("pod-dad-off/concurrent=%d", conc), func(b *testing.B) {
			benchInterleaved(b, n, cni, chains, conc, false, dadOff)
		})
	}
}
