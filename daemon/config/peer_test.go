package config

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/conflist"
	"github.com/vpcchain/vpcchain/internal/nodeconf"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// peerVar is one variable of the AWS VPC CNI's README.
type peerVar struct {
	name string
	// def is its "Default:" line, with the backquotes removed ("" if none).
	def string
	// text is its section, heading to the next heading.
	text string
}

// peerREADME reads the variables the AWS VPC CNI documents: the "#### `NAME`"
// headings of its README's "CNI Configuration Variables" section.
func peerREADME(t *testing.T) []peerVar {
	t.Helper()
	dir, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile("^#### `([A-Za-z0-9_]+)`")
	var vars []peerVar
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, "## CNI Configuration Variables")
			continue
		case !in:
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			vars = append(vars, peerVar{name: m[1]})
			continue
		}
		if len(vars) == 0 {
			continue
		}
		v := &vars[len(vars)-1]
		v.text += line + "\n"
		if d, ok := strings.CutPrefix(line, "Default:"); ok && v.def == "" {
			v.def = strings.Trim(strings.TrimSpace(d), "`")
		}
	}
	// The README has had about 50 since v1.20: far fewer means the section
	// moved and the parse found only part of it.
	if len(vars) < 40 {
		t.Fatalf("found %d variables in the AWS VPC CNI's README; did its \"CNI Configuration Variables\" section change?", len(vars))
	}
	return vars
}

// Every variable the AWS VPC CNI documents has exactly one outcome here,
// and the table holds no variable it does not document.
func TestPeerSettingsCoverTheREADME(t *testing.T) {
	documented := map[string]bool{}
	for _, v := range peerREADME(t) {
		documented[v.name] = true
	}
	ours := map[string]bool{}
	for _, s := range PeerSettings {
		if ours[s.Name] {
			t.Errorf("%s is in PeerSettings twice", s.Name)
		}
		ours[s.Name] = true
		if !documented[s.Name] {
			t.Errorf("%s is in PeerSettings but not in the AWS VPC CNI's README", s.Name)
		}
		switch s.Outcome {
		case Honoured:
			if s.By != ByDaemon && s.By != ByInstaller && s.By != ByBoth {
				t.Errorf("%s: honoured by %q", s.Name, s.By)
			}
		case Refused, Warned:
			if s.Reason == "" {
				t.Errorf("%s: %s without a reason", s.Name, s.Outcome)
			}
		default:
			t.Errorf("%s: no outcome", s.Name)
		}
	}
	for name := range documented {
		if !ours[name] {
			t.Errorf("the AWS VPC CNI documents %s, and PeerSettings gives it no outcome", name)
		}
	}
}

// recorder is a Lookup over env that notes every name asked for.
type recorder struct {
	env   map[string]string
	mu    sync.Mutex
	asked map[string]bool
}

func (r *recorder) get(k string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.asked == nil {
		r.asked = map[string]bool{}
	}
	r.asked[k] = true
	v, ok := r.env[k]
	return v, ok
}

// An honoured setting is read by its parser: the daemon's Load (which
// itself looks up only the other outcomes' names), the installer's, or both.
func TestPeerHonouredAreRead(t *testing.T) {
	daemon, installer := &recorder{}, &recorder{}
	if _, err := Load(daemon.get); err != nil {
		t.Fatal(err)
	}
	if _, err := conflist.OptionsFromEnv(installer.get); err != nil {
		t.Fatal(err)
	}
	for _, s := range PeerSettings {
		if s.Outcome != Honoured {
			continue
		}
		if (s.By == ByDaemon || s.By == ByBoth) && !daemon.asked[s.Name] {
			t.Errorf("%s is honoured by %s, and Load never reads it", s.Name, s.By)
		}
		if (s.By == ByInstaller || s.By == ByBoth) && !installer.asked[s.Name] {
			t.Errorf("%s is honoured by %s, and the installer never reads it", s.Name, s.By)
		}
	}
}

