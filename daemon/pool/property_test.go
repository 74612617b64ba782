package pool

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// ops is a byte stream that drives a churn run; exhausted streams read 0.
type ops struct {
	b []byte
	i int
}

func (o *ops) next() int {
	if o.i >= len(o.b) {
		return 0
	}
	o.i++
	return int(o.b[o.i-1])
}

func (o *ops) done() bool { return o.i >= len(o.b) }

// churnConfig derives a valid config from the stream.
func churnConfig(o *ops) Config {
	types := []Config{t3small(), t3medium(), m5large(), limits(4, 15, 58)}
	c := types[o.next()%len(types)]
	c.WarmENITarget = o.next() % 3
	if o.next()%2 == 0 {
		c.WarmIPTarget = o.next() % 12
		c.MinimumIPTarget = o.next() % 20
	}
	c.WarmPrefixTarget = 1 + o.next()%2
	c.EnablePrefixDelegation = o.next()%3 == 0
	c.IPCooldownPeriod = []time.Duration{0, 30 * time.Second, 130 * time.Second}[o.next()%3]
	if o.next()%3 == 0 {
		c.MaxPods = 5 + o.next()%c.MaxPods // kubelet max pods below the ENI limit
	}
	if o.next()%4 == 0 {
		c.MaxENI = 1 + o.next()%c.InstanceMaxENIs
	}
	return c
}

// runChurn plays random pod starts/stops, decisions, time, cool-offs and mode
// toggles. The simulator fails the test if two pods ever share an address,
// growth passes max pods, or a decision releases an assigned or cooling
// address or frees a busy, young or primary ENI. After the churn the pool
// must reach a fixpoint (no flapping).
func runChurn(t testing.TB, b []byte) {
	o := &ops{b: b}
	m := newSim(t, churnConfig(o))
	for !o.done() {
		switch o.next() % 9 {
		case 0, 1:
			ip, ok := m.addPod()
			if ok && !ip.IsValid() {
				t.Fatal("invalid address")
			}
		case 2:
			if len(m.pods) > 0 {
				keys := slices.SortedFunc(maps.Keys(m.pods), netip.Addr.Compare)
				m.delPod(keys[o.next()%len(keys)])
			}
		case 3, 4, 5:
			m.apply(Decide(m.cfg, m.s))
		case 6:
			m.s.Now = m.s.Now.Add(time.Duration(o.next()%45) * time.Second)
		case 7:
			if o.next()%5 == 0 {
				m.cfg.EnablePrefixDelegation = !m.cfg.EnablePrefixDelegation
			}
		case 8:
			co := CoolOff{Scope: CoolOffScope(o.next() % 3), Until: m.s.Now.Add(time.Duration(o.next()%90) * time.Second)}
			if len(m.s.ENIs) > 0 {
				co.ENIID = m.s.ENIs[o.next()%len(m.s.ENIs)].ID
			}
			m.s.CoolOffs = append(m.s.CoolOffs, co)
		}
	}
	// Quiesce: everything cools down, then the loop must settle.
	m.s.Now = m.s.Now.Add(5 * time.Minute)
	m.settle(m.cfg.ScaleDownInterval)
	if d := Decide(m.cfg, m.s); d.Action != ActionNone {
		t.Fatalf("not settled: %s %s", d.Action, d.Reason)
	}
}

func TestChurnProperty(t *testing.T) {
	n := 400
	if testing.Short() {
		n = 50
	}
	for seed := range uint64(n) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		b := make([]byte, 600)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		runChurn(t, b)
		if t.Failed() {
			t.Fatalf("seed %d", seed)
		}
	}
}

func FuzzChurn(f *testing.F) {
	f.Add([]byte{2, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 0, 3, 6, 40, 2, 0, 3, 3})
	f.Add([]byte{1, 1, 0, 3, 5, 1, 1, 1, 0, 1, 0, 0, 0, 0, 3, 0, 3, 7, 0, 3, 8, 0, 50, 0, 3})
	f.Add([]byte{3, 2, 0, 1, 0, 1, 2, 0, 0, 0, 0, 0, 1, 3, 2, 6, 44, 3, 2, 1, 3, 4, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			return
		}
		runChurn(t, b)
	})
}
