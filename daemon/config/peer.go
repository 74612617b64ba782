package config

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// Outcome is what vpcchain does with one of the AWS VPC CNI's settings.
type Outcome int

const (
	// Honoured: read with the AWS VPC CNI's meaning, by its own parser here
	// (Load, nodeconf for the daemon and the installer, or the installer's).
	Honoured Outcome = iota + 1
	// Refused: a value asking for a feature vpcchain lacks stops the daemon
	// at start, naming the variable and why.
	Refused
	// Warned: a value that would change something in the AWS VPC CNI is
	// accepted with a warning log that it has no effect here, and why.
	Warned
)

func (o Outcome) String() string {
	switch o {
	case Honoured:
		return "honoured"
	case Refused:
		return "refused"
	case Warned:
		return "warning"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Who reads an honoured setting.
const (
	ByDaemon    = "vpcchaind"
	ByInstaller = "vpcchain-install"
	ByBoth      = "vpcchaind and vpcchain-install"
)

// PeerSetting is one environment variable the AWS VPC CNI documents.
type PeerSetting struct {
	Name    string
	Outcome Outcome
	// By names who reads an honoured setting (ByDaemon, ByInstaller,
	// ByBoth).
	By string
	// Accepted is, for Refused and Warned, the value that asks for what
	// vpcchain does anyway and passes silently ("" = none: any value set
	// gets the outcome). Shown in the messages and the README.
	Accepted string
	// Reason says why a setting is refused or has no effect, or how an
	// honoured one differs.
	Reason string
	// applies reports whether the value v (trimmed, non-empty) gets the
	// outcome; nil: any value but Accepted does.
	applies func(v string, c *Config) bool
}

// PeerSettings lists every environment variable of the AWS VPC CNI v1.23
// README ("CNI Configuration Variables"), in its order, with what vpcchain
// does with it: users replacing that CNI keep their ConfigMap, and none of
// its settings is dropped silently. Load checks the Refused and Warned ones;
// the honoured ones are parsed where they always were.
var PeerSettings = []PeerSetting{
	{Name: "AWS_MANAGE_ENIS_NON_SCHEDULABLE", Outcome: Warned, Accepted: "true", applies: boolNot(true),
		Reason: "the pool is managed on every node, cordoned or not (what true asks for); a cordoned node's pool is not frozen"},
	{Name: "AWS_VPC_CNI_NODE_PORT_SUPPORT", Outcome: Warned, Accepted: "true with SNAT, false with external SNAT",
		// The NodePort connmark rule is part of the SNAT rules: on exactly
		// when SNAT is, whatever this says.
		applies: func(v string, c *Config) bool {
			b, err := strconv.ParseBool(v)
			return err != nil || b == c.ExternalSNAT
		},
		Reason: "NodePort flows are connmarked to leave by the primary ENI exactly when the daemon does SNAT: always with AWS_VPC_K8S_CNI_EXTERNALSNAT=false, never with true (NodePort to pods on secondary ENIs then needs the replies routed by other means)"},
	{Name: "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", Outcome: Honoured, By: ByDaemon},
	{Name: "ENI_CONFIG_ANNOTATION_DEF", Outcome: Honoured, By: ByDaemon},
	{Name: "ENI_CONFIG_LABEL_DEF", Outcome: Honoured, By: ByDaemon},
	{Name: "HOST_CNI_BIN_PATH", Outcome: Warned,
		Reason: "the installer writes the plugins to its --cni-bin-dir flag (set in the manifest); the daemon never writes the CNI directories"},
	{Name: "HOST_CNI_CONFDIR_PATH", Outcome: Warned,
		Reason: "the installer writes the conflist to its --cni-conf-dir flag (set in the manifest); the daemon never writes the CNI directories"},
	{Name: "AWS_VPC_ENI_MTU", Outcome: Honoured, By: ByBoth,
		Reason: "a value outside the range is refused, not replaced by the default"},
	{Name: "AWS_VPC_K8S_CNI_EXTERNALSNAT", Outcome: Honoured, By: ByDaemon},
	{Name: "AWS_VPC_K8S_CNI_RANDOMIZESNAT", Outcome: Honoured, By: ByDaemon},
	{Name: "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", Outcome: Honoured, By: ByDaemon,
		Reason: "an item that is not an IPv4 CIDR is refused, not skipped"},
	{Name: "POD_MTU", Outcome: Honoured, By: ByBoth,
		Reason: "the installer writes it into the conflist; a value outside the range is refused, not replaced by the default"},
	{Name: "WARM_ENI_TARGET", Outcome: Honoured, By: ByDaemon},
	{Name: "WARM_IP_TARGET", Outcome: Honoured, By: ByDaemon},
	{Name: "MINIMUM_IP_TARGET", Outcome: Honoured, By: ByDaemon},
	{Name: "MAX_ENI", Outcome: Honoured, By: ByDaemon},
	{Name: "AWS_VPC_K8S_CNI_LOGLEVEL", Outcome: Warned,
		Reason: "the daemon's log level is VPCCHAIN_LOG_LEVEL"},
	{Name: "AWS_VPC_K8S_CNI_LOG_FILE", Outcome: Warned,
		Reason: "the daemon's log destination is VPCCHAIN_LOG_FILE (stderr or a file; never stdout)"},
	{Name: "AWS_VPC_K8S_PLUGIN_LOG_FILE", Outcome: Warned,
		Reason: "the plugins have no log file: they report failures in their CNI result and write their few lines to stderr (the runtime's log)"},
	{Name: "AWS_VPC_K8S_PLUGIN_LOG_LEVEL", Outcome: Warned,
		Reason: "the plugins have no log level: they report failures in their CNI result and write their few lines to stderr (the runtime's log)"},
	{Name: "INTROSPECTION_BIND_ADDRESS", Outcome: Warned,
		Reason: "there is no HTTP introspection endpoint; `vpcctl status` reads the daemon's state over its root-only unix socket"},
	{Name: "DISABLE_INTROSPECTION", Outcome: Warned, Accepted: "true", applies: boolNot(true),
		Reason: "there is no HTTP introspection endpoint to enable; `vpcctl status` reads the daemon's state over its root-only unix socket"},
	{Name: "DISABLE_METRICS", Outcome: Honoured, By: ByDaemon,
		Reason: "true is VPCCHAIN_METRICS_ADDR empty; both set otherwise is refused"},
	{Name: "AWS_VPC_K8S_CNI_VETHPREFIX", Outcome: Honoured, By: ByBoth},
	{Name: "ADDITIONAL_ENI_TAGS", Outcome: Refused, Accepted: "{}",
		applies: func(v string, _ *Config) bool { return strings.Join(strings.Fields(v), "") != "{}" },
		Reason:  "extra tags on the ENIs are not supported yet: created ENIs carry only the daemon's own tags (and the cluster name)"},
	{Name: "AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", Outcome: Warned,
		Reason: "a no-op in the AWS VPC CNI too since v1.12.1; `vpcchaind --setup-node` (the init container) sets loose rp_filter"},
	{Name: "CLUSTER_NAME", Outcome: Honoured, By: ByDaemon,
		Reason: "also scopes the leaked-ENI sweep and opens subnets tagged for this cluster"},
	{Name: "CLUSTER_ENDPOINT", Outcome: Warned,
		Reason: "the daemon reaches the API server (custom networking and ENABLE_POD_ENI only) through the in-cluster service account or KUBECONFIG"},
	{Name: "ENABLE_POD_ENI", Outcome: Honoured, By: ByDaemon,
		Reason: "needs MY_NODE_NAME and IPv4 pods (refused at start otherwise); vpc-bridge wires a branch-ENI pod as the AWS VPC CNI does, " +
			"in strict or standard mode; an IPv6 branch fails its ADD with CNI code 103, other pods are unaffected"},
	{Name: "POD_SECURITY_GROUP_ENFORCING_MODE", Outcome: Honoured, By: ByBoth,
		Reason: "the installer writes it into vpc-bridge's config (podSGEnforcingMode); a value other than strict or standard is refused. " +
			"Strict mode needs conf.all.rp_filter=0 (the kernel's and systemd's default) for the node's own connections to a branch-ENI pod (kubelet probes)"},
	{Name: "DISABLE_TCP_EARLY_DEMUX", Outcome: Warned, Accepted: "false", applies: boolNot(false),
		Reason: "the init container leaves tcp_early_demux alone: measured on Linux 6.1, the node's connections to a branch-ENI pod work with it on, in both modes " +
			"(what strict mode needs is reverse-path filtering off on the pod's links, which vpc-bridge sets)"},
	{Name: "ENABLE_SUBNET_DISCOVERY", Outcome: Honoured, By: ByDaemon},
	{Name: "ENABLE_PREFIX_DELEGATION", Outcome: Honoured, By: ByDaemon,
		Reason: "IPv6 mode does not need it set"},
	{Name: "WARM_PREFIX_TARGET", Outcome: Honoured, By: ByDaemon,
		Reason: "unset is 1, the value the AWS VPC CNI's manifest sets"},
	{Name: "DISABLE_NETWORK_RESOURCE_PROVISIONING", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "the daemon always manages ENIs and addresses through EC2; pre-provisioned-only operation from IMDS is not supported"},
	{Name: "ENABLE_BANDWIDTH_PLUGIN", Outcome: Honoured, By: ByInstaller},
	{Name: "ANNOTATE_POD_IP", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "the daemon does not annotate pods; set VPCCHAIN_ENABLE_POLICY_HOOK=true instead: the policy-hook plugin publishes vpc.amazonaws.com/pod-ips (and Calico's podIP annotations) during ADD"},
	{Name: "ENABLE_IPv4", Outcome: Honoured, By: ByBoth},
	{Name: "ENABLE_IPv6", Outcome: Honoured, By: ByBoth},
	{Name: "ENABLE_NFTABLES", Outcome: Warned,
		Reason: "deprecated in the AWS VPC CNI; VPCCHAIN_IPTABLES_MODE chooses the backend (auto: where kube-proxy's rules are)"},
	{Name: "AWS_EXTERNAL_SERVICE_CIDRS", Outcome: Refused,
		Reason: "routing chosen destinations through the main table is not supported; with SNAT on, flows to destinations outside the VPC and the excluded CIDRs already leave by the primary ENI"},
	{Name: "AWS_EC2_ENDPOINT", Outcome: Honoured, By: ByDaemon,
		Reason: "AWS_ENDPOINT_URL_EC2 wins when both are set"},
	{Name: "DISABLE_LEAKED_ENI_CLEANUP", Outcome: Honoured, By: ByDaemon,
		Reason: "the sweep runs every VPCCHAIN_LEAKED_ENI_SWEEP_INTERVAL (10m), not hourly"},
	{Name: "ENABLE_V6_EGRESS", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "IPv6 egress for IPv4 pods is not supported yet (IPv6 pods get IPv4 egress)"},
	{Name: "ENABLE_V4_EGRESS", Outcome: Warned, Accepted: "true", applies: boolNot(true),
		Reason: "IPv6 pods always get IPv4 egress (vpc-egress-v4, 169.254.172.0/22); IPv4 pods need none"},
	{Name: "IP_COOLDOWN_PERIOD", Outcome: Honoured, By: ByDaemon},
	{Name: "DISABLE_POD_V6", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "disabling IPv6 in the pods' network namespaces (the tuning plugin) is not supported yet"},
	{Name: "NETWORK_POLICY_ENFORCING_MODE", Outcome: Refused, Accepted: "standard",
		Reason: "network policy is Calico's here (policy-only mode, conflist/calico-policy-only.md), with the policy hook's wait for a new pod's policy; the AWS network policy agent's strict default deny is not implemented"},
	{Name: "ENABLE_IMDS_ONLY_MODE", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "the daemon needs the EC2 API; IMDS-only operation on pre-attached ENIs is not supported"},
	{Name: "ENABLE_MULTI_NIC", Outcome: Refused, Accepted: "false", applies: boolNot(false),
		Reason: "only network card 0 is managed (other cards' ENIs are left alone); multi-homed pods are not supported"},
}

// Summary is the outcome as the README's table gives it.
func (s PeerSetting) Summary() string {
	var verb string
	switch s.Outcome {
	case Honoured:
		return "honoured (" + s.By + ")"
	case Refused:
		verb = "refused"
	case Warned:
		verb = "warning"
	}
	switch {
	case s.Accepted == "":
		return verb + " when set"
	case strings.Contains(s.Accepted, " "):
		return verb + " unless " + s.Accepted
	}
	return verb + " unless `" + s.Accepted + "`"
}

// boolNot: the outcome applies unless v is the boolean ok (strconv's
// spellings, as the daemon's own booleans).
func boolNot(ok bool) func(string, *Config) bool {
	return func(v string, _ *Config) bool {
		b, err := strconv.ParseBool(v)
		return err != nil || b != ok
	}
}

// IgnoredSetting is a Warned setting found set: the daemon logs it at start.
type IgnoredSetting struct{ Name, Value, Reason string }

// checkPeerSettings refuses (p.errs) or records as ignored (c.Ignored) the
// AWS VPC CNI settings c's environment sets that vpcchain cannot honour.
func (p *parser) checkPeerSettings(c *Config) {
	for _, s := range PeerSettings {
		if s.Outcome == Honoured {
			continue
		}
		v, ok := p.raw(s.Name)
		if !ok {
			continue
		}
		applies := s.applies
		if applies == nil {
			applies = func(v string, _ *Config) bool { return s.Accepted == "" || v != s.Accepted }
		}
		if !applies(v, c) {
			continue
		}
		if s.Outcome == Refused {
			accepted := ""
			if s.Accepted != "" {
				accepted = " (accepted: " + s.Accepted + ")"
			}
			p.errs = append(p.errs, fmt.Errorf("%s=%q is not supported: %s%s", s.Name, v, s.Reason, accepted))
			continue
		}
		c.Ignored = append(c.Ignored, IgnoredSetting{Name: s.Name, Value: v, Reason: s.Reason})
	}
}

// WarnIgnored logs a warning per AWS VPC CNI setting that is set and has no
// effect here, so a migrated ConfigMap's leftovers are seen, not silent.
func (c Config) WarnIgnored(l *slog.Logger) {
	for _, s := range c.Ignored {
		l.Warn(fmt.Sprintf("%s=%q has no effect here: %s", s.Name, s.Value, s.Reason), "variable", s.Name)
	}
}
