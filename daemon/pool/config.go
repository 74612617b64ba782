// Package pool is the warm-pool algorithm of the daemon: a pure function from
// (Config, Snapshot of the node's ENIs and addresses, now) to one Decision.
// It does no I/O, starts no goroutines and never reads the clock; the daemon
// calls Decide in a loop, executes the decision against EC2 and calls again.
//
// Knobs and meanings follow the AWS VPC CNI (WARM_ENI_TARGET, WARM_IP_TARGET,
// MINIMUM_IP_TARGET, WARM_PREFIX_TARGET, ENABLE_PREFIX_DELEGATION, MAX_ENI,
// IP_COOLDOWN_PERIOD) with its known flaws fixed: cooling addresses are not
// available, growth is capped at the node's max pods, and WARM_IP_TARGET=0
// with MINIMUM_IP_TARGET set does not stall once the minimum is used up.
package pool

import (
	"fmt"
	"time"
)

// Mode says which kind of address the pool hands to pods.
type Mode int

const (
	// ModeSecondaryIP uses /32 secondary private IPs of the ENIs.
	ModeSecondaryIP Mode = iota
	// ModePrefix uses delegated /28 prefixes (16 addresses each).
	ModePrefix
)

func (m Mode) String() string {
	if m == ModePrefix {
		return "prefix"
	}
	return "secondary-ip"
}

// PrefixSize is the number of pod addresses in one delegated /28.
const PrefixSize = 16

// Config holds the warm-pool knobs and the node's derived limits.
// Start from DefaultConfig and fill the instance limits.
type Config struct {
	WarmENITarget          int  // WARM_ENI_TARGET; used only when WARM_IP_TARGET and MINIMUM_IP_TARGET are 0
	WarmIPTarget           int  // WARM_IP_TARGET
	MinimumIPTarget        int  // MINIMUM_IP_TARGET
	WarmPrefixTarget       int  // WARM_PREFIX_TARGET; prefix mode without IP targets
	EnablePrefixDelegation bool // ENABLE_PREFIX_DELEGATION
	// PrefixDelegationSupported is set by the caller when the instance can
	// take prefixes (Nitro or bare metal); without it PD falls back to /32s.
	PrefixDelegationSupported bool
	MaxENI                    int           // MAX_ENI; -1 = no limit, else applies when below InstanceMaxENIs
	IPCooldownPeriod          time.Duration // IP_COOLDOWN_PERIOD

	InstanceMaxENIs   int           // ENIs the instance type can attach (default network card)
	IPv4PerENI        int           // IPv4 addresses per ENI, including the ENI's own primary IP
	MaxPods           int           // node max pods; 0 = no cap
	MinENIAge         time.Duration // an ENI younger than this is never freed
	ScaleDownInterval time.Duration // minimum spacing between shrink actions
}

// DefaultConfig returns the documented defaults; instance limits are left 0
// for the caller to fill.
func DefaultConfig() Config {
	return Config{
		WarmENITarget:     1,
		MaxENI:            -1,
		IPCooldownPeriod:  30 * time.Second,
		MinENIAge:         time.Minute,
		ScaleDownInterval: 30 * time.Second,
	}
}

// Mode is the effective address mode.
func (c Config) Mode() Mode {
	if c.EnablePrefixDelegation && c.PrefixDelegationSupported {
		return ModePrefix
	}
	return ModeSecondaryIP
}

// MaxENIs is the number of ENIs the pool may use: the instance limit, lowered
// by MAX_ENI when that is set and smaller.
func (c Config) MaxENIs() int {
	if c.MaxENI >= 1 && c.MaxENI < c.InstanceMaxENIs {
		return c.MaxENI
	}
	return c.InstanceMaxENIs
}

// SlotsPerENI is the number of secondary /32s or /28 prefixes one ENI can
// hold: the ENI's primary IP takes one IPv4 slot and never goes to a pod.
func (c Config) SlotsPerENI() int { return c.IPv4PerENI - 1 }

// ipTargets reports whether WARM_IP_TARGET/MINIMUM_IP_TARGET drive the pool
// (they override WARM_ENI_TARGET and WARM_PREFIX_TARGET, as in the reference).
func (c Config) ipTargets() bool { return c.WarmIPTarget > 0 || c.MinimumIPTarget > 0 }

// Validate refuses values the algorithm cannot honour, naming the variable.
func (c Config) Validate() error {
	nonNeg := []struct {
		name string
		v    int
	}{
		{"WARM_ENI_TARGET", c.WarmENITarget},
		{"WARM_IP_TARGET", c.WarmIPTarget},
		{"MINIMUM_IP_TARGET", c.MinimumIPTarget},
		{"WARM_PREFIX_TARGET", c.WarmPrefixTarget},
		{"max pods", c.MaxPods},
	}
	for _, f := range nonNeg {
		if f.v < 0 {
			return fmt.Errorf("%s=%d is invalid: must be an integer >= 0", f.name, f.v)
		}
	}
	if c.MaxENI == 0 || c.MaxENI < -1 {
		return fmt.Errorf("MAX_ENI=%d is invalid: must be -1 (no limit) or >= 1", c.MaxENI)
	}
	if c.IPCooldownPeriod < 0 {
		return fmt.Errorf("IP_COOLDOWN_PERIOD=%s is invalid: must be >= 0", c.IPCooldownPeriod)
	}
	if c.EnablePrefixDelegation && c.WarmPrefixTarget == 0 && !c.ipTargets() {
		return fmt.Errorf("ENABLE_PREFIX_DELEGATION=true needs WARM_PREFIX_TARGET, WARM_IP_TARGET or MINIMUM_IP_TARGET >= 1 (all are 0)")
	}
	if c.InstanceMaxENIs < 1 {
		return fmt.Errorf("instance max ENIs=%d is invalid: must be >= 1", c.InstanceMaxENIs)
	}
	if c.IPv4PerENI < 2 {
		return fmt.Errorf("IPv4 addresses per ENI=%d is invalid: must be >= 2 (the ENI's primary IP takes one)", c.IPv4PerENI)
	}
	if c.MinENIAge < 0 || c.ScaleDownInterval < 0 {
		return fmt.Errorf("min ENI age (%s) and scale-down interval (%s) must be >= 0", c.MinENIAge, c.ScaleDownInterval)
	}
	return nil
}
