// Package scale runs many warm-pool daemons in one process against one
// simulated account with account-wide EC2 rate limits: a node
// group scaling out with 30 pods per node, then a rolling restart of every
// daemon. It reports time to converge, pod waits, throttling and EC2 calls.
//
// By default a small fleet runs and only behaviour is asserted (every pod
// got a unique address of its own node; the restart makes no mutating EC2
// call). The full run is opt-in:
//
//	VPCCHAIN_SCALE_NODES=1000 go test -count=1 -run TestScale -v -timeout 60m ./test/scale/
package scale

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// Knobs of the opt-in run (all optional but the first):
//
//	VPCCHAIN_SCALE_NODES          number of nodes; unset = the small default run
//	VPCCHAIN_SCALE_PODS           pods per node (30)
//	VPCCHAIN_SCALE_INSTANCE_TYPE  (m5.xlarge: 4 ENIs x 15 addresses, 58 pods in secondary-IP mode)
//	VPCCHAIN_SCALE_LAUNCH_WINDOW  launches are spread over it (60s)
//	VPCCHAIN_SCALE_MUTATING       account-wide mutating bucket rate/burst (100/200)
//	VPCCHAIN_SCALE_DESCRIBE       account-wide describe bucket rate/burst (100/200)
//	VPCCHAIN_SCALE_RESTART_BATCH  daemons restarted at once (10% of the nodes)
//	VPCCHAIN_SCALE_DAEMON_ENV     daemon settings, e.g. ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1
func paramsFromEnv(t *testing.T) (params, bool) {
	p := params{Nodes: 40, PodsPerNode: 30, InstanceType: "m5.xlarge", LaunchWindow: 4 * time.Second,
		MutatingRate: 100, MutatingBurst: 200, DescribeRate: 100, DescribeBurst: 200,
		Quiet: 3 * time.Second, Observe: 2 * time.Second, Env: map[string]string{}}
	full := false
	if v := os.Getenv("VPCCHAIN_SCALE_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VPCCHAIN_SCALE_NODES=%q: want a positive integer", v)
		}
		full = true
		// Long enough windows to see what a real fleet would do: launches
		// over a minute; the fleet quiet for 10 s before the restart; after
		// the last restart, 65 s so every restarted daemon has run its first
		// reconcile (60 s) and its first leak sweep (random in the first
		// minute).
		p.Nodes, p.LaunchWindow, p.Quiet, p.Observe = n, 60*time.Second, 10*time.Second, 65*time.Second
	}
	if v := os.Getenv("VPCCHAIN_SCALE_PODS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VPCCHAIN_SCALE_PODS=%q: want a positive integer", v)
		}
		p.PodsPerNode = n
	}
	if v := os.Getenv("VPCCHAIN_SCALE_INSTANCE_TYPE"); v != "" {
		p.InstanceType = v
	}
	if v := os.Getenv("VPCCHAIN_SCALE_LAUNCH_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			t.Fatalf("VPCCHAIN_SCALE_LAUNCH_WINDOW=%q: want a duration", v)
		}
		p.LaunchWindow = d
	}
	for _, b := range []struct {
		env   string
		rate  *float64
		burst *int
	}{{"VPCCHAIN_SCALE_MUTATING", &p.MutatingRate, &p.MutatingBurst}, {"VPCCHAIN_SCALE_DESCRIBE", &p.DescribeRate, &p.DescribeBurst}} {
		v := os.Getenv(b.env)
		if v == "" {
			continue
		}
		r, bu, ok := strings.Cut(v, "/")
		rate, err1 := strconv.ParseFloat(r, 64)
		burst, err2 := strconv.Atoi(bu)
		if !ok || err1 != nil || err2 != nil || rate <= 0 || burst < 1 {
			t.Fatalf("%s=%q: want rate/burst, e.g. 100/200", b.env, v)
		}
		*b.rate, *b.burst = rate, burst
	}
	p.RestartBatch = max(1, (p.Nodes+9)/10)
	if v := os.Getenv("VPCCHAIN_SCALE_RESTART_BATCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("VPCCHAIN_SCALE_RESTART_BATCH=%q: want a positive integer", v)
		}
		p.RestartBatch = n
	}
	if v := os.Getenv("VPCCHAIN_SCALE_DAEMON_ENV"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("VPCCHAIN_SCALE_DAEMON_ENV: %q is not NAME=value", kv)
			}
			p.Env[strings.TrimSpace(k)] = strings.TrimSpace(val)
		}
	}
	return p, full
}

