// Package config reads the daemon's configuration from the environment,
// honouring the AWS VPC CNI's variable names and meanings so users can
// migrate, and refusing any invalid value at start with a message naming the
// variable, the value and what is allowed (the reference silently falls back).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vpcchain/vpcchain/internal/nodeconf"
)

// WARM_POOL_MODE values.
const (
	WarmPoolStatic   = "static"
	WarmPoolAdaptive = "adaptive"
)

// Config is the daemon's validated configuration.
type Config struct {
	WarmENITarget    int // WARM_ENI_TARGET (1)
	WarmIPTarget     int // WARM_IP_TARGET (0 = unset)
	MinimumIPTarget  int // MINIMUM_IP_TARGET (0 = unset)
	WarmPrefixTarget int // WARM_PREFIX_TARGET (1)
	// WarmPoolMode is WARM_POOL_MODE: "static" (default: the targets as set)
	// or "adaptive" (the warm target follows the pods' arrival rate and
	// EC2's measured latency, within the static targets; ipamd/adaptive.go).
	WarmPoolMode            string
	EnablePrefixDelegation  bool          // ENABLE_PREFIX_DELEGATION (false)
	MaxENI                  int           // MAX_ENI (-1 = instance limit; set to 0 or lower too)
	IPCooldownPeriod        time.Duration // IP_COOLDOWN_PERIOD, seconds (30)
	MaxPods                 int           // MAX_PODS (0 = from the instance type's formula)
	MTU                     int           // AWS_VPC_ENI_MTU (9001)
	VethPrefix              string        // AWS_VPC_K8S_CNI_VETHPREFIX (eni)
	ExternalSNAT            bool          // AWS_VPC_K8S_CNI_EXTERNALSNAT (false)
	ExcludeSNATCIDRs        []netip.Prefix
	RandomizeSNAT           string // AWS_VPC_K8S_CNI_RANDOMIZESNAT: prng|hashrandom|none (prng)
	ConnMark                uint32 // AWS_VPC_K8S_CNI_CONNMARK (0x80)
	IPTablesMode            string // VPCCHAIN_IPTABLES_MODE: auto|nft|legacy (auto: where the node's other rules are)
	SubnetDiscovery         bool   // ENABLE_SUBNET_DISCOVERY (true)
	ClusterName             string // CLUSTER_NAME
	DisableLeakedENICleanup bool   // DISABLE_LEAKED_ENI_CLEANUP (false)
	// CustomNetworking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG): secondary ENIs
	// go to the subnet, with the security groups, of the node's ENIConfig,
	// and the primary ENI carries no pods.
	CustomNetworking bool
	// EnablePodENI (ENABLE_POD_ENI): security groups for pods. The daemon
	// declares the node's capability to AWS's VPC resource controller (the
	// CNINode feature SecurityGroupsForPods), keeps one ENI slot of the
	// default card free for the trunk ENI the controller attaches, and
	// answers an ADD for a pod the controller gave a branch ENI with that
	// branch instead of a pool address.
	EnablePodENI bool
	// IPv6 (ENABLE_IPv6=true with ENABLE_IPv4=false): pods get IPv6
	// addresses from a /80 prefix on the primary ENI, as in an EKS IPv6
	// cluster; the IPv4 warm-pool knobs do not apply.
	IPv6                   bool
	ENIConfigLabelDef      string // ENI_CONFIG_LABEL_DEF (k8s.amazonaws.com/eniConfig)
	ENIConfigAnnotationDef string // ENI_CONFIG_ANNOTATION_DEF (k8s.amazonaws.com/eniConfig)
	// NodeName (MY_NODE_NAME, from the downward API) is this node's
	// Kubernetes name; custom networking reads the Node for its ENIConfig.
	NodeName string
	// PodName and PodNamespace (MY_POD_NAME, MY_POD_NAMESPACE, from the
	// downward API) name the daemon's own pod: the orphan check trusts a
	// runtime's list of sandboxes only when it holds this pod. Both unset:
	// the daemon is not run as a pod, and the check cannot tell.
	PodName, PodNamespace string
	// Kubeconfig (KUBECONFIG): "" is the in-cluster service account.
	Kubeconfig string

	StateDir         string // VPCCHAIN_STATE_DIR (/var/run/vpcchain)
	Socket           string // VPCCHAIN_SOCKET (<state dir>/ipamd.sock)
	ENIAttachTimeout time.Duration

	EC2Endpoint  string  // AWS_ENDPOINT_URL_EC2 / AWS_EC2_ENDPOINT (SDK default)
	IMDSEndpoint string  // AWS_EC2_METADATA_SERVICE_ENDPOINT (SDK default)
	EC2QPS       float64 // VPCCHAIN_EC2_QPS mutating calls/s (5)
	EC2Burst     int     // VPCCHAIN_EC2_BURST (10)

	PoolInterval      time.Duration // VPCCHAIN_POOL_INTERVAL (1s): warm-pool loop period
	ReconcileInterval time.Duration // VPCCHAIN_RECONCILE_INTERVAL (60s)
	LeakSweepInterval time.Duration // VPCCHAIN_LEAKED_ENI_SWEEP_INTERVAL (10m)
	LeakedENIMinAge   time.Duration // VPCCHAIN_LEAKED_ENI_MIN_AGE (5m)
	MinENIAge         time.Duration // VPCCHAIN_MIN_ENI_AGE (1m)
	ScaleDownInterval time.Duration // VPCCHAIN_SCALE_DOWN_INTERVAL (30s)
	OrphanGrace       time.Duration // VPCCHAIN_ORPHAN_GRACE (2m): an allocation younger than this is never released as an orphan
	// CRISocket is the container runtime's CRI socket the orphan check asks
	// which pod sandboxes exist (VPCCHAIN_CRI_SOCKET,
	// /run/containerd/containerd.sock); "" (set to "none") disables the
	// orphan check.
	CRISocket string
	// ConsistencyGrace (VPCCHAIN_EC2_CONSISTENCY_GRACE, 2m): an address or
	// ENI the daemon learned of less than this ago is kept even when an EC2
	// describe omits it (EC2's describes are eventually consistent).
	ConsistencyGrace time.Duration

	// MetricsAddr (VPCCHAIN_METRICS_ADDR, 127.0.0.1:61678) is the host:port
	// of /metrics; "" = no metrics (also DISABLE_METRICS=true). The host
	// MetricsPrimaryHost stands for the node's own address, known only once
	// the daemon has discovered the node (MetricsListenAddr).
	MetricsAddr string

	LogLevel slog.Level // VPCCHAIN_LOG_LEVEL debug|info|warn|error (info)
	LogFile  string     // VPCCHAIN_LOG_FILE "stderr" or an absolute path (stderr); never stdout

	// Ignored are the AWS VPC CNI's settings found set that have no effect
	// here (PeerSettings); WarnIgnored logs them.
	Ignored []IgnoredSetting
}

