package ipamd

import (
	"context"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// subnetsTTL is how long a subnet discovery answer is used. Free address
// counts only rank the candidates, so a short-lived answer is good enough,
// and a burst's concurrent ENI creations share one describe.
const subnetsTTL = 30 * time.Second

// subnetCache holds the last subnet discovery answer; one describe runs at
// a time and concurrent callers share it.
type subnetCache struct {
	mu       sync.Mutex
	subs     []cloud.Subnet
	at       time.Time
	inflight chan struct{} // closed when the describe in flight ends
	err      error         // its error
}

// subnets returns the VPC's subnets in the node's AZ, at most subnetsTTL
// old.
func (d *Daemon) subnets(ctx context.Context) ([]cloud.Subnet, error) {
	c := &d.subnetCache
	for {
		c.mu.Lock()
		if c.subs != nil && d.now().Sub(c.at) < subnetsTTL {
			subs := c.subs
			c.mu.Unlock()
			return subs, nil
		}
		if ch := c.inflight; ch != nil {
			c.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			c.mu.Lock()
			subs, err := c.subs, c.err
			c.mu.Unlock()
			if err != nil {
				return nil, err
			}
			if subs != nil {
				return subs, nil
			}
			continue
		}
		ch := make(chan struct{})
		c.inflight = ch
		c.mu.Unlock()
		subs, err := d.cloud.Subnets(ctx, d.node.VPCID, d.node.AZ)
		c.mu.Lock()
		c.inflight, c.err = nil, err
		if err == nil {
			c.subs, c.at = subs, d.now()
		}
		c.mu.Unlock()
		close(ch)
		return subs, err
	}
}

// forgetSubnets drops the cached answer (a subnet turned out full).
func (d *Daemon) forgetSubnets() {
	d.subnetCache.mu.Lock()
	d.subnetCache.subs = nil
	d.subnetCache.mu.Unlock()
}

// prefetchSubnets runs discovery in the background on a fresh node's start,
// so that the first ENI a burst needs does not wait for it.
func (d *Daemon) prefetchSubnets(ctx context.Context) {
	if _, err := d.subnets(ctx); err != nil {
		d.logf("subnet discovery: %v", err)
	}
}
