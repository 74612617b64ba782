package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// The pool settings of the chaos test: small warm targets and short
// cooldown, scale-down spacing and ENI age, so addresses and ENIs come and
// go (and EC2 is called) all the time, and the pool settles within seconds.
const (
	chaosWarmIPs    = 2
	chaosMinimumIPs = 4
	chaosSteady     = 5 // pods per node that live through the whole test
	chaosBurstCap   = 6 // live burst pods per node at most
	chaosWorkers    = 3 // per node
	chaosRoundTime  = 5 * time.Second
	chaosEchoPort   = 8080
	chaosDrainTo    = 2 // live burst pods per node a drain leaves
)

// chaosRound is one fault mode of the simulator, on for the round, plus the
// daemons killed with SIGKILL (and restarted) and the nodes rebooted during
// it.
type chaosRound struct {
	name    string
	kills   []string // node names, in order, spread over the round
	reboots []string // node names, spread over the round after the kills
	// on turns the faults on; tick (every 500 ms) re-arms count-limited
	// faults. Either may be nil.
	on   func(*vpcsim.Faults)
	tick func(*vpcsim.Faults)
	// length, if set, replaces chaosRoundTime for the round.
	length time.Duration
	// done, if set, keeps the round going past chaosRoundTime until it
	// reports true, for faults that take a while to play out.
	done func(*vpcsim.Faults) bool
	// answers is an error code EC2 must have answered during the round:
	// proof that the faults reached the daemons.
	answers string
	// off undoes what on did beyond the EC2 faults (describe and IMDS lag).
	off func()
	// drain, if set, makes the workers only delete pods, down to
	// chaosDrainTo per node, for that long at the round's start: the pools
	// shrink and give addresses back while the round's faults hold (some
	// burst pods stay, so ENIs keep pods and give back addresses rather
	// than being freed whole).
	drain time.Duration
	// logs are daemon log lines of which at least one must appear during
	// the round: proof that a fault without an error code (a lag) reached
	// the daemons.
	logs []string
	// mayMiss: the round's fault needs the pools to give addresses back
	// while it lasts, which they do not when nothing is above target (all
	// their spare addresses cooling); then the round says so and why, and
	// its invariants are checked as in every round, without counting the
	// miss as a failure.
	mayMiss bool
}

// mutatingENIActions are the calls the daemon makes that change EC2.
var mutatingENIActions = []string{"AssignPrivateIpAddresses", "UnassignPrivateIpAddresses", "CreateNetworkInterface",
	"AttachNetworkInterface", "ModifyNetworkInterfaceAttribute", "DetachNetworkInterface", "DeleteNetworkInterface"}

// chaosDescribeLag is how far behind EC2's describes and IMDS answer in the
// eventually consistent round: well past the daemons' reconcile interval
// (2s), so they reconcile against stale answers again and again.
const chaosDescribeLag = 5 * time.Second