// Defaults of the observability settings. Metrics stay on loopback unless
// asked: /metrics shows the node's pool and EC2 activity to whoever can
// reach it.
const (
	DefaultMetricsAddr = "127.0.0.1:61678"
	LogToStderr        = "stderr"
	// MetricsPrimaryHost as VPCCHAIN_METRICS_ADDR's host ("primary:61678")
	// is the node's own address, the one Prometheus's Kubernetes discovery
	// scrapes (a host-network pod's IP is its node's), and no other: not
	// the secondary ENIs' addresses, not loopback. It is never looked up in
	// DNS.
	MetricsPrimaryHost = "primary"
)

// MetricsListenAddr is the address to listen on for VPCCHAIN_METRICS_ADDR
// addr: addr itself, or with the host MetricsPrimaryHost, node (the node's
// address, which the daemon learns from IMDS) with addr's port.
func MetricsListenAddr(addr string, node netip.Addr) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != MetricsPrimaryHost {
		return addr, nil // Load validated it
	}
	if !node.IsValid() {
		return "", fmt.Errorf("VPCCHAIN_METRICS_ADDR=%q: the node's address is not known", addr)
	}
	return net.JoinHostPort(node.String(), port), nil
}

// DefaultENIConfigKey is the label and annotation naming a node's
// ENIConfig unless ENI_CONFIG_LABEL_DEF / ENI_CONFIG_ANNOTATION_DEF say
// otherwise (the AWS VPC CNI's).
const DefaultENIConfigKey = "k8s.amazonaws.com/eniConfig"

// DefaultCRISocket is containerd's CRI socket, where EKS nodes have it.
const DefaultCRISocket = "/run/containerd/containerd.sock"

// Lookup reads one variable; os.LookupEnv in production, a map in tests.
type Lookup func(string) (string, bool)

// FromEnv reads the configuration from the process environment.
func FromEnv() (Config, error) { return Load(os.LookupEnv) }