// sampler records the peak goroutine and file-descriptor counts.
type sampler struct {
	goroutines, fds atomic.Int64
	load            atomic.Uint64 // peak 1-minute load average, float64 bits
	stop            chan struct{}
	done            chan struct{}
}

func startSampler() *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if g := int64(runtime.NumGoroutine()); g > s.goroutines.Load() {
				s.goroutines.Store(g)
			}
			if f := int64(openFiles()); f > s.fds.Load() {
				s.fds.Store(f)
			}
			if l := loadAvg(); l > math.Float64frombits(s.load.Load()) {
				s.load.Store(math.Float64bits(l))
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) close() { close(s.stop); <-s.done }

// loadAvg is the host's 1-minute load average: the machine is shared, and
// the figures mean little when it is far above the CPU count.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

func TestScale(t *testing.T) {
	p, full := paramsFromEnv(t)
	f := newFleet(t, p)
	sam := startSampler()
	defer sam.close()
	deadline := 10 * time.Minute
	if full {
		deadline = 50 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	// ---- Scale out: launches spread over the window; each node's 30 pods
	// start once its daemon serves, as the kubelet starts them once the
	// node is ready.
	t0 := time.Now()
	tl := startTimeline(f.sim.Faults, 5*time.Second)
	var podMu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(f.nodes))
	for _, n := range f.nodes {
		at := t0
		if len(f.nodes) > 1 {
			at = t0.Add(p.LaunchWindow * time.Duration(n.idx) / time.Duration(len(f.nodes)-1))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(at))
			if err := f.launch(n); err != nil {
				errs <- err
				return
			}
			if err := f.start(ctx, n); err != nil {
				errs <- err
				return
			}
			var pw sync.WaitGroup
			for i := 0; i < p.PodsPerNode; i++ {
				pd := &pod{node: n, key: store.Key{Network: "vpcchain", ContainerID: fmt.Sprintf("%s-pod-%02d", n.name, i), IfName: "eth0"}}
				podMu.Lock()
				f.pods = append(f.pods, pd)
				podMu.Unlock()
				pw.Add(1)
				go func() { defer pw.Done(); addPod(ctx, pd) }()
			}
			pw.Wait()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	launchCalls, launchErrors, launchThrottled := f.sim.Faults.Calls(), f.sim.Faults.Errors(), f.sim.Faults.Throttled()
	out := measureScaleOut(f, t0)
	if problems := f.verify(); len(problems) > 0 {
		t.Fatalf("after scale-out: %d problems, first: %s", len(problems), strings.Join(problems[:min(10, len(problems))], "; "))
	}

	// ---- Settle: every pool within its targets and no mutating call for
	// a while, so the restart is measured against a steady fleet.
	settleStart := time.Now()
	if err := f.settle(ctx); err != nil {
		t.Fatal(err)
	}
	settled := time.Since(settleStart)
	rows := tl.close()

	// ---- Rolling restart, RestartBatch daemons at a time, pods untouched.
	before := map[string]netip.Addr{}
	for _, pd := range f.pods {
		before[pd.key.ContainerID] = pd.ip
	}
	restartCallsBefore, restartErrorsBefore := f.sim.Faults.Calls(), f.sim.Faults.Errors()
	r0 := time.Now()
	restartTook := make([]time.Duration, len(f.nodes))
	for lo := 0; lo < len(f.nodes); lo += p.RestartBatch {
		batch := f.nodes[lo:min(lo+p.RestartBatch, len(f.nodes))]
		var bw sync.WaitGroup
		for _, n := range batch {
			bw.Add(1)
			go func() {
				defer bw.Done()
				began := time.Now()
				if err := f.stop(n); err != nil {
					t.Errorf("%s: stop: %v", n.name, err)
				}
				if err := f.start(ctx, n); err != nil {
					t.Errorf("%s: restart: %v", n.name, err)
					return
				}
				restartTook[n.idx] = time.Since(began)
			}()
		}
		bw.Wait() // the DaemonSet moves on once the batch is ready
	}
	rolled := time.Since(r0)
	if t.Failed() {
		t.FailNow()
	}
	time.Sleep(p.Observe)
	restartCalls := diff(f.sim.Faults.Calls(), restartCallsBefore)
	restartErrors := diff(f.sim.Faults.Errors(), restartErrorsBefore)
	rs := measureRestart(f, restartTook, out.startFailures)

	// ---- Invariants after the restart.
	for _, pd := range f.pods {
		a, ok := pd.node.daemon().Get(pd.key)
		if !ok || a.IP != before[pd.key.ContainerID] {
			t.Errorf("%s: after the restart holds %v (%v), had %v", pd.key.ContainerID, a.IP, ok, before[pd.key.ContainerID])
		}
	}
	if problems := f.verify(); len(problems) > 0 {
		t.Errorf("after the restart: %d problems, first: %s", len(problems), strings.Join(problems[:min(10, len(problems))], "; "))
	}
	if rs.mutating != 0 {
		t.Errorf("restarted daemons made %d mutating EC2 calls (%s); a restart with nothing changed needs none", rs.mutating, actionTable(rs.mutatingByAction))
	}
	if m := mutatingCalls(restartCalls); m != 0 {
		t.Errorf("the simulator saw %d mutating calls during the rolling restart: %s", m, actionTable(restartCalls))
	}

	t.Logf("machine: %d CPUs (GOMAXPROCS %d), %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	t.Logf("fleet: %d nodes x %d pods, %s, launched over %s; account buckets mutating %.0f/s burst %d, describe %.0f/s burst %d; daemon env %v",
		p.Nodes, p.PodsPerNode, p.InstanceType, p.LaunchWindow, p.MutatingRate, p.MutatingBurst, p.DescribeRate, p.DescribeBurst, p.Env)
	t.Logf("peak goroutines %d, peak open files %d, peak host load average %.1f (other work included)",
		sam.goroutines.Load(), sam.fds.Load(), math.Float64frombits(sam.load.Load()))
	t.Log("\n" + report(p, out, launchCalls, launchErrors, settled, rolled, rs, restartCalls, restartErrors))
	t.Logf("RequestLimitExceeded by action (scale-out): %s", actionTable(launchThrottled))
	t.Log("\n" + timelineTable(rows))
}

// timeline samples EC2's mutating calls and throttled answers every
// interval, from the first launch until the fleet has settled: where in the
// scale-out the account's budget is overrun.
type timeline struct {
	rows []timelineRow
	stop chan struct{}
	done chan struct{}
}

type timelineRow struct {
	at                  time.Duration
	mutating, throttled int64
}

func startTimeline(faults *vpcsim.Faults, interval time.Duration) *timeline {
	tl := &timeline{stop: make(chan struct{}), done: make(chan struct{})}
	t0 := time.Now()
	go func() {
		defer close(tl.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tl.stop:
				return
			case <-tick.C:
			}
			tl.rows = append(tl.rows, timelineRow{at: time.Since(t0), mutating: mutatingCalls(faults.Calls()), throttled: faults.Throttled()[""]})
		}
	}()
	return tl
}