// logRecords is a slog handler keeping warning records.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// Each refused and warned setting, with a value that asks for what vpcchain
// lacks and one that asks for what it does anyway. A refusal names the
// variable and its value; a warning is logged at WARN naming the variable;
// the accepted value passes silently.
func TestPeerOutcomes(t *testing.T) {
	const none Outcome = 0
	tests := []struct {
		env  map[string]string
		name string // the variable the outcome is about
		want Outcome
	}{
		{map[string]string{"AWS_MANAGE_ENIS_NON_SCHEDULABLE": "false"}, "AWS_MANAGE_ENIS_NON_SCHEDULABLE", Warned},
		{map[string]string{"AWS_MANAGE_ENIS_NON_SCHEDULABLE": "true"}, "AWS_MANAGE_ENIS_NON_SCHEDULABLE", none},
		{map[string]string{"AWS_VPC_CNI_NODE_PORT_SUPPORT": "false"}, "AWS_VPC_CNI_NODE_PORT_SUPPORT", Warned},
		{map[string]string{"AWS_VPC_CNI_NODE_PORT_SUPPORT": "true"}, "AWS_VPC_CNI_NODE_PORT_SUPPORT", none},
		{map[string]string{"AWS_VPC_CNI_NODE_PORT_SUPPORT": "true", "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true"}, "AWS_VPC_CNI_NODE_PORT_SUPPORT", Warned},
		{map[string]string{"AWS_VPC_CNI_NODE_PORT_SUPPORT": "false", "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true"}, "AWS_VPC_CNI_NODE_PORT_SUPPORT", none},
		{map[string]string{"HOST_CNI_BIN_PATH": "/host/opt/cni/bin"}, "HOST_CNI_BIN_PATH", Warned},
		{map[string]string{"HOST_CNI_CONFDIR_PATH": "/host/etc/cni/net.d"}, "HOST_CNI_CONFDIR_PATH", Warned},
		{map[string]string{"AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG"}, "AWS_VPC_K8S_CNI_LOGLEVEL", Warned},
		{map[string]string{"AWS_VPC_K8S_CNI_LOG_FILE": "/host/var/log/aws-routed-eni/ipamd.log"}, "AWS_VPC_K8S_CNI_LOG_FILE", Warned},
		{map[string]string{"AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/aws-routed-eni/plugin.log"}, "AWS_VPC_K8S_PLUGIN_LOG_FILE", Warned},
		{map[string]string{"AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG"}, "AWS_VPC_K8S_PLUGIN_LOG_LEVEL", Warned},
		{map[string]string{"INTROSPECTION_BIND_ADDRESS": "127.0.0.1:61679"}, "INTROSPECTION_BIND_ADDRESS", Warned},
		{map[string]string{"DISABLE_INTROSPECTION": "false"}, "DISABLE_INTROSPECTION", Warned},
		{map[string]string{"DISABLE_INTROSPECTION": "true"}, "DISABLE_INTROSPECTION", none},
		{map[string]string{"ADDITIONAL_ENI_TAGS": `{"team": "payments"}`}, "ADDITIONAL_ENI_TAGS", Refused},
		{map[string]string{"ADDITIONAL_ENI_TAGS": "{ }"}, "ADDITIONAL_ENI_TAGS", none},
		{map[string]string{"AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER": "false"}, "AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", Warned},
		{map[string]string{"CLUSTER_ENDPOINT": "https://api.example.com"}, "CLUSTER_ENDPOINT", Warned},
		{map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1"}, "ENABLE_POD_ENI", none},
		{map[string]string{"ENABLE_POD_ENI": "false"}, "ENABLE_POD_ENI", none},
		{map[string]string{"POD_SECURITY_GROUP_ENFORCING_MODE": "strict"}, "POD_SECURITY_GROUP_ENFORCING_MODE", none},
		{map[string]string{"POD_SECURITY_GROUP_ENFORCING_MODE": "standard"}, "POD_SECURITY_GROUP_ENFORCING_MODE", none},
		{map[string]string{"DISABLE_TCP_EARLY_DEMUX": "true"}, "DISABLE_TCP_EARLY_DEMUX", Warned},
		{map[string]string{"DISABLE_TCP_EARLY_DEMUX": "false"}, "DISABLE_TCP_EARLY_DEMUX", none},
		{map[string]string{"DISABLE_NETWORK_RESOURCE_PROVISIONING": "true"}, "DISABLE_NETWORK_RESOURCE_PROVISIONING", Refused},
		{map[string]string{"DISABLE_NETWORK_RESOURCE_PROVISIONING": "false"}, "DISABLE_NETWORK_RESOURCE_PROVISIONING", none},
		{map[string]string{"ANNOTATE_POD_IP": "true"}, "ANNOTATE_POD_IP", Refused},
		{map[string]string{"ANNOTATE_POD_IP": "false"}, "ANNOTATE_POD_IP", none},
		{map[string]string{"ENABLE_NFTABLES": "true"}, "ENABLE_NFTABLES", Warned},
		{map[string]string{"AWS_EXTERNAL_SERVICE_CIDRS": "203.0.113.0/24"}, "AWS_EXTERNAL_SERVICE_CIDRS", Refused},
		{map[string]string{"ENABLE_V6_EGRESS": "true"}, "ENABLE_V6_EGRESS", Refused},
		{map[string]string{"ENABLE_V6_EGRESS": "false"}, "ENABLE_V6_EGRESS", none},
		{map[string]string{"ENABLE_V4_EGRESS": "false"}, "ENABLE_V4_EGRESS", Warned},
		{map[string]string{"ENABLE_V4_EGRESS": "true"}, "ENABLE_V4_EGRESS", none},
		{map[string]string{"DISABLE_POD_V6": "true"}, "DISABLE_POD_V6", Refused},
		{map[string]string{"DISABLE_POD_V6": "false"}, "DISABLE_POD_V6", none},
		{map[string]string{"NETWORK_POLICY_ENFORCING_MODE": "strict"}, "NETWORK_POLICY_ENFORCING_MODE", Refused},
		{map[string]string{"NETWORK_POLICY_ENFORCING_MODE": "standard"}, "NETWORK_POLICY_ENFORCING_MODE", none},
		{map[string]string{"ENABLE_IMDS_ONLY_MODE": "true"}, "ENABLE_IMDS_ONLY_MODE", Refused},
		{map[string]string{"ENABLE_IMDS_ONLY_MODE": "false"}, "ENABLE_IMDS_ONLY_MODE", none},
		{map[string]string{"ENABLE_MULTI_NIC": "true"}, "ENABLE_MULTI_NIC", Refused},
		{map[string]string{"ENABLE_MULTI_NIC": "false"}, "ENABLE_MULTI_NIC", none},
		// Empty is unset (the ConfigMap's convention): nothing to say.
		{map[string]string{"ENABLE_POD_ENI": ""}, "ENABLE_POD_ENI", none},
		{map[string]string{"CLUSTER_ENDPOINT": " "}, "CLUSTER_ENDPOINT", none},
	}
	exercised := map[string]Outcome{}
	for _, tt := range tests {
		if tt.want != none {
			exercised[tt.name] = tt.want
		}
		h := &logRecords{}
		c, err := Load(env(tt.env))
		if err == nil {
			c.WarnIgnored(slog.New(h))
		}
		var warned []string
		for _, r := range h.recs {
			if r.Level != slog.LevelWarn {
				t.Errorf("%v: logged at %s: %s", tt.env, r.Level, r.Message)
			}
			var named string
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "variable" {
					named = a.Value.String()
				}
				return true
			})
			if !strings.Contains(r.Message, named) || named == "" {
				t.Errorf("%v: warning %q (variable %q) does not name its variable", tt.env, r.Message, named)
			}
			warned = append(warned, named)
		}
		switch tt.want {
		case Refused:
			if err == nil || !strings.Contains(err.Error(), tt.name+"="+strconv.Quote(strings.TrimSpace(tt.env[tt.name]))) ||
				!strings.Contains(err.Error(), "not supported") {
				t.Errorf("%v: error %v, want a refusal naming %s and its value", tt.env, err, tt.name)
			}
		case Warned:
			if err != nil || !slices.Equal(warned, []string{tt.name}) {
				t.Errorf("%v: %v, warnings about %v; want one warning about %s", tt.env, err, warned, tt.name)
			}
		case none:
			if err != nil || len(warned) > 0 {
				t.Errorf("%v: %v, warnings about %v; want it accepted silently", tt.env, err, warned)
			}
		}
	}
	for _, s := range PeerSettings {
		if s.Outcome != Honoured && exercised[s.Name] != s.Outcome {
			t.Errorf("%s (%s): no case above gets that outcome", s.Name, s.Outcome)
		}
	}
	// Several at once: every refusal is reported, and nothing is refused
	// for a warning.
	_, err := Load(env(map[string]string{"ENABLE_IMDS_ONLY_MODE": "true", "ENABLE_MULTI_NIC": "true", "AWS_VPC_K8S_CNI_LOGLEVEL": "INFO"}))
	if err == nil || !strings.Contains(err.Error(), "ENABLE_IMDS_ONLY_MODE") || !strings.Contains(err.Error(), "ENABLE_MULTI_NIC") ||
		strings.Contains(err.Error(), "AWS_VPC_K8S_CNI_LOGLEVEL") {
		t.Errorf("two refusals and a warning: %v", err)
	}
}

