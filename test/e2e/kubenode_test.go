//go:build kubelet

// The real-node harness of the kubelet tests: a kubelet and containerd (or
// containerd 2.x) per simulated node, in the node's network namespace and
// private mount namespaces, with offline images and the DaemonSet's steps.

package e2e

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

func podManifest(name, nodeName, ports string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: {app: web}}
spec:
  nodeName: %s
  automountServiceAccountToken: false
  enableServiceLinks: false
  dnsPolicy: Default
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "busybox mkdir -p /www && echo $POD_NAME > /www/name && exec busybox httpd -f -p 8080 -h /www"]
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]%s
`, name, nodeName, busyboxImage, ports)
}

func nodeReady(k *kube, name string) (string, string, error) {
	out, err := k.kubectl("", "get", "node", name, "-o",
		`jsonpath={.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].message}`)
	if err != nil {
		return "", "", err
	}
	s, msg, _ := strings.Cut(out, "|")
	return s, msg, nil
}

// proxyAPIServer makes the API server on to's 127.0.0.1:6443 reachable on
// from's 127.0.0.1:6443 (node b's kubelet uses the same kubeconfig).
func proxyAPIServer(t *testing.T, from, to *node) {
	t.Helper()
	var ln net.Listener
	if err := from.do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:6443")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go forward(ln, to, "127.0.0.1:6443")
}

// forward serves ln until it is closed: each connection is spliced to
// target, dialled inside node to.
func forward(ln net.Listener, to *node, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var up net.Conn
			if err := to.do(func() error {
				var err error
				up, err = net.DialTimeout("tcp4", target, 3*time.Second)
				return err
			}); err != nil {
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}

// newKubeNode prepares a node's directories, images and CNI bin dir (the
// DaemonSet's init container) and registers the forced teardown.
func newKubeNode(t *testing.T, n *node, kb kubeletBins, bin string) *kubeNode {
	t.Helper()
	dir := t.TempDir()
	kn := &kubeNode{t: t, n: n, dir: dir, bins: kb, sock: filepath.Join(dir, "containerd", "containerd.sock"),
		cniBin: filepath.Join(dir, "opt-cni-bin"), cniConf: filepath.Join(dir, "etc-cni-net.d")}
	for _, d := range []string{kn.cniBin, kn.cniConf, filepath.Dir(kn.sock)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The daemon asks this containerd which pod sandboxes exist (the
	// orphan check), as the DaemonSet points it at the node's runtime; it
	// takes effect at the daemon's next start.
	n.env = append(n.env, "VPCCHAIN_CRI_SOCKET="+kn.sock)
	// Host state the run may leave behind is recorded first; the check and
	// the forced cleanup run last (after every process is stopped), and on
	// interrupt.
	kn.snapshotHost()
	unregister := onInterrupt(func() { kn.forceTeardown(); _ = os.RemoveAll(dir) })
	t.Cleanup(func() {
		unregister()
		if left := kn.forceTeardown(); len(left) > 0 {
			t.Errorf("node %s: left behind after the processes stopped (now removed):\n  %s", n.name, strings.Join(left, "\n  "))
		}
	})

	// The DaemonSet's init container: our plugins (and the upstream portmap
	// and bandwidth the image ships) into the node's CNI bin dir. The
	// upstream loopback is the node's own (containernetworking-plugins).
	src := filepath.Join(dir, "app-cni")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(bin, "vpc-bridge"), filepath.Join(bin, "vpc-ipam"), filepath.Join(bin, "vpc-snat"), kb.portmap, kb.bandwidth} {
		copyFile(t, f, filepath.Join(src, filepath.Base(f)))
	}
	copyFile(t, kb.loopback, filepath.Join(kn.cniBin, "loopback"))
	if out, err := kn.inNode(n.env, kb.install, "--binaries-only", "--bin-src="+src, "--cni-bin-dir="+kn.cniBin).CombinedOutput(); err != nil {
		t.Fatalf("vpcchain-install --binaries-only: %v\n%s", err, out)
	}
	// Images, built here offline: a Go pause and busybox.
	kn.buildImages(kb.busybox)
	return kn
}

// newClusterKubeNode prepares a node of the cluster tier: host layout,
// nothing of ours installed (the DaemonSet does it), the offline images and
// those of archives imported at containerd's start.
func newClusterKubeNode(t *testing.T, n *node, kb kubeletBins, ctrd2 string, archives ...string) *kubeNode {
	t.Helper()
	dir := t.TempDir()
	kn := &kubeNode{t: t, n: n, dir: dir, bins: kb, hostLayout: true, ctrd2: ctrd2,
		sock:   filepath.Join(dir, "run-containerd", "containerd.sock"),
		cniBin: filepath.Join(dir, "opt-cni-bin"), cniConf: filepath.Join(dir, "etc-cni-net.d"),
		state: filepath.Join(dir, "var-run-vpcchain")}
	for _, d := range []string{kn.cniBin, kn.cniConf, kn.state, filepath.Join(dir, "containerd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kn.snapshotHost()
	unregister := onInterrupt(func() { kn.forceTeardown(); _ = os.RemoveAll(dir) })
	t.Cleanup(func() {
		unregister()
		if left := kn.forceTeardown(); len(left) > 0 {
			t.Errorf("node %s: left behind after the processes stopped (now removed):\n  %s", n.name, strings.Join(left, "\n  "))
		}
	})
	kn.buildImages(kb.busybox)
	kn.images = append(kn.images, archives...)
	return kn
}

func (kn *kubeNode) conflist() string { return filepath.Join(kn.cniConf, "10-vpcchain.conflist") }

// startInstaller runs the DaemonSet's install-cni-config sidecar.
func (kn *kubeNode) startInstaller() {
	kn.installer = startInNode(kn.t, kn.n, kn.dir, "install-cni-config", kn.n.env, kn.bins.install, "--conflist-only",
		"--cni-bin-dir="+kn.cniBin, "--cni-conf-dir="+kn.cniConf, "--timeout=10m", "--keep-running=1m")
}

func (kn *kubeNode) startContainerd() {
	kn.containerd = kn.startProc("containerd", nodeNSArgs(kn.n.vn, "--mount="+kn.containerdMountNS(), "--"), kn.containerdScript())
	waitFor(kn.t, 30*time.Second, "containerd", kn.containerd.running, func() error {
		_, err := kn.ctr("version")
		return err
	})
	kn.importImages()
	// Cleanups run last-registered first: this record of the node's
	// containers is taken while containerd still answers.
	kn.t.Cleanup(kn.noteContainers)
}

func (kn *kubeNode) startKubelet(k *kube) {
	inet, ok := kn.n.c.sim.Cloud.InstanceNetwork(kn.n.vn.InstanceID)
	if !ok {
		kn.t.Fatalf("node %s unknown to EC2", kn.n.name)
	}
	kn.writeKubeletConfig(k, inet.PrimaryIP)
	ns := nodeNSArgs(kn.n.vn, "--", "unshare", "-m", "--propagation", "slave", "--")
	if kn.hostLayout {
		// As on a host, the kubelet and containerd share one mount
		// namespace: the kubelet checks and creates hostPath volumes, and
		// the tmpfs it mounts for a pod's projected volumes (its service
		// account token) must be what containerd bind-mounts into the
		// container.
		ns = nodeNSArgs(kn.n.vn, "--mount="+kn.mntns, "--")
	}
	kn.kubelet = kn.startProc("kubelet", ns, kn.kubeletScript())
}

const (
	pauseImage   = "vpcchain.e2e/pause:1"
	busyboxImage = "vpcchain.e2e/busybox:1"
)

type kubeletBins struct {
	kubelet, apiserver, kubectl, loopback, portmap, bandwidth, install, etcd string
	busybox                                                                  string
}

// findKubeletBins locates what the real-node tests run, failing the test
// with the make target that builds what is missing.
func findKubeletBins(t *testing.T, bin string) kubeletBins {
	t.Helper()
	tools := filepath.Join(bin, "tools")
	kb := kubeletBins{
		kubelet: filepath.Join(tools, "kubelet"), apiserver: filepath.Join(tools, "kube-apiserver"),
		kubectl: filepath.Join(tools, "kubectl"), loopback: filepath.Join(tools, "loopback"),
		portmap: filepath.Join(tools, "portmap"), bandwidth: filepath.Join(tools, "bandwidth"),
		install: filepath.Join(bin, "vpcchain-install"), etcd: "/usr/bin/etcd",
	}
	for _, b := range []string{kb.kubelet, kb.apiserver, kb.kubectl, kb.loopback, kb.portmap, kb.bandwidth} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make tools node-tools`: %v", b, err)
		}
	}
	for _, b := range []string{kb.install, kb.etcd} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make build` and `make deps`: %v", b, err)
		}
	}
	for _, name := range []string{"runc", "busybox", "nsenter", "unshare"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not found: run `make deps` (Debian runc, busybox-static, util-linux): %v", name, err)
		}
	}
	kb.busybox, _ = exec.LookPath("busybox")
	return kb
}

// kubeNode is containerd and a kubelet on a simulated node.
type kubeNode struct {
	t                   *testing.T
	n                   *node
	dir                 string
	bins                kubeletBins
	sock                string
	cniBin, cniConf     string
	containerd, kubelet *nodeProc
	images              []string
	kubeletArgs         []string
	mntns               string // containerd's persistent mount namespace
	installer           *bgProc
	// ctrd2 is the directory of containerd 2.x, its runc shim and ctr;
	// empty runs Debian's containerd.
	ctrd2 string
	// hostLayout: the node looks like a real host from inside containerd's
	// and the kubelet's mount namespace (the cluster tier): /opt/cni/bin,
	// /etc/cni/net.d, /run/containerd/containerd.sock and /var/run/vpcchain
	// where a DaemonSet's hostPath volumes expect them, each bound from the
	// test's directories over a fresh /run, /opt and an overlaid /etc.
	hostLayout bool
	// state is the node's /var/run/vpcchain in host layout.
	state string
	// kubeletKubeconfig, if set, is the kubelet's (its own identity).
	kubeletKubeconfig string

	// containers this node's containerd ran (noteContainers)
	idsMu        sync.Mutex
	containerIDs map[string]bool

	// host state before the run
	cgroups     map[string]bool
	netns       map[string]bool
	madeRunCtrd bool
	teardown    sync.Mutex
}

// inNode is a command in the node's network namespace (as a hostNetwork pod).
func (kn *kubeNode) inNode(env []string, args ...string) *exec.Cmd {
	cmd := inNode(kn.n.vn, args...)
	cmd.Env = env
	return cmd
}

func (kn *kubeNode) ctr(args ...string) (string, error) {
	ctr := "ctr"
	if kn.ctrd2 != "" {
		ctr = filepath.Join(kn.ctrd2, "ctr")
	}
	cmd := exec.Command(ctr, append([]string{"--address", kn.sock, "-n", "k8s.io"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

func (kn *kubeNode) alive() error {
	for _, p := range []*nodeProc{kn.containerd, kn.kubelet} {
		if p != nil {
			if err := p.running(); err != nil {
				return err
			}
		}
	}
	return nil
}

// nodeProc is containerd or the kubelet: in the node's network namespace
// (nsenter, so /sys keeps the host's cgroup mounts) and a private mount
// namespace (unshare, slave propagation: its mounts never reach the host).
// It can be stopped and started again.
type nodeProc struct {
	t      *testing.T
	name   string
	args   []string
	log    string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	unreg  func()
}

// nodeNSArgs are nsenter's arguments entering a node as containerd and the
// kubelet do (its network namespace, /sys left as it is, and its UTS
// namespace: a hostNetwork pod shares containerd's and so has the node's
// name for hostname), then more.
func nodeNSArgs(vn vpcsim.Node, more ...string) []string {
	return append([]string{"--net=" + vn.NetNSPath, "--uts=" + vn.UTSNSPath}, more...)
}

// startProc runs script with nsenter args (namespaces to enter, and a
// command prefix).
func (kn *kubeNode) startProc(name string, nsArgs []string, script string) *nodeProc {
	p := &nodeProc{t: kn.t, name: name, log: filepath.Join(kn.dir, name+".log"),
		args: append(slices.Clone(nsArgs), "sh", "-ec", script, name)}
	p.start()
	kn.t.Cleanup(func() {
		p.stop()
		if kn.t.Failed() || os.Getenv("VPCCHAIN_E2E_LOGS") != "" {
			kn.t.Logf("log of %s:\n%s", name, tailFile(p.log, 60))
		}
	})
	return p
}

func (p *nodeProc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", p.args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(p.log)}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.unreg = onInterrupt(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	p.mu.Unlock()
}

func (p *nodeProc) stop() {
	p.mu.Lock()
	cmd, exited, unreg := p.cmd, p.exited, p.unreg
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	unreg()
}

func (p *nodeProc) running() error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s is stopped", p.name)
	}
	select {
	case <-exited:
		return fmt.Errorf("%s exited (%v):\n%s", p.name, cmd.ProcessState, tailFile(p.log, 40))
	default:
		return nil
	}
}

// overlayScript mounts overlays over host directories (writes land in the
// test's directory) in the process's private mount namespace.
func (kn *kubeNode) overlayScript(name string, dirs ...string) string {
	var b strings.Builder
	for _, d := range dirs {
		up := filepath.Join(kn.dir, name+"-overlay", strings.ReplaceAll(strings.Trim(d, "/"), "/", "-"))
		for _, x := range []string{up + "/upper", up + "/work"} {
			if err := os.MkdirAll(x, 0o755); err != nil {
				kn.t.Fatal(err)
			}
		}
		fmt.Fprintf(&b, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s\n", d, up, up, d)
	}
	return b.String()
}

// containerdConfig is Debian's containerd 1.6 configuration (version 2).
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = %[3]q
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[6]q
      conf_dir = %[7]q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[8]q
`