func (tl *timeline) close() []timelineRow { close(tl.stop); <-tl.done; return tl.rows }

// timelineTable renders the samples as per-window counts, up to the
// last window with a mutating call.
func timelineTable(rows []timelineRow) string {
	var b strings.Builder
	b.WriteString("| window | mutating calls | of them throttled |\n|---|---|---|\n")
	last := len(rows) - 1
	for last > 0 && rows[last].mutating == rows[last-1].mutating {
		last--
	}
	var prev timelineRow
	for _, r := range rows[:last+1] {
		fmt.Fprintf(&b, "| %s-%s | %d | %d |\n", round(prev.at), round(r.at), r.mutating-prev.mutating, r.throttled-prev.throttled)
		prev = r
	}
	return b.String()
}

// scaleOut are the scale-out figures.
type scaleOut struct {
	converge                       time.Duration
	lastLaunch                     time.Duration
	pods, waited                   int
	waitP50, waitP99, waitMax      time.Duration // of the pods that waited
	nodeP50, nodeP99, nodeMax      time.Duration // node launch -> its last pod
	readyP50, readyP99, readyMax   time.Duration // node launch -> daemon serving
	startFailures                  int
	mutP50, mutP99, mutMax         int64 // mutating calls per node (client side, retries included)
	mutTotal, descTotal            int64
	clientThrottles, clientLimited int64
}

