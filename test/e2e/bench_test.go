package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// buildUpstream builds the reference plugins (ptp, host-local) at the
// version pinned by the test tools module (test/tools) into dir.
func buildUpstream(b *testing.B, dir string) {
	b.Helper()
	// The same flags `make build` uses for ours, so both start alike.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/",
		"github.com/containernetworking/plugins/plugins/main/ptp",
		"github.com/containernetworking/plugins/plugins/ipam/host-local")
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
// ptp + host-local chain (the reference for the kernel work), side by side
// in one run on the same simulated node. Reported: p50 and p99 in ms.
//
//	make bench   (or: VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench ChainAddDel -benchtime 200x ./test/e2e/)
func BenchmarkChainAddDel(b *testing.B) {
	// A 1 s cooldown (instead of 30 s) keeps a tight ADD/DEL loop from
	// draining the warm pool into cooldown: the benchmark measures the
	// per-pod path, not pool refills.
	c := newCluster(b, "m5.large", []string{"bench"}, "WARM_IP_TARGET=10", "MINIMUM_IP_TARGET=10", "IP_COOLDOWN_PERIOD=1")
	n := c.nodes["bench"]
	ref := b.TempDir()
	buildUpstream(b, ref)
	cni := libcni.NewCNIConfigWithCacheDir([]string{c.bin, ref}, filepath.Join(n.state, "bench-cache"), nil)

	raw, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "ptp-ref", "plugins": []any{
		map[string]any{"type": "ptp", "mtu": 9001, "ipam": map[string]any{"type": "host-local",
			"ranges": []any{[]any{map[string]any{"subnet": "10.99.0.0/16"}}}, "dataDir": filepath.Join(n.state, "host-local")}}}})
	refList, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		b.Fatal(err)
	}
	chains := []struct {
		name string
		list *libcni.NetworkConfigList
	}{{"vpcchain", n.chain(nil)}, {"ptp+host-local", refList}}
	p50 := map[string]time.Duration{}
	for ci, ch := range chains {
		b.Run("chain="+ch.name, func(b *testing.B) {
			p := n.newPod("bench", "pod")
			lat := make([]time.Duration, 0, b.N)
			var addLat, delLat []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.id = fmt.Sprintf("bench-%d-%d", ci, i)
				rt := p.rt()
				start := time.Now()
				err := n.do(func() error {
					if _, err := cni.AddNetworkList(context.Background(), ch.list, rt); err != nil {
						return fmt.Errorf("ADD: %w", err)
					}
					mid := time.Now()
					addLat = append(addLat, mid.Sub(start))
					if err := cni.DelNetworkList(context.Background(), ch.list, rt); err != nil {
						return fmt.Errorf("DEL: %w", err)
					}
					delLat = append(delLat, time.Since(mid))
					return nil
				})
				lat = append(lat, time.Since(start))
				if err != nil {
					b.Fatalf("iteration %d: %v", i, err)
				}
			}
			b.StopTimer()
			p50[ch.name] = percentile(lat, 0.50)
			b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(percentile(addLat, 0.50).Microseconds())/1000, "add-p50-ms")
			b.ReportMetric(float64(percentile(delLat, 0.50).Microseconds())/1000, "del-p50-ms")
		})
	}
	if r, v := p50["ptp+host-local"], p50["vpcchain"]; r > 0 && v > 0 {
		b.Logf("p50 ratio vpcchain / ptp+host-local = %.2f", float64(v)/float64(r))
	}
}