// containerd2Config configures containerd 2.x the same way (version 3: the
// CRI plugin split into images and runtime).
const containerd2Config = `version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = %[3]q
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = %[5]q
  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = [%[6]q]
      conf_dir = %[7]q
      max_conf_num = 1
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = %[8]q
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
`

// containerdScript writes the node's containerd configuration and runs
// containerd (2.x with its own runc shim first on PATH when kn.ctrd2 is set).
func (kn *kubeNode) containerdScript() string {
	d := filepath.Join(kn.dir, "containerd")
	tmpl, run := containerdConfig, "exec containerd"
	if kn.ctrd2 != "" {
		tmpl = containerd2Config
		run = fmt.Sprintf("export PATH=%s:$PATH\nexec %s", kn.ctrd2, filepath.Join(kn.ctrd2, "containerd"))
	}
	sock, cniBin, cniConf := kn.sock, kn.cniBin, kn.cniConf
	if kn.hostLayout {
		// Where a host has them (bound from the test's directories).
		sock, cniBin, cniConf = "/run/containerd/containerd.sock", "/opt/cni/bin", "/etc/cni/net.d"
	}
	cfg := fmt.Sprintf(tmpl, filepath.Join(d, "root"), filepath.Join(d, "state"), sock, filepath.Join(d, "opt"), pauseImage,
		cniBin, cniConf, filepath.Join(d, "runc"))
	conf := filepath.Join(d, "config.toml")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		kn.t.Fatal(err)
	}
	return run + " --config " + conf
}

