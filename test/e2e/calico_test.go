package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCalicoPolicy runs an unmodified Calico Felix (v3.31.0, policy-only,
// iptables mode, interface prefix eni) against a real kube-apiserver
// (v1.33.13) and Debian's etcd, all inside a simulated node's network
// namespace, and checks that it enforces Kubernetes NetworkPolicy on pods
// added through our chain with the policy-hook plugin, from the first packet.
// The binaries come from `make heavy-tools` (test/tools/felix, test/tools/kube)
// and `make deps` (etcd); docs/design.md says how the tier is built.
func TestCalicoPolicy(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"a"})
	n := c.nodes["a"]
	k, statusDir := startCalicoTier(t, n, false)

	chain := n.chain(nil,
		map[string]any{"type": "vpc-snat", "nodeConfig": n.state + "/snat.json"},
		map[string]any{"type": "policy-hook", "vethPrefix": "eni", "kubeconfig": k.kubeconfig,
			"waitForPolicy": map[string]any{"timeout": "20s", "strict": true, "endpointStatusDir": statusDir}})

	// addPod creates the Pod object (it never runs: only the API object
	// matters to Felix), then runs the chain's ADD as kubelet would; the
	// status file must exist the moment ADD returns (strict waiting).
	addPod := func(name string, afterAdd func(*pod)) *pod {
		t.Helper()
		k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: default, labels: {app: %s}}
spec:
  nodeName: %s
  automountServiceAccountToken: false
  containers: [{name: pause, image: registry.k8s.io/pause:3.10}]
`, name, name, n.name))
		p := n.newPod("default", name)
		start := time.Now()
		if err := p.addRetrying(chain, time.Minute); err != nil {
			t.Fatalf("ADD %s: %v\nplugin log:\n%s", name, err, tailFile(filepath.Join(c.dir, n.name+"-plugins.log"), 30))
		}
		took := time.Since(start)
		statusFile := filepath.Join(statusDir, "k8s "+url.PathEscape("default/"+name)+" eth0")
		_, statErr := os.Stat(statusFile)
		if afterAdd != nil {
			afterAdd(p)
		}
		t.Cleanup(func() {
			if err := p.del(chain); err != nil {
				t.Errorf("DEL %s: %v", name, err)
			}
		})
		if statErr != nil {
			t.Fatalf("ADD of %s returned (after %v) before Felix's endpoint-status file existed: %v", name, took, statErr)
		}
		checkStatusFile(t, statusFile, calicoVethName("default", name), p.ip)
		ann, err := k.kubectl("", "-n", "default", "get", "pod", name, "-o", `jsonpath={.metadata.annotations.cni\.projectcalico\.org/podIPs}`)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Split(ann, ","), p.ip.String()+"/32") && !slices.Contains(strings.Split(ann, ","), p.ip.String()) {
			t.Errorf("pod %s: annotation cni.projectcalico.org/podIPs = %q, want its address %s", name, ann, p.ip)
		}
		t.Logf("pod %s: %s on %s, ADD took %v (waited for Felix), status file %q", name, p.ip, calicoVethName("default", name), took.Round(time.Millisecond), filepath.Base(statusFile))
		return p
	}

	pa := addPod("pol-a", nil)
	pb := addPod("pol-b", nil)

	// Felix programs per-endpoint chains for exactly our two interfaces.
	k.expectEndpointChains(t, n, pa, pb)

	// Traffic between the two pods flows (no policy: the namespace's profile
	// allows it).
	const port = 8080
	echoServer(t, pb.doIn, netip.AddrPortFrom(pb.ip, port), "pol-b")
	echoServer(t, pa.doIn, netip.AddrPortFrom(pa.ip, port), "pol-a")
	toB, toA := netip.AddrPortFrom(pb.ip, port), netip.AddrPortFrom(pa.ip, port)
	if err := waitDial(pa.doIn, toB, true, 10*time.Second); err != nil {
		t.Fatalf("pol-a -> pol-b without policy: %v", err)
	}

	// A NetworkPolicy denying all ingress to B stops A -> B (dropped), but not
	// B -> A; deleting it restores A -> B.
	denyB := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress-b, namespace: default}
spec:
  podSelector: {matchLabels: {app: pol-b}}
  policyTypes: [Ingress]
`
	start := time.Now()
	k.apply(t, denyB)
	if err := waitDial(pa.doIn, toB, false, 20*time.Second); err != nil {
		t.Fatalf("pol-a -> pol-b after deny-ingress-b: %v", err)
	}
	t.Logf("deny-ingress-b enforced %v after apply", time.Since(start).Round(time.Millisecond))
	if _, err := dialOnce(pb.doIn, toA, 3*time.Second); err != nil {
		t.Errorf("pol-b -> pol-a must still flow (the policy denies only ingress to pol-b): %v", err)
	}
	start = time.Now()
	if _, err := k.kubectl("", "-n", "default", "delete", "networkpolicy", "deny-ingress-b"); err != nil {
		t.Fatal(err)
	}
	if err := waitDial(pa.doIn, toB, true, 20*time.Second); err != nil {
		t.Fatalf("pol-a -> pol-b after deleting deny-ingress-b: %v", err)
	}
	t.Logf("traffic restored %v after delete", time.Since(start).Round(time.Millisecond))

	// The first packet a pod sends is already subject to policy: the policy
	// exists before the pod is added; right after ADD returns, its first
	// connection is dropped...
	k.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-c, namespace: default}
