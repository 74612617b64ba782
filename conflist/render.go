// Package conflist renders the vpcchain CNI chain's .conflist and installs
// it, with the chain's plugin binaries, on a node.
//
// The chain is
//
//	vpc-bridge (ipam: vpc-ipam) -> vpc-snat -> [policy-hook] -> portmap -> [bandwidth]
//
// and in IPv6 mode (ENABLE_IPv6=true) vpc-egress-v4 (ipam: host-local on
// 169.254.172.0/22) follows vpc-bridge, so IPv6 pods reach IPv4 hosts.
//
// The node-specific values (host veth prefix, MTU, the daemon's socket, the
// SNAT node config the daemon keeps) come from the same environment variables
// the daemon reads (see OptionsFromEnv), so the conflist and the daemon
// always agree. Install writes the conflist only once the daemon reports
// SERVING on the standard gRPC health service, because a container runtime
// treats "a network config exists" as "the node's network is ready".
package conflist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vpcchain/vpcchain/internal/nodeconf"
	"github.com/vpcchain/vpcchain/internal/vethname"
)

// Defaults of Options; they equal the daemon's and the plugins' defaults.
const (
	DefaultName = "vpcchain"
	// DefaultCNIVersion is 1.0.0: containerd 1.6 and 1.7 refuse a 1.1.0
	// result ("unsupported CNI result version"); VPCCHAIN_CNI_VERSION=1.1.0
	// turns on STATUS and GC for runtimes that speak it (containerd 2.x).
	DefaultCNIVersion = "1.0.0"
	DefaultVethPrefix = nodeconf.DefaultVethPrefix
	DefaultMTU        = nodeconf.DefaultMTU
	MinMTU            = nodeconf.MinMTU
	MaxMTU            = nodeconf.MaxMTU
	DefaultStateDir   = string(nodeconf.DefaultStateDir)
	DefaultSocket     = nodeconf.DefaultSocket
	DefaultSNATConfig = nodeconf.DefaultSNATConfig
	// DefaultPolicyHookKubeconfig is the kubeconfig policy-hook publishes
	// pod IPs with (patch pods/status as the vpcchain-policy-hook
	// ServiceAccount, on its own node's pods).
	DefaultPolicyHookKubeconfig = "/etc/cni/net.d/vpcchain-kubeconfig"
	// MaxIPAMTimeout is vpc-ipam's largest accepted "timeout".
	MaxIPAMTimeout = 2 * time.Minute
	// DefaultPolicyWait is how long policy-hook's ADD waits for Felix to
	// program a new pod's policy before the pod starts (0 to
	// MaxPolicyWait; 0 does not wait). Felix takes well under a second on a
	// healthy node; the bound keeps a node with Calico down usable.
	DefaultPolicyWait = 10 * time.Second
	MaxPolicyWait     = 2 * time.Minute // = policy-hook's MaxWaitTimeout
)

// Plugin types of the chain (also the binary names in the CNI bin dir).
const (
	TypeBridge     = "vpc-bridge"
	TypeIPAM       = "vpc-ipam"
	TypeSNAT       = "vpc-snat"
	TypePolicyHook = "policy-hook"
	TypePortmap    = "portmap"
	TypeBandwidth  = "bandwidth"
	TypeEgressV4   = "vpc-egress-v4"
	TypeHostLocal  = "host-local"
)

// IPv6 mode's IPv4 egress: the link-local range of the AWS VPC CNI and the
// host-local data dir kept apart from any other network's leases.
const (
	EgressV4Range   = "169.254.172.0/22"
	EgressV4DataDir = "/var/lib/cni/vpc-egress-v4"
)

