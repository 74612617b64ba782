package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// BenchmarkThroughput measures pod-to-pod TCP throughput with iperf3 (one
// stream, 3 s after a 1 s warm-up) through our chain, against a plain veth
// pair between two namespaces (the floor: one veth hop, no routing) and the
// upstream ptp chain (the same routed-veth design as ours) in the same run:
//
//   - vpcchain same node: pod veth -> node routing -> pod veth;
//   - vpcchain cross node: the same, plus the simulated VPC fabric between
//     the nodes (two more veth hops and a router namespace);
//   - ptp same node: upstream ptp + host-local on the same node;
//   - plain veth: two namespaces joined by one veth pair, same MTU.
//
// Every iteration runs each path once, in rotating order; reported in Gbit/s
// (median over iterations) with ratio-to-veth.
//
//	VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench Throughput -benchtime 3x ./test/e2e/
func BenchmarkThroughput(b *testing.B) {
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("iperf3 is not installed (make deps installs it)")
	}
	c := newCluster(b, "m5.large", []string{"tp-a", "tp-b"}, "WARM_IP_TARGET=4")
	a, bn := c.nodes["tp-a"], c.nodes["tp-b"]
	la, lb := a.chain(nil), bn.chain(nil)
	add := func(n *node, l *libcni.NetworkConfigList, name string) *pod {
		p := n.newPod("tp", name)
		if err := p.addRetrying(l, time.Minute); err != nil {
			b.Fatalf("ADD %s: %v", name, err)
		}
		b.Cleanup(func() { _ = p.del(l) })
		return p
	}
	client, server, remote := add(a, la, "client"), add(a, la, "server"), add(bn, lb, "remote")

	ref := b.TempDir()
	buildUpstream(b, ref)
	refList := ptpRefList(b, a, "10.99.0.0/16")
	refCNI := libcni.NewCNIConfigWithCacheDir([]string{ref}, filepath.Join(a.state, "ref-cache"), nil)
	refPod := func(name string) *pod {
		p := a.newPod("tp", name)
		p.cni = refCNI
		if _, err := p.add(refList); err != nil {
			b.Fatalf("ptp ADD %s: %v", name, err)
		}
		b.Cleanup(func() { _ = p.del(refList) })
		return p
	}
	ptpClient, ptpServer := refPod("ptp-client"), refPod("ptp-server")

	vethA, vethB, vethIP := plainVethPair(b, 9001)

	paths := []struct {
		name           string
		client, server string // netns paths
		dst            netip.Addr
	}{
		{"vpcchain-same-node", client.netns.Path(), server.netns.Path(), server.ip},
		{"vpcchain-cross-node", client.netns.Path(), remote.netns.Path(), remote.ip},
		{"ptp-same-node", ptpClient.netns.Path(), ptpServer.netns.Path(), ptpServer.ip},
		{"plain-veth", vethA, vethB, vethIP},
	}
	gbps := make([][]float64, len(paths))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range paths {
			j := (i + k) % len(paths)
			bps, err := iperf3(paths[j].client, paths[j].server, paths[j].dst)
			if err != nil {
				b.Fatalf("%s: %v", paths[j].name, err)
			}
			gbps[j] = append(gbps[j], bps/1e9)
		}
	}
	b.StopTimer()
	veth := median(gbps[len(paths)-1])
	for j, p := range paths {
		m := median(gbps[j])
		b.ReportMetric(m, p.name+"-Gbps")
		if p.name != "plain-veth" {
			b.ReportMetric(m/veth, p.name+"/veth")
		}
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// plainVethPair makes two namespaces joined by one veth pair (10.255.0.1/30
// and .2, only inside them) and returns their paths and the server's address.
func plainVethPair(b *testing.B, mtu int) (client, server string, serverIP netip.Addr) {
	b.Helper()
	nss := [2]ns.NetNS{newNetNS(b), newNetNS(b)}
	err := nss[0].Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name, la.MTU = "eth0", mtu
		v := &netlink.Veth{LinkAttrs: la, PeerName: "peer0", PeerNamespace: netlink.NsFd(int(nss[1].Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		return addrUp("eth0", "10.255.0.1/30")
	})
	if err == nil {
		err = nss[1].Do(func(ns.NetNS) error {
			l, err := netlink.LinkByName("peer0")
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMTU(l, mtu); err != nil {
				return err
			}
			return addrUp("peer0", "10.255.0.2/30")
		})
	}
	if err != nil {
		b.Fatalf("plain veth pair: %v", err)
	}
	return nss[0].Path(), nss[1].Path(), netip.MustParseAddr("10.255.0.2")
}

func addrUp(name, cidr string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address %s on %s: %w", cidr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// iperf3 runs one iperf3 server (-1: a single test) in the server
// namespace and a client in the client namespace; it returns the bits per
// second the receiver saw.
func iperf3(clientNS, serverNS string, dst netip.Addr) (float64, error) {
	port := freePortHint()
	srv := exec.Command("nsenter", "--net="+serverNS, "iperf3", "-s", "-1", "-B", dst.String(), "-p", port)
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return 0, err
	}
	unregister := onInterrupt(func() { _ = srv.Process.Kill() })
	defer func() { unregister(); _ = srv.Process.Kill(); _ = srv.Wait() }()
	// iperf3 has no readiness signal: retry the client while the server is
	// coming up (it refuses the connection until then).
	var out []byte
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		cl := exec.Command("nsenter", "--net="+clientNS, "iperf3", "-c", dst.String(), "-p", port, "-t", "3", "-O", "1", "-J")
		out, err = cl.Output()
		// With -J, iperf3 may exit 0 and report the failure in "error".
		var r iperf3Result
		if jerr := json.Unmarshal(out, &r); jerr == nil && r.Error == "" && err == nil {
			if r.End.SumReceived.BitsPerSecond <= 0 {
				return 0, fmt.Errorf("iperf3 measured nothing: %s", out)
			}
			return r.End.SumReceived.BitsPerSecond, nil
		}
		if !strings.Contains(string(out), "Connection refused") {
			return 0, fmt.Errorf("iperf3 client: %v: %s (server: %s)", err, out, srvOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("iperf3 server never accepted: %v: %s (server: %s)", err, out, srvOut.String())
}

type iperf3Result struct {
	Error string `json:"error"`
	End   struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// freePortHint picks a port number for iperf3 to bind inside a namespace
// the run owns (any port is free there; randomised so back-to-back runs do
// not meet a server still in TIME_WAIT).
func freePortHint() string {
	return strconv.Itoa(20000 + int(time.Now().UnixNano()%20000))
}

// BenchmarkDaemonResources reports the daemon's resident memory and CPU
// while idle (a node with 20 pods and a settled pool, the daemon's default
// loop intervals) and under churn (one pod added and one deleted
// continuously by two workers), from /proc of the daemon process.
//
//	VPCCHAIN_BIN=$PWD/bin go test -run '^$' -bench DaemonResources -benchtime 1x ./test/e2e/
func BenchmarkDaemonResources(b *testing.B) {
	// The harness's fast loops (200 ms pool, 2 s reconcile) are for tests;
	// here the daemon runs with its defaults, as in production.
	c := newCluster(b, "m5.large", []string{"res"}, "VPCCHAIN_POOL_INTERVAL=1s", "VPCCHAIN_RECONCILE_INTERVAL=60s",
		"WARM_IP_TARGET=5", "IP_COOLDOWN_PERIOD=5")
	n := c.nodes["res"]
	l := n.chain(nil)
	for i := 0; i < 20; i++ {
		p := n.newPod("res", fmt.Sprintf("steady-%d", i))
		if err := p.addRetrying(l, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	pid := n.cmd.Process.Pid
	const window = 20 * time.Second
	for i := 0; i < b.N; i++ {
		idle := sampleProc(b, pid, window, nil)
		var events int
		churn := sampleProc(b, pid, window, func(stop <-chan struct{}) {
			events = churnPods(b, n, l, stop)
		})
		b.ReportMetric(idle.rssMiB, "idle-rss-MiB")
		b.ReportMetric(idle.cpuPct, "idle-cpu-%")
		b.ReportMetric(churn.rssMiB, "churn-rss-MiB")
		b.ReportMetric(churn.hwmMiB, "churn-peak-rss-MiB")
		b.ReportMetric(churn.cpuPct, "churn-cpu-%")
		b.ReportMetric(float64(events)/window.Seconds(), "churn-events/s")
		if events > 0 {
			b.ReportMetric(churn.cpuSec/float64(events)*1000, "cpu-ms/event")
		}
	}
}

type procSample struct {
	rssMiB, hwmMiB, cpuPct, cpuSec float64
}

// sampleProc measures pid's CPU time over window (while load runs, if given)
// and its resident memory at the end.
func sampleProc(b *testing.B, pid int, window time.Duration, load func(stop <-chan struct{})) procSample {
	b.Helper()
	cpu0 := procCPU(b, pid)
	start := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if load != nil {
			load(stop)
		} else {
			<-stop
		}
	}()
	time.Sleep(window)
	close(stop)
	<-done
	elapsed := time.Since(start).Seconds()
	cpu := procCPU(b, pid) - cpu0
	rss, hwm := procMem(b, pid)
	return procSample{rssMiB: rss, hwmMiB: hwm, cpuPct: 100 * cpu / elapsed, cpuSec: cpu}
}

// procCPU is user+system CPU seconds of pid (/proc/pid/stat fields 14, 15).
func procCPU(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name (field 2) may hold spaces: split after its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// procMem is VmRSS and VmHWM of pid in MiB.
func procMem(b *testing.B, pid int) (rss, hwm float64) {
	f := procMiB(b, fmt.Sprintf("/proc/%d/status", pid))
	return f["VmRSS"], f["VmHWM"]
}

// procMiB reads a /proc file of "Name: <n> kB" lines into MiB by name.
func procMiB(b *testing.B, path string) map[string]float64 {
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			out[strings.TrimSuffix(f[0], ":")] = kb / 1024
		}
	}
	return out
}

// churnPods adds and deletes pods with two workers until stop; it returns
// the number of pod events (each ADD and each DEL counts one).
func churnPods(b *testing.B, n *node, l *libcni.NetworkConfigList, stop <-chan struct{}) int {
	return churn(b, [2]*pod{n.newPod("churn", "w0"), n.newPod("churn", "w1")},
		func(p *pod) error { return p.addRetrying(l, time.Minute) }, func(p *pod) error { return p.del(l) }, stop)
}

// churn runs ADD then DEL of each worker's pod (a new container ID each
// time) until stop, and returns the number of pod events.
func churn(b *testing.B, workers [2]*pod, add, del func(*pod) error, stop <-chan struct{}) int {
	counts := make(chan int, len(workers))
	for _, p := range workers {
		go func() {
			events := 0
			base := p.id
			for i := 0; ; i++ {
				select {
				case <-stop:
					counts <- events
					return
				default:
				}
				p.id = fmt.Sprintf("%s-%d", base, i)
				if err := add(p); err != nil {
					b.Errorf("churn ADD: %v", err)
					counts <- events
					return
				}
				if err := del(p); err != nil {
					b.Errorf("churn DEL: %v", err)
					counts <- events
					return
				}
				events += 2
			}
		}()
	}
	total := 0
	for range workers {
		total += <-counts
	}
	return total
}