spec:
  podSelector: {matchLabels: {app: pol-c}}
  policyTypes: [Egress]
`)
	var firstC error
	pc := addPod("pol-c", func(p *pod) { _, firstC = dialOnce(p.doIn, toB, 2*time.Second) })
	if firstC == nil {
		t.Fatal("pol-c's first connection (right after ADD) went through despite deny-egress-c")
	}
	if !isTimeout(firstC) {
		t.Fatalf("pol-c's first connection failed but was not dropped: %v", firstC)
	}
	// ...by that policy (not by the "unknown interface" drop): the pod's
	// from-workload chain jumps to the policy's chain.
	if pol := endpointPolicies(t, n, "cali-fw-"+calicoVethName("default", "pol-c")); !slices.Contains(pol, "default/knp.default.deny-egress-c") {
		t.Fatalf("cali-fw chain of pol-c applies policies %q, want default/knp.default.deny-egress-c", pol)
	}
	// ...while a pod without a policy connects with its first attempt.
	var firstD error
	var saidD string
	pd := addPod("pol-d", func(p *pod) { saidD, firstD = dialOnce(p.doIn, toB, 3*time.Second) })
	if firstD != nil {
		t.Fatalf("pol-d's first connection (right after ADD, no policy): %v", firstD)
	}
	if !strings.HasPrefix(saidD, "pol-b "+pd.ip.String()+":") {
		t.Errorf("pol-d -> pol-b: server said %q, want pol-b seeing %s", saidD, pd.ip)
	}
	k.expectEndpointChains(t, n, pa, pb, pc, pd)

	// Deleting the egress policy lets pol-c out.
	if _, err := k.kubectl("", "-n", "default", "delete", "networkpolicy", "deny-egress-c"); err != nil {
		t.Fatal(err)
	}
	if err := waitDial(pc.doIn, toB, true, 20*time.Second); err != nil {
		t.Fatalf("pol-c -> pol-b after deleting deny-egress-c: %v", err)
	}
}

// startCalicoTier runs the Calico tier on node n: etcd and kube-apiserver
// with Calico's objects and the Node, then Felix (IPv6 support as asked);
// it returns the control plane and Felix's endpoint-status directory.
func startCalicoTier(t *testing.T, n *node, ipv6 bool) (*kube, string) {
	t.Helper()
	felixBin, apiserverBin, kubectlBin, etcdBin := calicoTierBinaries(t)
	crds := calicoCRDs(t)
	k := startControlPlane(t, n, etcdBin, apiserverBin, kubectlBin)
	setupCalicoDatastore(t, k, n, crds)
	statusPrefix := filepath.Join(k.dir, "run-calico")
	if err := os.Mkdir(statusPrefix, 0o755); err != nil {
		t.Fatal(err)
	}
	startFelixFamilies(t, n, k, felixBin, statusPrefix, ipv6)
	return k, filepath.Join(statusPrefix, "endpoint-status")
}

// calicoTierBinaries are the Calico tier's programs (Felix, kube-apiserver,
// kubectl, etcd), checked to exist along with our policy-hook plugin.
func calicoTierBinaries(t *testing.T) (felix, apiserver, kubectl, etcd string) {
	t.Helper()
	requireRoot(t)
	bin := binDir(t)
	tools := filepath.Join(bin, "tools")
	felix, apiserver, kubectl, etcd = filepath.Join(tools, "calico-felix"), filepath.Join(tools, "kube-apiserver"),
		filepath.Join(tools, "kubectl"), "/usr/bin/etcd"
	for _, b := range []string{felix, apiserver, kubectl, etcd} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make heavy-tools` (Felix, kube-apiserver, kubectl) and `make deps` (etcd): %v", b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "policy-hook")); err != nil {
		t.Fatalf("the policy-hook plugin is missing in %s: run `make build`: %v", bin, err)
	}
	return felix, apiserver, kubectl, etcd
}