// containerdMountNS makes the persistent mount namespace containerd runs in
// (every start of it: a restarted containerd finds its shims' sockets and the
// sandboxes' netns mounts, as on a host): /run/containerd (shim sockets) is a
// directory of the test, /var/lib (the CNI result cache /var/lib/cni) an
// overlay whose writes land in the test's directory. Slave propagation: its
// mounts never reach the host.
func (kn *kubeNode) containerdMountNS() string {
	kn.t.Helper()
	f := filepath.Join(kn.dir, "containerd-mntns")
	run := filepath.Join(kn.dir, "run-containerd")
	if err := os.Mkdir(run, 0o700); err != nil {
		kn.t.Fatal(err)
	}
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		kn.t.Fatal(err)
	}
	script := "mount --bind " + run + " /run/containerd\n" + kn.overlayScript("containerd", "/var/lib")
	if kn.hostLayout {
		// A fresh /run (sandbox namespaces, the xtables lock, our state) and
		// /opt, an overlaid /etc and /var/log: what a DaemonSet's hostPath
		// volumes see is the test's, never the machine's.
		script = "mount -t tmpfs vpcchain-e2e-run /run\nmount -t tmpfs vpcchain-e2e-opt /opt\n" +
			kn.overlayScript("containerd", "/var/lib", "/etc", "/var/log") +
			"mkdir -p /run/containerd /run/vpcchain /opt/cni/bin /etc/cni/net.d\n" +
			"mount --bind " + run + " /run/containerd\n" +
			"mount --bind " + kn.state + " /run/vpcchain\n" +
			"mount --bind " + kn.cniBin + " /opt/cni/bin\n" +
			"mount --bind " + kn.cniConf + " /etc/cni/net.d\n"
	}
	if out, err := exec.Command("unshare", "--mount="+f, "--propagation", "slave", "--", "sh", "-ec", script).CombinedOutput(); err != nil {
		kn.t.Fatalf("containerd's mount namespace: %v\n%s", err, out)
	}
	kn.mntns = f
	return f
}