// Load reads and validates the configuration. Every problem is reported,
// not just the first.
func Load(get Lookup) (Config, error) {
	p := parser{get: get}
	// The settings the installer reads too: one parser for both.
	node, errs := nodeconf.Parse(nodeconf.Lookup(get))
	p.errs = append(p.errs, errs...)
	c := Config{
		WarmENITarget:           p.intAtLeast("WARM_ENI_TARGET", 1, 0),
		WarmIPTarget:            p.target("WARM_IP_TARGET", 0),
		MinimumIPTarget:         p.target("MINIMUM_IP_TARGET", 0),
		WarmPrefixTarget:        p.target("WARM_PREFIX_TARGET", 1),
		WarmPoolMode:            p.oneOf("WARM_POOL_MODE", WarmPoolStatic, WarmPoolStatic, WarmPoolAdaptive),
		EnablePrefixDelegation:  p.boolean("ENABLE_PREFIX_DELEGATION", false),
		MaxENI:                  p.maxENI(),
		IPCooldownPeriod:        time.Duration(p.intAtLeast("IP_COOLDOWN_PERIOD", 30, 0)) * time.Second,
		MaxPods:                 p.intAtLeast("MAX_PODS", 0, 0),
		MTU:                     node.MTU,
		VethPrefix:              node.VethPrefix,
		ExternalSNAT:            p.boolean("AWS_VPC_K8S_CNI_EXTERNALSNAT", false),
		ExcludeSNATCIDRs:        p.cidrs("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS"),
		RandomizeSNAT:           p.oneOf("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "prng", "prng", "hashrandom", "none"),
		ConnMark:                p.mark("AWS_VPC_K8S_CNI_CONNMARK", 0x80),
		IPTablesMode:            p.oneOf("VPCCHAIN_IPTABLES_MODE", "auto", "auto", "nft", "legacy"),
		SubnetDiscovery:         p.boolean("ENABLE_SUBNET_DISCOVERY", true),
		ClusterName:             p.str("CLUSTER_NAME", ""),
		DisableLeakedENICleanup: p.boolean("DISABLE_LEAKED_ENI_CLEANUP", false),
		CustomNetworking:        p.boolean("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", false),
		EnablePodENI:            p.boolean("ENABLE_POD_ENI", false),
		ENIConfigLabelDef:       p.labelKey("ENI_CONFIG_LABEL_DEF", DefaultENIConfigKey),
		ENIConfigAnnotationDef:  p.labelKey("ENI_CONFIG_ANNOTATION_DEF", DefaultENIConfigKey),
		NodeName:                p.str("MY_NODE_NAME", ""),
		PodName:                 p.str("MY_POD_NAME", ""),
		PodNamespace:            p.str("MY_POD_NAMESPACE", ""),
		Kubeconfig:              p.str("KUBECONFIG", ""),
		StateDir:                string(node.StateDir),
		Socket:                  node.Socket,
		IPv6:                    node.IPv6,
		EC2Endpoint:             firstSet(get, "AWS_ENDPOINT_URL_EC2", "AWS_EC2_ENDPOINT"),
		IMDSEndpoint:            p.str("AWS_EC2_METADATA_SERVICE_ENDPOINT", ""),
		EC2QPS:                  p.positiveFloat("VPCCHAIN_EC2_QPS", 5),
		EC2Burst:                p.intAtLeast("VPCCHAIN_EC2_BURST", 10, 1),
		PoolInterval:            p.duration("VPCCHAIN_POOL_INTERVAL", time.Second),
		ReconcileInterval:       p.duration("VPCCHAIN_RECONCILE_INTERVAL", time.Minute),
		LeakSweepInterval:       p.duration("VPCCHAIN_LEAKED_ENI_SWEEP_INTERVAL", 10*time.Minute),
		LeakedENIMinAge:         p.duration("VPCCHAIN_LEAKED_ENI_MIN_AGE", 5*time.Minute),
		MinENIAge:               p.duration("VPCCHAIN_MIN_ENI_AGE", time.Minute),
		ScaleDownInterval:       p.duration("VPCCHAIN_SCALE_DOWN_INTERVAL", 30*time.Second),
		OrphanGrace:             p.duration("VPCCHAIN_ORPHAN_GRACE", 2*time.Minute),
		CRISocket:               p.criSocket("VPCCHAIN_CRI_SOCKET", DefaultCRISocket),
		ConsistencyGrace:        p.duration("VPCCHAIN_EC2_CONSISTENCY_GRACE", 2*time.Minute),
		ENIAttachTimeout:        p.duration("VPCCHAIN_ENI_ATTACH_TIMEOUT", 30*time.Second),
		MetricsAddr:             p.metricsAddr(),
		LogLevel:                p.logLevel("VPCCHAIN_LOG_LEVEL", slog.LevelInfo),
		LogFile:                 p.logFile("VPCCHAIN_LOG_FILE"),
	}
	if c.EnablePrefixDelegation && c.WarmPrefixTarget == 0 && c.WarmIPTarget == 0 && c.MinimumIPTarget == 0 {
		p.errs = append(p.errs, errors.New("ENABLE_PREFIX_DELEGATION=true needs WARM_PREFIX_TARGET, WARM_IP_TARGET or MINIMUM_IP_TARGET >= 1 (all are 0): the pool would never hold an address"))
	}
	if c.IPv6 && c.CustomNetworking {
		p.errs = append(p.errs, errors.New("ENABLE_IPv6=true with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true: custom networking places IPv4 pods on other subnets; IPv6 pods use the primary ENI's /80 and need no other subnet"))
	}
	if c.CustomNetworking && c.NodeName == "" {
		p.errs = append(p.errs, errors.New("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true needs MY_NODE_NAME (the node's name, from the downward API): the daemon reads its Node to find its ENIConfig"))
	}
	if c.EnablePodENI && c.IPv6 {
		p.errs = append(p.errs, errors.New("ENABLE_POD_ENI=true with ENABLE_IPv6=true: security groups for pods are supported for IPv4 pods only"))
	}
	if c.EnablePodENI && node.WireGuard && node.PodSGMode == nodeconf.PodSGStrict {
		// WireGuard needs Felix's route sync, and with it Felix routes every
		// pod it knows by the main table: a strict-mode branch pod too, whose
		// node-originated traffic must go through the VPC and its groups.
		p.errs = append(p.errs, errors.New("ENABLE_POD_ENI=true with ENABLE_WIREGUARD=true needs POD_SECURITY_GROUP_ENFORCING_MODE=standard: with WireGuard, Calico routes every pod it knows from the node directly, which strict mode forbids for branch-ENI pods"))
	}
	if c.EnablePodENI && c.NodeName == "" {
		p.errs = append(p.errs, errors.New("ENABLE_POD_ENI=true needs MY_NODE_NAME (the node's name, from the downward API): the daemon declares the capability on the node's CNINode and reads its pods' branch ENIs"))
	}
	if (c.PodName == "") != (c.PodNamespace == "") {
		p.errs = append(p.errs, fmt.Errorf("MY_POD_NAME=%q MY_POD_NAMESPACE=%q: set both (the daemon's own pod, from the downward API) or neither", c.PodName, c.PodNamespace))
	}
	p.checkPeerSettings(&c)
	if len(p.errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration:\n  %w", errors.Join(p.errs...))
	}
	return c, nil
}

func firstSet(get Lookup, names ...string) string {
	for _, n := range names {
		if v, ok := get(n); ok && v != "" {
			return v
		}
	}
	return ""
}

type parser struct {
	get  Lookup
	errs []error
}

func (p *parser) raw(name string) (string, bool) {
	v, ok := p.get(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (p *parser) bad(name, val, allowed string) {
	p.errs = append(p.errs, fmt.Errorf("%s=%q is invalid: %s", name, val, allowed))
}

func (p *parser) str(name, def string) string {
	if v, ok := p.raw(name); ok {
		return v
	}
	return def
}

// labelKey is a Kubernetes label or annotation key (an optional DNS
// prefix, a slash, a name).
func (p *parser) labelKey(name, def string) string {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	if errs := validation.IsQualifiedName(v); len(errs) > 0 {
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not a label key: %s", name, v, strings.Join(errs, "; ")))
		return def
	}
	return v
}

func (p *parser) intAtLeast(name string, def, lo int) int {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		p.bad(name, v, fmt.Sprintf("want an integer >= %d", lo))
		return def
	}
	return n
}

// target parses a pool target the AWS VPC CNI documents as "a non-positive
// value is the same as 0" (WARM_IP_TARGET, MINIMUM_IP_TARGET,
// WARM_PREFIX_TARGET): a migrated -1 keeps that meaning rather than being
// refused; a non-integer is refused.
func (p *parser) target(name string, def int) int {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.bad(name, v, "want an integer (0 or lower: no target)")
		return def
	}
	return max(n, 0)
}

// mark parses a connmark bit pattern (decimal or 0x hex, as the reference:
// strconv base 0), 1 to 2^32-1.
func (p *parser) mark(name string, def uint32) uint32 {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseUint(v, 0, 32)
	if err != nil || n == 0 {
		p.bad(name, v, "want a mark from 1 to 0xffffffff (decimal or 0x hex); it must not collide with kube-proxy's 0xc000 or Calico's 0xffff0000 bits")
		return def
	}
	return uint32(n)
}

// maxENI parses MAX_ENI: as the AWS VPC CNI documents, 0 or lower means
// the instance type's limit (-1 here).
func (p *parser) maxENI() int {
	v, ok := p.raw("MAX_ENI")
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.bad("MAX_ENI", v, "want an integer: at most this many ENIs, or 0 or lower for the instance type's limit")
		return -1
	}
	if n < 1 {
		return -1
	}
	return n
}

