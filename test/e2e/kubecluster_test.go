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
