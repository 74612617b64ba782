package ipamd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vpcchain/vpcchain/daemon/hostnet"
)

// The daemon runs unprivileged, its /proc/sys read-only: the privileged
// init step (vpcchaind --setup-node) sets the sysctls it needs. When one
// is wrong anyway (the step did not run, or a link came back after a
// reboot with the distribution's value before it ran), the daemon cannot
// fix it and must not crash-loop over it: it carries on, logs it, reports
// it through STATUS, and looks again on every reconcile so that a fix
// clears it.

// nodeScope keys the node-wide sysctls; ENI IDs key the per-ENI ones.
const nodeScope = "node"

// sysctlProblem is one scope's sysctls that are wrong and cannot be set.
type sysctlProblem struct {
	msg string
	// blocking problems make the node not ready: forwarding off, or a
	// strict primary ENI (which drops the SNATed and NodePort replies of
	// every pod on a secondary ENI). A strict secondary ENI does not:
	// everything the VPC delivers to it is for its own addresses, whose
	// rules route the reverse path back out of it, so even strict
	// filtering passes it, and taking the node out of service over it
	// would evict pods that work.
	blocking bool
}

// setupHint says how to clear a sysctl problem.
const setupHint = "to fix, restart the pod: its privileged init container, vpcchaind --setup-node, sets it; or set it on the node"

// noteSysctls records the outcome of a host setup call for scope (what
// names it in the log): nil clears the scope's problem, a
// *hostnet.SysctlError is recorded, logged when new or changed, and
// swallowed; any other error is returned.
func (d *Daemon) noteSysctls(scope, what string, err error, blocking bool) error {
	var se *hostnet.SysctlError
	if err != nil && !errors.As(err, &se) {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	old, had := d.sysctls[scope]
	if se == nil {
		if had {
			delete(d.sysctls, scope)
			d.logf("host networking: %s: the sysctls are right now", what)
		}
		return nil
	}
	p := sysctlProblem{msg: what + ": " + se.Error(), blocking: blocking}
	if !had || old != p {
		d.counters["host_sysctl_problems"]++
		effect := "STATUS reports the node not ready"
		if !blocking {
			effect = "its pods still work; STATUS reports it"
		}
		d.logf("host networking: %s: carrying on, %s until it is fixed: %v; %s", what, effect, se, setupHint)
	}
	d.sysctls[scope] = p
	return nil
}

// sysctlReasonLocked joins the recorded problems that are (or are not)
// blocking; the problems of ENIs the daemon no longer has are left out.
func (d *Daemon) sysctlReasonLocked(blocking bool) string {
	var msgs []string
	for scope, p := range d.sysctls {
		if p.blocking != blocking || scope != nodeScope && d.ledger.enis[scope] == nil {
			continue
		}
		msgs = append(msgs, p.msg)
	}
	if len(msgs) == 0 {
		return ""
	}
	slices.Sort(msgs)
	return strings.Join(msgs, "; ") + "; " + setupHint
}

// eniWhat names an ENI in sysctl problems.
func eniWhat(id string, dev int) string { return fmt.Sprintf("%s (device %d)", id, dev) }

// setupNodeHost runs the node-wide host setup: SetupNode and, in IPv6
// mode, SetupNodeIPv6; their sysctl problems come back as one
// *hostnet.SysctlError.
func (d *Daemon) setupNodeHost() error {
	mac := parseMAC(d.node.PrimaryMAC)
	var bad []hostnet.SysctlProblem
	keep := func(err error) error {
		var se *hostnet.SysctlError
		if errors.As(err, &se) {
			bad = append(bad, se.Problems...)
			return nil
		}
		return err
	}
	if err := keep(d.host.SetupNode(mac, d.cfg.MTU)); err != nil {
		return fmt.Errorf("set up node networking: %w", err)
	}
	if d.cfg.IPv6 {
		if err := keep(d.host.SetupNodeIPv6(mac)); err != nil {
			return fmt.Errorf("set up node IPv6 forwarding: %w", err)
		}
	}
	if len(bad) > 0 {
		return &hostnet.SysctlError{Problems: bad}
	}
	return nil
}

// recheckSysctls sets up again what has a sysctl problem, so that a fix by
// the operator (or by the init step) clears what STATUS reports. Only
// those scopes: a node without problems costs nothing here.
func (d *Daemon) recheckSysctls(ctx context.Context) {
	d.opMu.Lock() // no ENI is being freed or adopted meanwhile
	defer d.opMu.Unlock()
	d.mu.Lock()
	node := false
	var enis []eniState
	for scope := range d.sysctls {
		if scope == nodeScope {
			node = true
			continue
		}
		st := d.ledger.enis[scope]
		if st == nil {
			delete(d.sysctls, scope) // gone with its ENI
			continue
		}
		enis = append(enis, *st)
	}
	d.mu.Unlock()
	if node {
		if err := d.noteSysctls(nodeScope, nodeScope, d.setupNodeHost(), true); err != nil {
			d.logf("host networking: recheck the node: %v", err)
		}
	}
	for _, st := range enis {
		_, err := d.host.SetupENI(ctx, st.hostENI(d.cfg.MTU), 0)
		if err := d.noteSysctls(st.id, eniWhat(st.id, st.dev), err, false); err != nil {
			d.logf("host networking: recheck %s: %v", st.id, err)
		}
	}
}