// sysctls the kubelet insists on (protectKernelDefaults: it refuses to start
// unless it reads these values); it reads them from files in its own mount
// namespace, the host's are never written.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10", "kernel/panic_on_oops": "1",
	"kernel/keys/root_maxkeys": "1000000", "kernel/keys/root_maxbytes": "25000000",
}

func (kn *kubeNode) writeKubeletConfig(k *kube, nodeIP netip.Addr) {
	d := filepath.Join(kn.dir, "kubelet")
	for _, x := range []string{"root", "podlogs", "sysctl"} {
		if err := os.MkdirAll(filepath.Join(d, x), 0o755); err != nil {
			kn.t.Fatal(err)
		}
	}
	// A single node's kubelet serves only its own namespace's loopback;
	// a cluster's serves the API server (logs, exec), which alone holds a
	// certificate of the CA it trusts.
	serve := "address: 127.0.0.1\nauthentication: {anonymous: {enabled: true}, webhook: {enabled: false}}\n"
	if k.kubeletCA != "" {
		serve = fmt.Sprintf("address: 0.0.0.0\nauthentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: %q}}\n", k.kubeletCA) +
			// The cluster's DNS Service (deployDNS), where a test deploys one.
			"clusterDNS: [" + clusterDNSIP + "]\nclusterDomain: cluster.local\n"
	}
	cfg := serve + fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://%s
oomScoreAdj: 0
podLogsDir: %s
makeIPTablesUtilChains: false
protectKernelDefaults: true
failSwapOn: false
maxPods: 29
serializeImagePulls: false
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 2s
localStorageCapacityIsolation: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
`, kn.sock, filepath.Join(d, "podlogs"))
	if err := os.WriteFile(filepath.Join(d, "config.yaml"), []byte(cfg), 0o644); err != nil {
		kn.t.Fatal(err)
	}
	kn.kubeletArgs = []string{"--config=" + filepath.Join(d, "config.yaml"), "--kubeconfig=" + cmp.Or(kn.kubeletKubeconfig, k.kubeconfig),
		"--root-dir=" + filepath.Join(d, "root"), "--cert-dir=" + filepath.Join(d, "pki"),
		"--hostname-override=" + kn.n.name, "--node-ip=" + nodeIP.String(), "--v=1"}
}

func (kn *kubeNode) kubeletScript() string {
	var b strings.Builder
	keys := make([]string, 0, len(kubeletSysctls))
	for k := range kubeletSysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := filepath.Join(kn.dir, "kubelet", "sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.WriteFile(f, []byte(kubeletSysctls[k]+"\n"), 0o444); err != nil {
			kn.t.Fatal(err)
		}
		fmt.Fprintf(&b, "mount --bind %s /proc/sys/%s\nmount -o remount,bind,ro /proc/sys/%s\n", f, k, k)
	}
	// The kubelet writes /var/lib/kubelet/device-plugins and
	// /var/log/{pods,containers} whatever its flags say.
	if !kn.hostLayout { // containerd's namespace has them already
		b.WriteString(kn.overlayScript("kubelet", "/var/lib", "/var/log"))
	}
	b.WriteString("exec " + kn.bins.kubelet)
	for _, a := range kn.kubeletArgs {
		b.WriteString(" '" + a + "'")
	}
	return b.String()
}

type kubePod struct {
	node      string
	ip        netip.Addr
	uid       string
	container string // containerd ID of the web container
	restarts  int
}

// podInfo reads each pod's node, IP, UID and container from the API server.
func podInfo(t *testing.T, k *kube, names []string) map[string]kubePod {
	t.Helper()
	out, err := k.kubectl("", "get", "pods", "-l", "app=web", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.uid} {.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}{"\n"}{end}`)
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]kubePod{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 6 {
			t.Fatalf("pod status line %q", l)
		}
		ip, err := netip.ParseAddr(f[2])
		if err != nil {
			t.Fatalf("pod %s: status.podIP %q: %v", f[0], f[2], err)
		}
		r, _ := strconv.Atoi(f[5])
		pods[f[0]] = kubePod{node: f[1], ip: ip, uid: f[3], container: strings.TrimPrefix(f[4], "containerd://"), restarts: r}
	}
	for _, name := range names {
		if _, ok := pods[name]; !ok {
			t.Fatalf("pod %s missing from %q", name, out)
		}
	}
	return pods
}