// Options are the node-specific values of the conflist. Start from
// DefaultOptions or OptionsFromEnv; Render validates them.
type Options struct {
	Name       string // network name ("vpcchain"); also the daemon's allocation key's network
	CNIVersion string // "1.0.0" (default) or "1.1.0"
	VethPrefix string // vpc-bridge vethPrefix; must equal the daemon's AWS_VPC_K8S_CNI_VETHPREFIX and Felix's interface prefix
	MTU        int    // vpc-bridge mtu, 576..9001
	Socket     string // vpc-ipam socket (absolute)
	// IPAMTimeout is vpc-ipam's "timeout"; 0 leaves the plugin's default (10s).
	IPAMTimeout time.Duration
	// SNATNodeConfig is vpc-snat's nodeConfig (absolute): the file the daemon
	// keeps in its state dir.
	SNATNodeConfig string
	// PolicyHook adds the policy-hook plugin (Calico integration) after
	// vpc-snat. Off by default: it needs Calico (and a kubeconfig, which
	// the installer writes).
	PolicyHook bool
	// PolicyWait is policy-hook's waitForPolicy.timeout (0: do not wait);
	// PolicyWaitStrict fails ADD (code 11, the runtime retries) instead of
	// starting the pod when Felix has not programmed its policy in time.
	PolicyWait       time.Duration
	PolicyWaitStrict bool
	// Bandwidth appends the upstream bandwidth plugin (capabilities
	// {"bandwidth": true}) so kubernetes.io/ingress-bandwidth and
	// egress-bandwidth annotations are honoured.
	Bandwidth bool
	// IPv6 is the daemon's IPv6 mode (ENABLE_IPv6): vpc-egress-v4 joins the
	// chain after vpc-bridge.
	IPv6 bool
	// PodSGMode is vpc-bridge's podSGEnforcingMode
	// (POD_SECURITY_GROUP_ENFORCING_MODE): "strict" or "" (the default,
	// left out of the conflist) or "standard".
	PodSGMode string
}

// DefaultOptions returns the options of a node with no configuration.
func DefaultOptions() Options {
	return Options{
		Name:           DefaultName,
		CNIVersion:     DefaultCNIVersion,
		VethPrefix:     DefaultVethPrefix,
		MTU:            DefaultMTU,
		Socket:         DefaultSocket,
		SNATNodeConfig: DefaultSNATConfig,
		PolicyWait:     DefaultPolicyWait,
		PodSGMode:      nodeconf.PodSGStrict,
	}
}

// Environment variables OptionsFromEnv reads. The first ones are the
// daemon's too, parsed by the same code (internal/nodeconf).
const (
	EnvVethPrefix   = nodeconf.EnvVethPrefix
	EnvMTU          = nodeconf.EnvMTU
	EnvPodMTU       = nodeconf.EnvPodMTU
	EnvSocket       = nodeconf.EnvSocket
	EnvStateDir     = nodeconf.EnvStateDir
	EnvBandwidth    = "ENABLE_BANDWIDTH_PLUGIN" // the AWS VPC CNI's name
	EnvPolicyHook   = "VPCCHAIN_ENABLE_POLICY_HOOK"
	EnvIPAMTimout   = "VPCCHAIN_IPAM_TIMEOUT"
	EnvCNIVersion   = "VPCCHAIN_CNI_VERSION"
	EnvExclusive    = "VPCCHAIN_CNI_EXCLUSIVE"
	EnvPolicyWait   = "VPCCHAIN_POLICY_WAIT_TIMEOUT"
	EnvPolicyStrict = "VPCCHAIN_POLICY_WAIT_STRICT"
	EnvIPv4         = nodeconf.EnvIPv4
	EnvIPv6         = nodeconf.EnvIPv6
)

// Lookup reads one variable: os.LookupEnv in production, a map in tests.
type Lookup func(string) (string, bool)

