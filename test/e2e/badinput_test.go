package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/vpcchain/vpcchain/internal/vethname"
)

// runPlugin executes a plugin binary inside the node's namespace exactly as a
// runtime does (CNI_* environment, config on stdin) and returns its stdout.
func runPlugin(t *testing.T, n *node, plugin, command string, env map[string]string, stdin string) ([]byte, error) {
	t.Helper()
	var out []byte
	var runErr error
	err := n.do(func() error {
		cmd := exec.Command(filepath.Join(n.c.bin, plugin))
		cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_PATH=" + n.c.bin}
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Stdin = strings.NewReader(stdin)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		cmd.Stderr = n.pluginLog()
		runErr = cmd.Run()
		out = stdout.Bytes()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, runErr
}

// nodeState is everything on the node that a CNI call may create or remove
// (not what the daemon's pool changes on its own, such as ENIs): host veths,
// the pods' 512/1536 rules and main-table /32 routes, the SNAT set's
// members, our iptables rules and ipsets, and the daemon's allocations. A
// refused call must leave it exactly as it was.
func nodeState(t *testing.T, n *node) []string {
	t.Helper()
	var out []string
	err := n.do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			a := l.Attrs()
			if strings.HasPrefix(a.Name, vethname.DefaultPrefix) || strings.HasPrefix(a.Alias, "vpcchain") {
				out = append(out, fmt.Sprintf("link %s alias %q", a.Name, a.Alias))
			}
		}
		rules, err := netlink.RuleList(netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rules {
			if r.Priority == 512 || r.Priority == 1536 {
				out = append(out, fmt.Sprintf("rule %d from %v to %v table %d", r.Priority, r.Src, r.Dst, r.Table))
			}
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if ones, _ := r.Dst.Mask.Size(); ones == 32 {
				out = append(out, fmt.Sprintf("route %v dev %d", r.Dst, r.LinkIndex))
			}
		}
		b, err := exec.Command("ipset", "save").Output()
		if err != nil {
			return fmt.Errorf("ipset save: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "add vpcchain") {
				out = append(out, "ipset "+l)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, ourRules(t, n)...)
	for _, a := range n.introspect().Allocations {
		out = append(out, fmt.Sprintf("allocation %s/%s/%s %s", a.Key.Network, a.Key.ContainerId, a.Key.Ifname, a.Ip))
	}
	sort.Strings(out)
	return out
}

// diffState lists what was added (+) and removed (-) between two states.
func diffState(before, after []string) []string {
	count := map[string]int{}
	for _, s := range before {
		count[s]--
	}
	for _, s := range after {
		count[s]++
	}
	var d []string
	for s, c := range count {
		if len(s) > 200 {
			s = s[:200] + "..."
		}
		switch {
		case c > 0:
			d = append(d, "+ "+s)
		case c < 0:
			d = append(d, "- "+s)
		}
	}
	sort.Strings(d)
	return d
}

// badCase is one hostile or malformed invocation of a plugin. code 0 means
// the spec wants success (a lenient DEL, an address the plugin must leave
// alone); otherwise the call must fail with exactly code, and the message or
// details must name the offending field or value (mentions).
type badCase struct {
	name     string
	plugin   string
	command  string // default ADD
	stdin    string
	env      map[string]string // overrides of the default CNI_* environment; "" unsets
	code     uint
	mentions string
}

// TestBadInputLeavesNothingBehind runs the four plugins with malformed and
// hostile configurations, environments and prevResults next to a live pod
// (chain vpc-bridge + vpc-snat). Every call gets its precise CNI error (or
// the spec's success for DEL), and the node, the daemon and the live pod are
// exactly as before each call.
func TestBadInputLeavesNothingBehind(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"x"})
	n := c.nodes["x"]
	snatFile := filepath.Join(n.state, "snat.json")
	chain := n.chain(nil, map[string]any{"type": "vpc-snat", "nodeConfig": snatFile})

	// The live pod whose address, veth, rules and SNAT entry the bad calls
	// must not touch, even when they name them.
	victim := n.newPod("default", "victim")
	if err := victim.addRetrying(chain, time.Minute); err != nil {
		t.Fatal(err)
	}
	vIP := victim.ip.String()
	vHost := victim.result.Interfaces[0].Name

	p := n.newPod("default", "bad")
	const badVeth = "eni277eabe6abc" // "eni" + printf %s default.bad | sha1sum, first 11 hex digits
	regular := filepath.Join(c.dir, "regular-file")
	if err := os.WriteFile(regular, []byte("not a namespace\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	garbageNodeConfig := filepath.Join(c.dir, "garbage-snat.json")
	if err := os.WriteFile(garbageNodeConfig, []byte(`{"primaryIP": `), 0o644); err != nil {
		t.Fatal(err)
	}
	long := func(n int) string { return strings.Repeat("a", n) }

	mustJSON := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// prev is a 1.1.0 result: host veth, pod interface in the bad pod's
	// netns, and the given addresses on the pod interface.
	prev := func(hostVeth string, addrs ...string) map[string]any {
		var ips []any
		for _, a := range addrs {
			ips = append(ips, map[string]any{"address": a, "interface": 1})
		}
		return map[string]any{"cniVersion": "1.1.0", "ips": ips, "interfaces": []any{
			map[string]any{"name": hostVeth, "mac": "02:00:00:00:00:01"},
			map[string]any{"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": p.netns.Path()},
		}}
	}
	// Configurations as the runtime (or the delegating vpc-bridge) passes
	// them; mod changes the top level and the ipam section.
	bridge := func(mod func(top, ipam map[string]any)) string {
		ipam := map[string]any{"type": "vpc-ipam", "socket": n.socket}
		top := map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-bridge", "ipam": ipam}
		if mod != nil {
			mod(top, ipam)
		}
		return mustJSON(top)
	}
	ipam := bridge // vpc-ipam reads the top level's name and the ipam section
	snat := func(mod func(top map[string]any)) string {
		top := map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-snat", "nodeConfig": snatFile,
			"prevResult": prev(badVeth, "10.0.15.250/32")}
		if mod != nil {
			mod(top)
		}
		return mustJSON(top)
	}
	hook := func(mod func(top map[string]any)) string {
		top := map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "type": "policy-hook",
			"kubeconfig": filepath.Join(c.dir, "no-such-kubeconfig"), "prevResult": prev(badVeth, "10.0.15.250/32")}
		if mod != nil {
			mod(top)
		}
		return mustJSON(top)
	}
	// egress is vpc-egress-v4 after an IPv6 interface plugin; its IPAM is
	// vpc-ipam here only so that the plugin is found (no case reaches it
	// with an ADD).
	egress := func(mod func(top, ipam map[string]any)) string {
		ipam := map[string]any{"type": "vpc-ipam", "socket": n.socket}
		top := map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-egress-v4", "ipam": ipam,
			"prevResult": prev(badVeth, "2600:1f14::5/128")}
		if mod != nil {
			mod(top, ipam)
		}
		return mustJSON(top)
	}
	const podArgs = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad"
	args := func(a string) map[string]string { return map[string]string{"CNI_ARGS": a} }
	netnsEnv := func(v string) map[string]string { return map[string]string{"CNI_NETNS": v} }
	ifEnv := func(v string) map[string]string { return map[string]string{"CNI_IFNAME": v} }
	idEnv := func(v string) map[string]string { return map[string]string{"CNI_CONTAINERID": v} }

	cases := []badCase{
		// vpc-bridge: configuration.
		{name: "malformed stdin config", plugin: "vpc-bridge", stdin: `{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-bridge", `,
			code: types.ErrDecodingFailure, mentions: "unexpected end of JSON input"},
		{name: "known field with a wrong type", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["mtu"] = "jumbo" }),
			code: types.ErrDecodingFailure, mentions: "mtu"},
		{name: "mtu above the maximum", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["mtu"] = 100000 }),
			code: types.ErrInvalidNetworkConfig, mentions: "mtu 100000"},
		{name: "negative mtu", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["mtu"] = -1 }),
			code: types.ErrInvalidNetworkConfig, mentions: "mtu -1"},
		{name: "veth prefix over 4 characters", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["vethPrefix"] = "calico" }),
			code: types.ErrInvalidNetworkConfig, mentions: "calico"},
		{name: "reserved veth prefix", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["vethPrefix"] = "eth" }),
			code: types.ErrInvalidNetworkConfig, mentions: "vethPrefix"},
		{name: "veth prefix with a slash", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["vethPrefix"] = "a/b" }),
			code: types.ErrInvalidNetworkConfig, mentions: "a/b"},
		{name: "unsupported cniVersion", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["cniVersion"] = "9.9.9" }),
			code: types.ErrIncompatibleCNIVersion, mentions: "9.9.9"},
		{name: "cniVersion of the wrong type", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["cniVersion"] = 1 }),
			code: types.ErrDecodingFailure, mentions: "cniVersion"},
		{name: "missing network name", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { delete(top, "name") }),
			code: types.ErrInvalidNetworkConfig, mentions: "network name"},
		{name: "network name with shell metacharacters", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["name"] = "vpc;rm -rf /" }),
			code: types.ErrInvalidNetworkConfig, mentions: "vpc;rm -rf /"},
		{name: "network name with a NUL byte", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["name"] = "vpc\x00chain" }),
			code: types.ErrInvalidNetworkConfig, mentions: "network name"},
		{name: "network name of 10000 bytes", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["name"] = long(10000) }),
			code: types.ErrInvalidNetworkConfig, mentions: "network name"},
		{name: "missing ipam type", plugin: "vpc-bridge", stdin: bridge(func(_, ip map[string]any) { delete(ip, "type") }),
			code: types.ErrInvalidNetworkConfig, mentions: "ipam.type"},
		{name: "ipam type is a path", plugin: "vpc-bridge", stdin: bridge(func(_, ip map[string]any) { ip["type"] = "../../bin/sh" }),
			code: types.ErrInvalidNetworkConfig, mentions: "../../bin/sh"},
		{name: "ipam plugin not installed", plugin: "vpc-bridge", stdin: bridge(func(_, ip map[string]any) { ip["type"] = "no-such-ipam" }),
			code: types.ErrInvalidNetworkConfig, mentions: "no-such-ipam"},
		{name: "IPAM field with a wrong type", plugin: "vpc-bridge", stdin: bridge(func(_, ip map[string]any) { ip["timeout"] = 5 }),
			code: types.ErrDecodingFailure, mentions: "timeout"},
		{name: "missing daemon socket", plugin: "vpc-bridge", stdin: bridge(func(_, ip map[string]any) { ip["socket"] = filepath.Join(n.state, "nope.sock") }),
			code: types.ErrTryAgainLater, mentions: "nope.sock"},
		{name: "malformed prevResult", plugin: "vpc-bridge", stdin: bridge(func(top, _ map[string]any) { top["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": "all"} }),
			code: types.ErrDecodingFailure, mentions: "prevResult"},
		// vpc-bridge: runtime environment.
		{name: "netns path that does not exist", plugin: "vpc-bridge", stdin: bridge(nil), env: netnsEnv("/var/run/netns/vpcchain-e2e-missing-" + p.id),
			code: types.ErrInvalidNetNS, mentions: "vpcchain-e2e-missing-"},
		{name: "netns is a regular file", plugin: "vpc-bridge", stdin: bridge(nil), env: netnsEnv(regular),
			code: types.ErrInvalidNetNS, mentions: regular},
		{name: "netns path traversal to a directory", plugin: "vpc-bridge", stdin: bridge(nil), env: netnsEnv("/proc/self/../../etc"),
			code: types.ErrInvalidNetNS, mentions: "/proc/self/../../etc"},
		{name: "netns missing", plugin: "vpc-bridge", stdin: bridge(nil), env: netnsEnv(""),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_NETNS"},
		{name: "ifname over 15 bytes", plugin: "vpc-bridge", stdin: bridge(nil), env: ifEnv("eth0123456789abc"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "eth0123456789abc"},
		{name: "ifname with a slash", plugin: "vpc-bridge", stdin: bridge(nil), env: ifEnv("eth/0"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "eth/0"},
		{name: "ifname with a newline", plugin: "vpc-bridge", stdin: bridge(nil), env: ifEnv("eth\n0"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_IFNAME"},
		{name: "ifname dot-dot", plugin: "vpc-bridge", stdin: bridge(nil), env: ifEnv(".."),
			code: types.ErrInvalidEnvironmentVariables, mentions: ".."},
		{name: "ifname missing", plugin: "vpc-bridge", stdin: bridge(nil), env: ifEnv(""),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_IFNAME"},
		{name: "container ID missing", plugin: "vpc-bridge", stdin: bridge(nil), env: idEnv(""),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_CONTAINERID"},
		{name: "container ID with shell metacharacters", plugin: "vpc-bridge", stdin: bridge(nil), env: idEnv("abc$(reboot)"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "abc$(reboot)"},
		{name: "container ID of 4000 bytes", plugin: "vpc-bridge", stdin: bridge(nil), env: idEnv(long(4000)),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_CONTAINERID"},
		{name: "CNI_ARGS pair without '='", plugin: "vpc-bridge", stdin: bridge(nil), env: args("IgnoreUnknown=1;K8S_POD_NAME"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "K8S_POD_NAME"},
		{name: "CNI_ARGS with a duplicate key", plugin: "vpc-bridge", stdin: bridge(nil), env: args(podArgs + ";K8S_POD_NAME=other"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "K8S_POD_NAME is given more than once"},
		{name: "CNI_ARGS of 100 KiB", plugin: "vpc-bridge", stdin: bridge(nil), env: args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + long(100<<10)),
			code: types.ErrInvalidEnvironmentVariables, mentions: "K8S_POD_NAME"},
		{name: "pod name with path traversal", plugin: "vpc-bridge", stdin: bridge(nil), env: args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../etc"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "../../etc"},
		{name: "pod namespace with uppercase", plugin: "vpc-bridge", stdin: bridge(nil), env: args("IgnoreUnknown=1;K8S_POD_NAMESPACE=Default;K8S_POD_NAME=bad"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "Default"},
		{name: "unknown CNI_COMMAND", plugin: "vpc-bridge", command: "ADDX", stdin: bridge(nil),
			code: types.ErrInvalidEnvironmentVariables, mentions: "ADDX"},
		{name: "ADD for the live pod's name from another sandbox", plugin: "vpc-bridge", stdin: bridge(nil),
			env:  args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=victim"),
			code: types.ErrTryAgainLater, mentions: vHost},
		// vpc-bridge: CHECK and DEL.
		{name: "CHECK without prevResult", plugin: "vpc-bridge", command: "CHECK", stdin: bridge(nil),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "CHECK with the live pod's prevResult", plugin: "vpc-bridge", command: "CHECK",
			stdin: bridge(func(top, _ map[string]any) { top["prevResult"] = prev(vHost, vIP+"/32") }),
			code:  102, mentions: vIP},
		{name: "DEL with malformed config", plugin: "vpc-bridge", command: "DEL", stdin: `{"cniVersion": "1.1.0", "name": `,
			code: types.ErrDecodingFailure, mentions: "unexpected end of JSON input"},
		{name: "DEL of an attachment that never existed", plugin: "vpc-bridge", command: "DEL", stdin: bridge(nil), code: 0},
		{name: "DEL without netns", plugin: "vpc-bridge", command: "DEL", stdin: bridge(nil), env: netnsEnv(""), code: 0},
		{name: "DEL with a netns that is a regular file", plugin: "vpc-bridge", command: "DEL", stdin: bridge(nil), env: netnsEnv(regular), code: 0},
		{name: "DEL with malformed CNI_ARGS", plugin: "vpc-bridge", command: "DEL", stdin: bridge(nil), env: args("garbage"), code: 0},
		{name: "DEL with the live pod's prevResult", plugin: "vpc-bridge", command: "DEL",
			stdin: bridge(func(top, _ map[string]any) { top["prevResult"] = prev(vHost, vIP+"/32") }), code: 0},
		{name: "DEL of an older sandbox of the live pod", plugin: "vpc-bridge", command: "DEL", stdin: bridge(nil),
			env: args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=victim"), code: 0},

		// vpc-ipam, run directly as a runtime (or vpc-bridge) would.
		{name: "unknown ipam field", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["subnet"] = "10.0.0.0/8" }),
			code: types.ErrUnsupportedField, mentions: "ipam.subnet"},
		{name: "ipam section is an array", plugin: "vpc-ipam", stdin: ipam(func(top, _ map[string]any) { top["ipam"] = []any{"vpc-ipam"} }),
			code: types.ErrDecodingFailure, mentions: "ipam"},
		{name: "relative socket path", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["socket"] = "../../run/ipamd.sock" }),
			code: types.ErrInvalidNetworkConfig, mentions: "../../run/ipamd.sock"},
		{name: "socket path names a directory", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["socket"] = "/run/" }),
			code: types.ErrInvalidNetworkConfig, mentions: "ipam.socket"},
		{name: "socket path too long", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["socket"] = "/" + long(200) }),
			code: types.ErrInvalidNetworkConfig, mentions: "ipam.socket"},
		{name: "socket path with a NUL byte", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["socket"] = "/run/x\x00.sock" }),
			code: types.ErrInvalidNetworkConfig, mentions: "NUL"},
		{name: "socket is a regular file", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["socket"] = regular }),
			code: types.ErrTryAgainLater, mentions: regular},
		{name: "timeout zero", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["timeout"] = "0s" }),
			code: types.ErrInvalidNetworkConfig, mentions: "ipam.timeout"},
		{name: "timeout too long", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["timeout"] = "10h" }),
			code: types.ErrInvalidNetworkConfig, mentions: "10h"},
		{name: "timeout not a duration", plugin: "vpc-ipam", stdin: ipam(func(_, ip map[string]any) { ip["timeout"] = "soon" }),
			code: types.ErrInvalidNetworkConfig, mentions: "soon"},
		{name: "ipam CNI_ARGS with a duplicate key", plugin: "vpc-ipam", stdin: ipam(nil), env: args(podArgs + ";K8S_POD_NAMESPACE=kube-system"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "K8S_POD_NAMESPACE"},
		{name: "ipam pod name with a newline", plugin: "vpc-ipam", stdin: ipam(nil), env: args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad\nname"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "K8S_POD_NAME"},
		{name: "ipam container ID of 4000 bytes", plugin: "vpc-ipam", stdin: ipam(nil), env: idEnv(long(4000)),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_CONTAINERID"},
		{name: "ipam network name of 10000 bytes", plugin: "vpc-ipam", stdin: ipam(func(top, _ map[string]any) { top["name"] = long(10000) }),
			code: types.ErrInvalidNetworkConfig, mentions: "network name"},
		{name: "ipam relative netns path", plugin: "vpc-ipam", stdin: ipam(nil), env: netnsEnv("../../proc/1/ns/net"),
			code: types.ErrInvalidNetNS, mentions: "../../proc/1/ns/net"},
		{name: "ipam unknown CNI_COMMAND", plugin: "vpc-ipam", command: "del", stdin: ipam(nil),
			code: types.ErrInvalidEnvironmentVariables, mentions: "del"},
		{name: "ipam CHECK without prevResult", plugin: "vpc-ipam", command: "CHECK", stdin: ipam(nil),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "ipam CHECK with the live pod's address", plugin: "vpc-ipam", command: "CHECK",
			stdin: ipam(func(top, _ map[string]any) { top["prevResult"] = prev(vHost, vIP+"/32") }),
			code:  102, mentions: vIP},
		{name: "ipam CHECK of the live pod's key with another address", plugin: "vpc-ipam", command: "CHECK",
			stdin: ipam(func(top, _ map[string]any) { top["prevResult"] = prev(vHost, "10.0.15.250/32") }), env: idEnv(victim.id),
			code: 102, mentions: "10.0.15.250"},
		{name: "ipam CHECK with two addresses", plugin: "vpc-ipam", command: "CHECK",
			stdin: ipam(func(top, _ map[string]any) { top["prevResult"] = prev(badVeth, "10.0.15.250/32", "10.0.15.251/32") }),
			code:  types.ErrInvalidNetworkConfig, mentions: "2 addresses"},
		{name: "ipam CHECK with both families", plugin: "vpc-ipam", command: "CHECK",
			stdin: ipam(func(top, _ map[string]any) { top["prevResult"] = prev(badVeth, "10.0.15.250/32", "2600:1f14::5/128") }),
			code:  types.ErrInvalidNetworkConfig, mentions: "2 addresses"},
		{name: "ipam CHECK with an IPv6 address the daemon never gave", plugin: "vpc-ipam", command: "CHECK",
			stdin: ipam(func(top, _ map[string]any) { top["prevResult"] = prev(badVeth, "2600:1f14::5/128") }),
			code:  102, mentions: "holds no address"},
		{name: "ipam GC without valid-attachments", plugin: "vpc-ipam", command: "GC", stdin: ipam(nil),
			code: types.ErrInvalidNetworkConfig, mentions: "cni.dev/valid-attachments"},
		{name: "ipam GC with valid-attachments of the wrong type", plugin: "vpc-ipam", command: "GC",
			stdin: ipam(func(top, _ map[string]any) { top["cni.dev/valid-attachments"] = "everything" }),
			code:  types.ErrDecodingFailure, mentions: "cni.dev/valid-attachments"},
		{name: "ipam GC of another network", plugin: "vpc-ipam", command: "GC",
			stdin: ipam(func(top, _ map[string]any) { top["name"] = "other"; top["cni.dev/valid-attachments"] = []any{} }), code: 0},
		{name: "ipam STATUS with a socket that is a regular file", plugin: "vpc-ipam", command: "STATUS",
			stdin: ipam(func(_, ip map[string]any) { ip["socket"] = regular }), code: 50, mentions: regular},
		{name: "ipam DEL of a key that cannot exist", plugin: "vpc-ipam", command: "DEL", stdin: ipam(nil), env: idEnv(long(4000)), code: 0},

		// vpc-snat: needs the prevResult of the interface plugin.
		{name: "snat without prevResult", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { delete(top, "prevResult") }),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "snat malformed prevResult", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": "x"} }),
			code: types.ErrDecodingFailure, mentions: "prevResult"},
		{name: "snat prevResult of an unknown version", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["prevResult"] = map[string]any{"cniVersion": "7.0.0"} }),
			code: types.ErrDecodingFailure, mentions: "7.0.0"},
		{name: "snat relative nodeConfig", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["nodeConfig"] = "../../etc/snat.json" }),
			code: types.ErrInvalidNetworkConfig, mentions: "../../etc/snat.json"},
		{name: "snat nodeConfig of the wrong type", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["nodeConfig"] = true }),
			code: types.ErrDecodingFailure, mentions: "nodeConfig"},
		{name: "snat nodeConfig missing", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["nodeConfig"] = filepath.Join(c.dir, "none.json") }),
			code: types.ErrTryAgainLater, mentions: "none.json"},
		{name: "snat nodeConfig not JSON", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["nodeConfig"] = garbageNodeConfig }),
			code: types.ErrInternal, mentions: garbageNodeConfig},
		{name: "snat prevResult address outside the VPC", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["prevResult"] = prev(badVeth, "8.8.8.8/32") }),
			code: types.ErrInvalidNetworkConfig, mentions: "8.8.8.8"},
		{name: "snat prevResult address is the node's", plugin: "vpc-snat",
			stdin: snat(func(top map[string]any) { top["prevResult"] = prev(badVeth, n.primaryIP(t)+"/32") }),
			code:  types.ErrInvalidNetworkConfig, mentions: n.primaryIP(t)},
		{name: "snat prevResult with only IPv6", plugin: "vpc-snat", stdin: snat(func(top map[string]any) { top["prevResult"] = prev(badVeth, "fd00::5/128") }), code: 0},
		{name: "snat unknown CNI_COMMAND", plugin: "vpc-snat", command: "REMOVE", stdin: snat(nil),
			code: types.ErrInvalidEnvironmentVariables, mentions: "REMOVE"},
		{name: "snat CHECK of an address not in the set", plugin: "vpc-snat", command: "CHECK", stdin: snat(nil),
			code: types.ErrInternal, mentions: "10.0.15.250"},
		{name: "snat DEL without prevResult", plugin: "vpc-snat", command: "DEL", stdin: snat(func(top map[string]any) { delete(top, "prevResult") }), code: 0},
		{name: "snat DEL with the live pod's address", plugin: "vpc-snat", command: "DEL",
			stdin: snat(func(top map[string]any) { top["prevResult"] = prev(vHost, vIP+"/32") }), code: 0},

		// vpc-egress-v4: IPv4 egress for IPv6 pods.
		{name: "egress without prevResult", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { delete(top, "prevResult") }),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "egress malformed prevResult", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["prevResult"] = map[string]any{"cniVersion": "1.1.0", "ips": 5} }),
			code: types.ErrDecodingFailure, mentions: "prevResult"},
		{name: "egress without ipam", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { delete(top, "ipam") }),
			code: types.ErrInvalidNetworkConfig, mentions: "ipam.type"},
		{name: "egress ipam plugin not installed", plugin: "vpc-egress-v4", stdin: egress(func(_, ip map[string]any) { ip["type"] = "no-such-ipam" }),
			code: types.ErrInvalidNetworkConfig, mentions: "no-such-ipam"},
		{name: "egress ifName over 15 bytes", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["ifName"] = "v4if0123456789ab" }),
			code: types.ErrInvalidNetworkConfig, mentions: "v4if0123456789ab"},
		{name: "egress ifName with a slash", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["ifName"] = "v4/0" }),
			code: types.ErrInvalidNetworkConfig, mentions: "v4/0"},
		{name: "egress ifName is the pod's main interface", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["ifName"] = "eth0" }),
			code: types.ErrInvalidNetworkConfig, mentions: "main interface"},
		{name: "egress mtu above the maximum", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["mtu"] = 65536 }),
			code: types.ErrInvalidNetworkConfig, mentions: "mtu 65536"},
		{name: "egress mtu of the wrong type", plugin: "vpc-egress-v4", stdin: egress(func(top, _ map[string]any) { top["mtu"] = "big" }),
			code: types.ErrDecodingFailure, mentions: "mtu"},
		{name: "egress netns that does not exist", plugin: "vpc-egress-v4", stdin: egress(nil), env: netnsEnv("/var/run/netns/vpcchain-e2e-missing-" + p.id),
			code: types.ErrInvalidNetNS, mentions: "vpcchain-e2e-missing-"},
		{name: "egress for an IPv4 pod does nothing", plugin: "vpc-egress-v4",
			stdin: egress(func(top, _ map[string]any) { top["prevResult"] = prev(badVeth, "10.0.15.250/32") }), code: 0},
		{name: "egress CHECK without prevResult", plugin: "vpc-egress-v4", command: "CHECK", stdin: egress(func(top, _ map[string]any) { delete(top, "prevResult") }),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "egress CHECK of an attachment that never existed", plugin: "vpc-egress-v4", command: "CHECK", stdin: egress(nil),
			code: types.ErrInternal, mentions: "pod interface v4if0 not found"},
		{name: "egress GC without valid-attachments", plugin: "vpc-egress-v4", command: "GC", stdin: egress(nil),
			code: types.ErrInvalidNetworkConfig, mentions: "cni.dev/valid-attachments"},
		{name: "egress DEL of an attachment that never existed", plugin: "vpc-egress-v4", command: "DEL", stdin: egress(nil), code: 0},
		{name: "egress DEL without netns", plugin: "vpc-egress-v4", command: "DEL", stdin: egress(nil), env: netnsEnv(""), code: 0},

		// policy-hook: everything it validates before talking to Kubernetes.
		{name: "hook without kubeconfig", plugin: "policy-hook", stdin: hook(func(top map[string]any) { delete(top, "kubeconfig") }),
			code: types.ErrInvalidNetworkConfig, mentions: "kubeconfig"},
		{name: "hook relative kubeconfig", plugin: "policy-hook", stdin: hook(func(top map[string]any) { top["kubeconfig"] = "../../root/.kube/config" }),
			code: types.ErrInvalidNetworkConfig, mentions: "../../root/.kube/config"},
		{name: "hook publishPodIP of the wrong type", plugin: "policy-hook", stdin: hook(func(top map[string]any) { top["publishPodIP"] = "yes" }),
			code: types.ErrDecodingFailure, mentions: "publishPodIP"},
		{name: "hook veth prefix too long", plugin: "policy-hook", stdin: hook(func(top map[string]any) { top["vethPrefix"] = "calico" }),
			code: types.ErrInvalidNetworkConfig, mentions: "calico"},
		{name: "hook wait timeout not a duration", plugin: "policy-hook",
			stdin: hook(func(top map[string]any) { top["waitForPolicy"] = map[string]any{"timeout": "forever"} }),
			code:  types.ErrInvalidNetworkConfig, mentions: "forever"},
		{name: "hook negative wait timeout", plugin: "policy-hook",
			stdin: hook(func(top map[string]any) { top["waitForPolicy"] = map[string]any{"timeout": "-1s"} }),
			code:  types.ErrInvalidNetworkConfig, mentions: "-1s"},
		{name: "hook relative endpoint status dir", plugin: "policy-hook",
			stdin: hook(func(top map[string]any) {
				top["waitForPolicy"] = map[string]any{"timeout": "1s", "endpointStatusDir": "../../etc"}
			}),
			code: types.ErrInvalidNetworkConfig, mentions: "../../etc"},
		{name: "hook waiting without publishing", plugin: "policy-hook",
			stdin: hook(func(top map[string]any) {
				top["publishPodIP"] = false
				top["waitForPolicy"] = map[string]any{"timeout": "1s"}
			}),
			code: types.ErrInvalidNetworkConfig, mentions: "publishPodIP"},
		{name: "hook without prevResult", plugin: "policy-hook", stdin: hook(func(top map[string]any) { delete(top, "prevResult") }),
			code: types.ErrInvalidNetworkConfig, mentions: "prevResult"},
		{name: "hook malformed prevResult", plugin: "policy-hook", stdin: hook(func(top map[string]any) { top["prevResult"] = []any{1} }),
			code: types.ErrDecodingFailure, mentions: "prevResult"},
		{name: "hook host veth not Felix's name", plugin: "policy-hook", stdin: hook(func(top map[string]any) { top["prevResult"] = prev(vHost, "10.0.15.250/32") }),
			code: types.ErrInvalidNetworkConfig, mentions: badVeth},
		{name: "hook without pod in CNI_ARGS", plugin: "policy-hook", stdin: hook(nil), env: args("IgnoreUnknown=1"),
			code: types.ErrInvalidNetworkConfig, mentions: "K8S_POD_NAME"},
		{name: "hook malformed CNI_ARGS", plugin: "policy-hook", stdin: hook(nil), env: args("K8S_POD_NAMESPACE=default;;=;K8S_POD_NAME"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "CNI_ARGS"},
		{name: "hook pod name with shell metacharacters", plugin: "policy-hook", stdin: hook(nil), env: args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=a`id`"),
			code: types.ErrInvalidEnvironmentVariables, mentions: "a`id`"},
		{name: "hook kubeconfig that does not exist", plugin: "policy-hook", stdin: hook(nil),
			code: types.ErrTryAgainLater, mentions: "no-such-kubeconfig"},
		{name: "hook CHECK with a foreign host veth", plugin: "policy-hook", command: "CHECK",
			stdin: hook(func(top map[string]any) { top["prevResult"] = prev(vHost, vIP+"/32") }),
			code:  types.ErrInvalidNetworkConfig, mentions: badVeth},
		{name: "hook DEL with malformed CNI_ARGS", plugin: "policy-hook", command: "DEL", stdin: hook(nil), env: args("garbage"), code: 0},
		{name: "hook DEL with a kubeconfig that does not exist", plugin: "policy-hook", command: "DEL", stdin: hook(nil), code: 0},
	}

	for _, tc := range cases {
		t.Run(tc.plugin+"/"+tc.name, func(t *testing.T) {
			before := nodeState(t, n)
			env := map[string]string{"CNI_CONTAINERID": p.id, "CNI_NETNS": p.netns.Path(), "CNI_IFNAME": "eth0", "CNI_ARGS": podArgs}
			for k, v := range tc.env {
				env[k] = v
			}
			command := tc.command
			if command == "" {
				command = "ADD"
			}
			out, err := runPlugin(t, n, tc.plugin, command, env, tc.stdin)
			switch {
			case tc.code == 0 && err != nil:
				t.Errorf("%s failed, the spec wants success: %v: %s", command, err, out)
			case tc.code != 0 && err == nil:
				t.Errorf("%s succeeded: %s", command, out)
			case tc.code != 0:
				var ce types.Error
				if jerr := json.Unmarshal(out, &ce); jerr != nil {
					t.Fatalf("stdout is not CNI error JSON: %q", out)
				}
				if ce.Code != tc.code {
					t.Errorf("code %d (%s; %s), want %d", ce.Code, ce.Msg, ce.Details, tc.code)
				}
				if !strings.Contains(ce.Msg+" "+ce.Details, tc.mentions) {
					t.Errorf("message %q (details %q) does not name %q", ce.Msg, ce.Details, tc.mentions)
				}
			}
			// Nothing half-done and nothing of the live pod touched: the
			// node, its SNAT set and the daemon are as before; the bad
			// pod's namespace has only lo.
			if d := diffState(before, nodeState(t, n)); len(d) > 0 {
				t.Errorf("node changed:\n%s", strings.Join(d, "\n"))
			}
			err = p.netns.Do(func(ns.NetNS) error {
				links, err := netlink.LinkList()
				if err != nil {
					return err
				}
				for _, l := range links {
					if l.Attrs().Name != "lo" {
						t.Errorf("pod namespace has %s", l.Attrs().Name)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if len(cases) < 50 {
		t.Errorf("%d cases, the corpus promises at least 50", len(cases))
	}
	// The live pod went through all of it unharmed.
	if err := victim.check(chain); err != nil {
		t.Errorf("CHECK of the live pod after the bad calls: %v", err)
	}
	if err := victim.del(chain); err != nil {
		t.Fatal(err)
	}
	assertNodeClean(t, n)

	// The daemon refuses bad configuration at start, naming the variable.
	t.Run("daemon refuses invalid environment", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(n.c.bin, "vpcchaind"))
		cmd.Env = []string{"WARM_IP_TARGET=3x", "AWS_VPC_ENI_MTU=100000", "VPCCHAIN_STATE_DIR=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("daemon started with invalid configuration: %s", out)
		}
		for _, want := range []string{"WARM_IP_TARGET", "3x", "AWS_VPC_ENI_MTU", "100000"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("refusal %q does not name %q", out, want)
			}
		}
		if _, err := os.Stat(filepath.Join(cmd.Env[2][len("VPCCHAIN_STATE_DIR="):], "ipamd.sock")); err == nil {
			t.Error("refused daemon created its socket")
		}
	})
	// A setting of the AWS VPC CNI asking for a feature vpcchain lacks is
	// refused by name and reason, not ignored.
	t.Run("daemon refuses a feature it lacks", func(t *testing.T) {
		state := t.TempDir()
		cmd := exec.Command(filepath.Join(n.c.bin, "vpcchaind"))
		cmd.Env = []string{"DISABLE_NETWORK_RESOURCE_PROVISIONING=true", "VPCCHAIN_STATE_DIR=" + state}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), `DISABLE_NETWORK_RESOURCE_PROVISIONING=\"true\" is not supported: the daemon always manages ENIs`) {
			t.Fatalf("daemon with DISABLE_NETWORK_RESOURCE_PROVISIONING=true: %v: %s; want a refusal naming it and why", err, out)
		}
		if _, err := os.Stat(filepath.Join(state, "ipamd.sock")); err == nil {
			t.Error("refused daemon created its socket")
		}
	})
	// Security groups for pods without the node's name (the DaemonSet gives
	// it from the downward API) cannot find the node's CNINode and pods.
	t.Run("daemon refuses security groups for pods without its node's name", func(t *testing.T) {
		state := t.TempDir()
		cmd := exec.Command(filepath.Join(n.c.bin, "vpcchaind"))
		cmd.Env = []string{"ENABLE_POD_ENI=true", "VPCCHAIN_STATE_DIR=" + state}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ENABLE_POD_ENI=true needs MY_NODE_NAME") {
			t.Fatalf("daemon with ENABLE_POD_ENI=true and no MY_NODE_NAME: %v: %s; want a refusal naming MY_NODE_NAME", err, out)
		}
		if _, err := os.Stat(filepath.Join(state, "ipamd.sock")); err == nil {
			t.Error("refused daemon created its socket")
		}
	})
	t.Run("daemon refuses dual-stack pods", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(n.c.bin, "vpcchaind"))
		cmd.Env = []string{"ENABLE_IPv6=true", "VPCCHAIN_STATE_DIR=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "ENABLE_IPv4=true ENABLE_IPv6=true: dual-stack pods are not supported") {
			t.Fatalf("daemon with ENABLE_IPv6=true and IPv4 on: %v: %s; want a refusal naming both settings", err, out)
		}
	})
}

// primaryIP is the node's primary private address (what vpc-snat's node
// config names as primaryIP).
func (n *node) primaryIP(t *testing.T) string {
	t.Helper()
	inet, ok := n.c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if !ok {
		t.Fatalf("no instance %s", n.vn.InstanceID)
	}
	return inet.PrimaryIP.String()
}
