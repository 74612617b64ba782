//go:build kubelet

// The cluster tier's harness: a whole Kubernetes cluster on simulated EC2
// nodes (etcd, kube-apiserver with RBAC and the Node authorizer,
// kube-controller-manager and kube-scheduler on the first node; containerd,
// a kubelet and kube-proxy in iptables mode on every node), with no network
// plugin installed: the test installs ours the way users do.

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clusterNodeSpec is one node: its name and whether it runs containerd 2.x
// (else Debian's).
type clusterNodeSpec struct {
	name  string
	ctrd2 bool
}

type k8sCluster struct {
	t     *testing.T
	c     *cluster
	k     *kube
	nodes []*kubeNode
	proxy map[string]*bgProc
}

// clusterBins are the binaries of the tier beyond the real-node tests'.
type clusterBins struct {
	kubeletBins
	controllerManager, scheduler, proxy, ctrd2 string
}

func findClusterBins(t *testing.T, bin string) clusterBins {
	t.Helper()
	tools := filepath.Join(bin, "tools")
	cb := clusterBins{kubeletBins: findKubeletBins(t, bin), controllerManager: filepath.Join(tools, "kube-controller-manager"),
		scheduler: filepath.Join(tools, "kube-scheduler"), proxy: filepath.Join(tools, "kube-proxy"),
		ctrd2: filepath.Join(tools, "containerd2")}
	for _, b := range []string{cb.controllerManager, cb.scheduler, cb.proxy, filepath.Join(cb.ctrd2, "containerd")} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make cluster-tools`: %v", b, err)
		}
	}
	return cb
}

// clusterPrereqs is what every cluster test needs: root, the built
// binaries' directory, the tier's binaries and the image `make image` built.
func clusterPrereqs(t *testing.T) (bin string, cb clusterBins, archive string) {
	t.Helper()
	requireRoot(t)
	bin = binDir(t)
	cb = findClusterBins(t, bin)
	archive = filepath.Join(bin, "image", "vpcchain.oci.tar")
	if _, err := os.Stat(archive); err != nil {
		t.Fatalf("%s missing: run `make image`: %v", archive, err)
	}
	return bin, cb, archive
}

// startK8sCluster brings the cluster up with the archives' images in every
// node's containerd, and waits until every node has registered (NotReady:
// no network plugin yet).
func startK8sCluster(t *testing.T, cb clusterBins, specs []clusterNodeSpec, archives ...string) *k8sCluster {
	t.Helper()
	var names []string
	for _, s := range specs {
		names = append(names, s.name)
	}
	c := newBareCluster(t, "m5.large", names)
	first := c.nodes[specs[0].name]
	users := map[string]string{"system:kube-proxy": "system:node-proxier",
		"system:kube-controller-manager": "", "system:kube-scheduler": ""}
	for _, n := range names {
		users["system:node:"+n] = "system:nodes"
	}
	k := startControlPlaneWith(t, first, cb.etcd, cb.apiserver, cb.kubectl,
		controlPlaneOpts{rbac: true, advertise: primaryIP(t, c, first), users: users})
	kc := &k8sCluster{t: t, c: c, k: k, proxy: map[string]*bgProc{}}

	pki := k.pki
	startInNode(t, first, k.dir, "kube-controller-manager", k.env, cb.controllerManager,
		"--kubeconfig="+k.kubeconfigFor("system:kube-controller-manager", k.server),
		"--service-account-private-key-file="+filepath.Join(pki, "sa.key"),
		"--root-ca-file="+filepath.Join(pki, "certs", "apiserver.crt"),
		"--use-service-account-credentials=true", "--leader-elect=false", "--bind-address=127.0.0.1",
		"--allocate-node-cidrs=false", "--controllers=*", "--node-monitor-grace-period=40s")
	startInNode(t, first, k.dir, "kube-scheduler", k.env, cb.scheduler,
		"--kubeconfig="+k.kubeconfigFor("system:kube-scheduler", k.server), "--leader-elect=false",
		"--bind-address=127.0.0.1")
	k.retry(t, 60*time.Second, "", "-n", "default", "get", "serviceaccount", "default")

	for _, s := range specs {
		n := c.nodes[s.name]
		ctrd2 := ""
		if s.ctrd2 {
			ctrd2 = cb.ctrd2
		}
		kn := newClusterKubeNode(t, n, cb.kubeletBins, ctrd2, archives...)
		kn.kubeletKubeconfig = k.kubeconfigFor("system:node:"+s.name, k.remoteServer)
		kn.startContainerd()
		kn.startKubelet(k)
		kc.nodes = append(kc.nodes, kn)
		// kube-proxy in iptables mode; conntrack limits are left alone
		// (they are the machine's, not the node namespace's).
		kc.proxy[s.name] = startInNode(t, n, kn.dir, "kube-proxy", k.env, cb.proxy,
			"--kubeconfig="+k.kubeconfigFor("system:kube-proxy", k.remoteServer), "--hostname-override="+s.name,
			"--proxy-mode=iptables", "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
			"--conntrack-tcp-timeout-close-wait=0", "--metrics-bind-address=127.0.0.1:10249",
			"--healthz-bind-address=127.0.0.1:10256")
	}
	// Pods first, then the kubelets and runtimes on the way out.
	t.Cleanup(func() { deleteAllPods(k, kc.nodes...) })
	for _, kn := range kc.nodes {
		waitFor(t, 90*time.Second, "node "+kn.n.name+" registered", kn.alive, func() error {
			s, _, err := nodeReady(k, kn.n.name)
			if err == nil && s == "" {
				err = fmt.Errorf("no Ready condition yet")
			}
			return err
		})
	}
	return kc
}

// ready waits until every node is Ready.
func (kc *k8sCluster) ready(within time.Duration) {
	kc.t.Helper()
	for _, kn := range kc.nodes {
		waitFor(kc.t, within, "node "+kn.n.name+" Ready", kn.alive, func() error {
			s, m, err := nodeReady(kc.k, kn.n.name)
			if err == nil && s != "True" {
				err = fmt.Errorf("Ready=%s: %s", s, m)
			}
			return err
		})
	}
}

// alive fails fast when a node's processes died.
func (kc *k8sCluster) alive() error {
	for _, kn := range kc.nodes {
		if err := kn.alive(); err != nil {
			return err
		}
	}
	for name, p := range kc.proxy {
		if err := p.running(); err != nil {
			return fmt.Errorf("kube-proxy of %s: %w", name, err)
		}
	}
	return nil
}

// kubectlOK runs kubectl and fails the test on error.
func (kc *k8sCluster) kubectlOK(stdin string, args ...string) string {
	kc.t.Helper()
	out, err := kc.k.kubectl(stdin, args...)
	if err != nil {
		kc.t.Fatalf("%v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// clusterDNSIP is the kube-dns Service's address, the kubelets' clusterDNS.
const clusterDNSIP = "10.96.0.10"

// corednsImage is CoreDNS v1.12.1 (`make conformance-tools`), built here
// as a one-binary image.
const corednsImage = "vpcchain.e2e/coredns:v1.12.1"

func buildCoreDNSImage(t *testing.T, bin, dir string) string {
	t.Helper()
	coredns := filepath.Join(bin, "tools", "coredns")
	if _, err := os.Stat(coredns); err != nil {
		t.Fatalf("%s missing: run `make conformance-tools`: %v", coredns, err)
	}
	return writeOCIImage(t, filepath.Join(dir, "coredns.oci.tar"), corednsImage, []string{"/coredns"}, map[string]string{"/coredns": coredns})
}

// deployDNS runs CoreDNS as kubeadm sets it up (kube-dns Service at
// clusterDNSIP, the kubernetes plugin for cluster.local, least-privilege
// RBAC); there is no upstream resolver on the simulator, so other names
// fail. Pods reach it through our chain like any Service.
func (kc *k8sCluster) deployDNS(t *testing.T) {
	t.Helper()
	kc.kubectlOK(fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      tolerations: [{operator: Exists}]
      containers:
      - name: coredns
        image: %s
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 30}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: %s
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, corednsImage, clusterDNSIP), "apply", "-f", "-")
	if out, err := kc.k.kubectl("", "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s"); err != nil {
		pods, _ := kc.k.kubectl("", "-n", "kube-system", "get", "pods", "-o", "wide")
		t.Fatalf("CoreDNS: %v\n%s\n%s", err, out, pods)
	}
}
