//go:build kubelet

package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// TestKubeletNode runs a real Kubernetes node on a simulated EC2 node: Debian's
// containerd and runc and a real kubelet (v1.33.13, from `make node-tools`)
// registered with a real kube-apiserver, all inside the node's network
// namespace, with our daemon and installer run the way the DaemonSet runs them.
// Pods created through the API server get their network from our conflist the
// way they do on a cluster: kubelet -> CRI -> containerd -> the chain.
//
// Nothing on the host is changed: containerd and the kubelet run in private
// mount namespaces whose writes outside the test's directories (/var/lib,
// /var/log, /run/containerd) land in the test's directories; the kubelet runs
// with protectKernelDefaults and sees the values it wants through read-only
// bind mounts over the sysctl files in its mount namespace (so it neither
// refuses to start nor writes a host sysctl); the cgroups runc creates, the pod
// network namespaces and every process are removed at the end, on failure and
// on interrupt.
//
// Two nodes (a runs etcd and the API server; node b's kubelet reaches it
// through a proxy the test runs between the namespaces). It checks: node
// NotReady until the installer writes our conflist (only once
// the daemon is healthy), then Ready; pods created through the API server
// (nodeName set) reach Running with a status.podIP the simulator assigned to
// one of that node's ENIs; pods on both nodes reach each other over TCP; a
// hostPort works through the chained portmap; restarting vpcchaind,
// containerd or the kubelet does not disturb running pods; deleting the pods
// (grace period 0) returns every address to the warm pool and leaves no veth,
// rule, DNAT chain or sandbox netns.
//
// VPCCHAIN_E2E_KUBELET_PODS sets the number of web pods (default 20, split
// over the two nodes; the hostPort pod comes on top).
func TestKubeletNode(t *testing.T) {
	requireRoot(t)
	tierStart := time.Now()
	bin := binDir(t)
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
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "busybox", "nsenter", "unshare"} {
		if _, err := exec.LookPath(name); err != nil {
			t.Fatalf("%s not found: run `make deps` (Debian containerd, runc, busybox-static): %v", name, err)
		}
	}
	busybox, _ := exec.LookPath("busybox")
	podCount := 20
	if v := os.Getenv("VPCCHAIN_E2E_KUBELET_PODS"); v != "" {
		var err error
		if podCount, err = strconv.Atoi(v); err != nil || podCount < 2 || podCount > 40 {
			t.Fatalf("VPCCHAIN_E2E_KUBELET_PODS=%q: want 2..40", v)
		}
	}

	c := newCluster(t, "m5.large", []string{"a", "b"})
	a, b := c.nodes["a"], c.nodes["b"]
	k := startControlPlane(t, a, kb.etcd, kb.apiserver, kb.kubectl)
	k.retry(t, 30*time.Second, "", "-n", "default", "create", "serviceaccount", "default")
	proxyAPIServer(t, b, a)

	kns := map[string]*kubeNode{}
	for _, n := range []*node{a, b} {
		kns[n.name] = newKubeNode(t, n, kb, bin, busybox)
	}
	ka, kbn := kns["a"], kns["b"]
	b.restart() // with the CRI socket in its environment

	// Node a's daemon is down while the node comes up: the installer's
	// sidecar waits for it, the conflist does not exist, and the node is
	// NotReady. Node b comes up with its daemon running.
	a.stop()
	for _, kn := range []*kubeNode{ka, kbn} {
		kn.startInstaller()
		kn.startContainerd()
		kn.startKubelet(k)
	}
	// Pods first, kubelets last on the way out: the graceful part of the
	// teardown runs while they are still up.
	t.Cleanup(func() { deleteAllPods(k, ka, kbn) })

	var msg string
	waitFor(t, 60*time.Second, "node a's registration", ka.alive, func() error {
		s, m, err := nodeReady(k, "a")
		if err == nil && s == "" {
			err = errors.New("no Ready condition yet")
		}
		msg = m
		return err
	})
	notReadySince := time.Now()
	for time.Since(notReadySince) < 4*time.Second {
		s, m, err := nodeReady(k, "a")
		if err != nil {
			t.Fatal(err)
		}
		if s != "False" || !strings.Contains(m, "network") {
			t.Fatalf("node a Ready=%s (%q) before our conflist exists; want False, network not ready", s, m)
		}
		msg = m
		if ents, _ := os.ReadDir(ka.cniConf); len(ents) != 0 {
			t.Fatalf("%s has %v while the daemon is down", ka.cniConf, ents)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("node a NotReady while its daemon is down: %q", msg)

	a.start()
	a.waitReady()
	daemonUp := time.Now()
	waitFor(t, 30*time.Second, "node a's conflist", ka.alive, func() error {
		_, err := os.Stat(ka.conflist())
		return err
	})
	confAt := time.Since(daemonUp)
	for _, kn := range []*kubeNode{ka, kbn} {
		waitFor(t, 60*time.Second, "node "+kn.n.name+" Ready", kn.alive, func() error {
			s, m, err := nodeReady(k, kn.n.name)
			if err == nil && s != "True" {
				err = fmt.Errorf("Ready=%s: %s", s, m)
			}
			return err
		})
	}
	t.Logf("node a: conflist written %v after its daemon became healthy; Ready %v after it", confAt.Round(time.Millisecond), time.Since(daemonUp).Round(time.Millisecond))

	// Pods through the API server, alternating nodes; one more pod on node a
	// publishes a hostPort.
	const hostPort = 18080
	var names []string
	nodeOf := map[string]*kubeNode{}
	var manifest strings.Builder
	for i := range podCount {
		kn := []*kubeNode{ka, kbn}[i%2]
		name := fmt.Sprintf("web-%s-%02d", kn.n.name, i/2)
		names = append(names, name)
		nodeOf[name] = kn
		manifest.WriteString(podManifest(name, kn.n.name, ""))
	}
	names = append(names, "web-a-hostport")
	nodeOf["web-a-hostport"] = ka
	manifest.WriteString(podManifest("web-a-hostport", "a", fmt.Sprintf("\n    ports: [{containerPort: 8080, hostPort: %d, protocol: TCP}]", hostPort)))
	start := time.Now()
	k.apply(t, manifest.String())
	if _, err := k.kubectl("", "wait", "--for=condition=Ready", "--timeout=180s", "pod", "-l", "app=web"); err != nil {
		out, _ := k.kubectl("", "get", "pods", "-o", "wide")
		ev, _ := k.kubectl("", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s", err, out, tail(ev, 30))
	}
	t.Logf("%d pods Running %v after create", len(names), time.Since(start).Round(time.Millisecond))

	pods := podInfo(t, k, names)
	seen := map[netip.Addr]string{}
	for _, name := range names {
		p, kn := pods[name], nodeOf[name]
		if p.node != kn.n.name {
			t.Errorf("pod %s runs on %q, want %s", name, p.node, kn.n.name)
		}
		idx, ok := eniOfAddr(t, c.sim, kn.n.vn.InstanceID)(p.ip)
		if !ok {
			t.Errorf("pod %s: status.podIP %s is on none of node %s's ENIs", name, p.ip, kn.n.name)
		}
		if other, dup := seen[p.ip]; dup {
			t.Errorf("pods %s and %s share %s", name, other, p.ip)
		}
		seen[p.ip] = name
		t.Logf("pod %s on %s: %s (ENI device %d), host veth %s", name, kn.n.name, p.ip, idx, calicoVethName("default", name))
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		kn.expectAllocations(names, pods)
	}

	// Pod to pod over TCP (each pod to the next: across the nodes, through
	// the VPC router), and a hostPort of node a from a pod on node b.
	checkPodToPod(t, kns, names, pods)
	aIP := primaryIP(t, c, a)
	checkHostPort := func() {
		t.Helper()
		from := names[1] // on node b
		netns, err := kns["b"].netnsOf(pods[from].container)
		if err != nil {
			t.Fatal(err)
		}
		defer netns.Close()
		var body string
		deadline := time.Now().Add(10 * time.Second)
		for {
			body, err = httpFrom(netns, netip.AddrPortFrom(aIP, hostPort))
			if (err == nil && body == "web-a-hostport") || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil || body != "web-a-hostport" {
			t.Fatalf("pod %s -> node a's hostPort %s:%d: %q, %v", from, aIP, hostPort, body, err)
		}
	}
	checkHostPort()
	t.Logf("hostPort %s:%d reaches web-a-hostport (%s) from %s on node b", aIP, hostPort, pods["web-a-hostport"].ip, names[1])

	// Restarting our daemon, containerd or the kubelet (on node a) does not
	// disturb running pods.
	undisturbed := func(what string) {
		t.Helper()
		for _, kn := range []*kubeNode{ka, kbn} {
			if err := kn.alive(); err != nil {
				t.Fatal(err)
			}
			kn.n.waitReady()
		}
		if _, err := k.kubectl("", "wait", "--for=condition=Ready", "--timeout=60s", "pod", "-l", "app=web"); err != nil {
			t.Fatalf("after %s: %v", what, err)
		}
		after := podInfo(t, k, names)
		for _, name := range names {
			if after[name] != pods[name] {
				t.Errorf("after %s: pod %s changed: %+v, was %+v", what, name, after[name], pods[name])
			}
		}
		for _, kn := range []*kubeNode{ka, kbn} {
			kn.expectAllocations(names, after)
		}
		checkPodToPod(t, kns, names, after)
		checkHostPort()
		t.Logf("%s: %d pods undisturbed (same sandboxes, addresses, no restarts; TCP between them; hostPort)", what, len(names))
	}
	a.restart()
	undisturbed("restarting vpcchaind on node a")
	tasks, err := ka.runningTasks()
	if err != nil {
		t.Fatal(err)
	}
	ka.containerd.stop()
	ka.containerd.start()
	// A restarted containerd reconnects to every pod's shim before it
	// lists the pod's tasks again: wait for all of them, so that a task
	// missing after this is a pod containerd lost, not one still loading.
	waitFor(t, 60*time.Second, "containerd after restart (all tasks back)", ka.containerd.running, func() error {
		now, err := ka.runningTasks()
		if err != nil {
			return err
		}
		for id := range tasks {
			if !now[id] {
				return fmt.Errorf("task %s is not RUNNING (%d of %d back)", id, len(now), len(tasks))
			}
		}
		return nil
	})
	undisturbed("restarting containerd on node a")
	ka.kubelet.stop()
	ka.kubelet.start()
	time.Sleep(3 * time.Second) // a kubelet that would recreate sandboxes does so in its first syncs
	undisturbed("restarting the kubelet on node a")

	// Deleting the pods (grace period 0) returns every address to the warm
	// pool and leaves no veth, rule, DNAT chain or sandbox namespace.
	start = time.Now()
	if _, err := k.kubectl("", "delete", "pods", "-l", "app=web", "--grace-period=0", "--force", "--wait=false"); err != nil {
		t.Fatal(err)
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		waitFor(t, 60*time.Second, "node "+kn.n.name+"'s addresses released", kn.alive, func() error {
			if r := kn.n.introspect(); len(r.Allocations) != 0 {
				return fmt.Errorf("daemon still holds %d allocations", len(r.Allocations))
			}
			if out, err := kn.ctr("task", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("containerd tasks: %q %v", out, err)
			}
			return nil
		})
	}
	t.Logf("all %d addresses released %v after delete", len(names), time.Since(start).Round(time.Millisecond))
	for _, name := range names {
		kn := nodeOf[name]
		if _, ok := eniOfAddr(t, c.sim, kn.n.vn.InstanceID)(pods[name].ip); !ok {
			t.Errorf("address %s of deleted pod %s left node %s's ENIs (want it back in the warm pool)", pods[name].ip, name, kn.n.name)
		}
	}
	for _, kn := range []*kubeNode{ka, kbn} {
		held := 0
		for _, name := range names {
			if nodeOf[name] == kn {
				held++
			}
		}
		if r := kn.n.introspect(); int(r.Available+r.Cooling) < held {
			t.Errorf("node %s's pool after delete: available %d + cooling %d < %d released", kn.n.name, r.Available, r.Cooling, held)
		}
		assertNodeClean(t, kn.n)
		if out, err := iptablesIn(kn.n, "-t", "nat", "-S"); err != nil {
			t.Fatal(err)
		} else if strings.Contains(out, "CNI-DN-") {
			t.Errorf("node %s: portmap's per-pod DNAT chain left behind:\n%s", kn.n.name, out)
		}
		if left := kn.newSandboxNetns(); len(left) > 0 {
			t.Errorf("sandbox network namespaces left behind: %v", left)
		}
	}
	t.Logf("tier duration (after build): %v", time.Since(tierStart).Round(100*time.Millisecond))
}

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

func primaryIP(t *testing.T, c *cluster, n *node) netip.Addr {
	t.Helper()
	inet, ok := c.sim.Cloud.InstanceNetwork(n.vn.InstanceID)
	if !ok {
		t.Fatalf("node %s unknown to EC2", n.name)
	}
	return inet.PrimaryIP
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
	go func() {
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
					up, err = net.DialTimeout("tcp4", "127.0.0.1:6443", 3*time.Second)
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
	}()
}

// newKubeNode prepares a node's directories, images and CNI bin dir (the
// DaemonSet's init container) and registers the forced teardown.
func newKubeNode(t *testing.T, n *node, kb kubeletBins, bin, busybox string) *kubeNode {
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
	kn.buildImages(busybox)
	return kn
}

func (kn *kubeNode) conflist() string { return filepath.Join(kn.cniConf, "10-vpcchain.conflist") }

// startInstaller runs the DaemonSet's install-cni-config sidecar.
func (kn *kubeNode) startInstaller() {
	kn.installer = startInNode(kn.t, kn.n, kn.dir, "install-cni-config", kn.n.env, kn.bins.install, "--conflist-only",
		"--cni-bin-dir="+kn.cniBin, "--cni-conf-dir="+kn.cniConf, "--timeout=10m", "--keep-running=1m")
}

func (kn *kubeNode) startContainerd() {
	kn.containerd = kn.startProc("containerd", []string{"--mount=" + kn.containerdMountNS(), "--net=" + kn.n.vn.NetNSPath, "--"}, kn.containerdScript())
	waitFor(kn.t, 30*time.Second, "containerd", kn.containerd.running, func() error {
		_, err := kn.ctr("version")
		return err
	})
	kn.importImages()
}

func (kn *kubeNode) startKubelet(k *kube) {
	inet, ok := kn.n.c.sim.Cloud.InstanceNetwork(kn.n.vn.InstanceID)
	if !ok {
		kn.t.Fatalf("node %s unknown to EC2", kn.n.name)
	}
	kn.writeKubeletConfig(k, inet.PrimaryIP)
	kn.kubelet = kn.startProc("kubelet", []string{"--net=" + kn.n.vn.NetNSPath, "--", "unshare", "-m", "--propagation", "slave", "--"}, kn.kubeletScript())
}

const (
	pauseImage   = "vpcchain.e2e/pause:1"
	busyboxImage = "vpcchain.e2e/busybox:1"
)

type kubeletBins struct {
	kubelet, apiserver, kubectl, loopback, portmap, bandwidth, install, etcd string
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

	// host state before the run
	cgroups     map[string]bool
	netns       map[string]bool
	madeRunCtrd bool
	teardown    sync.Mutex
}

// inNode is a command in the node's network namespace (as a hostNetwork pod).
func (kn *kubeNode) inNode(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", kn.n.vn.NetNS}, args...)...)
	cmd.Env = env
	return cmd
}

func (kn *kubeNode) ctr(args ...string) (string, error) {
	cmd := exec.Command("ctr", append([]string{"--address", kn.sock, "-n", "k8s.io"}, args...)...)
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

func (kn *kubeNode) containerdScript() string {
	d := filepath.Join(kn.dir, "containerd")
	cfg := fmt.Sprintf(`version = 2
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
`, filepath.Join(d, "root"), filepath.Join(d, "state"), kn.sock, filepath.Join(d, "opt"), pauseImage,
		kn.cniBin, kn.cniConf, filepath.Join(d, "runc"))
	conf := filepath.Join(d, "config.toml")
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		kn.t.Fatal(err)
	}
	return "exec containerd --config " + conf
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
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
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
	kn.kubeletArgs = []string{"--config=" + filepath.Join(d, "config.yaml"), "--kubeconfig=" + k.kubeconfig,
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
	b.WriteString(kn.overlayScript("kubelet", "/var/lib", "/var/log"))
	b.WriteString("exec " + kn.bins.kubelet)
	for _, a := range kn.kubeletArgs {
		b.WriteString(" '" + a + "'")
	}
	return b.String()
}

// buildImages writes the pause image (our Go pause, built now) and a busybox
// image as OCI layout tars.
func (kn *kubeNode) buildImages(busybox string) {
	t := kn.t
	pause := filepath.Join(kn.dir, "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pause, "./testdata/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	kn.images = []string{
		writeOCIImage(t, filepath.Join(kn.dir, "pause.oci.tar"), pauseImage, []string{"/pause"}, map[string]string{"/pause": pause}),
		writeOCIImage(t, filepath.Join(kn.dir, "busybox.oci.tar"), busyboxImage, []string{"/bin/busybox", "sh"}, map[string]string{"/bin/busybox": busybox}),
	}
}

func (kn *kubeNode) importImages() {
	for _, img := range kn.images {
		if out, err := kn.ctr("images", "import", img); err != nil {
			kn.t.Fatalf("%v\n%s", err, out)
		}
	}
}

// writeOCIImage writes a one-layer OCI image layout tar (what `ctr images
// import` takes) and returns its path.
func writeOCIImage(t *testing.T, path, name string, entrypoint []string, files map[string]string) string {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	now := time.Unix(0, 0)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "var", "www"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: now})
	}
	targets := make([]string, 0, len(files))
	for dst := range files {
		targets = append(targets, dst)
	}
	sort.Strings(targets)
	for _, dst := range targets {
		b, err := os.ReadFile(files[dst])
		if err != nil {
			t.Fatal(err)
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(dst, "/"), Mode: 0o755, Size: int64(len(b)), ModTime: now})
		_, _ = tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	blobs := map[string][]byte{}
	desc := func(mediaType string, b []byte) map[string]any {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return map[string]any{"mediaType": mediaType, "digest": d, "size": len(b)}
	}
	layerDesc := desc("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Entrypoint": entrypoint, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{layerDesc},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{md}})

	var out bytes.Buffer
	ow := tar.NewWriter(&out)
	add := func(n string, b []byte) {
		_ = ow.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: now})
		_, _ = ow.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	ds := make([]string, 0, len(blobs))
	for d := range blobs {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	for _, d := range ds {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), blobs[d])
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
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
	_, _ = k.kubectl("", "delete", "pods", "--all", "--grace-period=0", "--force", "--wait=false")
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

// cgroupDirs lists every cgroup directory on the host.
func cgroupDirs() map[string]bool {
	dirs := map[string]bool{}
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs[p] = true
		}
		return nil
	})
	return dirs
}

