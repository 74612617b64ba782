package ipamd

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/pool"
)

// managedLocked is EC2's list of the node's ENIs that the daemon manages,
// less those it freed that a lagging describe still shows attached.
func (d *Daemon) managedLocked(enis []cloud.ENI, now time.Time) []cloud.ENI {
	var out []cloud.ENI
	for _, e := range d.sortOwnedLocked(enis) {
		if d.ledger.isGone(e.ID, now) && d.ledger.enis[e.ID] == nil {
			d.ledger.disagree("gone:"+e.ID, "%s was freed and EC2 accepted; a describe still shows it attached: ignored", e.ID)
			continue
		}
		out = append(out, e)
	}
	return out
}

// resyncENI adopts the addresses EC2 has on an ENI that the daemon does not
// know of (a lost AssignPrivateIpAddresses response).
func (d *Daemon) resyncENI(ctx context.Context, eniID string) {
	e, err := d.cloud.DescribeENI(ctx, eniID)
	if err != nil {
		d.logf("re-read %s after a failed call: %v", eniID, err)
		return
	}
	d.mu.Lock()
	d.ledger.adoptShown(eniID, e, d.now())
	d.mu.Unlock()
}

func (d *Daemon) createENI(ctx context.Context, dec pool.Decision) error {
	subnet, groups, err := d.eniPlacement(ctx)
	if err != nil {
		return d.growFailed(ctx, err, "")
	}
	dev, ok := d.reserveDevice()
	if !ok {
		return d.growFailed(ctx, fmt.Errorf("no free device index below %d", d.limits.MaxENIs), "")
	}
	// Adopted or given back by the time this returns.
	defer d.unreserveDevice(dev)
	in := cloud.CreateENIInput{SubnetID: subnet, Groups: groups, InstanceID: d.node.InstanceID,
		DeviceIndex: dev, Description: "vpcchain-" + d.node.InstanceID}
	if dec.Unit == pool.UnitPrefix {
		in.PrefixCount = dec.Count
	} else {
		in.IPCount = dec.Count
	}
	e, err := d.cloud.CreateAndAttachENI(ctx, in)
	if err != nil {
		d.enisMayBeLeft()
		return d.growFailed(ctx, err, "")
	}
	if err := d.adoptENI(ctx, e, d.cfg.ENIAttachTimeout); err != nil {
		// An ENI we cannot wire is worse than none: give it back.
		if ferr := d.cloud.FreeENI(ctx, e.ID, e.AttachmentID); ferr != nil {
			d.enisMayBeLeft()
			err = errors.Join(err, fmt.Errorf("free %s: %w", e.ID, ferr))
		}
		return d.growFailed(ctx, err, "")
	}
	return nil
}

// eniPlacement is the subnet and security groups of the next ENI: the
// ENIConfig's with custom networking, else pickSubnet's and the node's.
func (d *Daemon) eniPlacement(ctx context.Context) (string, []string, error) {
	if d.cfg.CustomNetworking {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.custom.subnetID == "" {
			return "", nil, fmt.Errorf("custom networking: %s", d.customNetworkReasonLocked())
		}
		return d.custom.subnetID, d.custom.groups, nil
	}
	subnet, err := d.pickSubnet(ctx)
	return subnet, d.node.SecurityGroups, err
}

