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

// subnetCache holds the last subnet discovery answer. Its lock is held
// across the describe, so concurrent callers wait for one and share it.
type subnetCache struct {
	mu   sync.Mutex
	subs []cloud.Subnet
	at   time.Time
}

// subnets returns the VPC's subnets in the node's AZ, at most subnetsTTL
// old.
func (d *Daemon) subnets(ctx context.Context) ([]cloud.Subnet, error) {
	c := &d.subnetCache
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs != nil && d.now().Sub(c.at) < subnetsTTL {
		return c.subs, nil
	}
	subs, err := d.cloud.Subnets(ctx, d.node.VPCID, d.node.AZ)
	if err != nil {
		return nil, err
	}
	c.subs, c.at = subs, d.now()
	return subs, nil
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