// expectAllocations checks the node's daemon holds exactly the addresses of
// the pods on the node, under the pods' names.
func (kn *kubeNode) expectAllocations(names []string, pods map[string]kubePod) {
	kn.t.Helper()
	r := kn.n.introspect()
	got := map[string]string{}
	for _, a := range r.Allocations {
		got[a.PodName] = a.Ip
	}
	want := 0
	for _, name := range names {
		if pods[name].node != kn.n.name {
			continue
		}
		want++
		if got[name] != pods[name].ip.String() {
			kn.t.Errorf("daemon of %s: pod %s holds %q, want its status.podIP %s", kn.n.name, name, got[name], pods[name].ip)
		}
	}
	if len(r.Allocations) != want {
		kn.t.Errorf("daemon of %s holds %d allocations, want %d: %v", kn.n.name, len(r.Allocations), want, got)
	}
}

// ctrTask is one line of `ctr task ls`.
type ctrTask struct{ pid, status string }

// tasks lists containerd's tasks by ID, and the raw listing for messages.
func (kn *kubeNode) tasks() (map[string]ctrTask, string, error) {
	out, err := kn.ctr("task", "ls")
	if err != nil {
		return nil, "", err
	}
	ts := map[string]ctrTask{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] != "TASK" {
			ts[f[0]] = ctrTask{pid: f[1], status: f[2]}
		}
	}
	return ts, out, nil
}

