// Package nodeconf parses the node-wide settings that the warm-pool daemon
// and the installer both read from the same ConfigMap (the veth prefix, the
// MTUs, the state directory and socket, the pods' address family), with one
// set of rules and messages, and names the files of the state directory.
// Every invalid value is reported, naming the variable, the value and what
// is allowed; unset and empty variables take the defaults.
package nodeconf

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vpcchain/vpcchain/internal/vethname"
)

// The variables Parse reads (the AWS VPC CNI's names where it has them).
const (
	EnvVethPrefix = "AWS_VPC_K8S_CNI_VETHPREFIX"
	EnvMTU        = "AWS_VPC_ENI_MTU"
	EnvPodMTU     = "POD_MTU" // the pod MTU, default AWS_VPC_ENI_MTU
	EnvStateDir   = "VPCCHAIN_STATE_DIR"
	EnvSocket     = "VPCCHAIN_SOCKET"
	EnvIPv4       = "ENABLE_IPv4"
	EnvIPv6       = "ENABLE_IPv6"
	// EnvPodSGMode is how a pod with a branch ENI (security groups for
	// pods) is wired: PodSGStrict or PodSGStandard.
	EnvPodSGMode = "POD_SECURITY_GROUP_ENFORCING_MODE"
	// EnvWireGuard switches on Calico's WireGuard encryption of traffic
	// between nodes (calico-policy-only.yaml reads the same key); pods then
	// get an MTU that leaves room for WireGuard's headers.
	EnvWireGuard = "ENABLE_WIREGUARD"
)

// WireGuard's overhead on a packet: the outer IP header, UDP (8) and
// WireGuard's data header and tag (16 + 16): 60 bytes over IPv4, 80 over
// IPv6. Calico sizes its wireguard.cali link the same way (host MTU minus
// these); a pod larger than that link would have its full-size packets
// dropped or fragmented.
const (
	WireGuardOverhead4 = 60
	WireGuardOverhead6 = 80
)

// The values of EnvPodSGMode, the AWS VPC CNI's: strict (the default) sends
// everything a branch-ENI pod sends and gets through its branch, so its
// security groups see all of it, the node's and its pods' traffic too;
// standard routes traffic to the pod from its own node directly, as for any
// pod (kubelet probes, same-node pods and NodePorts are not filtered by the
// branch's groups), and only what the pod sends elsewhere out of the branch.
const (
	PodSGStrict   = "strict"
	PodSGStandard = "standard"
)

// ValidPodSGMode checks a value of EnvPodSGMode (or vpc-bridge's
// podSGEnforcingMode).
func ValidPodSGMode(v string) error {
	if v != PodSGStrict && v != PodSGStandard {
		return fmt.Errorf("want %s (the default) or %s", PodSGStrict, PodSGStandard)
	}
	return nil
}

// Defaults and limits.
const (
	DefaultVethPrefix = "eni"
	DefaultMTU        = 9001
	MinMTU            = 576
	MaxMTU            = 9001
	// MinMTUIPv6 is IPv6's minimum link MTU (RFC 8200), the AWS VPC CNI's
	// lower bound in IPv6 mode.
	MinMTUIPv6      = 1280
	DefaultStateDir = StateDir("/var/run/vpcchain")
	// DefaultSocket and DefaultSNATConfig are DefaultStateDir's Socket()
	// and SNATConfig(), as constants for the plugins' defaults.
	DefaultSocket     = string(DefaultStateDir) + "/ipamd.sock"
	DefaultSNATConfig = string(DefaultStateDir) + "/snat.json"
)

// StateDir is the daemon's state directory (an absolute path); its methods
// name the files in it.
type StateDir string

func (d StateDir) file(name string) string {
	return strings.TrimRight(string(d), "/") + "/" + name
}

// Socket is the daemon's API socket (unless VPCCHAIN_SOCKET moves it).
func (d StateDir) Socket() string { return d.file("ipamd.sock") }

// Store is the allocation store.
func (d StateDir) Store() string { return d.file("ipam.db") }

// SNATConfig is the node's SNAT configuration, which the daemon writes and
// the vpc-snat plugin reads.
func (d StateDir) SNATConfig() string { return d.file("snat.json") }

// Settings are the node-wide settings.
type Settings struct {
	VethPrefix string   // AWS_VPC_K8S_CNI_VETHPREFIX
	MTU        int      // AWS_VPC_ENI_MTU: the ENIs' MTU
	PodMTU     int      // POD_MTU: the pods' MTU (default MTU)
	StateDir   StateDir // VPCCHAIN_STATE_DIR
	Socket     string   // VPCCHAIN_SOCKET (default StateDir.Socket())
	// IPv6: IPv6 pods (ENABLE_IPv6=true with ENABLE_IPv4=false); pods have
	// one family, so both or neither is refused.
	IPv6 bool
	// PodSGMode is POD_SECURITY_GROUP_ENFORCING_MODE (PodSGStrict).
	PodSGMode string
	// WireGuard is ENABLE_WIREGUARD: PodMTU defaults to MTU minus
	// WireGuard's overhead, and a larger POD_MTU is refused.
	WireGuard bool
}

