//go:build kubelet

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"k8s.io/client-go/tools/clientcmd"
)

// policyHookOverlay is clusterOverlay with the policy hook turned on (the
// ConfigMap's documented switch; the hook's wait keeps its default).
const policyHookOverlay = clusterOverlay + `    - op: replace
      path: /data/VPCCHAIN_ENABLE_POLICY_HOOK
      value: "true"
`

// calicoOverlay applies Calico's policy-only manifest with only the image
// replaced by the calico/node the tier builds from Calico's source.
const calicoOverlay = `resources: [calico-policy-only.yaml]
images:
- name: docker.io/calico/node
  newName: ` + "vpcchain.e2e/calico-node" + `
  newTag: v3.31.0
`

// firstResultDir is where each probe pod writes what it saw when its
// container started (a hostPath in the node's own /run).
const firstResultDir = "/run/vpcchain-e2e-first"

// TestClusterCalico is the policy half of the user journey on a real
// cluster: our manifest with the policy hook on and Calico's policy-only
// manifest (its CRDs, then calico-node from an image built from Calico's
// source) applied with kubectl. A default-deny rule and an allow rule are
// enforced on our pods across nodes, and every new pod starts only once
// Felix has programmed its policy: its container finds Felix's status file
// for it already written, and its one connection attempt at start goes
// through when the policy allows it and is dropped when it does not.
func TestClusterCalico(t *testing.T) {
	bin, cb, archive := clusterPrereqs(t)
	crds := calicoCRDs(t)
	calicoArchive := buildCalicoNodeImage(t, bin, t.TempDir())
	kc := startK8sCluster(t, cb, []clusterNodeSpec{{"p1", false}, {"p2", true}}, archive, calicoArchive)

	start := time.Now()
	kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", policyHookOverlay, "vpcchain")
	kc.ready(120 * time.Second)
	for _, kn := range kc.nodes {
		fi, err := os.Stat(filepath.Join(kn.cniConf, "vpcchain-kubeconfig"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("node %s: policy-hook's kubeconfig %v (mode %v), want it written 0600 by the installer", kn.n.name, err, fi)
		}
	}
	kc.kubectlOK("", "apply", "--server-side", "-f", crds)
	kc.applyOverlay(t, "../../conflist/manifests/calico-policy-only.yaml", calicoOverlay, "calico-node")
	t.Logf("vpcchain (policy hook on) and calico-node Ready on %d nodes %v after the first kubectl apply", len(kc.nodes), time.Since(start).Round(time.Second))

	// The server (app: web, answering its name), on p1.
	kc.kubectlOK(podManifest("srv", "p1", ""), "apply", "-f", "-")
	kc.kubectlOK("", "wait", "--for=condition=Ready", "--timeout=120s", "pod/srv")
	srv := netip.AddrPortFrom(netip.MustParseAddr(kc.kubectlOK("", "get", "pod", "srv", "-o", "jsonpath={.status.podIP}")), 8080)
	if ann := kc.kubectlOK("", "get", "pod", "srv", "-o", `jsonpath={.metadata.annotations.cni\.projectcalico\.org/podIP}`); ann != srv.Addr().String()+"/32" {
		t.Errorf("srv's cni.projectcalico.org/podIP = %q, want %s/32 (published by policy-hook)", ann, srv.Addr())
	}

	// kubectl exec and logs reach the kubelets (the API server's kubelet
	// client certificate); the installer says it wrote the hook's kubeconfig.
	if out := kc.kubectlOK("", "exec", "srv", "--", "/bin/busybox", "cat", "/www/name"); out != "srv" {
		t.Errorf("kubectl exec srv: %q, want srv", out)
	}
	for _, kn := range kc.nodes {
		pod := kc.kubectlOK("", "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=vpcchain",
			"--field-selector", "spec.nodeName="+kn.n.name, "-o", "jsonpath={.items[0].metadata.name}")
		logs := kc.kubectlOK("", "-n", "kube-system", "logs", pod, "-c", "install-cni-config")
		if !strings.Contains(logs, "wrote /host/etc/cni/net.d/vpcchain-kubeconfig") {
			t.Errorf("installer on %s (kubectl logs %s) never wrote the hook's kubeconfig:\n%s", kn.n.name, pod, tail(logs, 10))
		}
	}

	// Without a policy, new pods on both nodes reach it with their first
	// attempt.
	fp := kc.firstProbe(t, srv)
	fp.expect("open-1", "p1", "", true)
	fp.expect("open-2", "p2", "", true)
	kc.checkPolicyHookToken(t, kc.nodes[0], "srv", "open-2")

	// Default deny for srv's ingress, an allow rule for role=client on 8080,
	// and an egress deny for pods labelled egress=deny.
	kc.kubectlOK(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: default}
spec:
  podSelector: {matchLabels: {egress: deny}}
  policyTypes: [Egress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {role: client}}}]
    ports: [{protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`, "apply", "-f", "-")
	// Enforced on existing pods: open-2 (no role) is dropped.
	open2 := fp.netns("open-2")
	doIn := func(f func() error) error { return open2.Do(func(ns.NetNS) error { return f() }) }
	applied := time.Now()
	if err := waitDial(doIn, srv, false, 30*time.Second); err != nil {
		t.Fatalf("open-2 -> srv after default-deny: %v", err)
	}
	t.Logf("default-deny enforced on srv %v after kubectl apply", time.Since(applied).Round(time.Millisecond))

	fp.expect("client-1", "p1", "role: client", true)
	fp.expect("client-2", "p2", "role: client", true)
	fp.expect("other-2", "p2", "role: other", false)
	fp.expect("denied-1", "p1", "{role: client, egress: deny}", false)
	fp.expect("denied-2", "p2", "{role: client, egress: deny}", false)

	// A busy Felix: frozen while a new pod is added, the pod does not start
	// until Felix, resumed, has programmed its policy (the hook's wait), so
	// its one attempt at start goes through.
	resume := kc.freezeFelix(t, "p2")
	go func() {
		time.Sleep(3 * time.Second)
		resume()
	}()
	fp.expect("late-2", "p2", "role: client", true)

	// Deleting the allow rule closes srv to the clients too.
	kc.kubectlOK("", "delete", "networkpolicy", "allow-clients")
	client2 := fp.netns("client-2")
	doIn = func(f func() error) error { return client2.Do(func(ns.NetNS) error { return f() }) }
	if err := waitDial(doIn, srv, false, 30*time.Second); err != nil {
		t.Fatalf("client-2 -> srv after deleting allow-clients: %v", err)
	}
}

// firstProbe creates probe pods: each one's container, as it starts, looks
// for Felix's endpoint-status file of its own pod (Felix writes it once the
// pod's policy is programmed) and makes one connection attempt to srv, and
// writes both results into the node's firstResultDir.
type firstProbe struct {
	t   *testing.T
	kc  *k8sCluster
	srv netip.AddrPort
	ns  map[string]ns.NetNS
}

func (kc *k8sCluster) firstProbe(t *testing.T, srv netip.AddrPort) *firstProbe {
	fp := &firstProbe{t: t, kc: kc, srv: srv, ns: map[string]ns.NetNS{}}
	t.Cleanup(func() {
		for _, n := range fp.ns {
			n.Close()
		}
	})
	return fp
}

// firstScript is the probe's container command. Felix's status file of
// default/<pod> is "k8s default%2F<pod> eth0". (busybox's nc, not its wget:
// the static busybox's wget crashes in an image without libc's NSS files.)
const firstScript = `st="/calico-status/k8s default%%2F$POD eth0"
if [ -e "$st" ]; then s=programmed; else s=not-programmed; fi
if printf 'GET /name HTTP/1.0\r\n\r\n' | busybox nc -w 3 %s %d >/tmp/body 2>/tmp/err; then r="ok $(busybox tail -n 1 /tmp/body)"; else r="failed $(busybox cat /tmp/err)"; fi
echo "$s $r" > /out/$POD.tmp && busybox mv /out/$POD.tmp /out/$POD
exec busybox sleep 100000
`

// expect creates the pod with the labels (YAML flow map body, may be
// empty) on node and checks that its policy was in place when it started
// and that its first attempt went through (allowed) or was dropped.
func (fp *firstProbe) expect(name, node, labels string, allowed bool) {
	t := fp.t
	t.Helper()
	if labels != "" && !strings.HasPrefix(labels, "{") {
		labels = "{" + labels + "}"
	}
	if labels == "" {
		labels = "{}"
	}
	fp.kc.kubectlOK(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: %s}
spec:
  nodeName: %s
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", %q]
    env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    volumeMounts:
    - {name: out, mountPath: /out}
    - {name: status, mountPath: /calico-status, readOnly: true}
  volumes:
  - {name: out, hostPath: {path: %s, type: DirectoryOrCreate}}
  - {name: status, hostPath: {path: /var/run/calico/endpoint-status, type: DirectoryOrCreate}}
`, name, labels, node, busyboxImage, fmt.Sprintf(firstScript, fp.srv.Addr(), fp.srv.Port()), firstResultDir), "apply", "-f", "-")
	var kn *kubeNode
	for _, n := range fp.kc.nodes {
		if n.n.name == node {
			kn = n
		}
	}
	var got string
	waitFor(t, 90*time.Second, "pod "+name+"'s first attempt", fp.kc.alive, func() error {
		out, err := exec.Command("nsenter", "--mount="+kn.mntns, "cat", filepath.Join(firstResultDir, name)).CombinedOutput()
		if err != nil {
			st, _ := fp.kc.k.kubectl("", "get", "pod", name, "-o", "jsonpath={.status.phase} {.status.containerStatuses[*].state}")
			return fmt.Errorf("%v: %s (pod: %s)", err, strings.TrimSpace(string(out)), st)
		}
		got = strings.TrimSpace(string(out))
		return nil
	})
	want := "programmed ok srv"
	if !allowed {
		want = "programmed failed nc: timed out"
	}
	if got != want {
		t.Errorf("pod %s on %s (labels %s) at its start: %q, want %q", name, node, labels, got, want)
	} else {
		t.Logf("pod %s on %s (labels %s) at its start: %s", name, node, labels, got)
	}
	fp.kc.kubectlOK("", "wait", "--for=condition=Ready", "--timeout=60s", "pod/"+name)
	id := fp.kc.kubectlOK("", "get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].containerID}")
	netns, err := kn.netnsOf(strings.TrimPrefix(id, "containerd://"))
	if err != nil {
		t.Fatal(err)
	}
	fp.ns[name] = netns
}