func (p *parser) boolean(name string, def bool) bool {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.bad(name, v, "want true or false")
		return def
	}
	return b
}

func (p *parser) positiveFloat(name string, def float64) float64 {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		p.bad(name, v, "want a number > 0")
		return def
	}
	return f
}

func (p *parser) duration(name string, def time.Duration) time.Duration {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		p.bad(name, v, "want a positive Go duration such as 30s or 5m")
		return def
	}
	return d
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.bad(name, v, "want one of "+strings.Join(allowed, ", "))
	return def
}

func (p *parser) cidrs(name string) []netip.Prefix {
	v, ok := p.raw(name)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		pf, err := netip.ParsePrefix(s)
		if err != nil || !pf.Addr().Is4() {
			p.bad(name, v, fmt.Sprintf("%q is not an IPv4 CIDR; want a comma-separated list such as 10.1.0.0/16,192.168.0.0/24", s))
			return nil
		}
		out = append(out, pf.Masked())
	}
	return out
}

// criSocket is an absolute socket path, or "none" (returned as "") to
// run without a liveness source.
func (p *parser) criSocket(name, def string) string {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	if v == "none" {
		return ""
	}
	if !strings.HasPrefix(v, "/") || strings.HasSuffix(v, "/") {
		p.bad(name, v, "want the absolute path of the container runtime's CRI socket (such as /run/containerd/containerd.sock or /var/run/crio/crio.sock), or none")
		return def
	}
	return v
}

