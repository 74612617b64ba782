package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/internal/routing"
	"github.com/vpcchain/vpcchain/internal/snat"
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
// daemons killed with SIGKILL (and restarted) during it.
type chaosRound struct {
	name  string
	kills []string // node names, in order, spread over the round
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
		{name: "lag after releases", kills: []string{"ca", "cb"}, length: 12 * time.Second, drain: 10 * time.Second,
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

// chaosNode is one node of the chaos test and the pods it runs.
type chaosNode struct {
	n      *node
	l      *libcni.NetworkConfigList
	steady []*pod
	first  map[*pod]netip.Addr // steady pods' addresses at the start

	mu    sync.Mutex
	burst []*pod // live burst pods
	seq   int

	delFailed atomic.Int64 // DEL attempts that failed (and were retried)
}

func (cn *chaosNode) live() []*pod {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return append(append([]*pod(nil), cn.steady...), cn.burst...)
}

// TestChaos runs concurrent ADD/DEL bursts on two nodes while the simulator
// throttles, fails with 5xx, loses responses after making the change and
// answers after the client gave up, and while the daemons are killed with
// SIGKILL and restarted. After each round (faults off, CNI GC, the pool
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
	c := newCluster(t, "m5.large", []string{"ca", "cb"},
		fmt.Sprintf("WARM_IP_TARGET=%d", chaosWarmIPs), fmt.Sprintf("MINIMUM_IP_TARGET=%d", chaosMinimumIPs),
		"IP_COOLDOWN_PERIOD=1", "VPCCHAIN_SCALE_DOWN_INTERVAL=1s", "VPCCHAIN_MIN_ENI_AGE=2s")
	sweeper := newSweeper(t, c)
	all := map[string]*pod{} // every pod ever made, by CNI container ID, to name offenders
	var allMu sync.Mutex
	register := func(p *pod) {
		allMu.Lock()
		all[p.id] = p
		allMu.Unlock()
	}

	var nodes []*chaosNode
	for _, name := range []string{"ca", "cb"} {
		n := c.nodes[name]
		cn := &chaosNode{n: n, first: map[*pod]netip.Addr{},
			l: n.chain(nil, map[string]any{"type": "vpc-snat", "nodeConfig": n.state + "/snat.json"})}
		for i := 0; i < chaosSteady; i++ {
			p := n.newPod("chaos", fmt.Sprintf("steady-%s-%d", name, i))
			register(p)
			if err := p.addRetrying(cn.l, time.Minute); err != nil {
				t.Fatalf("steady pod %s: %v", p.name, err)
			}
			cn.steady = append(cn.steady, p)
			cn.first[p] = p.ip
			echoServer(t, p.doIn, netip.AddrPortFrom(p.ip, chaosEchoPort), p.name)
		}
		nodes = append(nodes, cn)
	}
	// The rules SNAT mode installs do not depend on the pods: every check
	// compares with the rules of the start.
	baseline := map[*chaosNode][]string{}
	for _, cn := range nodes {
		baseline[cn] = ourRules(t, cn.n)
	}

	for ri, r := range chaosRounds(c) {
		start := time.Now()
		before := c.sim.Snapshot()
		logsBefore := countLines(logLinesWith(c, r.logs...))
		errs := runChaosRound(t, c, nodes, ri, r, register)
		after := c.sim.Snapshot()
		for _, err := range errs {
			t.Errorf("round %q: %v", r.name, err)
		}
		var delFailed int64
		for _, cn := range nodes {
			delFailed += cn.delFailed.Swap(0)
		}
		t.Logf("round %q: %s of chaos, EC2 calls %d, errors %s; %d DEL attempts failed and were retried", r.name,
			time.Since(start).Round(100*time.Millisecond), after.Calls[""]-before.Calls[""], countsDiff(before.Errors, after.Errors), delFailed)
		checkFaultsBit(t, r, before, after)
		if len(r.logs) > 0 {
			met := countLines(logLinesWith(c, r.logs...)) - logsBefore
			if met <= 0 {
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
		checkChaosInvariants(t, c, nodes, all, baseline, r.name)
		if t.Failed() {
			t.FailNow() // later rounds would only repeat the damage
		}
	}
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
// restarts the daemons, then turns the faults off and waits for the
// workers. It returns what went wrong for the runtime (an ADD that failed
// other than with "try again later", a DEL that never succeeded).
func runChaosRound(t *testing.T, c *cluster, nodes []*chaosNode, ri int, r chaosRound, register func(*pod)) []error {
	t.Helper()
	f := c.sim.Faults
	if r.on != nil {
		r.on(f)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var emu sync.Mutex
	var errs []error
	fail := func(err error) {
		emu.Lock()
		errs = append(errs, err)
		emu.Unlock()
	}
	drainUntil := time.Now().Add(r.drain)
	for _, cn := range nodes {
		for w := 0; w < chaosWorkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				chaosWorker(cn, ri, w, drainUntil, stop, register, fail)
			}()
		}
	}
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
	// The kills, spread over the round; each daemon comes back at once, as
	// the DaemonSet's restart would bring it.
	begin := time.Now()
	for i, name := range r.kills {
		at := begin.Add(length * time.Duration(i+1) / time.Duration(len(r.kills)+1))
		time.Sleep(time.Until(at))
		n := c.nodes[name]
		n.kill9()
		killed := time.Now()
		time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
		n.start()
		n.waitReady()
		t.Logf("round %q: daemon of %s killed with SIGKILL at %s, serving again after %s", r.name, name,
			killed.UTC().Format("15:04:05.000"), time.Since(killed).Round(100*time.Millisecond))
	}
	time.Sleep(time.Until(begin.Add(length)))
	if r.done != nil {
		deadline := time.Now().Add(30 * time.Second)
		for !r.done(f) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if !r.done(f) {
			fail(errors.New("the round's fault never hit a call"))
		}
	}
	close(stop)
	<-tickDone
	// Faults off before waiting: a worker may be retrying an ADD that only
	// the pool's recovery can satisfy.
	if err := c.sim.Apply(vpcsim.FaultRequest{Reset: true}); err != nil {
		t.Fatal(err)
	}
	if r.off != nil {
		r.off()
	}
	wg.Wait()
	return errs
}

// chaosWorker adds pods and deletes live burst pods of its node until stop,
// as a busy kubelet would: ADD retried on "try again later" (DEL first),
// DEL retried until it succeeds.
func chaosWorker(cn *chaosNode, ri, w int, drainUntil time.Time, stop <-chan struct{}, register func(*pod), fail func(error)) {
	for {
		select {
		case <-stop:
			return
		default:
		}
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
			continue
		}

		if victim != nil {
			if err := delRetrying(victim, cn.l, time.Minute, &cn.delFailed); err != nil {
				fail(fmt.Errorf("DEL %s (%s) on %s: %w", victim.name, victim.ip, cn.n.name, err))
				continue
			}
			// The runtime removes the sandbox after DEL.
			_ = victim.netns.Close()
			_ = testutils.UnmountNS(victim.netns)
			continue
		}
		p := cn.n.newPod("chaos", fmt.Sprintf("%s-r%d-w%d-%d", cn.n.name, ri, w, seq))
		register(p)
		if err := p.addRetrying(cn.l, 90*time.Second); err != nil {
			fail(fmt.Errorf("ADD %s on %s: %w", p.name, cn.n.name, err))
			// As kubelet does after a failed ADD.
			if derr := delRetrying(p, cn.l, time.Minute, &cn.delFailed); derr != nil {
				fail(fmt.Errorf("DEL %s after a failed ADD: %w", p.name, derr))
			}
			continue
		}
		cn.mu.Lock()
		cn.burst = append(cn.burst, p)
		cn.mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
	}
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

// sweeper runs the product's leaked-ENI sweep (cloud.SweepLeakedENIs, what
// the daemon's sweep loop runs) against the simulator: the daemon's own
// loop waits up to a minute before its first sweep, too long for a test.
type sweeper struct {
	c  *cluster
	cl *cloud.Client
}

func newSweeper(t *testing.T, c *cluster) *sweeper {
	t.Helper()
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDE2E", SecretAccessKey: "secret", Source: "e2e"}, nil
	})
	cl, err := cloud.New(context.Background(), cloud.Options{EC2Endpoint: c.sim.EC2URL, Region: "us-west-2", Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	return &sweeper{c: c, cl: cl}
}

func (s *sweeper) sweep() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Age 0: the sweep runs only once every daemon is idle, so no ENI is
	// between its create and its attach.
	return s.cl.SweepLeakedENIs(ctx, s.c.vpc, 0)
}

// settleChaos runs the runtime's CNI GC on every node, then waits until
// each pool is idle within its targets and agrees with EC2, sweeping
// leaked ENIs once the daemons are idle. Whatever has not settled by the
// deadline is reported by the invariant checks.
func settleChaos(t *testing.T, c *cluster, nodes []*chaosNode, sw *sweeper) []vpcsim.ENIView {
	t.Helper()
	for _, cn := range nodes {
		var valid []types.GCAttachment
		for _, p := range cn.live() {
			valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
		}
		if err := cn.n.do(func() error {
			return cn.n.cni().GCNetworkList(context.Background(), cn.l, &libcni.GCArgs{ValidAttachments: valid})
		}); err != nil {
			t.Errorf("CNI GC on %s: %v", cn.n.name, err)
		}
	}
	var swept []vpcsim.ENIView
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		idle := true
		for _, cn := range nodes {
			if !poolSettled(c, cn, cn.n.introspect()) {
				idle = false
			}
		}
		if idle {
			enis := map[string]vpcsim.ENIView{}
			for _, e := range c.sim.Cloud.ENIs() {
				enis[e.ID] = e
			}
			deleted, err := sw.sweep()
			if err != nil {
				t.Errorf("leaked-ENI sweep: %v", err)
			}
			for _, id := range deleted {
				swept = append(swept, enis[id])
			}
			if len(deleted) == 0 {
				return swept
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return swept
}

// poolSettled: nothing cooling, the pool within targets and idle, the
// daemon's ENIs and addresses exactly EC2's, and only live pods holding
// addresses.
func poolSettled(c *cluster, cn *chaosNode, r *ipamv1.IntrospectReply) bool {
	if r.Cooling != 0 || !strings.HasPrefix(r.LastDecision, "pool within targets") {
		return false
	}
	if len(r.Allocations) != len(cn.live()) {
		return false
	}
	if extra := len(secondaryOf(c, cn)) - len(cn.live()); extra > max(chaosWarmIPs, chaosMinimumIPs-len(cn.live())) {
		return false
	}
	return len(eniDiff(c, cn, r)) == 0
}

// secondaryOf lists the addresses EC2 has assigned to the node's ENIs
// beyond their primary IPs (secondary IPs and addresses of prefixes).
func secondaryOf(c *cluster, cn *chaosNode) []netip.Addr {
	inet, _ := c.sim.Cloud.InstanceNetwork(cn.n.vn.InstanceID)
	var out []netip.Addr
	for _, e := range inet.ENIs {
		out = append(out, e.Secondary...)
		for _, p := range e.Prefixes {
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				out = append(out, a)
			}
		}
	}
	return out
}

// eniDiff lists where the daemon's view of the node's ENIs differs from
// EC2's.
func eniDiff(c *cluster, cn *chaosNode, r *ipamv1.IntrospectReply) []string {
	inet, _ := c.sim.Cloud.InstanceNetwork(cn.n.vn.InstanceID)
	var out []string
	ec2 := map[string]vpcsim.ENIView{}
	for _, e := range inet.ENIs {
		ec2[e.ID] = e
	}
	for _, e := range r.Enis {
		v, ok := ec2[e.Id]
		if !ok {
			out = append(out, fmt.Sprintf("daemon manages %s (device %d), which EC2 has not attached to the node", e.Id, e.DeviceNumber))
			continue
		}
		delete(ec2, e.Id)
		var want []string
		for _, a := range v.Secondary {
			want = append(want, a.String())
		}
		sort.Strings(want)
		if got := append([]string(nil), e.Ips...); strings.Join(got, ",") != strings.Join(want, ",") {
			out = append(out, fmt.Sprintf("%s: the daemon knows addresses %v, EC2 has %v", e.Id, got, want))
		}
		var wantP []string
		for _, p := range v.Prefixes {
			wantP = append(wantP, p.String())
		}
		sort.Strings(wantP)
		if strings.Join(e.Prefixes, ",") != strings.Join(wantP, ",") {
			out = append(out, fmt.Sprintf("%s: the daemon knows prefixes %v, EC2 has %v", e.Id, e.Prefixes, wantP))
		}
	}
	for id, v := range ec2 {
		out = append(out, fmt.Sprintf("EC2 attached %s at device %d, unknown to the daemon", id, v.DeviceIndex))
	}
	sort.Strings(out)
	return out
}

// checkChaosInvariants checks the three sides and the packet path. Every
// failure names the side, the node, the pod and the address.
func checkChaosInvariants(t *testing.T, c *cluster, nodes []*chaosNode, all map[string]*pod, baseline map[*chaosNode][]string, round string) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Errorf("after round %q: "+format, append([]any{round}, args...)...)
	}
	podName := func(id string) string {
		if p, ok := all[id]; ok {
			return p.namespace + "/" + p.name
		}
		return "unknown container " + id
	}
	byAddr := map[netip.Addr]string{} // every address to the pod of any node configured with it
	onSecondary := 0

	for _, cn := range nodes {
		n := cn.n
		live := cn.live()
		r := n.introspect()
		inet, _ := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
		eniOf := map[netip.Addr]vpcsim.ENIView{}
		for _, e := range inet.ENIs {
			for _, a := range e.Secondary {
				eniOf[a] = e
			}
			for _, p := range e.Prefixes {
				for a := p.Addr(); p.Contains(a); a = a.Next() {
					eniOf[a] = e
				}
			}
		}

		// The daemon: exactly the live pods hold allocations, one address each.
		held := map[string]*ipamv1.IntrospectAllocation{}
		holder := map[string]string{}
		for _, a := range r.Allocations {
			if o, dup := holder[a.Ip]; dup {
				errorf("daemon of %s: %s is held by %s and by %s", n.name, a.Ip, podName(o), podName(a.Key.ContainerId))
			}
			holder[a.Ip] = a.Key.ContainerId
			held[a.Key.ContainerId] = a
		}
		liveIDs := map[string]bool{}
		for _, p := range live {
			liveIDs[p.id] = true
		}
		for _, a := range r.Allocations {
			if !liveIDs[a.Key.ContainerId] {
				errorf("daemon of %s: %s still holds %s after its DEL and GC (leaked allocation)", n.name, podName(a.Key.ContainerId), a.Ip)
			}
		}
		for _, d := range eniDiff(c, cn, r) {
			errorf("daemon of %s vs EC2: %s", n.name, d)
		}

		// Kernel state of the node, gathered once.
		k := nodeKernel(t, n)

		wantVeths := map[string]bool{}
		wantRoutes := map[netip.Addr]string{}
		want512 := map[netip.Addr]bool{}
		want1536 := map[netip.Addr]int{}
		for _, p := range live {
			who := fmt.Sprintf("%s on %s", p.namespace+"/"+p.name, n.name)
			got, err := p.podAddr()
			if err != nil {
				errorf("pod side: live pod %s: %v", who, err)
				continue
			}
			if o, dup := byAddr[got]; dup {
				errorf("pod side: %s is configured in live pods %s and %s", got, o, who)
			}
			byAddr[got] = who
			if first, ok := cn.first[p]; ok && got != first {
				errorf("pod side: steady pod %s had %s at the start, now %s", who, first, got)
			}
			a := held[p.id]
			switch {
			case a == nil:
				errorf("daemon of %s: live pod %s (%s) holds no allocation", n.name, who, got)
			case a.Ip != got.String():
				errorf("daemon of %s: live pod %s uses %s but the daemon holds %s for it", n.name, who, got, a.Ip)
			}
			e, ok := eniOf[got]
			switch {
			case !ok:
				errorf("EC2: live pod %s uses %s, which EC2 has not assigned to any ENI of %s", who, got, n.name)
			case a != nil && a.EniId != e.ID:
				errorf("EC2: live pod %s's %s is on %s, the daemon says %s", who, got, e.ID, a.EniId)
			}
			// The name Felix expects (calicoVethName: sha1 of
			// "<namespace>.<pod>"), and the table of the ENI EC2 has the
			// address on: main for device 0, 1000+device for the others
			// (the layout daemon/hostnet's TestRouteTable pins), rather
			// than what the daemon reports.
			veth := calicoVethName(p.namespace, p.name)
			wantVeths[veth] = true
			wantRoutes[got] = veth
			want512[got] = true
			if e, ok := eniOf[got]; ok && e.DeviceIndex != 0 {
				want1536[got] = 1000 + e.DeviceIndex
				onSecondary++
			}
		}
		if extra := len(secondaryOf(c, cn)) - len(live); extra > max(chaosWarmIPs, chaosMinimumIPs-len(live)) {
			errorf("EC2: %s holds %d addresses for %d live pods: %d idle, above the pool's targets (WARM_IP_TARGET=%d, MINIMUM_IP_TARGET=%d)",
				n.name, len(secondaryOf(c, cn)), len(live), extra, chaosWarmIPs, chaosMinimumIPs)
		}

		// Kernel: exactly the live pods' veths, routes, rules and SNAT entries.
		owner := func(a netip.Addr) string {
			for id, p := range all {
				if p.ip == a {
					return podName(id)
				}
			}
			return "no pod of this test"
		}
		for v := range k.veths {
			if !wantVeths[v] {
				errorf("node %s: veth %s left behind (no live pod has it)", n.name, v)
			}
		}
		for v := range wantVeths {
			if !k.veths[v] {
				errorf("node %s: live pod's veth %s is missing", n.name, v)
			}
		}
		for a, dev := range k.routes {
			if want, ok := wantRoutes[a]; !ok {
				errorf("node %s: route %s/32 dev %s left behind (last held by %s)", n.name, a, dev, owner(a))
			} else if want != dev {
				errorf("node %s: route %s/32 goes to %s, the pod's veth is %s", n.name, a, dev, want)
			}
		}
		for a, veth := range wantRoutes {
			if _, ok := k.routes[a]; !ok {
				errorf("node %s: live pod address %s has no /32 route to %s", n.name, a, veth)
			}
		}
		for a := range k.rules512 {
			if !want512[a] {
				errorf("node %s: rule 512 to %s left behind (last held by %s)", n.name, a, owner(a))
			}
		}
		for a := range want512 {
			if !k.rules512[a] {
				errorf("node %s: live pod address %s has no rule 512", n.name, a)
			}
		}
		for a, table := range k.rules1536 {
			if want, ok := want1536[a]; !ok {
				errorf("node %s: rule 1536 from %s lookup %d left behind (last held by %s)", n.name, a, table, owner(a))
			} else if want != table {
				errorf("node %s: rule 1536 from %s looks up table %d, its ENI's table is %d", n.name, a, table, want)
			}
		}
		for a, table := range want1536 {
			if _, ok := k.rules1536[a]; !ok {
				errorf("node %s: live secondary-ENI pod address %s has no rule 1536 (table %d)", n.name, a, table)
			}
		}
		for a := range k.snatPods {
			if _, ok := wantRoutes[a]; !ok {
				errorf("node %s: ipset %s still has %s (last held by %s)", n.name, snat.PodSet, a, owner(a))
			}
		}
		for a := range wantRoutes {
			if !k.snatPods[a] {
				errorf("node %s: live pod address %s is missing from ipset %s", n.name, a, snat.PodSet)
			}
		}
		if got := ourRules(t, n); strings.Join(got, "\n") != strings.Join(baseline[cn], "\n") {
			errorf("node %s: SNAT rules changed:\n%s\nwant:\n%s", n.name, strings.Join(got, "\n"), strings.Join(baseline[cn], "\n"))
		}
	}

	// EC2: no ENI left unattached (leaked) once the sweep ran.
	for _, e := range c.sim.Cloud.ENIs() {
		if e.Status != "in-use" || e.InstanceID == "" {
			errorf("EC2: %s is %s, attached to no instance (leaked ENI, tags %v)", e.ID, e.Status, e.Tags)
		}
	}

	// Packets: every live pod reaches a steady pod on the other node, with
	// its own address (inside the VPC: no SNAT).
	for i, cn := range nodes {
		peer := nodes[(i+1)%len(nodes)].steady[0]
		dst := netip.AddrPortFrom(peer.ip, chaosEchoPort)
		for _, p := range cn.live() {
			got, err := dialEcho(p.doIn, dst)
			if err != nil {
				errorf("packets: %s on %s (%s) cannot reach %s at %s: %v", p.name, cn.n.name, p.ip, peer.name, dst, err)
				continue
			}
			if f := strings.Fields(got); len(f) != 2 || netip.MustParseAddrPort(f[1]).Addr() != p.ip {
				errorf("packets: %s (%s) reached %s, which saw %q", p.name, p.ip, peer.name, got)
			}
		}
	}
	t.Logf("after round %q: %d live pods (%d on secondary ENIs) checked from EC2, the daemons and the nodes", round, len(byAddr), onSecondary)
}

// kernelState is what a node's kernel holds for pods.
type kernelState struct {
	veths     map[string]bool
	routes    map[netip.Addr]string // main-table /32 routes to pod veths: address -> veth
	rules512  map[netip.Addr]bool
	rules1536 map[netip.Addr]int
	snatPods  map[netip.Addr]bool
}

func nodeKernel(t *testing.T, n *node) kernelState {
	t.Helper()
	k := kernelState{veths: map[string]bool{}, routes: map[netip.Addr]string{}, rules512: map[netip.Addr]bool{},
		rules1536: map[netip.Addr]int{}, snatPods: map[netip.Addr]bool{}}
	err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[int]string{}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "eni") {
				k.veths[l.Attrs().Name] = true
				names[l.Attrs().Index] = l.Attrs().Name
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: routing.MainTable}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if name, ok := names[r.LinkIndex]; ok && r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones == 32 {
					a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
					k.routes[a] = name
				}
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			switch {
			case r.Priority == routing.PrioToPod && r.Dst != nil:
				a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
				k.rules512[a] = true
			case r.Priority == routing.PrioFromPod && r.Src != nil:
				a, _ := netip.AddrFromSlice(r.Src.IP.To4())
				k.rules1536[a] = r.Table
			}
		}
		out, err := exec.Command("ipset", "save", snat.PodSet).Output()
		if err != nil {
			return fmt.Errorf("ipset save %s: %w", snat.PodSet, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "add" && f[1] == snat.PodSet {
				a, err := netip.ParseAddr(f[2])
				if err != nil {
					return fmt.Errorf("ipset entry %q: %w", l, err)
				}
				k.snatPods[a] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node %s kernel state: %v", n.name, err)
	}
	return k
}