// netns is a probe pod's network namespace.
func (fp *firstProbe) netns(name string) ns.NetNS {
	if n, ok := fp.ns[name]; ok {
		return n
	}
	fp.t.Fatalf("no probe pod %s", name)
	return nil
}

// freezeFelix stops (SIGSTOP) the Felix of calico-node on node and returns
// the function that resumes it (also run at cleanup).
func (kc *k8sCluster) freezeFelix(t *testing.T, node string) func() {
	t.Helper()
	var want string
	for _, kn := range kc.nodes {
		if kn.n.name == node {
			want = kn.n.vn.NetNS
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.HasSuffix(string(b), "calico-node\x00-felix\x00") {
			continue
		}
		pid := strings.Split(p, "/")[2]
		out, _ := exec.Command("ip", "netns", "identify", pid).Output()
		if strings.TrimSpace(string(out)) != want {
			continue
		}
		proc, err := os.FindProcess(atoi(t, pid))
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		resume := func() { once.Do(func() { _ = proc.Signal(syscall.SIGCONT) }) }
		t.Cleanup(resume)
		t.Logf("Felix on %s (pid %s) frozen", node, pid)
		return resume
	}
	t.Fatalf("no calico-node -felix process in node %s's network namespace", node)
	return nil
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkPolicyHookToken checks, with real calls, what the token the
// installer wrote on kn for policy-hook can do: it is the hook's own
// ServiceAccount, bound to kn; it patches the annotations of mine (a pod on
// kn) through pods/status, and nothing else: not other's (a pod on another
// node), not labels, not the pod itself, no tokens, no secrets, no lists.
func (kc *k8sCluster) checkPolicyHookToken(t *testing.T, kn *kubeNode, mine, other string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kn.cniConf, "vpcchain-kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatalf("policy-hook's kubeconfig on %s: %v", kn.n.name, err)
	}
	ai := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo]
	as := func(args ...string) (string, error) {
		return kc.k.kubectl("", append([]string{"--token", ai.Token}, args...)...)
	}
	if who, err := as("auth", "whoami", "-o", `jsonpath={.status.userInfo.username} {.status.userInfo.extra.authentication\.kubernetes\.io/node-name[0]}`); err != nil ||
		who != "system:serviceaccount:kube-system:vpcchain-policy-hook "+kn.n.name {
		t.Errorf("policy-hook's token on %s is %q (%v), want the vpcchain-policy-hook ServiceAccount bound to %s", kn.n.name, who, err, kn.n.name)
	}
	annotate := func(pod, patch string) error {
		_, err := as("patch", "pod", pod, "--subresource=status", "--type=merge", "-p", patch)
		return err
	}
	if err := annotate(mine, `{"metadata":{"annotations":{"vpcchain.e2e/hook-check":"ok"}}}`); err != nil {
		t.Errorf("policy-hook's token cannot annotate %s, a pod on its node: %v", mine, err)
	}
	refused := map[string]error{
		"annotate a pod on another node": annotate(other, `{"metadata":{"annotations":{"vpcchain.e2e/hook-check":"no"}}}`),
		"change a pod's labels":          annotate(mine, `{"metadata":{"labels":{"vpcchain.e2e/hook-check":"no"}}}`),
	}
	for what, args := range map[string][]string{
		"patch a pod (not its status)":          {"patch", "pod", mine, "--type=merge", "-p", `{"metadata":{"annotations":{"x":"y"}}}`},
		"delete a pod":                          {"delete", "pod", mine, "--wait=false"},
		"list pods":                             {"get", "pods", "-A"},
		"read secrets":                          {"-n", "kube-system", "get", "secrets"},
		"mint a token of its own":               {"-n", "kube-system", "create", "token", "vpcchain-policy-hook"},
		"mint a token of the daemon's identity": {"-n", "kube-system", "create", "token", "vpcchain"},
	} {
		_, refused[what] = as(args...)
	}
	for what, err := range refused {
		if err == nil {
			t.Errorf("policy-hook's token may %s", what)
		}
	}
}
