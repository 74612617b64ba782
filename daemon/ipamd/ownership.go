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
	typ, mac  string // EC2's interface type and the ENI's MAC
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
	}
	by := "vpcchain"
	switch {
	case e.Tags[cloud.TagCreateToken] != "":
	case fromAWSVPCCNI(e):
		by = "the AWS VPC CNI"
	default:
		return "not created by vpcchain (no " + cloud.TagCreateToken + " tag)"
	}
	switch {
	case e.Tags[cloud.TagInstanceID] != d.node.InstanceID:
		return fmt.Sprintf("created by %s for instance %q, not this one", by, e.Tags[cloud.TagInstanceID])
	case d.cfg.ClusterName != "" && e.Tags[cloud.TagClusterName] != "" && e.Tags[cloud.TagClusterName] != d.cfg.ClusterName:
		return fmt.Sprintf("created by %s of cluster %q, not %q", by, e.Tags[cloud.TagClusterName], d.cfg.ClusterName)
	}
	return ""
}

// awsVPCCNIDescription prefixes the description the AWS VPC CNI's ipamd
// gives the ENIs it creates ("aws-K8S-<instance id>"; its leaked-ENI sweep
// goes by the same prefix).
const awsVPCCNIDescription = "aws-K8S-"

// fromAWSVPCCNI: e was created by the AWS VPC CNI's ipamd for the instance
// its tag names. On a node moved from the AWS VPC CNI (drained first, so no
// pod holds its addresses) the daemon adopts them like its own: left
// alone, they would keep their attachment slots and their secondary
// addresses assigned in EC2 with nobody using them until the node is
// replaced. The AWS VPC CNI treats every ENI on a node it did not find
// tagged no_manage the same way, so a rollback adopts the daemon's.
func fromAWSVPCCNI(e cloud.ENI) bool {
	id := e.Tags[cloud.TagInstanceID]
	return id != "" && e.Description == awsVPCCNIDescription+id
}

// eniOrigin says where a managed ENI came from, for status.
func eniOrigin(e *eniState) string {
	switch {
	case e.primary:
		return "the node's primary ENI"
	case e.adopted:
		return "adopted: created by the AWS VPC CNI"
	}
	return "created by vpcchain"
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
			f = &foreignENI{id: e.ID, dev: e.DeviceNumber, card: e.NetworkCard, reason: reason, typ: e.InterfaceType, mac: e.MAC}
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