// runningTasks is the set of containerd task IDs in state RUNNING.
func (kn *kubeNode) runningTasks() (map[string]bool, error) {
	ts, _, err := kn.tasks()
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for id, t := range ts {
		if t.status == "RUNNING" {
			ids[id] = true
		}
	}
	return ids, nil
}

// netnsOf is the network namespace of a container's process (from
// containerd's task list).
func (kn *kubeNode) netnsOf(container string) (ns.NetNS, error) {
	ts, out, err := kn.tasks()
	if err != nil {
		return nil, err
	}
	if t, ok := ts[container]; ok {
		return ns.GetNS("/proc/" + t.pid + "/ns/net")
	}
	return nil, fmt.Errorf("no task for container %s in:\n%s", container, out)
}

// httpFrom GETs http://dst/name from inside a netns.
func httpFrom(netns ns.NetNS, dst netip.AddrPort) (string, error) {
	var body string
	err := netns.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", dst.String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET /name HTTP/1.0\r\nHost: %s\r\n\r\n", dst.Addr())
		b, err := io.ReadAll(c)
		if _, after, ok := strings.Cut(string(b), "\r\n\r\n"); ok {
			body = strings.TrimSpace(after)
		} else {
			body = string(b)
		}
		return err
	})
	return body, err
}

