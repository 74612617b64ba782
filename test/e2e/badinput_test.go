package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
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
		runErr = cmd.Run()
		out = stdout.Bytes()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, runErr
}

func TestBadInputLeavesNothingBehind(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"x"})
	n := c.nodes["x"]
	p := n.newPod("default", "bad")
	good := func(mod func(plugin, ipam map[string]any)) string {
		ipam := map[string]any{"type": "vpc-ipam", "socket": n.socket}
		plugin := map[string]any{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-bridge", "ipam": ipam}
		if mod != nil {
			mod(plugin, ipam)
		}
		b, _ := json.Marshal(plugin)
		return string(b)
	}
	env := func(mod map[string]string) map[string]string {
		e := map[string]string{"CNI_CONTAINERID": p.id, "CNI_NETNS": p.netns.Path(), "CNI_IFNAME": "eth0",
			"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bad"}
		for k, v := range mod {
			e[k] = v
		}
		return e
	}
	cases := []struct {
		name     string
		stdin    string
		env      map[string]string
		code     uint
		mentions string
	}{
		{"malformed stdin config", `{"cniVersion": "1.1.0", "name": "vpcchain", "type": "vpc-bridge", `, env(nil),
			types.ErrDecodingFailure, "unexpected end of JSON input"},
		{"known field with a wrong type", good(func(pl, _ map[string]any) { pl["mtu"] = "jumbo" }), env(nil),
			types.ErrDecodingFailure, "mtu"},
		{"IPAM field with a wrong type", good(func(_, ip map[string]any) { ip["timeout"] = 5 }), env(nil),
			types.ErrDecodingFailure, "timeout"},
		{"missing daemon socket", good(func(_, ip map[string]any) { ip["socket"] = filepath.Join(n.state, "nope.sock") }), env(nil),
			types.ErrTryAgainLater, "nope.sock"},
		{"netns path that does not exist", good(nil), env(map[string]string{"CNI_NETNS": "/var/run/netns/vpcchain-e2e-missing-" + p.id}),
			types.ErrInvalidNetNS, "vpcchain-e2e-missing-"},
		{"ifname over 15 bytes", good(nil), env(map[string]string{"CNI_IFNAME": "eth0123456789abc"}),
			types.ErrInvalidEnvironmentVariables, "eth0123456789abc"},
		{"veth prefix over 4 characters", good(func(pl, _ map[string]any) { pl["vethPrefix"] = "calico" }), env(nil),
			types.ErrInvalidNetworkConfig, "calico"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runPlugin(t, n, "vpc-bridge", "ADD", tc.env, tc.stdin)
			if err == nil {
				t.Fatalf("ADD succeeded: %s", out)
			}
			var ce types.Error
			if jerr := json.Unmarshal(out, &ce); jerr != nil {
				t.Fatalf("stdout is not CNI error JSON: %q", out)
			}
			if ce.Code != tc.code {
				t.Errorf("code %d (%s), want %d", ce.Code, ce.Msg, tc.code)
			}
			if !strings.Contains(ce.Msg+" "+ce.Details, tc.mentions) {
				t.Errorf("message %q does not name %q", ce.Msg, tc.mentions)
			}
			// Nothing half-done: no veth or rule on the node, nothing in the
			// pod, no address held by the daemon.
			assertNodeClean(t, n)
			if r := n.introspect(); len(r.Allocations) != 0 {
				t.Errorf("daemon holds %v after a failed ADD", r.Allocations)
			}
			err = p.netns.Do(func(ns.NetNS) error {
				links, err := netlink.LinkList()
				if err != nil {
					return err
				}
				for _, l := range links {
					if l.Attrs().Name != "lo" {
						t.Errorf("pod namespace has %s after a failed ADD", l.Attrs().Name)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// The daemon refuses bad configuration at start, naming the variable.
	t.Run("daemon refuses invalid environment", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(n.c.bin, "vpcchaind"))
		cmd.Env = []string{"WARM_IP_TARGET=-3", "AWS_VPC_ENI_MTU=100000", "VPCCHAIN_STATE_DIR=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("daemon started with invalid configuration: %s", out)
		}
		for _, want := range []string{"WARM_IP_TARGET", "-3", "AWS_VPC_ENI_MTU", "100000"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("refusal %q does not name %q", out, want)
			}
		}
		if _, err := os.Stat(filepath.Join(cmd.Env[2][len("VPCCHAIN_STATE_DIR="):], "ipamd.sock")); err == nil {
			t.Error("refused daemon created its socket")
		}
	})
}