func sandboxNetns() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "cni-") {
			m[filepath.Join("/var/run/netns", e.Name())] = true
		}
	}
	return m
}

func (kn *kubeNode) snapshotHost() {
	kn.cgroups = cgroupDirs()
	kn.netns = sandboxNetns()
	if _, err := os.Stat("/run/containerd"); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir("/run/containerd", 0o700); err != nil {
			kn.t.Fatal(err)
		}
		kn.madeRunCtrd = true
	}
}

func (kn *kubeNode) newSandboxNetns() []string {
	var left []string
	for p := range sandboxNetns() {
		if !kn.netns[p] {
			left = append(left, p)
		}
	}
	sort.Strings(left)
	return left
}

// forceTeardown kills whatever of the node is left (kubelet, containerd,
// shims, container processes), removes the cgroups and sandbox namespaces
// the run created, and returns what it had to remove. Safe to call twice and
// from the interrupt handler.
func (kn *kubeNode) forceTeardown() []string {
	kn.teardown.Lock()
	defer kn.teardown.Unlock()
	var left []string
	for _, p := range []*nodeProc{kn.kubelet, kn.containerd} {
		if p != nil {
			p.mu.Lock()
			if p.cmd != nil {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
			p.mu.Unlock()
		}
	}
	// Shims of our containerd (they run in their own process groups).
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(kn.sock)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		left = append(left, fmt.Sprintf("shim pid %d", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// New cgroups: kill what is in them, then remove them deepest first.
	var made []string
	for d := range cgroupDirs() {
		if !kn.cgroups[d] {
			made = append(made, d)
		}
	}
	sort.Slice(made, func(i, j int) bool { return len(made[i]) > len(made[j]) })
	for _, d := range made {
		if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			left = append(left, fmt.Sprintf("processes in cgroup %s: %s", d, strings.Fields(string(b))))
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for _, d := range made {
		var err error
		for range 50 {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			left = append(left, fmt.Sprintf("cgroup %s NOT removable: %v", d, err))
		} else if filepath.Base(filepath.Dir(d)) == "k8s.io" {
			// a container's cgroup: runc removes it when the container goes
			left = append(left, "cgroup "+d)
		}
	}
	for _, p := range kn.newSandboxNetns() {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err == nil {
			left = append(left, "netns "+p)
		}
	}
	if kn.mntns != "" {
		if err := syscall.Unmount(kn.mntns, syscall.MNT_DETACH); err == nil {
			kn.mntns = ""
		}
	}
	if kn.madeRunCtrd {
		_ = os.Remove("/run/containerd")
	}
	return slices.Compact(left)
}