// checkPodToPod: each pod reaches the next one's web server over TCP.
func checkPodToPod(t *testing.T, kns map[string]*kubeNode, names []string, pods map[string]kubePod) {
	t.Helper()
	for i, from := range names {
		to := names[(i+1)%len(names)]
		netns, err := kns[pods[from].node].netnsOf(pods[from].container)
		if err != nil {
			t.Fatal(err)
		}
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for {
			body, err = httpFrom(netns, netip.AddrPortFrom(pods[to].ip, 8080))
			if (err == nil && body == to) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		netns.Close()
		if err != nil || body != to {
			var diag strings.Builder
			for _, name := range []string{pods[from].node, pods[to].node} {
				for _, args := range [][]string{{"rule"}, {"route", "show", "table", "all"}, {"-br", "link"}, {"neigh"}} {
					out, _ := exec.Command("ip", append([]string{"-n", kns[name].n.vn.NetNS}, args...)...).CombinedOutput()
					fmt.Fprintf(&diag, "node %s: ip %s:\n%s\n", name, strings.Join(args, " "), out)
				}
			}
			t.Fatalf("pod %s (%s on %s) -> pod %s (%s:8080 on %s): %q, %v\n%s", from, pods[from].ip, pods[from].node, to, pods[to].ip, pods[to].node, body, err, diag.String())
		}
	}
}

// deleteAllPods is the graceful part of the teardown: pods deleted through
// the API while the kubelets and containerds still run (the chain's DEL runs).
func deleteAllPods(k *kube, kns ...*kubeNode) {
	for _, kn := range kns {
		if kn.alive() != nil {
			return
		}
	}
	if out, err := k.kubectl("", "get", "pods", "-A", "-o", "name"); err != nil || strings.TrimSpace(out) == "" {
		return
	}
	for _, kn := range kns {
		kn.noteContainers()
	}
	// Controllers first, or they recreate what is deleted; the workloads
	// while the network they were created with is still installed; then
	// the node agents (Calico's and our DaemonSets); the rest forced.
	_, _ = k.kubectl("", "delete", "deployments", "--all", "-A", "--wait=false")
	_, _ = k.kubectl("", "delete", "pods", "--all", "-n", "default", "--grace-period=1", "--wait=true", "--timeout=60s")
	_, _ = k.kubectl("", "delete", "daemonsets", "--all", "-n", "kube-system", "--cascade=foreground", "--wait=true", "--timeout=60s")
	_, _ = k.kubectl("", "delete", "pods", "--all", "-A", "--grace-period=0", "--force", "--wait=false")
	deadline := time.Now().Add(30 * time.Second)
	for _, kn := range kns {
		for time.Now().Before(deadline) {
			if out, err := kn.ctr("task", "ls", "-q"); err == nil && strings.TrimSpace(out) == "" {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}