func chaosRounds(c *cluster) []chaosRound {
	sim := c.sim
	// Latency beyond the daemon's HTTP timeout (cloud.DefaultHTTPTimeout):
	// the client gives up, EC2 still makes the change afterwards.
	slow := cloud.DefaultHTTPTimeout + time.Second
	slowActions := []string{"AssignPrivateIpAddresses", "CreateNetworkInterface"}
	var slowSince map[string]int64
	var slowSeen map[string]time.Time
	var slowMu sync.Mutex // tick runs in its own goroutine, done in the test's
	var pend *oneAtATime
	// The daemon's log line for a released address or freed ENI that a
	// describe or IMDS still shows.
	const releasedShown = "and EC2 accepted"
	var metBefore int
	return []chaosRound{
		{name: "throttled", kills: []string{"ca"}, answers: "RequestLimitExceeded", on: func(f *vpcsim.Faults) {
			f.SetRateLimit("mutating", 2, 2)
			f.SetRateLimit("describe", 5, 5)
		}},
		{name: "5xx", kills: []string{"cb"}, answers: "InternalError", on: fresh(&pend), tick: func(f *vpcsim.Faults) {
			pend.inject(f, "InternalError")
			pend.inject(f, "Unavailable")
		}},
		{name: "lost responses", kills: []string{"ca"}, on: fresh(&pend), tick: func(f *vpcsim.Faults) {
			pend.lose(f, mutatingENIActions...)
		}},
		{name: "timeouts", kills: []string{"cb"},
			on: func(f *vpcsim.Faults) {
				slowMu.Lock()
				slowSince, slowSeen = f.Calls(), map[string]time.Time{}
				slowMu.Unlock()
				for _, a := range slowActions {
					f.SetLatency(a, slow)
				}
			},
			// One slow call per action is enough: the first one after the
			// latency is on takes it, later ones go through.
			tick: func(f *vpcsim.Faults) {
				calls := f.Calls()
				slowMu.Lock()
				defer slowMu.Unlock()
				for _, a := range slowActions {
					if calls[a] > slowSince[a] && slowSeen[a].IsZero() {
						f.SetLatency(a, 0)
						slowSeen[a] = time.Now()
					}
				}
			},
			// Until EC2 has made the change the daemon gave up on.
			done: func(*vpcsim.Faults) bool {
				slowMu.Lock()
				at := slowSeen["AssignPrivateIpAddresses"]
				slowMu.Unlock()
				return !at.IsZero() && time.Since(at) > slow+time.Second
			}},
		// EC2's describes and IMDS answer with the state of a few seconds
		// ago (an address just assigned is missing, one just released is
		// still there), while responses of assigns and releases are lost
		// and the daemons are killed.
		{name: "eventually consistent", kills: []string{"ca", "cb"},
			on: func(f *vpcsim.Faults) {
				fresh(&pend)(f)
				sim.Cloud.SetDescribeLag(chaosDescribeLag)
				sim.IMDS.SetLag(chaosDescribeLag)
			},
			tick: func(f *vpcsim.Faults) {
				pend.lose(f, "AssignPrivateIpAddresses", "UnassignPrivateIpAddresses")
			},
			off: func() {
				sim.Cloud.SetDescribeLag(0)
				sim.IMDS.SetLag(0)
			},
			logs: []string{"EC2 disagrees", "which EC2 does not show", "an ENI EC2 does not show"}},
		// Describes and IMDS lag while the pools give addresses back (no
		// other fault; the workers first delete their burst pods, so the
		// pools shrink): each release EC2 accepted is still shown for a
		// few seconds, and both daemons restart inside that lag. No address
		// EC2 took back may reach a pod (the invariants check every live
		// pod's address against EC2), and the log shows the daemons met
		// such answers.
		// The drain's releases come 2-3 s in (cooldown, then a whole
		// scale-down interval of surplus); the kills at 4 and 8 s restart
		// each daemon inside the lag after them.
		{name: "lag after releases", kills: []string{"ca", "cb"}, length: 12 * time.Second, drain: 10 * time.Second, mayMiss: true,
			on: func(*vpcsim.Faults) {
				metBefore = countLines(logLinesWith(c, releasedShown))
				sim.Cloud.SetDescribeLag(chaosDescribeLag)
				sim.IMDS.SetLag(chaosDescribeLag)
			},
			off: func() {
				sim.Cloud.SetDescribeLag(0)
				sim.IMDS.SetLag(0)
			},
			// Until a daemon has met a release in a lagging answer.
			done: func(*vpcsim.Faults) bool { return countLines(logLinesWith(c, releasedShown)) > metBefore },
			logs: []string{releasedShown}},
		{name: "everything at once", kills: []string{"cb", "cb"}, answers: "InternalError", on: func(f *vpcsim.Faults) {
			fresh(&pend)(f)
			f.SetRateLimit("mutating", 4, 4)
		}, tick: func(f *vpcsim.Faults) {
			pend.inject(f, "InternalError")
			pend.lose(f, mutatingENIActions...)
		}},
		// A node reboots while the other node's pods come and go: its
		// pods' sandboxes, its kernel's pod state and /run are gone; the
		// daemon starts on a node whose ENIs EC2 still has attached, with
		// their addresses, and the runtime deletes the old sandboxes and
		// creates every pod anew (chaos_reboot_test.go).
		{name: "node reboot", reboots: []string{"cb"}},
	}
}

// oneAtATime arms a fault of count 1 again only once the previous one was
// used (as the simulator's counters show) and a few more calls went through,
// so faults stay a fraction of the calls instead of piling up into an EC2
// outage while the daemons back off. One per round: the tick goroutine is
// its only user.
type oneAtATime struct {
	used  map[string]int64 // what shows the fault used: calls of the action, or errors with the code
	total map[string]int64 // all calls when armed
}

// oneInEvery: at most about one call in oneInEvery meets each fault.
const oneInEvery = 3

// fresh returns a round's "on" that starts *p anew.
func fresh(p **oneAtATime) func(*vpcsim.Faults) {
	return func(*vpcsim.Faults) { *p = &oneAtATime{used: map[string]int64{}, total: map[string]int64{}} }
}

