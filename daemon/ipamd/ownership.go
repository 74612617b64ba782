package ipamd

import (
	"fmt"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// foreignENI is an ENI attached to the node that the daemon leaves alone:
// it never uses its addresses, detaches it or deletes it.
type foreignENI struct {
	id        string
	dev, card int
	reason    string
	logged    bool
	inIMDS    bool // IMDS has listed it (reconcile's cheap check)
}

// foreignReason says why the daemon must leave e alone, or "" when e is
// the daemon's to manage. The daemon manages the primary ENI (the node's
// own) and the ENIs it created for this instance; everything else on the
// node belongs to someone else: EFA and trunk interfaces, ENIs on other
// network cards (another team's high-bandwidth or HPC traffic), ENIs tagged
// no_manage, ENIs another tool or another cluster's CNI attached. Taking
// any of them would strand that tool's traffic, and deleting one on scale
// down would destroy it.
func (d *Daemon) foreignReason(e cloud.ENI) string {
	switch {
	case e.NetworkCard != 0:
		return fmt.Sprintf("on network card %d (the daemon uses card 0 only)", e.NetworkCard)
	case e.DeviceNumber == 0:
		return "" // the primary ENI: the node's own, always in use
	case e.InterfaceType != "" && e.InterfaceType != "interface":
		return fmt.Sprintf("interface type %q (only %q ENIs carry pods)", e.InterfaceType, "interface")
	case e.Tags[cloud.TagNoManage] == "true":
		return "tagged " + cloud.TagNoManage + "=true"
	case e.Tags[cloud.TagCreateToken] == "":
		return "not created by vpcchain (no " + cloud.TagCreateToken + " tag)"
	case e.Tags[cloud.TagInstanceID] != d.node.InstanceID:
		return fmt.Sprintf("created by vpcchain for instance %q, not this one", e.Tags[cloud.TagInstanceID])
	case d.cfg.ClusterName != "" && e.Tags[cloud.TagClusterName] != "" && e.Tags[cloud.TagClusterName] != d.cfg.ClusterName:
		return fmt.Sprintf("created by vpcchain of cluster %q, not %q", e.Tags[cloud.TagClusterName], d.cfg.ClusterName)
	}
	return ""
}

// sortOwnedLocked splits EC2's view of the node's ENIs into the daemon's
// and the others, recording the others (logged once each) and forgetting
// foreign ENIs that are gone. An ENI the daemon already manages stays
// managed: a tag or type seen after the fact cannot take back addresses
// pods hold (tag ENIs no_manage before attaching them, as with the AWS VPC
// CNI).
func (d *Daemon) sortOwnedLocked(enis []cloud.ENI) []cloud.ENI {
	var ours []cloud.ENI
	attached := map[string]bool{}
	for _, e := range enis {
		attached[e.ID] = true
		reason := ""
		if d.ledger.enis[e.ID] == nil {
			reason = d.foreignReason(e)
		}
		if reason == "" {
			delete(d.foreign, e.ID)
			ours = append(ours, e)
			continue
		}
		f := d.foreign[e.ID]
		if f == nil || f.reason != reason {
			f = &foreignENI{id: e.ID, dev: e.DeviceNumber, card: e.NetworkCard, reason: reason}
			d.foreign[e.ID] = f
		}
		if !f.logged {
			d.logf("leaving %s (device %d, card %d) alone: %s", e.ID, e.DeviceNumber, e.NetworkCard, reason)
			f.logged = true
		}
	}
	for id := range d.foreign {
		if !attached[id] {
			delete(d.foreign, id)
		}
	}
	return ours
}

// foreignOnCard0Locked counts the foreign ENIs that take one of the
// default card's attachment slots the daemon could otherwise use.
func (d *Daemon) foreignOnCard0Locked() int {
	n := 0
	for _, f := range d.foreign {
		if f.card == 0 {
			n++
		}
	}
	return n
}

// noteForeignInIMDSLocked records which foreign ENIs IMDS lists, so that
// reconcile's cheap IMDS check notices when one goes.
func (d *Daemon) noteForeignInIMDSLocked(md []cloud.ENI) {
	for _, e := range md {
		if f := d.foreign[e.ID]; f != nil {
			f.inIMDS = true
		}
	}
}