func measureScaleOut(f *fleet, t0 time.Time) scaleOut {
	var o scaleOut
	var waits []time.Duration
	last := map[*node]time.Time{}
	for _, pd := range f.pods {
		o.pods++
		if pd.got.Sub(t0) > o.converge {
			o.converge = pd.got.Sub(t0)
		}
		if pd.tries > 1 {
			o.waited++
			waits = append(waits, pd.wait())
		}
		if pd.got.After(last[pd.node]) {
			last[pd.node] = pd.got
		}
	}
	o.waitP50, o.waitP99, o.waitMax = quantiles(waits)
	var nodeT, readyT []time.Duration
	var muts []int64
	for _, n := range f.nodes {
		nodeT = append(nodeT, last[n].Sub(n.launched))
		readyT = append(readyT, n.ready.Sub(n.launched))
		o.lastLaunch = max(o.lastLaunch, n.launched.Sub(t0))
		o.startFailures += n.startFailures
		st := n.cl.Stats()
		m := mutatingCalls(st)
		muts = append(muts, m)
		o.mutTotal += m
		o.descTotal += describeCalls(st)
		o.clientThrottles += st["throttles"]
		o.clientLimited += st["ratelimited"]
	}
	o.nodeP50, o.nodeP99, o.nodeMax = quantiles(nodeT)
	o.readyP50, o.readyP99, o.readyMax = quantiles(readyT)
	o.mutP50, o.mutP99, o.mutMax = quantilesInt(muts)
	return o
}

// restartStats are the rolling-restart figures, per restarted daemon.
type restartStats struct {
	tookP50, tookMax          time.Duration
	mutating                  int64
	mutatingByAction          map[string]int64
	descP50, descMax, descSum int64
	imdsP50, imdsMax, imdsSum int64 // at start (New)
	throttles                 int64
	startFailures             int
	byAction                  map[string]int64
}

func measureRestart(f *fleet, took []time.Duration, failedBefore int) restartStats {
	rs := restartStats{mutatingByAction: map[string]int64{}, byAction: map[string]int64{}}
	var desc, imds []int64
	for _, n := range f.nodes {
		n.mu.Lock()
		st, cost, fails := n.cl.Stats(), n.lastStart, n.startFailures
		n.mu.Unlock()
		for a, c := range st {
			if isAction(a) {
				rs.byAction[a] += c
				if isMutatingAction(a) {
					rs.mutatingByAction[a] += c
				}
			}
		}
		rs.mutating += mutatingCalls(st)
		desc = append(desc, describeCalls(st))
		rs.descSum += describeCalls(st)
		imds = append(imds, cost.imds)
		rs.imdsSum += cost.imds
		rs.throttles += st["throttles"]
		rs.startFailures += fails
	}
	rs.descP50, _, rs.descMax = quantilesInt(desc)
	rs.imdsP50, _, rs.imdsMax = quantilesInt(imds)
	rs.tookP50, _, rs.tookMax = quantiles(took)
	rs.startFailures -= failedBefore
	return rs
}

func isMutatingAction(a string) bool { return mutatingCalls(map[string]int64{a: 1}) == 1 }