func (o *oneAtATime) ready(key string, used, total int64) bool {
	m, armed := o.used[key]
	if armed && (used <= m || total < o.total[key]+oneInEvery) {
		return false
	}
	o.used[key], o.total[key] = used, total
	return true
}

// lose keeps one lost response pending for each action.
func (o *oneAtATime) lose(f *vpcsim.Faults, actions ...string) {
	calls := f.Calls()
	for _, a := range actions {
		if o.ready("lose "+a, calls[a], calls[""]) {
			f.LoseResponses(a, 1)
		}
	}
}

// inject keeps one error with code pending for the next call of any action.
func (o *oneAtATime) inject(f *vpcsim.Faults, code string) {
	if o.ready("inject "+code, f.Errors()[code], f.Calls()[""]) {
		f.Inject("*", code, 1)
	}
}

// TestChaos runs concurrent ADD/DEL bursts on two nodes while the simulator
// throttles, fails with 5xx, loses responses after making the change and
// answers after the client gave up, and while the daemons are killed with
// SIGKILL and restarted; in the last round a node reboots. After each round (faults off, CNI GC, the pool
// settled, the leaked-ENI sweep) it checks from three sides that users get
// what they rely on:
//   - EC2: every live pod's address is assigned to an ENI of its node, no
//     address on two pods, no unattached ENI, the node holds no more
//     addresses than its pool targets;
//   - the daemon: exactly the live pods hold allocations, each the address
//     configured in the pod, and its ENIs and addresses are EC2's;
//   - the node's kernel: a veth, a /32 route and the 512 (and for a
//     secondary ENI the 1536) rule per live pod and none for deleted pods,
//     the SNAT set holds exactly the live pods, the iptables rules are the
//     ones the node started with;
//
// and that every live pod still reaches the other node's pods.
func TestChaos(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"ca", "cb"}, ourChaosEnv()...)
	sweeper := newSweeper(t, c)
	pods := newChaosPods(c.sim)

	var nodes []*chaosNode
	byName := map[string]*chaosNode{}
	for _, name := range []string{"ca", "cb"} {
		n := c.nodes[name]
		cn := &chaosNode{n: n, first: map[*pod]netip.Addr{}, l: n.chain(nil, n.snatConf())}
		for i := 0; i < chaosSteady; i++ {
			p, err := cn.startSteady(pods, fmt.Sprintf("steady-%s-%d", name, i))
			if err != nil {
				t.Fatal(err)
			}
			cn.steady = append(cn.steady, p)
			cn.first[p] = p.ip
		}
		nodes = append(nodes, cn)
		byName[name] = cn
	}
	// The rules SNAT mode installs do not depend on the pods: every check
	// compares with the rules of the start.
	baseline := map[*chaosNode][]string{}
	for _, cn := range nodes {
		baseline[cn] = ourRules(t, cn.n)
	}
	hooks := chaosHooks{
		kill: func(name string) {
			n := c.nodes[name]
			n.kill9()
			killed := time.Now()
			time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
			n.start()
			n.waitReady()
			t.Logf("daemon of %s killed with SIGKILL at %s, serving again after %s", name,
				killed.UTC().Format("15:04:05.000"), time.Since(killed).Round(100*time.Millisecond))
		},
		reboot: func(name string) {
			start := time.Now()
			if err := rebootChaosNode(byName[name], pods, ourDaemonOps(byName[name].n)); err != nil {
				t.Fatalf("reboot %s: %v", name, err)
			}
			t.Logf("node %s rebooted at %s, its pods back after %s", name, start.UTC().Format("15:04:05.000"),
				time.Since(start).Round(100*time.Millisecond))
		},
	}

	for ri, r := range chaosRounds(c) {
		start := time.Now()
		before := c.sim.Snapshot()
		logsBefore := countLines(logLinesWith(c, r.logs...))
		runChaosRound(t, c.sim, nodes, ri, r, pods, hooks)
		after := c.sim.Snapshot()
		var delFailed int64
		for _, cn := range nodes {
			for _, p := range cn.takeProblems() {
				t.Errorf("round %q: %s: %v", r.name, p.kind, p.err)
			}
			delFailed += cn.delFailed.Swap(0)
		}
		t.Logf("round %q: %s of chaos, EC2 calls %d, errors %s; %d DEL attempts failed and were retried", r.name,
			time.Since(start).Round(100*time.Millisecond), after.Calls[""]-before.Calls[""], countsDiff(before.Errors, after.Errors), delFailed)
		checkFaultsBit(t, r, before, after)
		if len(r.logs) > 0 {
			met := countLines(logLinesWith(c, r.logs...)) - logsBefore
			switch {
			case met <= 0 && r.mayMiss:
				t.Logf("round %q: no daemon logged %q: its fault was not exercised this time", r.name, r.logs)
			case met <= 0:
				t.Errorf("round %q: no daemon logged %q: the round tested nothing", r.name, r.logs)
			}
			t.Logf("round %q: the daemons met EC2 answers behind their own view %d times (kept what pods hold or was just learned)", r.name, met)
		}

		settleStart := time.Now()
		swept := settleChaos(t, c, nodes, sweeper)
		t.Logf("round %q: settled in %s, the leaked-ENI sweep deleted %d ENIs", r.name, time.Since(settleStart).Round(100*time.Millisecond), len(swept))
		for _, e := range swept {
			// Expected only from a kill between create and attach; the
			// daemon's log says whether it knew of the ENI.
			t.Logf("round %q: leaked %s (tags %v); the daemons logged of it and of creating ENIs:\n%s", r.name, e.ID, e.Tags,
				logLinesWith(c, e.ID, "CreateENI", "create ENI"))
		}
		checkChaosInvariants(t, c, nodes, pods.all, baseline, r.name)
		if t.Failed() {
			t.FailNow() // later rounds would only repeat the damage
		}
	}
}