// The AWS VPC CNI's manifest sets these (config/master/aws-k8s-cni.yaml,
// the aws-node container): a cluster migrating with that environment
// starts, and is warned only about what does not carry over.
func TestPeerManifestEnvironmentStarts(t *testing.T) {
	dir, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config", "master", "aws-k8s-cni.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pairs := regexp.MustCompile(`(?m)^\s*- name: ([A-Z][A-Za-z0-9_]+)\n\s*value: "([^"]*)"`).FindAllSubmatch(b, -1)
	menv := map[string]string{}
	for _, m := range pairs {
		menv[string(m[1])] = string(m[2])
	}
	if len(menv) < 20 {
		t.Fatalf("found %d variables in the AWS VPC CNI's manifest: %v", len(menv), menv)
	}
	c, err := Load(env(menv))
	if err != nil {
		t.Fatalf("the AWS VPC CNI manifest's environment is refused: %v", err)
	}
	var warned []string
	for _, s := range c.Ignored {
		warned = append(warned, s.Name)
	}
	t.Logf("warned about %v", warned)
	// Its log settings, and introspection it asks to keep on, have no
	// effect here; everything else it sets is honoured or accepted.
	want := []string{"AWS_VPC_K8S_CNI_LOGLEVEL", "AWS_VPC_K8S_CNI_LOG_FILE", "AWS_VPC_K8S_PLUGIN_LOG_FILE",
		"AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "DISABLE_INTROSPECTION"}
	slices.Sort(warned)
	slices.Sort(want)
	if !slices.Equal(warned, want) {
		t.Errorf("warned about %v, want %v", warned, want)
	}
}

// Honoured settings keep the AWS VPC CNI's defaults: each is checked
// against the "Default:" its README states.
func TestPeerHonouredDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	node, _ := nodeconf.Parse(nil2)
	inst, err := conflist.OptionsFromEnv(nil2)
	if err != nil {
		t.Fatal(err)
	}
	none := func(unset bool) string {
		if unset {
			return "None"
		}
		return "set"
	}
	empty := func(s string) string {
		if s == "" {
			return "empty"
		}
		return s
	}
	ours := map[string]string{
		"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": strconv.FormatBool(c.CustomNetworking),
		"ENABLE_POD_ENI":                     strconv.FormatBool(c.EnablePodENI),
		"ENI_CONFIG_ANNOTATION_DEF":          c.ENIConfigAnnotationDef,
		"ENI_CONFIG_LABEL_DEF":               c.ENIConfigLabelDef,
		"AWS_VPC_ENI_MTU":                    strconv.Itoa(c.MTU),
		"AWS_VPC_K8S_CNI_EXTERNALSNAT":       strconv.FormatBool(c.ExternalSNAT),
		"AWS_VPC_K8S_CNI_RANDOMIZESNAT":      c.RandomizeSNAT,
		"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": empty(strings.Repeat("set", min(len(c.ExcludeSNATCIDRs), 1))),
		"POD_MTU":                            strconv.Itoa(node.PodMTU),
		"POD_SECURITY_GROUP_ENFORCING_MODE":  node.PodSGMode,
		"WARM_ENI_TARGET":                    strconv.Itoa(c.WarmENITarget),
		"WARM_IP_TARGET":                     none(c.WarmIPTarget == 0),
		"MINIMUM_IP_TARGET":                  none(c.MinimumIPTarget == 0),
		"MAX_ENI":                            none(c.MaxENI == -1),
		"DISABLE_METRICS":                    strconv.FormatBool(c.MetricsAddr == ""),
		"AWS_VPC_K8S_CNI_VETHPREFIX":         c.VethPrefix,
		"CLUSTER_NAME":                       strconv.Quote(c.ClusterName),
		"ENABLE_SUBNET_DISCOVERY":            strconv.FormatBool(c.SubnetDiscovery),
		"ENABLE_PREFIX_DELEGATION":           strconv.FormatBool(c.EnablePrefixDelegation),
		"ENABLE_BANDWIDTH_PLUGIN":            strconv.FormatBool(inst.Bandwidth),
		"ENABLE_IPv4":                        strconv.FormatBool(!c.IPv6),
		"ENABLE_IPv6":                        strconv.FormatBool(c.IPv6),
		"AWS_EC2_ENDPOINT":                   empty(c.EC2Endpoint),
		"DISABLE_LEAKED_ENI_CLEANUP":         strconv.FormatBool(c.DisableLeakedENICleanup),
		"IP_COOLDOWN_PERIOD":                 strconv.Itoa(int(c.IPCooldownPeriod / time.Second)),
	}
	// Where the README's default is not ours, the reason is an independent
	// fact too: the value the AWS VPC CNI's own manifest sets.
	differs := map[string]string{"WARM_PREFIX_TARGET": strconv.Itoa(c.WarmPrefixTarget)}
	for _, v := range peerREADME(t) {
		var s *PeerSetting
		for i := range PeerSettings {
			if PeerSettings[i].Name == v.name {
				s = &PeerSettings[i]
			}
		}
		if s == nil || s.Outcome != Honoured {
			continue
		}
		if got, ok := differs[v.name]; ok {
			if want := peerManifestValue(t, v.name); got != want {
				t.Errorf("%s: our default %s, the AWS VPC CNI's manifest sets %s", v.name, got, want)
			}
			continue
		}
		got, ok := ours[v.name]
		if !ok {
			t.Errorf("%s is honoured: add its default to this test (the README says %q)", v.name, v.def)
			continue
		}
		if got != v.def {
			t.Errorf("%s: default %q here, %q in the AWS VPC CNI's README", v.name, got, v.def)
		}
	}
}