// setupCalicoDatastore creates the Calico objects calico-node would create
// (CRDs, ClusterInformation, tiers), the Node, and the default
// ServiceAccount (there is no controller-manager).
func setupCalicoDatastore(t *testing.T, k *kube, n *node, crds string) {
	t.Helper()
	if _, err := k.kubectl("", "apply", "--server-side", "-f", crds); err != nil {
		t.Fatal(err)
	}
	if _, err := k.kubectl("", "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
	k.apply(t, fmt.Sprintf(`apiVersion: crd.projectcalico.org/v1
kind: ClusterInformation
metadata: {name: default}
spec: {datastoreReady: true, clusterType: "k8s,policy-only", calicoVersion: v3.31.0}
---
apiVersion: crd.projectcalico.org/v1
kind: Tier
metadata: {name: default}
spec: {order: 1000000, defaultAction: Deny}
---
apiVersion: crd.projectcalico.org/v1
kind: Tier
metadata: {name: kube-admin}
spec: {order: 1000, defaultAction: Pass}
---
apiVersion: crd.projectcalico.org/v1
kind: Tier
metadata: {name: kube-baseline}
spec: {order: 10000000, defaultAction: Pass}
---
apiVersion: v1
kind: Node
metadata: {name: %s, labels: {kubernetes.io/hostname: %s}}
`, n.name, n.name))
	// No controller-manager: the default ServiceAccount is made by hand (the
	// default namespace itself comes from the API server, shortly after start).
	k.retry(t, 30*time.Second, "", "-n", "default", "create", "serviceaccount", "default")
}

// calicoVethName is Calico's VethNameForWorkload with prefix eni, computed
// here independently of the product's code.
func calicoVethName(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return "eni" + hex.EncodeToString(sum[:])[:11]
}

// calicoCRDs is Calico's CRD manifest from the Felix tools module's source
// in the module cache.
func calicoCRDs(t *testing.T) string {
	t.Helper()
	return filepath.Join(calicoModule(t), "manifests/crds.yaml")
}

// calicoModule is the directory of the calico module the Felix tools module
// pins, in the module cache (`make heavy-tools` downloads it).
func calicoModule(t *testing.T) string {
	t.Helper()
	return toolModule(t, "felix", "github.com/projectcalico/calico", "manifests/crds.yaml", "make heavy-tools")
}

// toolModule is the module cache's directory of the version of module mod
// that test/tools/<tools>/go.mod requires; file, inside it, proves it was
// downloaded (by the make target named).
func toolModule(t *testing.T, tools, mod, file, target string) string {
	t.Helper()
	gomod, err := os.ReadFile(filepath.Join("../tools", tools, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(mod) + ` (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatalf("test/tools/%s/go.mod does not require %s", tools, mod)
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	d := filepath.Join(strings.TrimSpace(string(out)), mod+"@"+string(m[1]))
	if _, err := os.Stat(filepath.Join(d, file)); err != nil {
		t.Fatalf("%s is not in the module cache: run `%s`: %v", mod, target, err)
	}
	return d
}

// bgProc is a long-running process inside a node's namespace, stopped at the
// end of the test (and on interrupt).
type bgProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startInNode(t testing.TB, n *node, dir, name string, env []string, args ...string) *bgProc {
	t.Helper()
	p, err := startBg(t, n, dir, name, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startBg is startInNode returning its error, for callers off the test's
// goroutine. A process started again under the same name appends to the
// same log.
func startBg(t testing.TB, n *node, dir, name string, env []string, args ...string) (*bgProc, error) {
	log := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := inNode(n.vn, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: the whole group (with any helpers the process
	// started) is killed at the end.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &bgProc{name: name, cmd: cmd, log: log, exited: make(chan struct{})}
	pgid := cmd.Process.Pid
	unregister := onInterrupt(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
	go func() { _ = cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL) // leftover helpers
		unregister()
		if t.Failed() || os.Getenv("VPCCHAIN_E2E_LOGS") != "" {
			t.Logf("log of %s:\n%s", name, tailFile(log, 40))
		}
	})
	return p, nil
}

// kill9 kills the process's group with SIGKILL and waits for it.
func (p *bgProc) kill9() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

func (p *bgProc) running() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v):\n%s", p.name, p.cmd.ProcessState, tailFile(p.log, 40))
	default:
		return nil
	}
}

func tailFile(path string, lines int) string {
	b, _ := os.ReadFile(path)
	return tail(string(b), lines)
}

// kube is etcd + kube-apiserver on the node's loopback and kubectl for them.
type kube struct {
	n          *node
	dir        string
	kubectlBin string
	kubeconfig string
	env        []string
	apiserver  *bgProc
	pki        string
	// kubeletCA is the CA of the API server's kubelet client certificate
	// (cluster mode): kubelets accept only it.
	kubeletCA string
	// server is the API server's URL for the node's own processes;
	// remoteServer for other nodes' (the same unless it listens on the
	// node's primary IP).
	server, remoteServer string
	tokens               map[string]string // user -> bearer token
}

// controlPlaneOpts make the API server a cluster's: Node and RBAC
// authorization instead of AlwaysAllow, listening on the node's primary IP
// (other nodes reach it through the VPC), and more token users.
type controlPlaneOpts struct {
	rbac      bool
	advertise netip.Addr
	users     map[string]string // user -> comma-separated groups
}

func startControlPlane(t testing.TB, n *node, etcdBin, apiserverBin, kubectlBin string) *kube {
	t.Helper()
	return startControlPlaneWith(t, n, etcdBin, apiserverBin, kubectlBin, controlPlaneOpts{})
}

// kubeconfigFor writes a kubeconfig for one of the token users, for server.
func (k *kube) kubeconfigFor(user, server string) string {
	f := filepath.Join(k.dir, "kubeconfig-"+strings.ReplaceAll(user, ":", "_"))
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: %q}
contexts:
- name: e2e
  context: {cluster: e2e, user: u}
current-context: e2e
`, server, k.tokens[user])
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		panic(err)
	}
	return f
}

func startControlPlaneWith(t testing.TB, n *node, etcdBin, apiserverBin, kubectlBin string, o controlPlaneOpts) *kube {
	t.Helper()
	dir := t.TempDir()
	k := &kube{n: n, dir: dir, kubectlBin: kubectlBin, kubeconfig: filepath.Join(dir, "kubeconfig"),
		// HOME in the temp dir: kubectl's discovery cache stays there.
		env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, tokens: map[string]string{}}
	if out, err := exec.Command("ip", "-n", n.vn.NetNS, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}

	etcd := startInNode(t, n, dir, "etcd", k.env, etcdBin, "--name", "e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "e2e=http://127.0.0.1:2380")
	waitFor(t, 30*time.Second, "etcd", etcd.running, func() error {
		_, err := httpGetIn(n, "127.0.0.1:2379", "/health")
		return err
	})

	// Service-account signing key; token auth and AlwaysAllow.
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(filepath.Join(pki, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	users := map[string]string{"admin": "system:masters"}
	for u, g := range o.users {
		users[u] = g
	}
	var csv strings.Builder
	for _, u := range slices.Sorted(maps.Keys(users)) {
		tok := make([]byte, 16)
		_, _ = rand.Read(tok)
		k.tokens[u] = hex.EncodeToString(tok)
		fmt.Fprintf(&csv, "%s,%s,%s,%q\n", k.tokens[u], u, u, users[u])
	}
	token := k.tokens["admin"]
	k.pki = pki
	for f, b := range map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(csv.String()),
	} {
		if err := os.WriteFile(filepath.Join(pki, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
`, token)
	if err := os.WriteFile(k.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	bind, advertise, authz := "127.0.0.1", "127.0.0.1", "AlwaysAllow"
	k.server, k.remoteServer = "https://127.0.0.1:6443", "https://127.0.0.1:6443"
	if o.advertise.IsValid() {
		bind, advertise = "0.0.0.0", o.advertise.String()
		k.remoteServer = "https://" + advertise + ":6443"
	}
	admission := "--enable-admission-plugins="
	privileged := "--allow-privileged=false"
	var kubeletClient []string
	if o.rbac {
		// As kubeadm and EKS set it up: privileged pods allowed (kube-proxy
		// and network agents need them), the Node authorizer and admission.
		authz, admission, privileged = "Node,RBAC", "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true"
		// The API server reaches the kubelets (logs, exec, port-forward)
		// with a client certificate from a CA only the kubelets trust.
		crt, key := k.kubeletClientPKI(t)
		kubeletClient = []string{"--kubelet-client-certificate=" + crt, "--kubelet-client-key=" + key,
			"--kubelet-preferred-address-types=InternalIP"}
	}
	args := append([]string{apiserverBin,
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=" + bind, "--advertise-address=" + advertise,
		"--secure-port=6443", "--cert-dir=" + filepath.Join(pki, "certs"),
		"--authorization-mode=" + authz, "--token-auth-file=" + filepath.Join(pki, "tokens.csv"),
		"--service-cluster-ip-range=10.96.0.0/16", "--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--enable-priority-and-fairness=false", admission, privileged}, kubeletClient...)
	k.apiserver = startInNode(t, n, dir, "kube-apiserver", k.env, args...)
	waitFor(t, 90*time.Second, "kube-apiserver", k.apiserver.running, func() error {
		out, err := k.kubectl("", "get", "--raw", "/readyz")
		if err == nil && strings.TrimSpace(out) != "ok" {
			err = fmt.Errorf("/readyz: %s", out)
		}
		return err
	})
	if out, err := k.kubectl("", "version"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl version:\n%s", strings.TrimSpace(out))
	}
	return k
}

// kubectl runs the built kubectl inside the node's namespace.
func (k *kube) kubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", k.n.vn.NetNS, k.kubectlBin, "--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Env = k.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func (k *kube) apply(t testing.TB, manifest string) {
	t.Helper()
	if _, err := k.kubectl(manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func (k *kube) retry(t testing.TB, within time.Duration, stdin string, args ...string) {
	t.Helper()
	waitFor(t, within, "kubectl "+strings.Join(args, " "), k.apiserver.running, func() error {
		_, err := k.kubectl(stdin, args...)
		return err
	})
}

// expectEndpointChains checks that Felix has per-endpoint chains (to and
// from the workload) in the node's filter table for exactly these pods.
func (k *kube) expectEndpointChains(t *testing.T, n *node, pods ...*pod) {
	t.Helper()
	var want []string
	for _, p := range pods {
		v := calicoVethName(p.namespace, p.name)
		want = append(want, "cali-fw-"+v, "cali-tw-"+v)
	}
	sort.Strings(want)
	re := regexp.MustCompile(`^-N (cali-[ft]w-\S+)$`)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := iptablesIn(n, "-t", "filter", "-S")
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, l := range strings.Split(out, "\n") {
			if m := re.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
				got = append(got, m[1])
			}
		}
		sort.Strings(got)
		if slices.Equal(got, want) {
			t.Logf("Felix's endpoint chains: %v", got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Felix's endpoint chains in node %s: got %v, want %v", n.name, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// endpointPolicies lists the policies (by the name in their chain's "Policy
// <name>" comment) an endpoint chain jumps to.
func endpointPolicies(t *testing.T, n *node, chain string) []string {
	t.Helper()
	out, err := iptablesIn(n, "-t", "filter", "-S")
	if err != nil {
		t.Fatal(err)
	}
	jump := regexp.MustCompile(`^-A ` + regexp.QuoteMeta(chain) + ` .*-j (cali-p[io]-\S+)`)
	named := regexp.MustCompile(`^-A (cali-p[io]-\S+) .*--comment "Policy ([^" ]+)`)
	targets, names := map[string]bool{}, map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if m := jump.FindStringSubmatch(l); m != nil {
			targets[m[1]] = true
		}
		if m := named.FindStringSubmatch(l); m != nil {
			names[m[1]] = m[2]
		}
	}
	var pol []string
	for c := range targets {
		if name, ok := names[c]; ok {
			pol = append(pol, name)
		} else {
			pol = append(pol, c)
		}
	}
	sort.Strings(pol)
	return pol
}

// startFelix runs calico-felix in the node's namespace (policy-only, KDD,
// iptables mode on the backend the node's iptables uses) and waits until it
// is ready.
func startFelix(t *testing.T, n *node, k *kube, felixBin, statusPrefix string) {
	t.Helper()
	startFelixFamilies(t, n, k, felixBin, statusPrefix, false)
}

// startFelixFamilies is startFelix with IPv6 support on or off
// (FELIX_IPV6SUPPORT).
func startFelixFamilies(t *testing.T, n *node, k *kube, felixBin, statusPrefix string, ipv6 bool) {
	t.Helper()
	ver, err := exec.Command("ip", "netns", "exec", n.vn.NetNS, "iptables", "-V").Output()
	if err != nil {
		t.Fatalf("iptables -V: %v", err)
	}
	backend := "legacy"
	if strings.Contains(string(ver), "nf_tables") {
		backend = "nft"
	}
	env := append(slices.Clone(k.env),
		"DATASTORE_TYPE=kubernetes",
		"FELIX_DATASTORETYPE=kubernetes",
		"KUBECONFIG="+k.kubeconfig,
		"FELIX_FELIXHOSTNAME="+n.name,
		"FELIX_INTERFACEPREFIX=eni",
		"FELIX_IPTABLESBACKEND="+backend,
		"FELIX_NFTABLESMODE=Disabled",
		"FELIX_BPFENABLED=false",
		"FELIX_XDPENABLED=false",
		fmt.Sprintf("FELIX_IPV6SUPPORT=%t", ipv6),
		"FELIX_IPTABLESMANGLEALLOWACTION=Return",
		"FELIX_ROUTETABLERANGES=65-99",
		"FELIX_MTUIFACEPATTERN=^eth[0-9]+$",
		"FELIX_LOGSEVERITYSCREEN=info",
		"FELIX_LOGFILEPATH=none",
		"FELIX_LOGSEVERITYSYS=none",
		"FELIX_HEALTHENABLED=true",
		"FELIX_HEALTHHOST=127.0.0.1",
		"FELIX_USAGEREPORTINGENABLED=false",
		"FELIX_ENDPOINTSTATUSPATHPREFIX="+statusPrefix,
		// Required by the CGO_ENABLED=0 build (else "panic: LIBBPF syscall stub").
		"FELIX_DebugSkipCTLBCleanup=true",
	)
	// Felix writes /var/lib/calico/mtu whatever its configuration says: it
	// runs with an overlay on /var/lib whose writes land in the temp dir (in
	// the private mount namespace `ip netns exec` gives it).
	upper, work := filepath.Join(k.dir, "var-lib"), filepath.Join(k.dir, "var-lib-work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	felix := startInNode(t, n, k.dir, "felix", env, "sh", "-c",
		`mount -t overlay overlay -o lowerdir=/var/lib,upperdir="$1",workdir="$2" /var/lib && exec "$3"`,
		"sh", upper, work, felixBin)
	start := time.Now()
	waitFor(t, 60*time.Second, "Felix readiness", felix.running, func() error {
		_, err := httpGetIn(n, "127.0.0.1:9099", "/readiness")
		return err
	})
	t.Logf("Felix (iptables backend %s) ready after %v", backend, time.Since(start).Round(time.Millisecond))
}

// waitFor polls ok until it succeeds, failing early when alive reports the
// process died.
func waitFor(t testing.TB, within time.Duration, what string, alive, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if err := alive(); err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		err := ok()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpGetIn does a plain HTTP/1.0 GET from inside the node's namespace (the
// dial happens on the namespace's thread, unlike net/http's transport) and
// fails unless the status is 200.
func httpGetIn(n *node, hostport, path string) (string, error) {
	var body string
	err := n.do(func() error {
		c, err := net.DialTimeout("tcp4", hostport, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, hostport)
		r := bufio.NewReader(c)
		status, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(r)
		body = string(b)
		if f := strings.Fields(status); len(f) < 2 || f[1] != "200" {
			return fmt.Errorf("GET %s: %s", path, strings.TrimSpace(status))
		}
		return nil
	})
	return body, err
}

func iptablesIn(n *node, args ...string) (string, error) { return xtablesIn(n, "iptables", args...) }

func ip6tablesIn(n *node, args ...string) (string, error) { return xtablesIn(n, "ip6tables", args...) }

func xtablesIn(n *node, tool string, args ...string) (string, error) {
	// stdout only: iptables-nft warns about legacy tables on stderr.
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.vn.NetNS, tool}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// dialOnce is one connection attempt with a short timeout.
func dialOnce(doIn func(func() error) error, dst netip.AddrPort, timeout time.Duration) (string, error) {
	var said string
	err := doIn(func() error {
		c, err := net.DialTimeout("tcp", dst.String(), timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		b, err := io.ReadAll(c)
		said = strings.TrimSpace(string(b))
		return err
	})
	return said, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitDial polls dst until a connection succeeds (flow) or is dropped (times
// out), bounded by within.
func waitDial(doIn func(func() error) error, dst netip.AddrPort, flow bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		_, err := dialOnce(doIn, dst, time.Second)
		if flow && err == nil {
			return nil
		}
		if !flow && err != nil {
			if !isTimeout(err) {
				return fmt.Errorf("connection failed but was not dropped: %w", err)
			}
			return nil
		}
		if time.Now().After(deadline) {
			if flow {
				return fmt.Errorf("no connection within %v: %w", within, err)
			}
			return fmt.Errorf("connections still succeed after %v", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkStatusFile checks Felix's endpoint-status file names the pod's host
// interface and address (Felix writes it non-atomically: retry briefly).
func checkStatusFile(t *testing.T, path, iface string, ip netip.Addr) {
	t.Helper()
	var st struct {
		IfaceName string   `json:"ifaceName"`
		IPv4Nets  []string `json:"ipv4Nets"`
		IPv6Nets  []string `json:"ipv6Nets"`
	}
	var b []byte
	var err error
	for i := 0; i < 20; i++ {
		if b, err = os.ReadFile(path); err == nil {
			if err = json.Unmarshal(b, &st); err == nil {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("endpoint-status file %s: %v (%q)", path, err, b)
	}
	nets, key := st.IPv4Nets, "ipv4Nets"
	if ip.Is6() {
		nets, key = st.IPv6Nets, "ipv6Nets"
	}
	if want := netip.PrefixFrom(ip, ip.BitLen()).String(); st.IfaceName != iface || !slices.Contains(nets, want) {
		t.Fatalf("endpoint-status file %s = %s, want ifaceName %s and %s [%s]", path, b, iface, key, want)
	}
}

// signedPair makes a CA named caCN and a certificate from the template leaf
// signed by it (ECDSA P-256, valid from an hour ago for valid); it returns
// the CA's and the certificate's DER and the certificate's key (SEC 1 DER).
func signedPair(t testing.TB, caCN string, leaf *x509.Certificate, valid time.Duration) (caDER, der, keyDER []byte) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: caCN},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(valid), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	if caDER, err = x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey); err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf.SerialNumber, leaf.NotBefore, leaf.NotAfter = big.NewInt(2), now.Add(-time.Hour), now.Add(valid)
	if der, err = x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey); err != nil {
		t.Fatal(err)
	}
	if keyDER, err = x509.MarshalECPrivateKey(key); err != nil {
		t.Fatal(err)
	}
	return caDER, der, keyDER
}

// kubeletClientPKI makes a CA (k.kubeletCA) and the API server's kubelet
// client certificate signed by it; it returns the certificate and key files.
func (k *kube) kubeletClientPKI(t testing.TB) (string, string) {
	t.Helper()
	caDER, der, keyDER := signedPair(t, "kubelet-client-ca", &x509.Certificate{
		Subject:  pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, 7*24*time.Hour)
	k.kubeletCA = filepath.Join(k.pki, "kubelet-client-ca.crt")
	crt, keyFile := filepath.Join(k.pki, "apiserver-kubelet-client.crt"), filepath.Join(k.pki, "apiserver-kubelet-client.key")
	for f, b := range map[string][]byte{
		k.kubeletCA: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		crt:         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile:     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return crt, keyFile
}
