//go:build peer

package e2e

// The same faults, both systems: TestChaos's rounds run against our daemon
// and the unmodified AWS VPC CNI at once, on one simulator, with the same
// warm settings, each system's losses measured the same way.
//
//	VPCCHAIN_BIN=$PWD/bin go test -count=1 -tags peer -v -run 'TestChaosSideBySide$' ./test/e2e/

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// How long recovery is measured after each round and after the last: the
// peer reconciles with EC2 every 60 s and gives surplus addresses back at
// most every 30 s (its fixed intervals), so a round's measure may end
// before it settles; what is still off after the last, longer wait stays
// off.
const (
	sideRecoverWait = 25 * time.Second
	sideFinalWait   = 100 * time.Second
	// ourSettleWait is TestChaos's: our side must settle within it.
	ourSettleWait = 45 * time.Second
)

// chaosSystem is one CNI's nodes in the side-by-side test.
type chaosSystem struct {
	name  string
	ours  bool
	nodes []*chaosNode
	// view is the daemon's own view of a node's ENIs and allocations.
	view func(cn *chaosNode) (daemonView, error)
	// runtime is the node's libcni; nil: ours, cn.n.cni().
	runtime func(cn *chaosNode) *libcni.CNIConfig
	// holder is how the daemon's view names the holder of p's address.
	holder func(p *pod) string

	leaked map[string]bool // unattached ENIs counted so far
	lost   map[string]bool // pods counted as having lost their address or connectivity so far ("kind id")
}

// daemonView is a daemon's view of its node: addresses by ENI (sorted)
// and who holds each assigned address (chaosSystem.holder).
type daemonView struct {
	enis     map[string][]string
	assigned map[string]string // address -> holder
}

// chaosTally is what one system lost in a round, or in all of them.
type chaosTally struct {
	addFailed, delFailed, notServing int // what the runtime met
	twice, notInEC2                  int // addresses handed out wrongly
	lostAddr, lostConn               int
	leakedENIs, idleAbove, viewDiff  int
	exits                            int // the daemon exited by itself
	// restart is the slowest time from a SIGKILL to serving again.
	restart time.Duration
	// recovered is how long after the faults ended the system settled,
	// if it did within waited.
	recovered, waited time.Duration
	settled           bool
}