// Lookup reads one variable: os.LookupEnv in production, a map in tests.
type Lookup func(string) (string, bool)

// Parse reads the settings; errs lists every invalid value (Settings then
// holds the defaults for them).
func Parse(get Lookup) (s Settings, errs []error) {
	raw := func(name string) (string, bool) {
		v, ok := get(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	bad := func(name, val, allowed string) {
		errs = append(errs, fmt.Errorf("%s=%q is invalid: %s", name, val, allowed))
	}
	s = Settings{VethPrefix: DefaultVethPrefix, MTU: DefaultMTU, StateDir: DefaultStateDir, PodSGMode: PodSGStrict}
	if v, ok := raw(EnvVethPrefix); ok {
		if err := vethname.ValidatePrefix(v); err != nil {
			bad(EnvVethPrefix, v, err.Error())
		} else {
			s.VethPrefix = v
		}
	}
	if v, ok := raw(EnvPodSGMode); ok {
		if err := ValidPodSGMode(v); err != nil {
			bad(EnvPodSGMode, v, err.Error())
		} else {
			s.PodSGMode = v
		}
	}
	// mtu sets *dst from name when it holds a valid MTU, and says so.
	mtu := func(name string, dst *int) bool {
		v, ok := raw(name)
		if !ok {
			return false
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < MinMTU || n > MaxMTU {
			bad(name, v, fmt.Sprintf("want an integer from %d to %d", MinMTU, MaxMTU))
			return false
		}
		*dst = n
		return true
	}
	mtu(EnvMTU, &s.MTU)
	s.PodMTU = s.MTU
	podMTUValid := mtu(EnvPodMTU, &s.PodMTU)
	abs := func(name, what string, dst *string) {
		v, ok := raw(name)
		if !ok {
			return
		}
		if !filepath.IsAbs(v) {
			bad(name, v, "want an absolute path"+what)
			return
		}
		*dst = v
	}
	dir := string(s.StateDir)
	abs(EnvStateDir, "", &dir)
	if s.StateDir = StateDir(strings.TrimRight(dir, "/")); s.StateDir == "" {
		s.StateDir = "/"
	}
	s.Socket = s.StateDir.Socket()
	abs(EnvSocket, " to the daemon's unix socket", &s.Socket)
	boolean := func(name string, def bool) bool {
		v, ok := raw(name)
		if !ok {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(name, v, "want true or false")
			return def
		}
		return b
	}
	switch v4, v6 := boolean(EnvIPv4, true), boolean(EnvIPv6, false); {
	case v4 && v6:
		errs = append(errs, errors.New("ENABLE_IPv4=true ENABLE_IPv6=true: dual-stack pods are not supported; set ENABLE_IPv4=false for IPv6 pods (their IPv4 egress goes through the vpc-egress-v4 plugin) or ENABLE_IPv6=false for IPv4 pods"))
	case !v4 && !v6:
		errs = append(errs, errors.New("ENABLE_IPv4=false ENABLE_IPv6=false: pods would get no address; enable one family"))
	default:
		s.IPv6 = v6
	}
	s.WireGuard = boolean(EnvWireGuard, false)
	_, podMTUSet := raw(EnvPodMTU)
	switch over := s.WireGuardOverhead(); {
	case !s.WireGuard:
	case !podMTUSet:
		if s.PodMTU = s.MTU - over; s.PodMTU < MinMTU {
			errs = append(errs, fmt.Errorf("%s=%d with %s=true is invalid: WireGuard's %d bytes leave pods %d, below %d", EnvMTU, s.MTU, EnvWireGuard, over, s.PodMTU, MinMTU))
		}
	case podMTUValid && s.PodMTU > s.MTU-over:
		errs = append(errs, fmt.Errorf("%s=%d with %s=true is invalid: WireGuard adds %d bytes to each packet, so pods may have at most %s %d - %d = %d (or leave %s unset for that)",
			EnvPodMTU, s.PodMTU, EnvWireGuard, over, EnvMTU, s.MTU, over, s.MTU-over, EnvPodMTU))
	}
	if s.IPv6 {
		low := func(name string, mtu int) {
			if mtu < MinMTUIPv6 {
				errs = append(errs, fmt.Errorf("%s=%d with ENABLE_IPv6=true is invalid: IPv6 needs an MTU from %d to %d", name, mtu, MinMTUIPv6, MaxMTU))
			}
		}
		low(EnvMTU, s.MTU)
		// An unset POD_MTU is the ENI MTU (less WireGuard's overhead): one
		// message for both, unless WireGuard took it below.
		if podMTUSet || s.WireGuard && s.MTU >= MinMTUIPv6 {
			low(EnvPodMTU, s.PodMTU)
		}
	}
	return s, errs
}

// WireGuardOverhead is what WireGuard adds to a packet of the pods' family.
func (s Settings) WireGuardOverhead() int {
	if s.IPv6 {
		return WireGuardOverhead6
	}
	return WireGuardOverhead4
}
