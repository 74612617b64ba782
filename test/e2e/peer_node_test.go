//go:build peer

package e2e

// A node running the peer: its mount namespace and its ipamd, started,
// killed and restarted as kubelet runs the aws-node container.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// peerNode is one node running the peer: ipamd, and the directories that
// stand for the node's own /run/aws-node and /var/log (each node is a host
// of its own, but they share this machine's file system).
type peerNode struct {
	*node
	t       testing.TB
	dir     string
	env     []string
	bin     string  // aws-k8s-agent
	mounts  *bgProc // holds the node's mount namespace, where those directories are
	plugins string  // the runtime's CNI bin dir
	conf    *libcni.NetworkConfigList

	mu      sync.Mutex
	agent   *bgProc
	killed  map[*bgProc]bool // exits the test caused
	crashes int              // exits it did not cause, which kubelet restarts with back-off
	closed  bool
}

// startPeer starts ipamd on n with the manifest's environment (plus env,
// later values win).
//
// NETWORK_POLICY_ENFORCING_MODE is left unset rather than the manifest's
// "standard": with it set, every ADD asks the network policy agent (a second
// container of the DaemonSet, on npa.sock) and fails without it. Unset, ipamd
// answers an empty mode and the plugin skips the agent, which is how the
// plugin behaves when that container has been removed from the DaemonSet.
func startPeer(t testing.TB, b peerBins, k *kube, server string, n *node, extra ...string) *peerNode {
	t.Helper()
	p := &peerNode{node: n, t: t, dir: filepath.Join(n.c.dir, "peer-"+n.name), bin: b.agent, killed: map[*bgProc]bool{}}
	for _, d := range []string{"run", "log/aws-routed-eni", "bin", "cni-cache"} {
		if err := os.MkdirAll(filepath.Join(p.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The mount point, as the DaemonSet's hostPath (DirectoryOrCreate).
	// Removing a directory detaches what is mounted on it in every mount
	// namespace, so while a node of any run uses it, it holds a file named
	// after that node's namespace: the directory can only be removed
	// (rmdir) once no node uses it, and the last one out removes it.
	if err := os.MkdirAll(peerRunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	inUse := filepath.Join(peerRunDir, ".in-use-"+n.vn.NetNS)
	if err := os.WriteFile(inUse, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(inUse)
		_ = os.Remove(peerRunDir)
	})
	p.env = []string{
		"PATH=" + os.Getenv("PATH"),
		"KUBECONFIG=" + k.kubeconfigFor("admin", server),
		"AWS_ACCESS_KEY_ID=AKIDE2E", "AWS_SECRET_ACCESS_KEY=secret",
		"AWS_EC2_ENDPOINT=" + n.vn.EC2Endpoint,
		"AWS_EC2_METADATA_SERVICE_ENDPOINT=" + n.vn.IMDSEndpoint,
		"CLUSTER_NAME=peer",
		"MY_NODE_NAME=" + n.name, "MY_POD_NAME=aws-node-" + n.name,
		"ADDITIONAL_ENI_TAGS={}",
		"AWS_VPC_CNI_NODE_PORT_SUPPORT=true",
		"AWS_VPC_ENI_MTU=9001",
		"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=false",
		"AWS_VPC_K8S_CNI_EXTERNALSNAT=false",
		"AWS_VPC_K8S_CNI_LOGLEVEL=DEBUG",
		// The manifest's /host/var/log/... is the host's /var/log seen
		// from the container.
		"AWS_VPC_K8S_CNI_LOG_FILE=/var/log/aws-routed-eni/ipamd.log",
		"AWS_VPC_K8S_CNI_RANDOMIZESNAT=prng",
		"AWS_VPC_K8S_CNI_VETHPREFIX=eni",
		"AWS_VPC_K8S_PLUGIN_LOG_FILE=/var/log/aws-routed-eni/plugin.log",
		"AWS_VPC_K8S_PLUGIN_LOG_LEVEL=DEBUG",
		"DISABLE_INTROSPECTION=false",
		"DISABLE_METRICS=false",
		"DISABLE_NETWORK_RESOURCE_PROVISIONING=false",
		"ENABLE_IMDS_ONLY_MODE=false",
		"ENABLE_IPv4=true",
		"ENABLE_IPv6=false",
		"ENABLE_MULTI_NIC=false",
		"ENABLE_POD_ENI=false",
		"ENABLE_PREFIX_DELEGATION=false",
		"ENABLE_SUBNET_DISCOVERY=true",
		"VPC_CNI_VERSION=v1.23.2",
		"WARM_ENI_TARGET=1",
		"WARM_PREFIX_TARGET=1",
	}
	p.env = append(p.env, extra...)
	// A mount namespace of the node's own, as the node's host file system:
	// the peer's paths are fixed, and two nodes on this machine must not
	// share them. A process holds it for the test (each exec keeps the
	// PID, so its PID names the namespace); ipamd, each time it starts,
	// and the plugins enter it.
	p.mounts = startInNode(t, n, p.dir, "mounts", []string{"PATH=" + os.Getenv("PATH")}, "unshare", "--mount", "--propagation", "slave", "sh", "-c",
		`mount --bind "$1" `+peerRunDir+` && mount --bind "$2" `+peerLogDir+` && exec sleep infinity`, "sh",
		filepath.Join(p.dir, "run"), filepath.Join(p.dir, "log"))
	waitFor(t, 10*time.Second, "the mount namespace of "+n.name, p.mounts.running, func() error {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.mounts.cmd.Process.Pid))
		if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
			return fmt.Errorf("mounts not in place yet (%q, %v)", comm, err)
		}
		return nil
	})
	if err := p.startAgent(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		if d := os.Getenv("VPCCHAIN_PEER_LOGS"); d != "" {
			_ = exec.Command("cp", "-r", p.dir, filepath.Join(d, n.name)).Run()
		}
		if t.Failed() || os.Getenv("VPCCHAIN_E2E_LOGS") != "" {
			for _, f := range []string{"ipamd.log", "plugin.log", "egress-v6-plugin.log"} {
				t.Logf("%s of %s:\n%s", f, n.name, tailFile(filepath.Join(p.dir, "log/aws-routed-eni", f), 40))
			}
		}
	})

	// The runtime's CNI bin dir: the plugins its image installs on the
	// host, run (by newPod's runtime) in the node's mount namespace.
	for name, bin := range map[string]string{"aws-cni": b.cni, "egress-cni": b.egress, "portmap": b.portmap, "host-local": b.hostLocal} {
		if err := os.Symlink(bin, filepath.Join(p.dir, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	p.plugins = filepath.Join(p.dir, "bin")
	p.conf = peerConflist(t, envValue(p.env, "AWS_VPC_K8S_PLUGIN_LOG_LEVEL"))
	return p
}

// startAgent starts ipamd in the node's mount namespace, with the same
// environment each time. If it exits by itself it is started again as
// kubelet restarts a container: at once the first time, then after 10 s,
// 20 s, 40 s ... (at most 5 min).
func (p *peerNode) startAgent() error {
	a, err := startBg(p.t, p.node, p.dir, "aws-k8s-agent", p.env,
		"nsenter", "--mount="+p.mountNS(), "--", p.bin)
	if err != nil {
		return fmt.Errorf("start ipamd on %s: %w", p.name, err)
	}
	p.mu.Lock()
	p.agent = a
	p.mu.Unlock()
	go func() {
		<-a.exited
		p.mu.Lock()
		if p.killed[a] || p.closed || p.agent != a {
			p.mu.Unlock()
			return
		}
		p.crashes++
		backoff := time.Duration(0)
		if p.crashes > 1 {
			backoff = min(10*time.Second<<(p.crashes-2), 5*time.Minute)
		}
		p.mu.Unlock()
		time.Sleep(backoff)
		p.mu.Lock()
		again := !p.closed && p.agent == a
		p.mu.Unlock()
		if again {
			_ = p.startAgent()
		}
	}()
	return nil
}

// mountsIntact fails if the node's mount namespace lost its mounts: its
// ipamd would share this machine's directories with other nodes'.
func (p *peerNode) mountsIntact() error {
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.mounts.cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("mounts of %s: %w", p.name, err)
	}
	for _, dir := range []string{peerRunDir, peerLogDir} {
		if !strings.Contains(string(info), " "+dir+" ") {
			return fmt.Errorf("the mount namespace of %s lost its %s mount", p.name, dir)
		}
	}
	return nil
}

// mountNS is the node's mount namespace (its host's file system).
func (p *peerNode) mountNS() string { return fmt.Sprintf("/proc/%d/ns/mnt", p.mounts.cmd.Process.Pid) }

// currentAgent is the ipamd process started last.
func (p *peerNode) currentAgent() *bgProc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.agent
}

// kill9 kills ipamd with SIGKILL; the caller starts it again.
func (p *peerNode) kill9() {
	p.mu.Lock()
	a := p.agent
	p.killed[a] = true
	p.mu.Unlock()
	a.kill9()
}

// exits returns how often ipamd exited by itself.
func (p *peerNode) exits() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.crashes
}
