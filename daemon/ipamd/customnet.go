package ipamd

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/vpcchain/vpcchain/daemon/cloud"
)

// ENIConfig is what the node's ENIConfig says, as the Kubernetes side
// (package eniconfig) found it.
type ENIConfig struct {
	Name string // the ENIConfig's name
	From string // how the name was chosen, for messages (`label "topology.kubernetes.io/zone"`)
	// Found: the ENIConfig exists. Problem: it exists but cannot be used
	// (malformed), or the Kubernetes side cannot tell (CRD missing, API
	// server unreachable).
	Found          bool
	Problem        string
	Subnet         string
	SecurityGroups []string
}

// customNet is custom networking's state: the ENIConfig in use, checked
// against EC2. Guarded by Daemon.mu.
type customNet struct {
	cfg ENIConfig
	// subnetID and groups are where the next ENI goes; problem is why no
	// ENI can be created now ("" when the ENIConfig is usable).
	subnetID string
	groups   []string
	problem  string
	// checked: cfg was checked against EC2 (a transient EC2 error is
	// checked again by the reconcile loop).
	checked bool
	// seq numbers the ENIConfigs in the order SetENIConfig took them
	// (taken: the last number given out). EC2 is asked outside the lock,
	// so a check may finish after a later one: its result is stored only
	// if no later ENIConfig was stored meanwhile.
	seq, taken uint64
}

// Events records Kubernetes Events on the node (nil: none).
type Events interface {
	Event(eventType, reason, message string)
}

const waitingForENIConfig = "waiting for the node's ENIConfig from the Kubernetes API"

// SetENIConfig takes the node's current ENIConfig: it is checked against
// EC2 (the subnet exists in this VPC and AZ, the security groups in this
// VPC) and, when usable, new ENIs go there; ENIs already attached keep
// their subnet and groups. When it is not usable the daemon creates no
// ENI and says why (status, log, an Event on the node) until a usable one
// arrives.
func (d *Daemon) SetENIConfig(ctx context.Context, c ENIConfig) {
	if !d.cfg.CustomNetworking {
		return
	}
	d.mu.Lock()
	d.custom.taken++
	seq := d.custom.taken
	d.mu.Unlock()
	d.applyENIConfig(ctx, c, seq)
}

// applyENIConfig checks c, the ENIConfig numbered seq, and stores the
// result unless a later ENIConfig was stored while EC2 was asked.
func (d *Daemon) applyENIConfig(ctx context.Context, c ENIConfig, seq uint64) {
	subnet, groups, problem, transient := d.checkENIConfig(ctx, c)
	d.mu.Lock()
	if seq < d.custom.seq {
		d.mu.Unlock()
		d.logf("custom networking: ENIConfig %q (%s) superseded while checked; keeping the newer one", c.Name, c.From)
		return
	}
	old, oldTransient := d.custom.problem, !d.custom.checked && d.custom.problem != ""
	oldSubnet, oldGroups := d.custom.subnetID, d.custom.groups
	d.custom = customNet{cfg: c, subnetID: subnet, groups: groups, problem: problem, checked: !transient,
		seq: seq, taken: d.custom.taken}
	d.mu.Unlock()
	switch {
	case problem != "" && problem != old && !(transient && oldTransient): // EC2's errors differ by request ID
		d.logf("custom networking: no new ENIs: %s", problem)
		d.event("Warning", "ENIConfigNotUsable", problem)
	case problem == "" && (old != "" || subnet != oldSubnet || !slices.Equal(groups, oldGroups)):
		msg := fmt.Sprintf("ENIConfig %q (%s): new ENIs go to %s with security groups %s", c.Name, c.From, subnet, strings.Join(groups, ","))
		d.logf("custom networking: %s", msg)
		d.event("Normal", "ENIConfigInUse", msg)
	}
	if problem == "" {
		d.mu.Lock()
		d.kickLocked()
		d.mu.Unlock()
	}
}

func (d *Daemon) event(typ, reason, msg string) {
	if d.events != nil {
		d.events.Event(typ, reason, msg)
	}
}

// checkENIConfig says where new ENIs go under c, or why they cannot be
// created; transient: the problem is EC2's answer, not the ENIConfig.
func (d *Daemon) checkENIConfig(ctx context.Context, c ENIConfig) (subnet string, groups []string, problem string, transient bool) {
	name := fmt.Sprintf("ENIConfig %q (%s)", c.Name, c.From)
	switch {
	case c.Problem != "" && !c.Found:
		return "", nil, c.Problem, false
	case !c.Found:
		return "", nil, name + " does not exist", false
	case c.Problem != "":
		return "", nil, name + ": " + c.Problem, false
	}
	cctx, cancel := context.WithTimeout(ctx, ec2CallTimeout)
	defer cancel()
	s, err := d.cloud.Subnet(cctx, c.Subnet)
	switch {
	case cloud.IsNotFound(err):
		return "", nil, fmt.Sprintf("%s: subnet %s does not exist", name, c.Subnet), false
	case err != nil:
		return "", nil, fmt.Sprintf("%s: checking subnet %s in EC2: %v", name, c.Subnet, err), true
	case s.VPCID != d.node.VPCID:
		return "", nil, fmt.Sprintf("%s: subnet %s is in %s, the node in %s", name, c.Subnet, s.VPCID, d.node.VPCID), false
	case s.AZ != d.node.AZ:
		return "", nil, fmt.Sprintf("%s: subnet %s is in availability zone %s, the node in %s (an ENI must be in the instance's zone)",
			name, c.Subnet, s.AZ, d.node.AZ), false
	}
	groups = c.SecurityGroups
	if len(groups) == 0 {
		// As the AWS VPC CNI: no groups named, the primary ENI's.
		return c.Subnet, slices.Clone(d.node.SecurityGroups), "", false
	}
	vpcs, err := d.cloud.SecurityGroupVPCs(cctx, groups)
	switch {
	case cloud.IsNotFound(err):
		return "", nil, fmt.Sprintf("%s: %v", name, cloud.ErrorMessage(err)), false
	case err != nil:
		return "", nil, fmt.Sprintf("%s: checking security groups %v in EC2: %v", name, groups, err), true
	}
	for _, g := range groups {
		switch v, ok := vpcs[g]; {
		case !ok:
			return "", nil, fmt.Sprintf("%s: security group %s does not exist", name, g), false
		case v != d.node.VPCID:
			return "", nil, fmt.Sprintf("%s: security group %s is in %s, the node in %s", name, g, v, d.node.VPCID), false
		}
	}
	return c.Subnet, slices.Clone(groups), "", false
}

// recheckENIConfig checks the ENIConfig again after a transient EC2 error
// (reconcile loop). It keeps the ENIConfig's number: an ENIConfig taken
// while it runs is newer and wins.
func (d *Daemon) recheckENIConfig(ctx context.Context) {
	d.mu.Lock()
	c, seq, due := d.custom.cfg, d.custom.seq, d.cfg.CustomNetworking && !d.custom.checked && d.custom.cfg.Name != ""
	d.mu.Unlock()
	if due {
		d.applyENIConfig(ctx, c, seq)
	}
}

// customNetworkReasonLocked is why custom networking creates no ENI now
// ("" when it can, or custom networking is off).
func (d *Daemon) customNetworkReasonLocked() string {
	if !d.cfg.CustomNetworking {
		return ""
	}
	if d.custom.cfg.Name == "" && d.custom.problem == "" {
		return waitingForENIConfig
	}
	return d.custom.problem
}
