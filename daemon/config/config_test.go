package config

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) Lookup {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.WarmENITarget != 1 || c.WarmIPTarget != 0 || c.MaxENI != -1 || c.IPCooldownPeriod != 30*time.Second ||
		c.MTU != 9001 || c.VethPrefix != "eni" || c.RandomizeSNAT != "prng" || !c.SubnetDiscovery ||
		c.Socket != "/var/run/vpcchain/ipamd.sock" || c.WarmPrefixTarget != 1 ||
		c.CRISocket != "/run/containerd/containerd.sock" || c.ConsistencyGrace != 2*time.Minute || c.IPTablesMode != "auto" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestCustomNetworking(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil || c.CustomNetworking || c.ENIConfigLabelDef != "k8s.amazonaws.com/eniConfig" ||
		c.ENIConfigAnnotationDef != "k8s.amazonaws.com/eniConfig" {
		t.Errorf("defaults: custom %v, label %q, annotation %q, %v", c.CustomNetworking, c.ENIConfigLabelDef, c.ENIConfigAnnotationDef, err)
	}
	c, err = Load(env(map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "ip-10-0-0-4",
		"ENI_CONFIG_LABEL_DEF": "topology.kubernetes.io/zone"}))
	if err != nil || !c.CustomNetworking || c.NodeName != "ip-10-0-0-4" || c.ENIConfigLabelDef != "topology.kubernetes.io/zone" {
		t.Errorf("custom networking by zone: %+v, %v", c, err)
	}
}

// ENABLE_POD_ENI: security groups for pods, for IPv4 pods, on a node that
// knows its name (its CNINode and its pods are looked up by it).
func TestEnablePodENI(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		want    bool
		wantErr string
	}{
		{nil, false, ""},
		{map[string]string{"ENABLE_POD_ENI": "false"}, false, ""},
		{map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1"}, true, ""},
		{map[string]string{"ENABLE_POD_ENI": "true"}, false, "ENABLE_POD_ENI=true needs MY_NODE_NAME"},
		{map[string]string{"ENABLE_POD_ENI": "yes", "MY_NODE_NAME": "n1"}, false, "ENABLE_POD_ENI"},
		{map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1", "ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}, false,
			"security groups for pods are supported for IPv4 pods only"},
		// WireGuard with branch pods: standard mode only.
		{map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1", "ENABLE_WIREGUARD": "true"}, false,
			"ENABLE_POD_ENI=true with ENABLE_WIREGUARD=true needs POD_SECURITY_GROUP_ENFORCING_MODE=standard"},
		{map[string]string{"ENABLE_POD_ENI": "true", "MY_NODE_NAME": "n1", "ENABLE_WIREGUARD": "true", "POD_SECURITY_GROUP_ENFORCING_MODE": "standard"}, true, ""},
	} {
		c, err := Load(env(tc.env))
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: %v, want an error with %q", tc.env, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || c.EnablePodENI != tc.want):
			t.Errorf("%v: EnablePodENI %v, %v; want %v", tc.env, c.EnablePodENI, err, tc.want)
		}
	}
}

// The address family switches, as the AWS VPC CNI names them: IPv6 pods
// need IPv4 off; dual stack, neither family, and IPv6 with custom
// networking are refused.
func TestAddressFamily(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		want6   bool
		wantErr string
	}{
		{nil, false, ""},
		{map[string]string{"ENABLE_IPv4": "true", "ENABLE_IPv6": "false"}, false, ""},
		{map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true"}, true, ""},
		{map[string]string{"ENABLE_IPv4": "true", "ENABLE_IPv6": "true"}, false, "dual-stack pods are not supported"},
		{map[string]string{"ENABLE_IPv4": "false"}, false, "pods would get no address"},
		{map[string]string{"ENABLE_IPv4": "false", "ENABLE_IPv6": "true", "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true",
			"MY_NODE_NAME": "n1"}, false, "ENABLE_IPv6=true with AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true"},
	} {
		c, err := Load(env(tc.env))
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: error %v, want %q", tc.env, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || c.IPv6 != tc.want6):
			t.Errorf("%v: IPv6=%v, %v; want IPv6=%v", tc.env, c.IPv6, err, tc.want6)
		}
	}
}