func TestChaosSideBySide(t *testing.T) {
	b := peerBinaries(t)
	c := newSimVPC(t, "10.0.0.0/20")
	// The API server the peer's ipamd needs runs on a node of its own, as
	// EKS's control plane does: no fault round touches it.
	cp := c.addNode("m5.large", "cp")
	k := startControlPlaneWith(t, cp, b.etcd, b.apiserver, b.kubectl, controlPlaneOpts{advertise: primaryIP(t, c, cp)})

	pods := newChaosPods(c.sim)
	ours := &chaosSystem{name: "vpcchain", ours: true, leaked: map[string]bool{}, lost: map[string]bool{},
		view:   func(cn *chaosNode) (daemonView, error) { return ourView(cn.n) },
		holder: func(p *pod) string { return p.id }}
	peer := &chaosSystem{name: "aws-vpc-cni", leaked: map[string]bool{}, lost: map[string]bool{},
		holder: func(p *pod) string { return p.namespace + "/" + p.name }}
	byName := map[string]*chaosNode{}
	peers := map[string]*peerNode{}
	for _, name := range []string{"ca", "cb"} {
		n := c.addNode("m5.large", name, ourChaosEnv()...)
		n.start()
		t.Cleanup(n.stop)
		cn := &chaosNode{n: n, first: map[*pod]netip.Addr{}, l: n.chain(nil, n.snatConf())}
		ours.nodes = append(ours.nodes, cn)
		byName[name] = cn
	}
	var peerNodes []*node
	for _, name := range []string{"pa", "pb"} {
		peerNodes = append(peerNodes, c.addNode("m5.large", name))
	}
	installPeerObjects(t, k, peerNodes...)
	for _, n := range peerNodes {
		pn := startPeer(t, b, k, k.remoteServer, n, sharedChaosEnv()...)
		peers[n.name] = pn
		cn := &chaosNode{n: n, first: map[*pod]netip.Addr{}, l: pn.conf,
			newPod: func(name string) *pod { return pn.newPodIn("chaos", name) },
			add:    func(p *pod) error { return addAsKubelet(p, pn.conf, 90*time.Second) }}
		peer.nodes = append(peer.nodes, cn)
		byName[n.name] = cn
	}
	peer.view = func(cn *chaosNode) (daemonView, error) { return peerView(peers[cn.n.name]) }
	peer.runtime = func(cn *chaosNode) *libcni.CNIConfig { return peers[cn.n.name].runtime() }
	for _, cn := range ours.nodes {
		cn.n.waitReady()
	}
	for _, pn := range peers {
		pn.waitReady(t, 90*time.Second)
	}
	for _, sys := range []*chaosSystem{ours, peer} {
		for _, cn := range sys.nodes {
			for i := 0; i < chaosSteady; i++ {
				p, err := cn.startSteady(pods, fmt.Sprintf("steady-%s-%d", cn.n.name, i))
				if err != nil {
					t.Fatal(err)
				}
				cn.steady = append(cn.steady, p)
				cn.first[p] = p.ip
			}
		}
	}
	baseline := map[*chaosNode][]string{}
	for _, cn := range ours.nodes {
		baseline[cn] = ourRules(t, cn.n)
	}

	// Each node of ours has a twin of the peer's: a round's kill or reboot
	// of "ca" hits "pa" at the same moment.
	twin := map[string]string{"ca": "pa", "cb": "pb"}
	var slowMu sync.Mutex
	slowest := map[*chaosSystem]time.Duration{}
	noteBack := func(sys *chaosSystem, d time.Duration) {
		slowMu.Lock()
		slowest[sys] = max(slowest[sys], d)
		slowMu.Unlock()
	}
	hooks := chaosHooks{
		kill: func(name string) {
			delay := time.Duration(100+rand.IntN(400)) * time.Millisecond
			killed := time.Now()
			var oursBack, peerBack time.Duration
			var oursErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				n := c.nodes[name]
				n.kill9()
				time.Sleep(delay)
				n.start()
				oursErr = n.pollReady()
				oursBack = time.Since(killed)
			}()
			go func() {
				defer wg.Done()
				pn := peers[twin[name]]
				pn.kill9()
				time.Sleep(delay)
				err := pn.startAgent()
				if err == nil {
					err = pn.waitServing(90 * time.Second)
				}
				if err != nil {
					byName[twin[name]].problem(probServing, err)
				}
				peerBack = time.Since(killed)
			}()
			wg.Wait()
			noteBack(ours, oursBack)
			noteBack(peer, peerBack)
			if oursErr != nil {
				t.Errorf("daemon of %s after SIGKILL: %v", name, oursErr)
			}
			t.Logf("daemon of %s and ipamd of %s killed with SIGKILL at %s: serving again after %s and %s", name, twin[name],
				killed.UTC().Format("15:04:05.000"), oursBack.Round(100*time.Millisecond), peerBack.Round(100*time.Millisecond))
		},
		reboot: func(name string) {
			start := time.Now()
			var oursBack, peerBack time.Duration
			var oursErr, peerErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() {
				defer wg.Done()
				oursErr = rebootChaosNode(byName[name], pods, ourDaemonOps(c.nodes[name]))
				oursBack = time.Since(start)
			}()
			go func() {
				defer wg.Done()
				peerErr = rebootChaosNode(byName[twin[name]], pods, peerDaemonOps(peers[twin[name]]))
				peerBack = time.Since(start)
			}()
			wg.Wait()
			for _, err := range []error{oursErr, peerErr} {
				if err != nil {
					t.Errorf("reboot: %v", err)
				}
			}
			t.Logf("nodes %s and %s rebooted at %s: their pods back after %s and %s", name, twin[name],
				start.UTC().Format("15:04:05.000"), oursBack.Round(100*time.Millisecond), peerBack.Round(100*time.Millisecond))
		},
	}

	sweeper := newSweeper(t, c)
	all := append(append([]*chaosNode(nil), ours.nodes...), peer.nodes...)
	var rows []tallyRow
	totals := map[*chaosSystem]*chaosTally{ours: {settled: true}, peer: {settled: true}}
	// What each daemon logs when it creates an ENI: how often a kill can
	// land between the create and the attach.
	enisMade := func() (int, int) {
		o, p := 0, 0
		for _, cn := range ours.nodes {
			o += countLines(linesIn(cn.n.logPath, "pool: CreateENI"))
		}
		for _, pn := range peers {
			p += countLines(linesIn(filepath.Join(pn.dir, "aws-k8s-agent.log"), "Created a new ENI"))
		}
		return o, p
	}
	exitsBefore := 0
	for ri, r := range chaosRounds(c) {
		start := time.Now()
		before := c.sim.Snapshot()
		oursMade, peerMade := enisMade()
		faultsOff := runChaosRound(t, c.sim, all, ri, r, pods, hooks)
		after := c.sim.Snapshot()
		oursNow, peerNow := enisMade()
		t.Logf("round %q: %s of chaos, EC2 calls %d, errors %s; ENIs created by vpcchain %d, by aws-vpc-cni %d", r.name,
			time.Since(start).Round(100*time.Millisecond), after.Calls[""]-before.Calls[""], countsDiff(before.Errors, after.Errors),
			oursNow-oursMade, peerNow-peerMade)
		checkFaultsBit(t, r, before, after)
		for _, pn := range peers {
			if err := pn.mountsIntact(); err != nil {
				t.Fatal(err)
			}
		}

		tallies := map[*chaosSystem]*chaosTally{ours: {}, peer: {}}
		for _, sys := range []*chaosSystem{ours, peer} {
			for _, cn := range sys.nodes {
				for _, p := range cn.takeProblems() {
					tallies[sys].count(p.kind)
					if sys.ours {
						t.Errorf("round %q: %s: %s: %v", r.name, sys.name, p.kind, p.err)
					} else {
						t.Logf("round %q: %s: %s: %v", r.name, sys.name, p.kind, p.err)
					}
				}
			}
		}
		swept := recoverSideBySide(t, c, sweeper, tallies, faultsOff, sideRecoverWait)
		exits := 0
		for _, pn := range peers {
			exits += pn.exits()
		}
		tallies[peer].exits, exitsBefore = exits-exitsBefore, exits
		tallies[ours].leakedENIs += len(swept)
		slowMu.Lock()
		tallies[ours].restart, tallies[peer].restart = slowest[ours], slowest[peer]
		clear(slowest)
		slowMu.Unlock()
		for _, e := range swept {
			t.Logf("round %q: vpcchain leaked %s (tags %v); our daemons logged of it and of creating ENIs:\n%s", r.name, e.ID, e.Tags,
				logLinesWith(c, e.ID, "CreateENI", "create ENI"))
		}
		for _, sys := range []*chaosSystem{ours, peer} {
			measureSystem(t, c, all, sys, tallies[sys], r.name)
			totals[sys].add(tallies[sys])
			rows = append(rows, tallyRow{r.name, sys.name, tallies[sys]})
		}
		logTallies(t, "round "+r.name, rows[len(rows)-2:])
		checkChaosInvariants(t, c, ours.nodes, pods.all, baseline, r.name)
		if t.Failed() {
			t.FailNow() // later rounds would only repeat the damage
		}
	}

	// The last wait, long enough for the peer's own reconcile and
	// scale-down intervals: what is still off now stays off.
	final := map[*chaosSystem]*chaosTally{ours: {}, peer: {}}
	swept := recoverSideBySide(t, c, sweeper, final, time.Now(), sideFinalWait)
	final[ours].leakedENIs += len(swept)
	for _, sys := range []*chaosSystem{ours, peer} {
		measureSystem(t, c, all, sys, final[sys], "final")
		// The total's recovery is the slowest round's.
		rec, waited, settled := totals[sys].recovered, totals[sys].waited, totals[sys].settled
		totals[sys].add(final[sys])
		totals[sys].recovered, totals[sys].waited, totals[sys].settled = rec, waited, settled
		// What is off after the last wait stays off.
		totals[sys].idleAbove, totals[sys].viewDiff = final[sys].idleAbove, final[sys].viewDiff
		rows = append(rows, tallyRow{"after the last wait", sys.name, final[sys]})
	}
	checkChaosInvariants(t, c, ours.nodes, pods.all, baseline, "final")
	for _, sys := range []*chaosSystem{ours, peer} {
		rows = append(rows, tallyRow{"total", sys.name, totals[sys]})
	}
	logTallies(t, "every round", rows)
}