// listenAddr parses a host:port to listen on. Set to the empty string, the
// listener is disabled ("" returned); unset, def.
func (p *parser) listenAddr(name, def string) string {
	raw, set := p.get(name)
	if !set {
		return def
	}
	v := strings.TrimSpace(raw)
	if v == "" {
		return ""
	}
	const allowed = "want host:port to listen on, such as 127.0.0.1:61678, primary:61678 (the node's own address) or :61678 (all interfaces), with a port from 1 to 65535; or the empty string to disable"
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.bad(name, raw, allowed)
		return def
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		p.bad(name, raw, allowed)
		return def
	}
	if host != "" && !validHost(host) {
		p.bad(name, raw, allowed)
		return def
	}
	return v
}

// metricsAddr is VPCCHAIN_METRICS_ADDR, or "" (no metrics) with the AWS VPC
// CNI's DISABLE_METRICS=true, which contradicts an address set.
func (p *parser) metricsAddr() string {
	addr := p.listenAddr("VPCCHAIN_METRICS_ADDR", DefaultMetricsAddr)
	if !p.boolean("DISABLE_METRICS", false) {
		return addr
	}
	if v, ok := p.raw("VPCCHAIN_METRICS_ADDR"); ok {
		p.errs = append(p.errs, fmt.Errorf("DISABLE_METRICS=true with VPCCHAIN_METRICS_ADDR=%q: unset one (VPCCHAIN_METRICS_ADDR empty disables metrics too)", v))
	}
	return ""
}

// validHost accepts an IP literal or a DNS name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func (p *parser) logLevel(name string, def slog.Level) slog.Level {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	switch strings.ToLower(v) {
	case "debug":
		return slog.LevelDebug
	case "info":
		return slog.LevelInfo
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	p.bad(name, v, "want one of debug, info, warn, error")
	return def
}

// logFile is "stderr" or an absolute path; stdout is refused, as the
// reference refuses it for the plugin (a CNI plugin's stdout is its result,
// and the daemon keeps the same rule so no log ever lands there).
func (p *parser) logFile(name string) string {
	v, ok := p.raw(name)
	if !ok {
		return LogToStderr
	}
	if v == LogToStderr || v == "/dev/stderr" {
		return LogToStderr
	}
	if v == "stdout" || v == "/dev/stdout" || v == "/proc/self/fd/1" || !strings.HasPrefix(v, "/") || strings.HasSuffix(v, "/") {
		p.bad(name, v, "want stderr or an absolute file path (logs are never written to stdout)")
		return LogToStderr
	}
	return v
}
