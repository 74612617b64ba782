//go:build kubelet

// The migration test's witnesses: a prober of the Service (a request every
// 100 ms, counted per phase) and a prober of every web pod by its own
// address until the pod is being deleted (no running pod may lose its
// network before its drain).

package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// phaseCount is what the Service prober saw in one phase of the test.
type phaseCount struct {
	name           string
	sent, failed   int
	podProbes      int
	podFailed      int
	failures       []string // the first few, for the report
	podFailureNote []string
}

// migrationProber probes the web Service's ClusterIP from a node's host
// network (kube-proxy's rules, then the VPC to whichever pod it picks) and
// each web pod directly, and attributes every probe to the current phase.
type migrationProber struct {
	t         *testing.T
	kc        *k8sCluster
	from      *node
	namespace string
	service   netip.AddrPort

	mu     sync.Mutex
	phases []*phaseCount
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startMigrationProber(t *testing.T, kc *k8sCluster, from *node, namespace string, service netip.AddrPort, first string) *migrationProber {
	p := &migrationProber{t: t, kc: kc, from: from, namespace: namespace, service: service, stop: make(chan struct{}),
		phases: []*phaseCount{{name: first}}}
	p.wg.Add(2)
	go p.probeService()
	go p.probePods()
	t.Cleanup(p.close)
	return p
}

// phase starts a new phase: the probes from now on count in it.
func (p *migrationProber) phase(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.phases = append(p.phases, &phaseCount{name: name})
}

func (p *migrationProber) current() *phaseCount { return p.phases[len(p.phases)-1] }

func (p *migrationProber) close() {
	select {
	case <-p.stop:
		return
	default:
	}
	close(p.stop)
	p.wg.Wait()
}

// probeService sends one request every 100 ms; an error or an answer that
// is not a web pod's name is a failure.
func (p *migrationProber) probeService() {
	defer p.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		var body string
		err := p.from.do(func() error {
			var err error
			body, err = httpGet(p.service)
			return err
		})
		p.mu.Lock()
		ph := p.current()
		ph.sent++
		if err != nil || !strings.HasPrefix(body, "web-") {
			ph.failed++
			if len(ph.failures) < 5 {
				ph.failures = append(ph.failures, fmt.Sprintf("%s: %q %v", time.Now().Format("15:04:05.000"), body, err))
			}
		}
		p.mu.Unlock()
	}
}

// webPod is a web pod as the API server shows it.
type webPod struct {
	name, node string
	ip         netip.Addr
	deleting   bool
}

// webPods lists the namespace's web pods that have an address and are
// Ready, and whether each is being deleted.
func (p *migrationProber) webPods() (map[string]webPod, error) {
	out, err := p.kc.k.kubectl("", "-n", p.namespace, "get", "pods", "-l", "app=web", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	pods := map[string]webPod{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue // no address yet
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			continue
		}
		deleting := len(f) == 5
		if f[len(f)-1] != "True" && !deleting {
			continue // not serving yet
		}
		pods[f[0]] = webPod{name: f[0], node: f[1], ip: ip, deleting: deleting}
	}
	return pods, nil
}

// probePods probes each web pod that is not being deleted, by its own
// address from the prober's node, round after round. A failed probe counts
// only if the pod is still not being deleted afterwards: a drained pod
// stops serving once its grace ends, which is no loss of connectivity.
func (p *migrationProber) probePods() {
	defer p.wg.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(300 * time.Millisecond):
		}
		pods, err := p.webPods()
		if err != nil {
			continue // the API server's problem, not the pods'
		}
		names := make([]string, 0, len(pods))
		for n := range pods {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			pd := pods[n]
			if pd.deleting {
				continue
			}
			var body string
			err := p.from.do(func() error {
				var err error
				body, err = httpGet(netip.AddrPortFrom(pd.ip, 8080))
				return err
			})
			failed := err != nil || body != pd.name
			if failed {
				if now, lerr := p.webPods(); lerr != nil || now[n].deleting || now[n].ip != pd.ip {
					failed = false // drained (or gone) meanwhile
				}
			}
			p.mu.Lock()
			ph := p.current()
			ph.podProbes++
			if failed {
				ph.podFailed++
				if len(ph.podFailureNote) < 5 {
					ph.podFailureNote = append(ph.podFailureNote, fmt.Sprintf("%s (%s on %s): %q %v", pd.name, pd.ip, pd.node, body, err))
				}
			}
			p.mu.Unlock()
		}
	}
}

// report stops the probers, logs each phase and fails the test for every
// failed probe.
func (p *migrationProber) report() (sent, failed int) {
	p.close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ph := range p.phases {
		p.t.Logf("phase %-34s Service probes %5d, failed %d; pod probes %5d, failed %d", ph.name, ph.sent, ph.failed, ph.podProbes, ph.podFailed)
		if ph.failed > 0 {
			p.t.Errorf("phase %s: %d of %d requests to the Service failed: %s", ph.name, ph.failed, ph.sent, strings.Join(ph.failures, "; "))
		}
		if ph.podFailed > 0 {
			p.t.Errorf("phase %s: %d probes of running, undrained pods failed: %s", ph.name, ph.podFailed, strings.Join(ph.podFailureNote, "; "))
		}
		sent += ph.sent
		failed += ph.failed
	}
	return sent, failed
}