// ourChaosEnv is our daemon's pool settings in the chaos tests.
func ourChaosEnv() []string {
	return append(sharedChaosEnv(), "VPCCHAIN_SCALE_DOWN_INTERVAL=1s", "VPCCHAIN_MIN_ENI_AGE=2s")
}

// sharedChaosEnv is the pool settings our daemon and the AWS VPC CNI both
// read, by the same names.
func sharedChaosEnv() []string {
	return []string{fmt.Sprintf("WARM_IP_TARGET=%d", chaosWarmIPs), fmt.Sprintf("MINIMUM_IP_TARGET=%d", chaosMinimumIPs),
		"IP_COOLDOWN_PERIOD=1"}
}

func countLines(s string) int {
	if s == "" {
		return 0
	}
	return strings.Count(s, "\n") + 1
}

// logLinesWith returns the daemons' log lines that mention any of subjects.
func logLinesWith(c *cluster, subjects ...string) string {
	var out []string
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.logPath)
		for _, l := range strings.Split(string(b), "\n") {
			for _, s := range subjects {
				if strings.Contains(l, s) {
					out = append(out, n.name+": "+l)
					break
				}
			}
		}
	}
	return strings.Join(out, "\n")
}

// checkFaultsBit fails a round whose faults never reached the daemons: it
// would have tested nothing.
func checkFaultsBit(t *testing.T, r chaosRound, before, after vpcsim.State) {
	t.Helper()
	if r.answers != "" && after.Errors[r.answers] == before.Errors[r.answers] {
		t.Errorf("round %q: EC2 never answered %s: the round tested nothing", r.name, r.answers)
	}
}

