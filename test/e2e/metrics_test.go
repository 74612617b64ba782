package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// TestMetrics runs the daemon with metrics on a configured address and logs
// to a file, creates a burst of pods, then scrapes /metrics from inside the
// node (where the daemon listens) and checks it against introspection.
func TestMetrics(t *testing.T) {
	const metricsAddr = "127.0.0.1:61699"
	logFile := filepath.Join(t.TempDir(), "logs", "vpcchaind.log")
	c := newCluster(t, "m5.large", []string{"m"}, "VPCCHAIN_METRICS_ADDR="+metricsAddr,
		"VPCCHAIN_LOG_LEVEL=debug", "VPCCHAIN_LOG_FILE="+logFile)
	n := c.nodes["m"]
	l := n.chain(nil)

	const burst = 8
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := 0; i < burst; i++ {
		p := n.newPod("metrics", fmt.Sprintf("m-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.addRetrying(l, time.Minute); err != nil {
				errs <- fmt.Errorf("ADD %s: %w", p.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	hc := inNodeHTTP(c.sim, n.name)
	scrape := func() (map[string]float64, string) {
		t.Helper()
		resp, err := hc.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics inside node %s: %v", n.name, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /metrics: status %d, %v\n%s", resp.StatusCode, err, b)
		}
		return parseMetrics(t, string(b)), string(b)
	}

	// The pool gauges equal introspection at the same moment: scrape between
	// two identical introspections (the pool may still be settling).
	var got map[string]float64
	var body string
	var intro *ipamv1.IntrospectReply
	var mismatch string
	for try := 0; try < 20; try++ {
		before := n.introspect()
		got, body = scrape()
		after := n.introspect()
		intro = after
		if !samePool(before, after) {
			mismatch = "pool moved during the scrape"
			time.Sleep(300 * time.Millisecond)
			continue
		}
		mismatch = ""
		for name, want := range map[string]int{
			"vpcchain_pool_addresses":           int(after.Total),
			"vpcchain_pool_addresses_assigned":  int(after.Assigned),
			"vpcchain_pool_addresses_cooling":   int(after.Cooling),
			"vpcchain_pool_addresses_available": int(after.Available),
			"vpcchain_enis":                     len(after.Enis),
			"vpcchain_max_pods":                 int(after.MaxPods),
		} {
			v, ok := got[name]
			if !ok {
				t.Fatalf("/metrics lacks %s:\n%s", name, body)
			}
			if int(v) != want {
				mismatch += fmt.Sprintf(" %s=%v, introspection %d;", name, v, want)
			}
		}
		if mismatch == "" {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if mismatch != "" {
		t.Fatalf("metrics disagree with introspection:%s", mismatch)
	}
	if intro.Assigned != burst {
		t.Errorf("introspection: %d assigned, want %d", intro.Assigned, burst)
	}
	t.Logf("pool: total %d, assigned %d, cooling %d, available %d, ENIs %d, max pods %d",
		intro.Total, intro.Assigned, intro.Cooling, intro.Available, len(intro.Enis), intro.MaxPods)

	// Every named family is served.
	for _, name := range []string{
		"vpcchain_enis_max", "vpcchain_events_total", "vpcchain_ec2_requests_total",
		"vpcchain_ec2_request_duration_seconds", "vpcchain_allocation_duration_seconds",
		"vpcchain_ec2_throttled_requests_total", "vpcchain_ec2_ratelimited_requests_total",
	} {
		if !strings.Contains(body, "# TYPE "+name+" ") {
			t.Errorf("/metrics lacks the family %s", name)
		}
	}
	if got["vpcchain_enis_max"] < 2 {
		t.Errorf("vpcchain_enis_max = %v, want the m5.large limit (3)", got["vpcchain_enis_max"])
	}
	// Events: one add per pod (a retried ADD releases and adds again, so at least).
	if v := got[`vpcchain_events_total{event="add"}`]; v < burst {
		t.Errorf(`vpcchain_events_total{event="add"} = %v, want >= %d`, v, burst)
	}
	// Allocation latency: every successful ADD observed.
	if v := got["vpcchain_allocation_duration_seconds_count"]; v < burst {
		t.Errorf("vpcchain_allocation_duration_seconds_count = %v, want >= %d", v, burst)
	}
	// EC2: the pool grew, so addresses were assigned or ENIs created, and
	// each such call's latency was observed.
	grow := 0.0
	for _, action := range []string{"AssignPrivateIpAddresses", "CreateNetworkInterface"} {
		calls := got[`vpcchain_ec2_requests_total{action="`+action+`"}`]
		timed := got[`vpcchain_ec2_request_duration_seconds_count{action="`+action+`"}`]
		if calls > 0 && timed == 0 {
			t.Errorf("%s: %v requests but no latency observed", action, calls)
		}
		grow += calls
	}
	if grow == 0 {
		t.Errorf("no AssignPrivateIpAddresses or CreateNetworkInterface request counted:\n%s", grepLines(body, "vpcchain_ec2_"))
	}
	if got[`vpcchain_ec2_requests_total{action="DescribeNetworkInterfaces"}`] == 0 {
		t.Errorf("no DescribeNetworkInterfaces request counted (start-up and reconciliation describe the ENIs)")
	}

	// Logs went to VPCCHAIN_LOG_FILE, levelled, and nothing to stdout/stderr.
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("log file: %v", err)
	}
	for _, want := range []string{`level=INFO msg="serving the IPAM API"`, `msg="serving metrics" addr=` + metricsAddr} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("log file lacks %q:\n%s", want, tail(string(logs), 20))
		}
	}
	if out, _ := os.ReadFile(n.logPath); len(out) > 0 {
		t.Errorf("the daemon wrote to stdout/stderr although VPCCHAIN_LOG_FILE is set:\n%s", tail(string(out), 20))
	}
}

// samePool: the counters introspection and the pool gauges report.
func samePool(a, b *ipamv1.IntrospectReply) bool {
	return a.Total == b.Total && a.Assigned == b.Assigned && a.Cooling == b.Cooling && a.Available == b.Available &&
		len(a.Enis) == len(b.Enis)
}

// parseMetrics reads the Prometheus text format into "name{labels}" ->
// value (labels as exposed, sorted by the registry).
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsOnPrimaryAddress: with VPCCHAIN_METRICS_ADDR=primary:<port>
// the daemon serves /metrics on its node's primary address only, so another
// machine in the VPC (here the other node, as a Prometheus server would)
// scrapes it, and loopback does not answer.
func TestMetricsOnPrimaryAddress(t *testing.T) {
	const port = "61697"
	c := newCluster(t, "m5.large", []string{"ma", "mb"}, "VPCCHAIN_METRICS_ADDR=primary:"+port)
	a, b := c.nodes["ma"], c.nodes["mb"]
	addr := net.JoinHostPort(primaryIP(t, c, a).String(), port)

	// From the other node: the address EC2 gave the node's primary ENI.
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := inNodeHTTP(c.sim, b.name).Get("http://" + addr + "/metrics")
		if err == nil {
			bb, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && resp.StatusCode == 200 {
				body = string(bb)
				break
			}
			err = fmt.Errorf("status %d, %v", resp.StatusCode, rerr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET http://%s/metrics from node %s: %v", addr, b.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := parseMetrics(t, body); got["vpcchain_enis"] < 1 {
		t.Errorf("metrics scraped from node %s: vpcchain_enis = %v, want the node's ENIs", b.name, got["vpcchain_enis"])
	}
	// Not on loopback: only the address asked for.
	if resp, err := inNodeHTTP(c.sim, a.name).Get("http://127.0.0.1:" + port + "/metrics"); err == nil {
		resp.Body.Close()
		t.Errorf("node %s answers /metrics on 127.0.0.1:%s too, want the primary address only", a.name, port)
	}
	logs, err := os.ReadFile(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := `msg="serving metrics" addr=` + addr; !strings.Contains(string(logs), want) {
		t.Errorf("log lacks %q:\n%s", want, tail(string(logs), 20))
	}
}