// OptionsFromEnv derives Options from the environment the daemon is
// configured with (the DaemonSet gives both the same ConfigMap). Every
// invalid value is reported, naming the variable, the value and what is
// allowed. Unset and empty variables take the defaults.
func OptionsFromEnv(get Lookup) (Options, error) {
	if get == nil {
		get = os.LookupEnv
	}
	raw := func(name string) (string, bool) {
		v, ok := get(name)
		v = strings.TrimSpace(v)
		return v, ok && v != ""
	}
	var errs []error
	bad := func(name, val, allowed string) {
		errs = append(errs, fmt.Errorf("%s=%q is invalid: %s", name, val, allowed))
	}
	o := DefaultOptions()
	// The settings the daemon reads too: one parser for both.
	node, nerrs := nodeconf.Parse(nodeconf.Lookup(get))
	errs = append(errs, nerrs...)
	o.VethPrefix, o.MTU, o.Socket, o.IPv6, o.PodSGMode = node.VethPrefix, node.PodMTU, node.Socket, node.IPv6, node.PodSGMode
	o.SNATNodeConfig = node.StateDir.SNATConfig()
	if v, ok := raw(EnvCNIVersion); ok {
		if v != "1.0.0" && v != "1.1.0" {
			bad(EnvCNIVersion, v, "want 1.0.0 (containerd 1.6/1.7) or 1.1.0 (STATUS and GC; containerd 2.x)")
		} else {
			o.CNIVersion = v
		}
	}
	boolVar := func(name string, dst *bool) {
		v, ok := raw(name)
		if !ok {
			return
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(name, v, "want true or false")
			return
		}
		*dst = b
	}
	boolVar(EnvBandwidth, &o.Bandwidth)
	boolVar(EnvPolicyHook, &o.PolicyHook)
	boolVar(EnvPolicyStrict, &o.PolicyWaitStrict)
	if v, ok := raw(EnvPolicyWait); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxPolicyWait {
			bad(EnvPolicyWait, v, fmt.Sprintf("want a duration from 0s (do not wait) to %s, such as 10s", MaxPolicyWait))
		} else {
			o.PolicyWait = d
		}
	}
	if v, ok := raw(EnvIPAMTimout); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > MaxIPAMTimeout {
			bad(EnvIPAMTimout, v, fmt.Sprintf("want a duration from 1ms to %s, such as 10s", MaxIPAMTimeout))
		} else {
			o.IPAMTimeout = d
		}
	}
	if len(errs) > 0 {
		return Options{}, fmt.Errorf("invalid configuration:\n  %w", errors.Join(errs...))
	}
	return o, nil
}

// Validate reports every invalid option at once.
func (o Options) Validate() error {
	var errs []error
	if o.Name == "" || strings.ContainsAny(o.Name, "/\\ \t\n") {
		errs = append(errs, fmt.Errorf("network name %q is invalid: want a non-empty name without '/', '\\' or whitespace", o.Name))
	}
	switch o.CNIVersion {
	case "1.1.0", "1.0.0":
	default:
		errs = append(errs, fmt.Errorf("cniVersion %q is not supported: want 1.1.0 or 1.0.0", o.CNIVersion))
	}
	if err := vethname.ValidatePrefix(o.VethPrefix); err != nil {
		errs = append(errs, err)
	}
	if o.MTU < MinMTU || o.MTU > MaxMTU {
		errs = append(errs, fmt.Errorf("mtu %d is invalid: want %d to %d", o.MTU, MinMTU, MaxMTU))
	}
	if o.PodSGMode != "" {
		if err := nodeconf.ValidPodSGMode(o.PodSGMode); err != nil {
			errs = append(errs, fmt.Errorf("podSGEnforcingMode %q is invalid: %w", o.PodSGMode, err))
		}
	}
	if !filepath.IsAbs(o.Socket) {
		errs = append(errs, fmt.Errorf("daemon socket %q is invalid: want an absolute path", o.Socket))
	}
	if !filepath.IsAbs(o.SNATNodeConfig) {
		errs = append(errs, fmt.Errorf("vpc-snat nodeConfig %q is invalid: want an absolute path", o.SNATNodeConfig))
	}
	if o.IPAMTimeout < 0 || o.IPAMTimeout > MaxIPAMTimeout {
		errs = append(errs, fmt.Errorf("vpc-ipam timeout %s is invalid: want 0 (plugin default) to %s", o.IPAMTimeout, MaxIPAMTimeout))
	}
	if o.PolicyWait < 0 || o.PolicyWait > MaxPolicyWait {
		errs = append(errs, fmt.Errorf("policy wait %s is invalid: want 0 (do not wait) to %s", o.PolicyWait, MaxPolicyWait))
	}
	return errors.Join(errs...)
}

// PluginTypes lists the chain's plugin types in order (vpc-ipam included,
// right after vpc-bridge): the binaries that must be in the CNI bin dir.
func (o Options) PluginTypes() []string {
	t := []string{TypeBridge, TypeIPAM}
	if o.IPv6 {
		t = append(t, TypeEgressV4, TypeHostLocal)
	}
	t = append(t, TypeSNAT)
	if o.PolicyHook {
		t = append(t, TypePolicyHook)
	}
	t = append(t, TypePortmap)
	if o.Bandwidth {
		t = append(t, TypeBandwidth)
	}
	return t
}