// nil2 is a Lookup with nothing set.
func nil2(string) (string, bool) { return "", false }

// peerManifestValue is the value the AWS VPC CNI's manifest gives name.
func peerManifestValue(t *testing.T, name string) string {
	t.Helper()
	dir, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "config", "master", "aws-k8s-cni.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`- name: ` + regexp.QuoteMeta(name) + `\n\s*value: "([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("the AWS VPC CNI's manifest does not set %s", name)
	}
	return string(m[1])
}

// Honoured settings keep the AWS VPC CNI's meaning for the values its
// README describes.
func TestPeerHonouredMeaning(t *testing.T) {
	vars := map[string]peerVar{}
	for _, v := range peerREADME(t) {
		vars[v.name] = v
	}
	// "Valid Values: `hashrandom`, `prng`, `none`": each is accepted as itself.
	valid := regexp.MustCompile("Valid Values: (.*)").FindStringSubmatch(vars["AWS_VPC_K8S_CNI_RANDOMIZESNAT"].text)
	if valid == nil {
		t.Fatal("AWS_VPC_K8S_CNI_RANDOMIZESNAT: no Valid Values in the README")
	}
	values := regexp.MustCompile("`([a-z]+)`").FindAllStringSubmatch(valid[1], -1)
	if len(values) != 3 {
		t.Fatalf("AWS_VPC_K8S_CNI_RANDOMIZESNAT: valid values %q", valid[1])
	}
	for _, m := range values {
		c, err := Load(env(map[string]string{"AWS_VPC_K8S_CNI_RANDOMIZESNAT": m[1]}))
		if err != nil || c.RandomizeSNAT != m[1] {
			t.Errorf("AWS_VPC_K8S_CNI_RANDOMIZESNAT=%s: %q, %v", m[1], c.RandomizeSNAT, err)
		}
	}
	// "The valid range for IPv4 is from `576` to `9001`, while the valid
	// range for IPv6 is from `1280` to `9001`": the bounds are accepted,
	// one beyond refused, for both MTUs and both families.
	ranges := regexp.MustCompile("IPv4 is from `(\\d+)` to `(\\d+)`, while the valid range for IPv6 is from `(\\d+)` to `(\\d+)`")
	for _, name := range []string{"AWS_VPC_ENI_MTU", "POD_MTU"} {
		m := ranges.FindStringSubmatch(vars[name].text)
		if m == nil {
			t.Fatalf("%s: no valid ranges in the README", name)
		}
		n := func(s string) int { i, _ := strconv.Atoi(s); return i }
		for _, r := range []struct {
			family map[string]string
			lo, hi int
		}{{nil, n(m[1]), n(m[2])}, {map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}, n(m[3]), n(m[4])}} {
			for mtu, ok := range map[int]bool{r.lo: true, r.hi: true, r.lo - 1: false, r.hi + 1: false} {
				e := map[string]string{name: strconv.Itoa(mtu)}
				for k, v := range r.family {
					e[k] = v
				}
				_, err := Load(env(e))
				if (err == nil) != ok {
					t.Errorf("%v: %v, want accepted %v", e, err, ok)
				}
			}
		}
	}
	for _, tt := range []struct {
		env  map[string]string
		ok   bool
		fact string // the README's words
		got  func(Config) bool
	}{
		{map[string]string{"AWS_VPC_K8S_CNI_VETHPREFIX": "abcd"}, true, "at most 4 characters long", func(c Config) bool { return c.VethPrefix == "abcd" }},
		{map[string]string{"AWS_VPC_K8S_CNI_VETHPREFIX": "abcde"}, false, "at most 4 characters long", nil},
		{map[string]string{"AWS_VPC_K8S_CNI_VETHPREFIX": "eth"}, false, "The prefixes `eth`, `vlan`, and `lo` are reserved", nil},
		{map[string]string{"AWS_VPC_K8S_CNI_VETHPREFIX": "vlan"}, false, "The prefixes `eth`, `vlan`, and `lo` are reserved", nil},
		{map[string]string{"AWS_VPC_K8S_CNI_VETHPREFIX": "lo"}, false, "The prefixes `eth`, `vlan`, and `lo` are reserved", nil},
		{map[string]string{"IP_COOLDOWN_PERIOD": "45"}, true, "the number of seconds an IP address is in cooldown", func(c Config) bool { return c.IPCooldownPeriod == 45*time.Second }},
		{map[string]string{"IP_COOLDOWN_PERIOD": "0"}, true, "0 is a supported value", func(c Config) bool { return c.IPCooldownPeriod == 0 }},
		{map[string]string{"WARM_IP_TARGET": "-2"}, true, "Setting this to a non-positive value is the same as setting this to 0", func(c Config) bool { return c.WarmIPTarget == 0 }},
		{map[string]string{"MAX_ENI": "0"}, true, "When `MAX_ENI` is unset or 0 (or lower), the setting", func(c Config) bool { return c.MaxENI == -1 }},
		{map[string]string{"DISABLE_METRICS": "true"}, true, "Specifies whether the prometheus metrics endpoint is disabled", func(c Config) bool { return c.MetricsAddr == "" }},
		{map[string]string{"AWS_EC2_ENDPOINT": "https://localhost:8080"}, true, "Specify the EC2 endpoint to use", func(c Config) bool { return c.EC2Endpoint == "https://localhost:8080" }},
		{map[string]string{"ENABLE_IPv4": "true", "ENABLE_IPv6": "true"}, false, "enabling both IPv4 and IPv6 will be treated as an invalid configuration", nil},
		{map[string]string{"ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone"}, true, "set this to `topology.kubernetes.io/zone`", func(c Config) bool { return c.ENIConfigLabelDef == "topology.kubernetes.io/zone" }},
	} {
		found := false
		for _, v := range vars {
			found = found || strings.Contains(v.text, tt.fact)
		}
		if !found {
			t.Errorf("the AWS VPC CNI's README no longer says %q: recheck %v", tt.fact, tt.env)
		}
		c, err := Load(env(tt.env))
		switch {
		case (err == nil) != tt.ok:
			t.Errorf("%v: %v, want accepted %v (%q)", tt.env, err, tt.ok, tt.fact)
		case tt.ok && !tt.got(c):
			t.Errorf("%v: loaded %+v, not what %q means", tt.env, c, tt.fact)
		}
	}
}

// Our README's table gives every setting with its outcome.
func TestPeerSettingsInOurREADME(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range PeerSettings {
		row := "| `" + s.Name + "` | " + s.Summary() + " |"
		if !bytes.Contains(b, []byte(row)) {
			t.Errorf("README.md lacks the row %q", row)
		}
	}
}
