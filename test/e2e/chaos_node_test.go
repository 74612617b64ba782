package e2e

// A node of the chaos tests (its pods and the runtime's view of them) and
// the register of every pod's address.

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// chaosNode is one node of the chaos test and the pods it runs.
type chaosNode struct {
	n      *node
	l      *libcni.NetworkConfigList
	steady []*pod
	first  map[*pod]netip.Addr // steady pods' addresses since they were created

	// newPod makes a sandbox on the node and add runs ADD for it as the
	// node's kubelet does; nil means ours: n.newPod and addRetrying.
	newPod func(name string) *pod
	add    func(p *pod) error

	// up is read-held by every step of the node's workers and held by a
	// reboot: while the node is down its runtime makes no CNI call.
	up sync.RWMutex

	mu       sync.Mutex
	burst    []*pod // live burst pods
	seq      int
	problems []chaosProblem

	delFailed atomic.Int64 // DEL attempts that failed (and were retried)
}

// What a pod met on a node, as the runtime saw it.
const (
	probADD     = "ADD failed"               // even after the kubelet's retries
	probDEL     = "DEL failed"               // for a minute
	probTwice   = "address handed out twice" // an ADD returned a live pod's address
	probNotEC2  = "address not in EC2"       // an ADD returned an address EC2 has not assigned to the node
	probServing = "daemon not serving"       // after a restart or a reboot
)

type chaosProblem struct {
	kind string
	err  error
}

func (cn *chaosNode) problem(kind string, err error) {
	cn.mu.Lock()
	cn.problems = append(cn.problems, chaosProblem{kind, err})
	cn.mu.Unlock()
}

// takeProblems returns the problems met since the last call.
func (cn *chaosNode) takeProblems() []chaosProblem {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	p := cn.problems
	cn.problems = nil
	return p
}

func (cn *chaosNode) live() []*pod {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return append(append([]*pod(nil), cn.steady...), cn.burst...)
}

func (cn *chaosNode) makePod(name string) *pod {
	if cn.newPod != nil {
		return cn.newPod(name)
	}
	return cn.n.newPod("chaos", name)
}

func (cn *chaosNode) addPod(p *pod) error {
	if cn.add != nil {
		return cn.add(p)
	}
	return p.addRetrying(cn.l, 90*time.Second)
}

// startSteady adds a pod that lives through the test (or until its node
// reboots) and runs an echo server in it, the other nodes' target.
func (cn *chaosNode) startSteady(pods *chaosPods, name string) (*pod, error) {
	p := cn.makePod(name)
	pods.register(p)
	if err := cn.addPod(p); err != nil {
		return nil, fmt.Errorf("ADD steady pod %s on %s: %w", name, cn.n.name, err)
	}
	pods.added(cn, p)
	stop, err := startEcho(p.doIn, netip.AddrPortFrom(p.ip, chaosEchoPort), p.name)
	if err != nil {
		return nil, err
	}
	p.closeEcho = stop
	cn.n.c.t.Cleanup(stop)
	return p, nil
}

// chaosPods is every pod of a run and the addresses live pods hold,
// checked as each ADD returns: an address handed out twice, or one EC2 has
// not assigned to the node, counts even if the pod is gone by the round's
// end.
type chaosPods struct {
	sim  *vpcsim.Sim
	mu   sync.Mutex
	all  map[string]*pod // by CNI container ID, to name offenders
	live map[netip.Addr]*pod
}

func newChaosPods(sim *vpcsim.Sim) *chaosPods {
	return &chaosPods{sim: sim, all: map[string]*pod{}, live: map[netip.Addr]*pod{}}
}

func (cp *chaosPods) register(p *pod) {
	cp.mu.Lock()
	cp.all[p.id] = p
	cp.mu.Unlock()
}

// added records p's successful ADD on cn.
func (cp *chaosPods) added(cn *chaosNode, p *pod) {
	cp.mu.Lock()
	other, dup := cp.live[p.ip]
	cp.live[p.ip] = p
	cp.mu.Unlock()
	if dup && other != p {
		cn.problem(probTwice, fmt.Errorf("%s on %s got %s, which live pod %s on %s holds", p.name, cn.n.name, p.ip, other.name, other.n.name))
	}
	if !onENIs(cp.sim, cn.n, p.ip) {
		cn.problem(probNotEC2, fmt.Errorf("%s on %s got %s, which EC2 has not assigned to the node", p.name, cn.n.name, p.ip))
	}
}

// gone records that p's DEL starts or its sandbox died: from now on its
// address may go to another pod.
func (cp *chaosPods) gone(p *pod) {
	cp.mu.Lock()
	if cp.live[p.ip] == p {
		delete(cp.live, p.ip)
	}
	cp.mu.Unlock()
}

// onENIs: EC2 has a assigned to one of n's ENIs (a secondary address or one
// of a prefix).
func onENIs(sim *vpcsim.Sim, n *node, a netip.Addr) bool {
	inet, _ := sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	for _, e := range inet.ENIs {
		for _, s := range e.Secondary {
			if s == a {
				return true
			}
		}
		for _, p := range e.Prefixes {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// chaosHooks are what a round does to the nodes it names: kill the daemon
// with SIGKILL and bring it back, reboot the node.
type chaosHooks struct {
	kill   func(name string)
	reboot func(name string)
}