// peerDaemonOps: the peer keeps its checkpoint in /var/run/aws-node.
func peerDaemonOps(pn *peerNode) daemonOps {
	return daemonOps{
		kill:    func() error { pn.kill9(); return nil },
		wipeRun: func() error { return wipeDir(filepath.Join(pn.dir, "run")) },
		start: func() error {
			if err := pn.startAgent(); err != nil {
				return err
			}
			return pn.waitServing(90 * time.Second)
		},
	}
}

func (ct *chaosTally) count(kind string) {
	switch kind {
	case probADD:
		ct.addFailed++
	case probDEL:
		ct.delFailed++
	case probTwice:
		ct.twice++
	case probNotEC2:
		ct.notInEC2++
	case probServing:
		ct.notServing++
	}
}

// add sums the counts of a round into a total; its recovery is the
// slowest.
func (ct *chaosTally) add(o *chaosTally) {
	ct.recovered, ct.waited = max(ct.recovered, o.recovered), max(ct.waited, o.waited)
	ct.restart = max(ct.restart, o.restart)
	ct.settled = ct.settled && o.settled
	ct.addFailed += o.addFailed
	ct.delFailed += o.delFailed
	ct.notServing += o.notServing
	ct.twice += o.twice
	ct.notInEC2 += o.notInEC2
	ct.lostAddr += o.lostAddr
	ct.lostConn += o.lostConn
	ct.leakedENIs += o.leakedENIs
	ct.exits += o.exits
}