func TestCRISocket(t *testing.T) {
	for v, want := range map[string]string{"none": "", "/var/run/crio/crio.sock": "/var/run/crio/crio.sock"} {
		c, err := Load(env(map[string]string{"VPCCHAIN_CRI_SOCKET": v}))
		if err != nil || c.CRISocket != want {
			t.Errorf("VPCCHAIN_CRI_SOCKET=%s: %q, %v; want %q", v, c.CRISocket, err, want)
		}
	}
}

// The daemon's own pod: both names or neither.
func TestOwnPod(t *testing.T) {
	for _, tc := range []struct {
		env           map[string]string
		name, ns, err string
	}{
		{nil, "", "", ""},
		{map[string]string{"MY_POD_NAME": "vpcchain-x7k2p", "MY_POD_NAMESPACE": "kube-system"}, "vpcchain-x7k2p", "kube-system", ""},
		{map[string]string{"MY_POD_NAME": "vpcchain-x7k2p"}, "", "", "set both"},
		{map[string]string{"MY_POD_NAMESPACE": "kube-system"}, "", "", "set both"},
	} {
		c, err := Load(env(tc.env))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want %q", tc.env, err, tc.err)
		case tc.err == "" && (err != nil || c.PodName != tc.name || c.PodNamespace != tc.ns):
			t.Errorf("%v: %q %q, %v; want %q %q", tc.env, c.PodName, c.PodNamespace, err, tc.name, tc.ns)
		}
	}
}