// The conflist's JSON shape; struct field order is the output order.
type (
	confList struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []any  `json:"plugins"`
	}
	bridgeConf struct {
		Type       string   `json:"type"`
		VethPrefix string   `json:"vethPrefix"`
		MTU        int      `json:"mtu"`
		PodSGMode  string   `json:"podSGEnforcingMode,omitempty"`
		IPAM       ipamConf `json:"ipam"`
	}
	ipamConf struct {
		Type    string `json:"type"`
		Socket  string `json:"socket"`
		Timeout string `json:"timeout,omitempty"`
	}
	snatConf struct {
		Type       string `json:"type"`
		NodeConfig string `json:"nodeConfig"`
	}
	egressConf struct {
		Type string        `json:"type"`
		MTU  int           `json:"mtu"`
		IPAM hostLocalConf `json:"ipam"`
	}
	hostLocalConf struct {
		Type    string                `json:"type"`
		Ranges  [][]map[string]string `json:"ranges"`
		DataDir string                `json:"dataDir"`
	}
	// policyHookConf is plugins/policy-hook's config: the veth prefix it
	// checks names against (= vpc-bridge's), the kubeconfig it publishes
	// pod IPs with and, unless the wait is 0, waitForPolicy (Felix's
	// default endpoint-status directory).
	policyHookConf struct {
		Type          string    `json:"type"`
		VethPrefix    string    `json:"vethPrefix"`
		Kubeconfig    string    `json:"kubeconfig"`
		WaitForPolicy *waitConf `json:"waitForPolicy,omitempty"`
	}
	waitConf struct {
		Timeout string `json:"timeout"`
		Strict  bool   `json:"strict"`
	}
	capConf struct {
		Type         string          `json:"type"`
		Capabilities map[string]bool `json:"capabilities"`
		SNAT         *bool           `json:"snat,omitempty"`
	}
)

// Render returns the chain's .conflist for o (indented JSON, final newline).
// The same options always give the same bytes.
func Render(o Options) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	ipam := ipamConf{Type: TypeIPAM, Socket: o.Socket}
	if o.IPAMTimeout > 0 {
		ipam.Timeout = o.IPAMTimeout.String()
	}
	bridge := bridgeConf{Type: TypeBridge, VethPrefix: o.VethPrefix, MTU: o.MTU, IPAM: ipam}
	if o.PodSGMode == nodeconf.PodSGStandard {
		bridge.PodSGMode = o.PodSGMode
	}
	plugins := []any{bridge}
	if o.IPv6 {
		plugins = append(plugins, egressConf{Type: TypeEgressV4, MTU: o.MTU, IPAM: hostLocalConf{Type: TypeHostLocal,
			Ranges: [][]map[string]string{{{"subnet": EgressV4Range}}}, DataDir: EgressV4DataDir}})
	}
	plugins = append(plugins, snatConf{Type: TypeSNAT, NodeConfig: o.SNATNodeConfig})
	if o.PolicyHook {
		hook := policyHookConf{Type: TypePolicyHook, VethPrefix: o.VethPrefix, Kubeconfig: DefaultPolicyHookKubeconfig}
		if o.PolicyWait > 0 {
			hook.WaitForPolicy = &waitConf{Timeout: o.PolicyWait.String(), Strict: o.PolicyWaitStrict}
		}
		plugins = append(plugins, hook)
	}
	snat := true // portmap SNATs hairpin (pod -> own hostPort) traffic, as the reference does
	plugins = append(plugins, capConf{Type: TypePortmap, Capabilities: map[string]bool{"portMappings": true}, SNAT: &snat})
	if o.Bandwidth {
		plugins = append(plugins, capConf{Type: TypeBandwidth, Capabilities: map[string]bool{"bandwidth": true}})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(confList{CNIVersion: o.CNIVersion, Name: o.Name, Plugins: plugins}); err != nil {
		return nil, fmt.Errorf("conflist: %w", err)
	}
	return buf.Bytes(), nil
}