// settle waits until every daemon's last pool decision is "within targets",
// every ENI has DeleteOnTermination and no mutating call reached EC2 for
// p.Quiet.
func (f *fleet) settle(ctx context.Context) error {
	last, quietSince := int64(-1), time.Now()
	for {
		m := mutatingCalls(f.sim.Faults.Calls())
		if m != last {
			last, quietSince = m, time.Now()
		}
		busy := ""
		for _, n := range f.nodes {
			if r := n.daemon().Introspect().GetLastDecision(); !strings.HasPrefix(r, "pool within targets") {
				busy = n.name + ": " + r
				break
			}
		}
		// An ENI is settled once EC2 deletes it with its instance.
		for _, i := range f.sim.Cloud.Instances() {
			for id, dot := range i.DeleteOnTermination {
				if !dot && busy == "" {
					busy = fmt.Sprintf("%s: %s has no DeleteOnTermination yet", i.InstanceID, id)
				}
			}
		}
		if busy == "" && time.Since(quietSince) >= f.p.Quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet did not settle: %w (%s)", ctx.Err(), busy)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// verify checks what users rely on: every pod has an address, no address
// is on two pods, and EC2 has each pod's address on an ENI of the pod's
// own node.
func (f *fleet) verify() []string {
	var problems []string
	owner := map[netip.Addr]string{}
	onNode := map[string]map[netip.Addr]string{} // instance -> address -> ENI
	for _, n := range f.nodes {
		in, ok := f.sim.Cloud.InstanceNetwork(n.sim.InstanceID)
		if !ok {
			problems = append(problems, n.name+": instance unknown to EC2")
			continue
		}
		m := map[netip.Addr]string{}
		for _, e := range in.ENIs {
			for _, a := range e.Secondary {
				m[a] = e.ID
			}
			for _, pf := range e.Prefixes {
				for a := pf.Addr(); pf.Contains(a); a = a.Next() {
					m[a] = e.ID
				}
			}
		}
		onNode[n.sim.InstanceID] = m
	}
	for _, pd := range f.pods {
		id := pd.key.ContainerID
		switch {
		case pd.err != nil:
			problems = append(problems, fmt.Sprintf("%s: ADD failed: %v", id, pd.err))
			continue
		case !pd.ip.IsValid():
			problems = append(problems, id+": no address")
			continue
		}
		if o, dup := owner[pd.ip]; dup {
			problems = append(problems, fmt.Sprintf("%s and %s both hold %s", o, id, pd.ip))
		}
		owner[pd.ip] = id
		eni, ok := onNode[pd.node.sim.InstanceID][pd.ip]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s holds %s, which EC2 has on no ENI of %s", id, pd.ip, pd.node.name))
		case eni != pd.eni:
			problems = append(problems, fmt.Sprintf("%s holds %s on %s, EC2 has it on %s", id, pd.ip, pd.eni, eni))
		}
	}
	return problems
}

func report(p params, o scaleOut, calls, errs map[string]int64, settled, rolled time.Duration, rs restartStats, rcalls, rerrs map[string]int64) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("| Scale-out (%d nodes x %d pods, launched over %s) | |", p.Nodes, p.PodsPerNode, round(o.lastLaunch))
	w("|---|---|")
	w("| time to converge (first launch -> last pod has an address) | %s |", round(o.converge))
	w("| node launch -> daemon serving, p50 / p99 / max | %s / %s / %s |", round(o.readyP50), round(o.readyP99), round(o.readyMax))
	w("| node launch -> all its pods have addresses, p50 / p99 / max | %s / %s / %s |", round(o.nodeP50), round(o.nodeP99), round(o.nodeMax))
	w("| pods that waited (first ADD got \"no address\") | %d of %d (%.1f%%) |", o.waited, o.pods, 100*float64(o.waited)/float64(max(1, o.pods)))
	w("| wait of those pods, p50 / p99 / max | %s / %s / %s |", round(o.waitP50), round(o.waitP99), round(o.waitMax))
	w("| pods with no address at the end | 0 (asserted) |")
	w("| daemon starts that failed | %d |", o.startFailures)
	w("| RequestLimitExceeded returned by EC2 | %d |", errs["RequestLimitExceeded"])
	w("| EC2 calls (all / mutating / describe) | %d / %d / %d |", calls[""], mutatingCalls(calls), describeCalls(calls))
	w("| mutating calls per node, p50 / p99 / max | %d / %d / %d |", o.mutP50, o.mutP99, o.mutMax)
	w("| daemon-side: throttled attempts / waits on the client-side bucket | %d / %d |", o.clientThrottles, o.clientLimited)
	w("")
	w("EC2 calls by action (scale-out): %s", actionTable(calls))
	if len(errs) > 0 {
		w("")
		w("EC2 error codes (scale-out): %s", actionTable(errs))
	}
	w("")
	w("| Rolling restart (%d at a time, after %s to settle) | |", p.RestartBatch, round(settled))
	w("|---|---|")
	w("| rollout duration (first stop -> last daemon serving) | %s |", round(rolled))
	w("| one daemon: stop -> serving again, p50 / max | %s / %s |", round(rs.tookP50), round(rs.tookMax))
	w("| mutating EC2 calls by restarted daemons | %d |", rs.mutating)
	w("| mutating EC2 calls seen by EC2 during restart + %s after | %d |", round(p.Observe), mutatingCalls(rcalls))
	w("| describe calls per restarted daemon, p50 / max (total) | %d / %d (%d) |", rs.descP50, rs.descMax, rs.descSum)
	w("| IMDS requests per daemon start, p50 / max (total) | %d / %d (%d) |", rs.imdsP50, rs.imdsMax, rs.imdsSum)
	w("| RequestLimitExceeded during restart | %d |", rerrs["RequestLimitExceeded"])
	w("| daemon restarts that failed | %d |", rs.startFailures)
	w("| pods that lost or changed their address | 0 (asserted) |")
	w("")
	w("EC2 calls by action (restart window): %s", actionTable(rcalls))
	return b.String()
}