func TestValues(t *testing.T) {
	c, err := Load(env(map[string]string{"WARM_IP_TARGET": "5", "MINIMUM_IP_TARGET": "10", "ENABLE_PREFIX_DELEGATION": "true",
		"MAX_ENI": "2", "IP_COOLDOWN_PERIOD": "130", "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS": "198.51.100.0/24, 10.9.0.0/16",
		"AWS_VPC_K8S_CNI_VETHPREFIX": "cali", "VPCCHAIN_STATE_DIR": "/tmp/x/", "AWS_ENDPOINT_URL_EC2": "http://ec2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WarmIPTarget != 5 || c.MinimumIPTarget != 10 || !c.EnablePrefixDelegation || c.MaxENI != 2 ||
		c.IPCooldownPeriod != 130*time.Second || len(c.ExcludeSNATCIDRs) != 2 || c.VethPrefix != "cali" ||
		c.Socket != "/tmp/x/ipamd.sock" || c.EC2Endpoint != "http://ec2" {
		t.Errorf("values: %+v", c)
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name, val string
		want      string
	}{
		{"WARM_ENI_TARGET", "-1", `WARM_ENI_TARGET="-1" is invalid: want an integer >= 0`},
		{"WARM_IP_TARGET", "abc", `WARM_IP_TARGET="abc" is invalid`},
		{"MAX_ENI", "two", `MAX_ENI="two" is invalid: want an integer`},
		{"MINIMUM_IP_TARGET", "1.5", `MINIMUM_IP_TARGET="1.5" is invalid: want an integer`},
		{"ENABLE_PREFIX_DELEGATION", "yes please", `ENABLE_PREFIX_DELEGATION="yes please" is invalid: want true or false`},
		{"AWS_VPC_ENI_MTU", "70000", `AWS_VPC_ENI_MTU="70000" is invalid: want an integer from 576 to 9001`},
		{"AWS_VPC_K8S_CNI_VETHPREFIX", "vlan", `AWS_VPC_K8S_CNI_VETHPREFIX="vlan" is invalid`},
		{"AWS_VPC_K8S_CNI_VETHPREFIX", "toolong", `AWS_VPC_K8S_CNI_VETHPREFIX="toolong" is invalid`},
		{"AWS_VPC_K8S_CNI_RANDOMIZESNAT", "random", `want one of prng, hashrandom, none`},
		{"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/33", `"10.0.0.0/33" is not an IPv4 CIDR`},
		{"VPCCHAIN_POOL_INTERVAL", "fast", `VPCCHAIN_POOL_INTERVAL="fast" is invalid`},
		{"IP_COOLDOWN_PERIOD", "30s", `IP_COOLDOWN_PERIOD="30s" is invalid: want an integer >= 0`},
		{"VPCCHAIN_CRI_SOCKET", "containerd.sock", `VPCCHAIN_CRI_SOCKET="containerd.sock" is invalid: want the absolute path`},
		{"VPCCHAIN_IPTABLES_MODE", "xtables", `VPCCHAIN_IPTABLES_MODE="xtables" is invalid: want one of auto, nft, legacy`},
		{"WARM_POOL_MODE", "dynamic", `WARM_POOL_MODE="dynamic" is invalid: want one of static, adaptive`},
		{"VPCCHAIN_EC2_CONSISTENCY_GRACE", "0", `VPCCHAIN_EC2_CONSISTENCY_GRACE="0" is invalid`},
		{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "on", `AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="on" is invalid: want true or false`},
		{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "true", `needs MY_NODE_NAME`},
		{"ENI_CONFIG_LABEL_DEF", "zone label", `ENI_CONFIG_LABEL_DEF="zone label" is not a label key`},
		{"ENI_CONFIG_ANNOTATION_DEF", "/eniConfig", `ENI_CONFIG_ANNOTATION_DEF="/eniConfig" is not a label key`},
		{"ENABLE_IPv6", "true", `ENABLE_IPv4=true ENABLE_IPv6=true: dual-stack pods are not supported`},
		{"ENABLE_IPv4", "false", `ENABLE_IPv4=false ENABLE_IPv6=false: pods would get no address`},
		{"ENABLE_IPv6", "maybe", `ENABLE_IPv6="maybe" is invalid: want true or false`},
	}
	for _, tt := range tests {
		_, err := Load(env(map[string]string{tt.name: tt.val}))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%s: error %v, want it to contain %q", tt.name, tt.val, err, tt.want)
		}
	}
	// Every problem is reported at once.
	_, err := Load(env(map[string]string{"WARM_IP_TARGET": "x", "MAX_ENI": "-5x"}))
	if err == nil || !strings.Contains(err.Error(), "WARM_IP_TARGET") || !strings.Contains(err.Error(), "MAX_ENI") {
		t.Errorf("both errors: %v", err)
	}
	_, err = Load(env(map[string]string{"ENABLE_PREFIX_DELEGATION": "true", "WARM_PREFIX_TARGET": "0"}))
	if err == nil || !strings.Contains(err.Error(), "would never hold an address") {
		t.Errorf("PD with no target: %v", err)
	}
}

func TestObservability(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsAddr != "127.0.0.1:61678" || c.LogLevel != slog.LevelInfo || c.LogFile != "stderr" {
		t.Errorf("defaults: metrics %q, level %v, file %q", c.MetricsAddr, c.LogLevel, c.LogFile)
	}
	for _, tt := range []struct {
		env        map[string]string
		addr, file string
		level      slog.Level
	}{
		{map[string]string{"VPCCHAIN_METRICS_ADDR": ""}, "", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_METRICS_ADDR": "  "}, "", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_METRICS_ADDR": ":9100"}, ":9100", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_METRICS_ADDR": "[::1]:9100"}, "[::1]:9100", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_METRICS_ADDR": "localhost:9100"}, "localhost:9100", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_METRICS_ADDR": "primary:61678"}, "primary:61678", "stderr", slog.LevelInfo},
		{map[string]string{"VPCCHAIN_LOG_LEVEL": "debug", "VPCCHAIN_LOG_FILE": "/var/log/vpcchain/ipamd.log"},
			"127.0.0.1:61678", "/var/log/vpcchain/ipamd.log", slog.LevelDebug},
		{map[string]string{"VPCCHAIN_LOG_LEVEL": "WARN", "VPCCHAIN_LOG_FILE": "stderr"}, "127.0.0.1:61678", "stderr", slog.LevelWarn},
		{map[string]string{"VPCCHAIN_LOG_LEVEL": "error"}, "127.0.0.1:61678", "stderr", slog.LevelError},
	} {
		c, err := Load(env(tt.env))
		if err != nil {
			t.Errorf("%v: %v", tt.env, err)
			continue
		}
		if c.MetricsAddr != tt.addr || c.LogFile != tt.file || c.LogLevel != tt.level {
			t.Errorf("%v: metrics %q, level %v, file %q", tt.env, c.MetricsAddr, c.LogLevel, c.LogFile)
		}
	}
	for _, tt := range []struct{ name, val, want string }{
		{"VPCCHAIN_METRICS_ADDR", "61678", `VPCCHAIN_METRICS_ADDR="61678" is invalid: want host:port`},
		{"VPCCHAIN_METRICS_ADDR", "127.0.0.1:0", `VPCCHAIN_METRICS_ADDR="127.0.0.1:0" is invalid: want host:port`},
		{"VPCCHAIN_METRICS_ADDR", "primary", `VPCCHAIN_METRICS_ADDR="primary" is invalid: want host:port`},
		{"VPCCHAIN_METRICS_ADDR", "primary:", `VPCCHAIN_METRICS_ADDR="primary:" is invalid`},
		{"VPCCHAIN_METRICS_ADDR", "127.0.0.1:http", `VPCCHAIN_METRICS_ADDR="127.0.0.1:http" is invalid`},
		{"VPCCHAIN_METRICS_ADDR", "127.0.0.1:70000", `port from 1 to 65535`},
		{"VPCCHAIN_METRICS_ADDR", "bad host:80", `VPCCHAIN_METRICS_ADDR="bad host:80" is invalid`},
		{"VPCCHAIN_METRICS_ADDR", "http://127.0.0.1:80", `VPCCHAIN_METRICS_ADDR="http://127.0.0.1:80" is invalid`},
		{"VPCCHAIN_LOG_LEVEL", "trace", `VPCCHAIN_LOG_LEVEL="trace" is invalid: want one of debug, info, warn, error`},
		{"VPCCHAIN_LOG_FILE", "stdout", `VPCCHAIN_LOG_FILE="stdout" is invalid: want stderr or an absolute file path (logs are never written to stdout)`},
		{"VPCCHAIN_LOG_FILE", "/dev/stdout", `VPCCHAIN_LOG_FILE="/dev/stdout" is invalid`},
		{"VPCCHAIN_LOG_FILE", "ipamd.log", `VPCCHAIN_LOG_FILE="ipamd.log" is invalid`},
	} {
		_, err := Load(env(map[string]string{tt.name: tt.val}))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s=%s: error %v, want it to contain %q", tt.name, tt.val, err, tt.want)
		}
	}
}

