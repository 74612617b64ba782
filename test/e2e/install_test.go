//go:build kubelet

package e2e

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterOverlay is what the cluster tier changes in our manifest, as a
// kustomize overlay over the file itself (copied unchanged): only the EC2
// endpoint, because the simulator's EC2 is not at the regional DNS name the
// SDK defaults to. Credentials come from the nodes' instance profile and
// the image is the one `make image` builds under the manifest's own name.
const clusterOverlay = `resources: [vpcchain.yaml]
patches:
- target: {kind: ConfigMap, name: vpcchain-config}
  patch: |-
    - op: add
      path: /data/AWS_ENDPOINT_URL_EC2
      value: http://169.254.169.10
`

// TestClusterInstall installs the product as users do, on a real cluster on
// the simulator: three nodes (Debian's containerd on two, containerd 2.2
// on the third) join NotReady; `kubectl apply -k` of our manifest (the file
// unchanged, in an overlay that only points the daemon at the simulator's
// EC2) starts the DaemonSet from the image `make image` built, each node's
// runtime taking its own platform's manifest; every node turns Ready; a Deployment's pods spread over the nodes with addresses
// EC2 has on their node's ENIs; Services and a hostPort work through
// kube-proxy and portmap (checkServices).
func TestClusterInstall(t *testing.T) {
	_, cb, archive := clusterPrereqs(t)
	specs := []clusterNodeSpec{{"k1", false}, {"k2", false}, {"k3", true}}
	kc := startK8sCluster(t, cb, specs, archive)
	k := kc.k
	for _, kn := range kc.nodes {
		if s, m, err := nodeReady(k, kn.n.name); err != nil || s != "False" || !strings.Contains(m, "network") {
			t.Fatalf("node %s before our install: Ready=%s %q %v; want False, network not ready", kn.n.name, s, m, err)
		}
	}

	// A node migrating from the AWS VPC CNI still has its configuration,
	// which sorts before ours.
	awsConf := `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"name":"aws-cni","type":"aws-cni"}]}`
	k2 := kc.nodes[1]
	if err := os.WriteFile(filepath.Join(k2.cniConf, "10-aws.conflist"), []byte(awsConf), 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	overlay := kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", clusterOverlay, "vpcchain")
	kc.ready(120 * time.Second)
	if got := listDir(t, k2.cniConf); !slices.Equal(got, []string{"10-aws.conflist.vpcchain-disabled", "10-vpcchain.conflist"}) {
		t.Errorf("node k2's CNI conf dir after the install: %v, want the AWS VPC CNI's set aside and ours", got)
	}
	t.Logf("DaemonSet rolled out and all %d nodes Ready %v after kubectl apply", len(kc.nodes), time.Since(start).Round(time.Second))
	for _, kn := range kc.nodes {
		checkDaemonArch(t, kn)
	}

	const replicas = 30
	kc.kubectlOK(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: %d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: %s
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "busybox mkdir -p /www && echo $POD_NAME > /www/name && exec busybox httpd -f -p 8080 -h /www"]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
`, replicas, busyboxImage), "apply", "-f", "-")
	if out, err := k.kubectl("", "rollout", "status", "deployment/web", "--timeout=300s"); err != nil {
		pods, _ := k.kubectl("", "get", "pods", "-o", "wide")
		ev, _ := k.kubectl("", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s\n%s", err, out, pods, tail(ev, 40))
	}
	out := kc.kubectlOK("", "get", "pods", "-l", "app=web", "-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	perNode := map[string]int{}
	seen := map[netip.Addr]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			t.Fatalf("pod line %q", l)
		}
		ip := netip.MustParseAddr(f[2])
		n := kc.c.nodes[f[1]]
		if _, ok := eniOfAddr(t, kc.c.sim, n.vn.InstanceID)(ip); !ok {
			t.Errorf("pod %s on %s: %s is on none of the node's ENIs in EC2", f[0], f[1], ip)
		}
		if o, dup := seen[ip]; dup {
			t.Errorf("pods %s and %s share %s", f[0], o, ip)
		}
		seen[ip] = f[0]
		perNode[f[1]]++
	}
	if len(seen) != replicas || len(perNode) != len(specs) {
		t.Errorf("%d pods with addresses over %d nodes (%v), want %d over %d", len(seen), len(perNode), perNode, replicas, len(specs))
	}
	t.Logf("%d pods Running with VPC addresses EC2 agrees with, per node %v", len(seen), perNode)

	kc.checkServices(t)
	kc.checkRollingUpdate(t)

	// The workload, then our install, deleted with kubectl: every pod goes,
	// our conflist with them (the nodes' network is not ready any more);
	// k2 gets back the AWS VPC CNI's configuration the install set aside;
	// the binaries and whatever else is in the CNI directories stay.
	kc.kubectlOK("", "delete", "deployment/web", "pod/web-hostport", "service/web", "service/web-np", "--wait=true", "--timeout=120s")
	binsBefore := map[string][]string{}
	for _, kn := range kc.nodes {
		if err := os.WriteFile(filepath.Join(kn.cniConf, "README"), []byte("not ours\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		binsBefore[kn.n.name] = listDir(t, kn.cniBin)
	}
	kc.kubectlOK("", "delete", "-k", overlay, "--wait=true", "--timeout=120s")
	for _, kn := range kc.nodes {
		want := []string{"README"}
		if kn == k2 {
			// The network it had before (the kubelet may call it ready
			// again: containerd 1.6 checks only that a configuration loads).
			want = []string{"10-aws.conflist", "README"}
			waitFor(t, 60*time.Second, "node "+kn.n.name+"'s configuration restored after the uninstall", kc.alive, func() error {
				if got := listDir(t, kn.cniConf); !slices.Equal(got, want) {
					return fmt.Errorf("conf dir %v, want %v", got, want)
				}
				return nil
			})
		} else {
			waitFor(t, 60*time.Second, "node "+kn.n.name+" NotReady after the uninstall", kc.alive, func() error {
				s, m, err := nodeReady(k, kn.n.name)
				if err == nil && (s != "False" || !strings.Contains(m, "network")) {
					ev, _ := k.kubectl("", "get", "events", "-A", "--field-selector", "reason!=Scheduled", "-o",
						`jsonpath={range .items[*]}{.involvedObject.name} {.reason}: {.message}{"\n"}{end}`)
					kl, _ := os.ReadFile(filepath.Join(kn.dir, "kubelet.log"))
					_, hooks, _ := strings.Cut(string(kl), "Exec lifecycle hook")
					err = fmt.Errorf("Ready=%s %q; conf dir %v; events:\n%s\nkubelet on hooks:\n%s", s, m, listDir(t, kn.cniConf), tail(ev, 15), hooks[:min(len(hooks), 1500)])
				}
				return err
			})
		}
		if got := listDir(t, kn.cniConf); !slices.Equal(got, want) {
			t.Errorf("node %s's CNI conf dir after the uninstall: %v, want %v", kn.n.name, got, want)
		}
		if got := listDir(t, kn.cniBin); !slices.Equal(got, binsBefore[kn.n.name]) {
			t.Errorf("node %s's CNI bin dir after the uninstall: %v, was %v", kn.n.name, got, binsBefore[kn.n.name])
		}
	}
	t.Logf("kubectl delete -k removed our conflist on all %d nodes (NotReady again, k2 back on the AWS VPC CNI's configuration) and nothing else", len(kc.nodes))
	for _, kn := range kc.nodes {
		waitFor(t, 90*time.Second, "node "+kn.n.name+"'s containers gone", kc.alive, func() error {
			if out, err := kn.ctr("task", "ls", "-q"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("containerd tasks: %q %v", out, err)
			}
			return nil
		})
	}
}

// applyOverlay applies a manifest of ours with kubectl -k, through a
// kustomization over the file copied unchanged (checked after the apply),
// and waits for the DaemonSet ds in kube-system to roll out. It returns the
// overlay's directory (kubectl delete -k of it uninstalls).
func (kc *k8sCluster) applyOverlay(t *testing.T, manifest, kustomization, ds string) string {
	t.Helper()
	overlay := t.TempDir()
	orig, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(manifest)
	if err := os.WriteFile(filepath.Join(overlay, name), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	kc.kubectlOK("", "apply", "-k", overlay)
	if got, _ := os.ReadFile(filepath.Join(overlay, name)); !bytes.Equal(got, orig) {
		t.Fatalf("the manifest in the overlay differs from %s", manifest)
	}
	if out, err := kc.k.kubectl("", "-n", "kube-system", "rollout", "status", "daemonset/"+ds, "--timeout=300s"); err != nil {
		pods, _ := kc.k.kubectl("", "-n", "kube-system", "get", "pods", "-o", "wide")
		ev, _ := kc.k.kubectl("", "-n", "kube-system", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s\n%s", err, out, pods, tail(ev, 40))
	}
	return overlay
}

// checkServices: a ClusterIP and a NodePort Service in front of the web
// pods answer through kube-proxy from pods whose address is on the primary
// ENI and from pods on a secondary ENI (whose replies take the from-pod
// rule and, for the NodePort, the connmark path), and the NodePort from the
// simulator's internet; a hostPort pod answers through the chained portmap.
func (kc *k8sCluster) checkServices(t *testing.T) {
	t.Helper()
	const nodePort, hostPort = 30080, 18080
	kc.c.allowFromInternet(nodePort) // the nodes' group admits only its members
	kc.kubectlOK(fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, nodePort: %d}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-hostport, namespace: default, labels: {app: hostport}}
spec:
  nodeName: k1
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "busybox mkdir -p /www && echo web-hostport > /www/name && exec busybox httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080, hostPort: %d, protocol: TCP}]
`, nodePort, busyboxImage, hostPort), "apply", "-f", "-")
	clusterIP := netip.MustParseAddr(kc.kubectlOK("", "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
	kc.kubectlOK("", "wait", "--for=condition=Ready", "--timeout=120s", "pod/web-hostport")

	pods := podInfo(t, kc.k, nil)
	byNode := map[string]*kubeNode{}
	for _, kn := range kc.nodes {
		byNode[kn.n.name] = kn
	}
	// One client pod on a primary-ENI address and one on a secondary ENI.
	clients := map[string]string{} // "primary"/"secondary" -> pod
	for name, p := range pods {
		dev, _ := eniOfAddr(t, kc.c.sim, kc.c.nodes[p.node].vn.InstanceID)(p.ip)
		kind := "primary"
		if dev > 0 {
			kind = "secondary"
		}
		if clients[kind] == "" || name < clients[kind] {
			clients[kind] = name
		}
	}
	if len(clients) != 2 {
		t.Fatalf("no pod on both a primary and a secondary ENI: %v", clients)
	}
	// An answer is the name of one of the web pods.
	isWeb := func(body string) bool { _, ok := pods[body]; return ok }
	get := func(what string, do func() (string, error), want func(string) bool) {
		t.Helper()
		var body string
		var err error
		deadline := time.Now().Add(30 * time.Second)
		for {
			body, err = do()
			if err == nil && want(body) || time.Now().After(deadline) {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
		if err != nil || !want(body) {
			t.Errorf("%s: %q, %v", what, body, err)
			return
		}
		t.Logf("%s: answered by %s", what, body)
	}
	nodeIP := primaryIP(t, kc.c, kc.c.nodes["k2"])
	k1IP := primaryIP(t, kc.c, kc.c.nodes["k1"])
	for _, kind := range []string{"primary", "secondary"} {
		name := clients[kind]
		p := pods[name]
		netns, err := byNode[p.node].netnsOf(p.container)
		if err != nil {
			t.Fatal(err)
		}
		defer netns.Close()
		get(fmt.Sprintf("pod %s (%s ENI, %s) -> ClusterIP %s:80", name, kind, p.ip, clusterIP),
			func() (string, error) { return httpFrom(netns, netip.AddrPortFrom(clusterIP, 80)) }, isWeb)
		get(fmt.Sprintf("pod %s (%s ENI) -> NodePort %s:%d", name, kind, nodeIP, nodePort),
			func() (string, error) { return httpFrom(netns, netip.AddrPortFrom(nodeIP, nodePort)) }, isWeb)
		get(fmt.Sprintf("pod %s (%s ENI) -> hostPort %s:%d", name, kind, k1IP, hostPort),
			func() (string, error) { return httpFrom(netns, netip.AddrPortFrom(k1IP, hostPort)) },
			func(b string) bool { return b == "web-hostport" })
	}
	for _, n := range []string{"k1", "k3"} {
		ip := primaryIP(t, kc.c, kc.c.nodes[n])
		get(fmt.Sprintf("the internet -> NodePort %s:%d (node %s)", ip, nodePort, n), func() (string, error) {
			var body string
			err := kc.c.sim.Fabric.DoInOutside(func() error {
				var err error
				body, err = httpGet(netip.AddrPortFrom(ip, nodePort))
				return err
			})
			return body, err
		}, isWeb)
	}
}

// httpGet fetches /name from dst in the calling thread's namespace.
func httpGet(dst netip.AddrPort) (string, error) {
	c, err := net.DialTimeout("tcp4", dst.String(), 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET /name HTTP/1.0\r\nHost: %s\r\n\r\n", dst.Addr())
	b, err := io.ReadAll(c)
	if _, after, ok := strings.Cut(string(b), "\r\n\r\n"); ok {
		return strings.TrimSpace(after), err
	}
	return string(b), err
}

// checkRollingUpdate updates our DaemonSet to another image tag, as users
// roll out a new release, while probers send requests between pods on all
// nodes: every pod keeps its sandbox and address, and the probes that fail
// are counted (the data path does not go through the daemon: none may).
func (kc *k8sCluster) checkRollingUpdate(t *testing.T) {
	t.Helper()
	before := podInfo(t, kc.k, nil)
	byNode := map[string][]string{}
	for name, p := range before {
		byNode[p.node] = append(byNode[p.node], name)
	}
	kns := map[string]*kubeNode{}
	for _, kn := range kc.nodes {
		kns[kn.n.name] = kn
		slices.Sort(byNode[kn.n.name])
	}
	// Each node's first pods probe the next node's (over the VPC router)
	// and a pod on their own node.
	type pair struct{ from, to string }
	var pairs []pair
	for i, kn := range kc.nodes {
		next := kc.nodes[(i+1)%len(kc.nodes)].n.name
		here := byNode[kn.n.name]
		pairs = append(pairs, pair{here[0], byNode[next][0]}, pair{here[1], here[2]})
	}
	var mu sync.Mutex
	sent, lost := 0, map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, pr := range pairs {
		from, to := before[pr.from], before[pr.to]
		netns, err := kns[from.node].netnsOf(from.container)
		if err != nil {
			t.Fatal(err)
		}
		defer netns.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				body, err := httpFrom(netns, netip.AddrPortFrom(to.ip, 8080))
				mu.Lock()
				sent++
				if err != nil || body != pr.to {
					lost[pr.from+" -> "+pr.to]++
				}
				mu.Unlock()
			}
		}()
	}
	for _, kn := range kc.nodes {
		if out, err := kn.ctr("images", "tag", "--force", "docker.io/vpcchain/vpcchain:dev", "docker.io/vpcchain/vpcchain:rolled"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	start := time.Now()
	kc.kubectlOK("", "-n", "kube-system", "set", "image", "daemonset/vpcchain", "*=vpcchain/vpcchain:rolled")
	if out, err := kc.k.kubectl("", "-n", "kube-system", "rollout", "status", "daemonset/vpcchain", "--timeout=300s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	took := time.Since(start)
	for _, kn := range kc.nodes {
		if _, err := os.Stat(kn.conflist()); err != nil {
			t.Errorf("node %s lost our conflist in the rolling update: %v", kn.n.name, err)
		}
	}
	time.Sleep(2 * time.Second) // probes after the last new pod is up
	close(stop)
	wg.Wait()
	images := kc.kubectlOK("", "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=vpcchain", "-o",
		`jsonpath={range .items[*]}{.spec.containers[0].image}{"\n"}{end}`)
	if n := strings.Count(images, "vpcchain/vpcchain:rolled"); n != len(kc.nodes) {
		t.Errorf("after the rollout the DaemonSet's pods run %q, want %d on the new tag", images, len(kc.nodes))
	}
	after := podInfo(t, kc.k, nil)
	for name, p := range before {
		if after[name] != p {
			t.Errorf("pod %s changed in the rolling update: %+v, was %+v", name, after[name], p)
		}
	}
	total := 0
	for _, n := range lost {
		total += n
	}
	if total > 0 {
		t.Errorf("%d of %d probes failed during the rolling update: %v", total, sent, lost)
	}
	t.Logf("rolling update to a new tag on %d nodes in %v: %d pods kept sandbox and address; %d probes between pods across and within nodes, %d failed",
		len(kc.nodes), took.Round(time.Second), len(before), sent, total)
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// checkDaemonArch checks that the node's runtime took the image's manifest
// for the node's own platform from the multi-platform image: the daemon's
// container runs /app/vpcchaind built for this machine, read through the
// task's root (not its /proc exe, which under a binfmt emulator would be
// the emulator).
func checkDaemonArch(t *testing.T, kn *kubeNode) {
	t.Helper()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[runtime.GOARCH]
	out, err := kn.ctr("task", "ls")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "RUNNING" {
			continue
		}
		e, err := elf.Open(filepath.Join("/proc", f[1], "root", "app", "vpcchaind"))
		if err != nil {
			continue // another container: no daemon in its image
		}
		found = true
		if e.Machine != want {
			t.Errorf("node %s runs vpcchaind built for %s, not this %s node", kn.n.name, e.Machine, runtime.GOARCH)
		}
		e.Close()
	}
	if found {
		t.Logf("node %s (%s) runs the image's %s vpcchaind", kn.n.name, runtime.GOARCH, want)
	} else {
		t.Errorf("node %s: no running container with /app/vpcchaind among its tasks:\n%s", kn.n.name, out)
	}
}