// recoverSideBySide runs the runtime's CNI GC on every node, then
// measures, for each system, how long after faultsOff every node's
// pool settled (within its targets, the daemon's view EC2's, exactly the
// live pods holding addresses) with every live pod reaching the next
// node's steady pod. It waits until both recovered, at most within (our
// side at least ourSettleWait, as TestChaos). Our leaked-ENI sweep runs
// once our pools are idle, as in TestChaos; it returns the ENIs it
// deleted.
func recoverSideBySide(t *testing.T, c *cluster, sw *sweeper, tallies map[*chaosSystem]*chaosTally, faultsOff time.Time, within time.Duration) []vpcsim.ENIView {
	t.Helper()
	start := time.Now()
	var systems []*chaosSystem
	for sys := range tallies {
		systems = append(systems, sys)
		for _, cn := range sys.nodes {
			var valid []types.GCAttachment
			for _, p := range cn.live() {
				valid = append(valid, types.GCAttachment{ContainerID: p.id, IfName: "eth0"})
			}
			rt := cn.n.cni()
			if sys.runtime != nil {
				rt = sys.runtime(cn)
			}
			if err := cn.n.do(func() error {
				return rt.GCNetworkList(t.Context(), cn.l, &libcni.GCArgs{ValidAttachments: valid})
			}); err != nil {
				if sys.ours {
					t.Errorf("CNI GC on %s: %v", cn.n.name, err)
				} else {
					t.Logf("CNI GC on %s: %v", cn.n.name, err)
				}
			}
		}
	}
	for sys, ct := range tallies {
		ct.waited = within
		if sys.ours {
			ct.waited = max(within, ourSettleWait)
		}
	}
	var swept []vpcsim.ENIView
	sweptDone := false
	for {
		pending := 0
		for _, sys := range systems {
			ct := tallies[sys]
			if ct.settled {
				continue
			}
			if time.Since(start) > ct.waited {
				continue
			}
			pending++
			if !systemSettled(c, sys) || len(unreachable(sys.nodes, time.Second)) > 0 {
				continue
			}
			if sys.ours && !sweptDone {
				deleted, err := sw.sweep()
				if err != nil {
					t.Errorf("leaked-ENI sweep: %v", err)
				}
				swept = append(swept, deleted...)
				if len(deleted) > 0 {
					continue // settle again without them
				}
				sweptDone = true
			}
			ct.settled, ct.recovered = true, time.Since(faultsOff)
		}
		if pending == 0 {
			return swept
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// systemSettled: every node's pool within its targets and idle, the
// daemon's view EC2's, exactly the live pods holding addresses.
func systemSettled(c *cluster, sys *chaosSystem) bool {
	for _, cn := range sys.nodes {
		if sys.ours {
			if !poolSettled(c, cn, cn.n.introspect()) {
				return false
			}
			continue
		}
		v, err := sys.view(cn)
		if err != nil || len(viewDiff(c, cn, v)) > 0 || idleAbove(c, cn) > 0 {
			return false
		}
		live := cn.live()
		if len(v.assigned) != len(live) {
			return false
		}
		for _, p := range live {
			if v.assigned[p.ip.String()] != sys.holder(p) {
				return false
			}
		}
	}
	return true
}

// idleAbove is how many addresses EC2 has assigned to the node beyond its
// live pods and the pool's targets (both systems keep
// max(WARM_IP_TARGET, MINIMUM_IP_TARGET - pods) idle).
func idleAbove(c *cluster, cn *chaosNode) int {
	live := len(cn.live())
	return max(0, len(secondaryOf(c, cn))-live-max(chaosWarmIPs, chaosMinimumIPs-live))
}