// pickSubnet chooses where a new ENI goes: with subnet discovery, among the
// VPC's subnets in the node's AZ tagged kubernetes.io/role/cni (the node's
// own subnet unless tagged 0) and not reserved for other clusters
// (clusterMayUse), most free addresses first.
func (d *Daemon) pickSubnet(ctx context.Context) (string, error) {
	if !d.cfg.SubnetDiscovery {
		return d.node.SubnetID, nil
	}
	subs, err := d.subnets(ctx)
	if err != nil {
		d.logf("subnet discovery failed, using the node's subnet: %v", err)
		return d.node.SubnetID, nil
	}
	var eligible []cloud.Subnet
	for _, s := range subs {
		tag, tagged := s.Tags["kubernetes.io/role/cni"]
		if s.ID == d.node.SubnetID && tag != "0" || s.ID != d.node.SubnetID && tagged && tag != "0" && clusterMayUse(s.Tags, d.cfg.ClusterName) {
			eligible = append(eligible, s)
		}
	}
	sort.SliceStable(eligible, func(i, j int) bool { return eligible[i].Available > eligible[j].Available })
	if len(eligible) == 0 {
		return d.node.SubnetID, nil
	}
	return eligible[0].ID, nil
}

// reserveDevice picks the lowest device index no ENI uses and no ENI being
// created has taken (creations run concurrently).
func (d *Daemon) reserveDevice() (int, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	used := map[int]bool{}
	for dev := range d.grow.devReserved {
		used[dev] = true
	}
	for _, e := range d.ledger.enis {
		used[e.dev] = true
	}
	for _, f := range d.foreign {
		if f.card == 0 {
			used[f.dev] = true
		}
	}
	for dev := 1; dev < d.limits.MaxENIs; dev++ {
		if !used[dev] {
			d.grow.devReserved[dev] = true
			return dev, true
		}
	}
	return 0, false
}

func (d *Daemon) unreserveDevice(dev int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.grow.devReserved, dev)
}

// deleteENI frees an ENI the pool no longer needs. The decision was
// computed on a snapshot; the ledger decides again under the lock whether
// any address of the ENI is in use, an ADD's still being recorded
// included, and takes the ENI out of the pool before the EC2 call.
func (d *Daemon) deleteENI(ctx context.Context, eni eniState) error {
	d.mu.Lock()
	if n := d.ledger.podsOn(&eni); n > 0 {
		d.mu.Unlock()
		return fmt.Errorf("ENI %s got %d pods meanwhile: not freed", eni.id, n)
	}
	delete(d.ledger.enis, eni.id)
	d.mu.Unlock()
	if err := d.host.TeardownENI(eni.hostENI(d.cfg.MTU)); err != nil {
		d.logf("tear down host networking of %s: %v", eni.id, err)
	}
	if err := d.cloud.FreeENI(ctx, eni.id, eni.attachmentID); err != nil {
		// Still attached: put it back so the reconciler and pool see it.
		// Or detached and not deleted: the reconciles' sweep deletes it.
		d.enisMayBeLeft()
		d.mu.Lock()
		d.ledger.enis[eni.id] = &eni
		d.mu.Unlock()
		if _, serr := d.host.SetupENI(ctx, eni.hostENI(d.cfg.MTU), d.cfg.ENIAttachTimeout); serr != nil {
			d.logf("restore host networking of %s: %v", eni.id, serr)
		}
		return err
	}
	now := d.now()
	d.mu.Lock()
	forget := d.ledger.removeENI(&eni, true, now)
	d.mu.Unlock()
	if err := d.store.RecordReleased(now, []string{eni.id}, forget); err != nil {
		d.logf("record freed %s: %v", eni.id, err)
	}
	return nil
}

// subnetClusterTagPrefix marks a subnet as reserved for the named clusters
// (the AWS VPC CNI's tag: cni.networking.k8s.aws/cluster/<name>).
const subnetClusterTagPrefix = "cni.networking.k8s.aws/cluster/"

// clusterMayUse reports whether a discovered subnet is open to this
// cluster: a subnet without cluster tags is open to every cluster; one with
// them only to the clusters they name, so never to a daemon without
// CLUSTER_NAME.
func clusterMayUse(tags map[string]string, cluster string) bool {
	reserved := false
	for k := range tags {
		if name, ok := strings.CutPrefix(k, subnetClusterTagPrefix); ok {
			if cluster != "" && name == cluster {
				return true
			}
			reserved = true
		}
	}
	return !reserved
}
