package pool

import (
	"testing"
	"time"
)

// TestReferenceExamples runs the decision loop to a fixpoint after each pod
// start and compares with the reference's documented outcomes
// (docs/eni-and-ip-target.md) plus our own batching numbers.
func TestReferenceExamples(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		pods      int
		wantENIs  int
		wantTotal int
		maxCalls  int // EC2 mutations allowed to get there (batching)
	}{
		{"m5.large defaults, fresh node", m5large(), 0, 1, 9, 1},
		{"m5.large defaults, 9 pods", m5large(), 9, 2, 18, 2},
		{"t3.small WARM_ENI_TARGET=1, 5 pods", t3small(), 5, 3, 9, 3},
		{"t3.small WARM_IP_TARGET=2 MINIMUM_IP_TARGET=5, 0 pods", with(t3small(), warmIP(2), minIP(5)), 0, 2, 5, 2},
		{"p3dn.24xlarge WARM_ENI_TARGET=1, 3 pods", p3dn(), 3, 2, 98, 2},
		{"p3dn.24xlarge WARM_IP_TARGET=5 MINIMUM_IP_TARGET=10, 45 pods", with(p3dn(), warmIP(5), minIP(10)), 45, 2, 50, 42},
		{"m5.large PD WARM_PREFIX_TARGET=1, fresh node", with(m5large(), pd(1)), 0, 1, 16, 1},
		{"m5.large PD WARM_PREFIX_TARGET=1, 1 pod", with(m5large(), pd(1)), 1, 1, 32, 2},
		{"m5.large PD WARM_PREFIX_TARGET=1, 16 pods", with(m5large(), pd(1)), 16, 1, 32, 2},
		{"m5.large PD WARM_PREFIX_TARGET=1, 17 pods", with(m5large(), pd(1)), 17, 1, 48, 3},
		{"m5.large PD WARM_IP_TARGET=5, 12 pods", with(m5large(), pd(0), warmIP(5)), 12, 1, 32, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newSim(t, tt.cfg)
			m.settle(time.Second)
			for i := range tt.pods {
				if _, ok := m.addPod(); !ok {
					t.Fatalf("pod %d got no address: %s", i+1, Decide(m.cfg, m.s).Reason)
				}
				m.settle(time.Second)
			}
			enis, total, _, _ := m.held()
			if enis != tt.wantENIs || total != tt.wantTotal {
				t.Errorf("ENIs/total = %d/%d, want %d/%d", enis, total, tt.wantENIs, tt.wantTotal)
			}
			if m.calls > tt.maxCalls {
				t.Errorf("%d EC2 calls, want <= %d", m.calls, tt.maxCalls)
			}
		})
	}
}

// TestMaxPodsCap: whatever the warm targets, pods up to max pods always get
// an address and the pool never holds more than max pods (prefix mode: the
// last /28 may overshoot by less than 16).
func TestMaxPodsCap(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantTotal int // at max pods
	}{
		{"t3.medium maxPods 17, defaults", t3medium(), 15},
		{"t3.medium maxPods 17, WARM_IP_TARGET=20 MINIMUM_IP_TARGET=30", with(t3medium(), warmIP(20), minIP(30)), 15},
		{"t3.medium kubelet maxPods 12, WARM_ENI_TARGET=2", with(t3medium(), warmENI(2), maxPods(12)), 12},
		{"m5.large kubelet maxPods 17, defaults", with(m5large(), maxPods(17)), 17},
		{"m5.large kubelet maxPods 20, MINIMUM_IP_TARGET=27", with(m5large(), minIP(27), maxPods(20)), 20},
		{"t3.medium PD maxPods 17, WARM_PREFIX_TARGET=4", with(t3medium(), pd(4), maxPods(17)), 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newSim(t, tt.cfg)
			m.settle(time.Second) // apply() checks the cap on every growth
			for len(m.pods) < min(tt.cfg.MaxPods, tt.wantTotal) {
				if _, ok := m.addPod(); !ok {
					t.Fatalf("pod %d got no address: %s", len(m.pods)+1, Decide(m.cfg, m.s).Reason)
				}
				m.settle(time.Second)
			}
			if _, total, _, _ := m.held(); total != tt.wantTotal {
				t.Errorf("total at %d pods = %d, want %d", len(m.pods), total, tt.wantTotal)
			}
		})
	}
}

// TestScaleDownConverges: after churn stops the pool shrinks back to its
// targets, one shrink per spacing interval, and then stays put.
func TestScaleDownConverges(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		wantENIs  int
		wantTotal int
	}{
		{"warm ENI", m5large(), 1, 9},
		{"warm IP 3", with(m5large(), warmIP(3)), 1, 3},
		{"warm IP 3 min 12", with(m5large(), warmIP(3), minIP(12)), 2, 12},
		{"PD warm prefix 1", with(m5large(), pd(1)), 1, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newSim(t, tt.cfg)
			m.settle(time.Second)
			for range 25 {
				if _, ok := m.addPod(); !ok {
					t.Fatal("no address")
				}
				m.settle(time.Second)
			}
			for ip := range m.pods {
				m.delPod(ip)
			}
			// Step by the spacing: apply() fails on a shrink inside it.
			m.s.Now = m.s.Now.Add(2 * time.Minute)
			m.settle(tt.cfg.ScaleDownInterval)
			enis, total, _, _ := m.held()
			if enis != tt.wantENIs || total != tt.wantTotal {
				t.Errorf("ENIs/total = %d/%d, want %d/%d", enis, total, tt.wantENIs, tt.wantTotal)
			}
		})
	}
}