// Values the AWS VPC CNI's README gives a meaning to keep it: "Setting this
// to a non-positive value is the same as setting this to 0 or not setting
// the variable" (WARM_IP_TARGET, MINIMUM_IP_TARGET, WARM_PREFIX_TARGET);
// "When MAX_ENI is unset or 0 (or lower), the setting is not used".
func TestNonPositiveTargets(t *testing.T) {
	for _, tt := range []struct {
		name, val string
		got       func(Config) int
		want      int
	}{
		{"WARM_IP_TARGET", "-1", func(c Config) int { return c.WarmIPTarget }, 0},
		{"MINIMUM_IP_TARGET", "-20", func(c Config) int { return c.MinimumIPTarget }, 0},
		{"WARM_PREFIX_TARGET", "-1", func(c Config) int { return c.WarmPrefixTarget }, 0},
		{"WARM_PREFIX_TARGET", "0", func(c Config) int { return c.WarmPrefixTarget }, 0},
		{"MAX_ENI", "0", func(c Config) int { return c.MaxENI }, -1},
		{"MAX_ENI", "-4", func(c Config) int { return c.MaxENI }, -1},
		{"MAX_ENI", "2", func(c Config) int { return c.MaxENI }, 2},
	} {
		c, err := Load(env(map[string]string{tt.name: tt.val}))
		if err != nil {
			t.Errorf("%s=%s: %v", tt.name, tt.val, err)
			continue
		}
		if got := tt.got(c); got != tt.want {
			t.Errorf("%s=%s: %d, want %d", tt.name, tt.val, got, tt.want)
		}
	}
}

// The metrics listener's address: "primary" is the node's own address (in
// its family), any other host is kept as configured.
func TestMetricsListenAddr(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.3.17"), netip.MustParseAddr("2600:1f14:abc:de00::4")
	for _, tt := range []struct {
		addr string
		node netip.Addr
		want string // "" = an error
	}{
		{"primary:61678", v4, "10.0.3.17:61678"},
		{"primary:9100", v6, "[2600:1f14:abc:de00::4]:9100"},
		{"primary:61678", netip.Addr{}, ""},
		{"127.0.0.1:61678", v4, "127.0.0.1:61678"},
		{":61678", v4, ":61678"},
		{"[::1]:61678", netip.Addr{}, "[::1]:61678"},
		{"metrics.internal:61678", v4, "metrics.internal:61678"},
	} {
		got, err := MetricsListenAddr(tt.addr, tt.node)
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), "VPCCHAIN_METRICS_ADDR") {
				t.Errorf("%s with node %v: %q, %v; want an error naming VPCCHAIN_METRICS_ADDR", tt.addr, tt.node, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s with node %v: %q, %v; want %q", tt.addr, tt.node, got, err, tt.want)
		}
	}
}