func countsDiff(before, after map[string]int64) string {
	var out []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out = append(out, fmt.Sprintf("%s=%d", k, d))
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

// runChaosRound turns the round's faults on, runs the workers, kills and
// restarts the daemons and reboots the nodes the round names, then turns the
// faults off and waits for the workers. What went wrong for the runtime (an
// ADD that failed other than with "try again later", a DEL that never
// succeeded) is left in each node's problems. It returns when the faults
// were turned off.
func runChaosRound(t *testing.T, sim *vpcsim.Sim, nodes []*chaosNode, ri int, r chaosRound, pods *chaosPods, h chaosHooks) time.Time {
	t.Helper()
	f := sim.Faults
	if r.on != nil {
		r.on(f)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	drainUntil := time.Now().Add(r.drain)
	for _, cn := range nodes {
		for w := 0; w < chaosWorkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorker(cn, ri, w, drainUntil, stop, pods)
			}()
		}
	}
	// A Fatal on the way (this goroutine exits) must not leave the workers
	// making sandboxes after the test is gone.
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
		wg.Wait()
	}()
	tickDone := make(chan struct{})
	go func() {
		defer close(tickDone)
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			if r.tick != nil {
				r.tick(f)
			}
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()

	length := chaosRoundTime
	if r.length > 0 {
		length = r.length
	}
	// The kills, then the reboots, spread over the round; each daemon
	// comes back at once, as the DaemonSet's restart would bring it.
	type act struct {
		do   func(string)
		node string
	}
	var acts []act
	for _, name := range r.kills {
		acts = append(acts, act{h.kill, name})
	}
	for _, name := range r.reboots {
		acts = append(acts, act{h.reboot, name})
	}
	begin := time.Now()
	for i, a := range acts {
		at := begin.Add(length * time.Duration(i+1) / time.Duration(len(acts)+1))
		time.Sleep(time.Until(at))
		a.do(a.node)
	}
	time.Sleep(time.Until(begin.Add(length)))
	if r.done != nil {
		// Generous: a pool that meets nothing to give back for a while
		// (it logs why below, if it never does) still gets its chance.
		deadline := time.Now().Add(time.Minute)
		for !r.done(f) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if !r.done(f) {
			if r.mayMiss {
				t.Logf("round %q: the round's fault never hit a call", r.name)
			} else {
				t.Errorf("round %q: the round's fault never hit a call", r.name)
			}
			// What held our pools back, for the log (the peer's nodes have
			// no socket of ours).
			for _, cn := range nodes {
				if _, err := os.Stat(cn.n.socket); err != nil {
					continue
				}
				st := cn.n.introspect()
				t.Logf("%s: pool total %d assigned %d cooling %d available %d; last decision: %s", cn.n.name,
					st.Total, st.Assigned, st.Cooling, st.Available, st.LastDecision)
			}
		}
	}
	close(stop)
	stopped = true
	<-tickDone
	// Faults off before waiting: a worker may be retrying an ADD that only
	// the pool's recovery can satisfy.
	if err := sim.Apply(vpcsim.FaultRequest{Reset: true}); err != nil {
		t.Fatal(err)
	}
	if r.off != nil {
		r.off()
	}
	off := time.Now()
	wg.Wait()
	return off
}

// chaosWorker adds pods and deletes live burst pods of its node until stop,
// as a busy kubelet would: ADD retried as the node's kubelet retries it
// (DEL first), DEL retried until it succeeds.
func chaosWorker(cn *chaosNode, ri, w int, drainUntil time.Time, stop <-chan struct{}, pods *chaosPods) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		cn.up.RLock()
		chaosStep(cn, ri, w, drainUntil, pods)
		cn.up.RUnlock()
	}
}

// chaosStep is one step of a worker: a DEL or an ADD.
func chaosStep(cn *chaosNode, ri, w int, drainUntil time.Time, pods *chaosPods) {
	draining := time.Now().Before(drainUntil)
	cn.mu.Lock()
	var victim *pod
	if len(cn.burst) >= chaosBurstCap || len(cn.burst) > chaosDrainTo && draining || len(cn.burst) > 0 && !draining && rand.IntN(3) == 0 {
		i := rand.IntN(len(cn.burst))
		victim = cn.burst[i]
		cn.burst = append(cn.burst[:i], cn.burst[i+1:]...)
	}
	cn.seq++
	seq := cn.seq
	cn.mu.Unlock()
	if victim == nil && draining {
		time.Sleep(100 * time.Millisecond)
		return
	}

	if victim != nil {
		pods.gone(victim)
		if err := delRetrying(victim, cn.l, time.Minute, &cn.delFailed); err != nil {
			cn.problem(probDEL, fmt.Errorf("DEL %s (%s) on %s: %w", victim.name, victim.ip, cn.n.name, err))
			return
		}
		// The runtime removes the sandbox after DEL.
		_ = victim.netns.Close()
		_ = testutils.UnmountNS(victim.netns)
		return
	}
	p := cn.makePod(fmt.Sprintf("%s-r%d-w%d-%d", cn.n.name, ri, w, seq))
	pods.register(p)
	if err := cn.addPod(p); err != nil {
		cn.problem(probADD, fmt.Errorf("ADD %s on %s: %w", p.name, cn.n.name, err))
		// As kubelet does after a failed ADD.
		if derr := delRetrying(p, cn.l, time.Minute, &cn.delFailed); derr != nil {
			cn.problem(probDEL, fmt.Errorf("DEL %s after a failed ADD: %w", p.name, derr))
		}
		return
	}
	pods.added(cn, p)
	cn.mu.Lock()
	cn.burst = append(cn.burst, p)
	cn.mu.Unlock()
	time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
}

// delRetrying retries DEL until it succeeds, as kubelet does, counting
// the failed attempts in failed.
func delRetrying(p *pod, l *libcni.NetworkConfigList, within time.Duration, failed *atomic.Int64) error {
	deadline := time.Now().Add(within)
	for {
		err := p.del(l)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		failed.Add(1)
		time.Sleep(200 * time.Millisecond)
	}
}
