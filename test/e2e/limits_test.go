package e2e

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestPoolLimits: when the node cannot give an address (max pods, subnet
// full, max ENIs) ADD fails with "try again later" and says why; once space
// frees up the pending pod gets an address with no operator action.
func TestPoolLimits(t *testing.T) {
	cases := []struct {
		name   string
		subnet string
		env    []string
		fits   int    // pods that get an address
		reason string // in the refusal
	}{
		{"max pods", "10.0.0.0/20", []string{"MAX_PODS=3"}, 3, "max pods reached"},
		// A /28 holds 11 usable addresses: the node's primary IP and 9
		// secondary IPs on the primary ENI leave one, too few for an ENI
		// with addresses.
		{"subnet full", "10.0.0.0/28", nil, 9, "subnet full"},
		{"max ENIs", "10.0.0.0/20", []string{"MAX_ENI=1"}, 9, "pool cannot grow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"IP_COOLDOWN_PERIOD=1"}, tc.env...)
			c := newClusterInSubnet(t, tc.subnet, "m5.large", []string{"l"}, env...)
			n := c.nodes["l"]
			l := n.chain(nil)
			var pods []*pod
			for i := 0; i < tc.fits; i++ {
				p := n.newPod("default", fmt.Sprintf("fit-%d", i))
				if err := p.addRetrying(l, time.Minute); err != nil {
					t.Fatalf("pod %d of %d: %v", i+1, tc.fits, err)
				}
				pods = append(pods, p)
			}
			pending := n.newPod("default", "pending")
			// The pool may still be trying; the refusal must settle on the reason.
			var last error
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				_, last = pending.add(l)
				if last == nil {
					t.Fatalf("pod %d got %s beyond the limit", tc.fits+1, pending.ip)
				}
				_ = pending.del(l)
				if strings.Contains(last.Error(), tc.reason) {
					break
				}
				time.Sleep(300 * time.Millisecond)
			}
			var ce *types.Error
			if !errors.As(last, &ce) || ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, tc.reason) {
				t.Fatalf("refusal %v, want code 11 saying %q", last, tc.reason)
			}
			// Space frees up: the runtime's retries succeed on their own.
			if err := pods[0].del(l); err != nil {
				t.Fatal(err)
			}
			if err := pending.addRetrying(l, time.Minute); err != nil {
				t.Fatalf("pending pod after a DEL: %v", err)
			}
			owner := eniOfAddr(t, c.sim, n.vn.InstanceID)
			if _, ok := owner(pending.ip); !ok {
				t.Fatalf("pending pod got %s, not EC2's on this node", pending.ip)
			}
		})
	}
}
