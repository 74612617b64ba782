//go:build kubelet

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// awsCNIOverlay is what the cluster tier changes in the AWS VPC CNI's
// manifest (config/master/aws-k8s-cni.yaml of v1.23.2, copied unchanged):
//
//   - the two images, to the ones buildAWSCNIImages builds offline from
//     the same source (kustomize images:, the tags kept);
//   - AWS_EC2_ENDPOINT (ipamd's own EC2 endpoint variable) on aws-node: the
//     simulator's EC2 is not at the regional DNS name; IMDS is where EC2
//     has it (169.254.169.254), credentials come from the instance profile;
//   - no network policy agent: its aws-eks-nodeagent container loads eBPF
//     programs that its image ships precompiled (clang-built objects of
//     the separate aws-network-policy-agent project), which this offline
//     build cannot make. The patch renders what the AWS VPC CNI's own chart
//     renders with nodeAgent.enabled=false, as EKS users without network
//     policy run it: the container and its bpf-pin-path volume removed and
//     NETWORK_POLICY_ENFORCING_MODE left out of aws-node's environment (set,
//     the plugin asks the agent for every pod and fails without it).
const awsCNIOverlay = `resources: [aws-k8s-cni.yaml]
images:
- {name: 602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni, newName: vpcchain.e2e/amazon-k8s-cni}
- {name: 602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni-init, newName: vpcchain.e2e/amazon-k8s-cni-init}
patches:
- patch: |-
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: aws-node, namespace: kube-system}
    spec:
      template:
        spec:
          containers:
          - name: aws-eks-nodeagent
            $patch: delete
          - name: aws-node
            env:
            - name: NETWORK_POLICY_ENFORCING_MODE
              $patch: delete
            - name: AWS_EC2_ENDPOINT
              value: http://169.254.169.10
          volumes:
          - name: bpf-pin-path
            $patch: delete
`

// migrationLabel is the node label that says which CNI runs on a node
// during a migration (README "Migrating from the AWS VPC CNI").
const migrationLabel = "vpcchain.io/cni"

// migrationAffinity is the kustomize patch (appended to an overlay's
// patches) that keeps DaemonSet ds on nodes labelled vpcchain.io/cni=vpcchain
// (operator In) or off them (NotIn).
func migrationAffinity(ds, operator string) string {
	return fmt.Sprintf(`- target: {kind: DaemonSet, name: %s}
  patch: |-
    - op: add
      path: /spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/-
      value: {key: %s, operator: %s, values: [vpcchain]}
`, ds, migrationLabel, operator)
}

// affinityPatch is the same change as a JSON patch for kubectl patch, for
// a DaemonSet already installed (the README's commands).
func affinityPatch(operator string) string {
	return fmt.Sprintf(`[{"op":"add","path":"/spec/template/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchExpressions/-","value":{"key":%q,"operator":%q,"values":["vpcchain"]}}]`,
		migrationLabel, operator)
}

// TestClusterMigrateFromAWSVPCCNI replaces the AWS VPC CNI on a running
// cluster the way the README says, and rolls back, while a prober sends a
// request every 100 ms to a Service from a node's host network:
//
//  1. three nodes run the unmodified AWS VPC CNI v1.23.2 (its images built
//     offline, its manifest applied with kubectl through awsCNIOverlay);
//     a Deployment of 6 web pods behind a Service;
//  2. aws-node is kept off nodes labelled vpcchain.io/cni=vpcchain, ours is
//     applied only for them; node by node: cordon, drain, label, our pod
//     Ready, uncordon;
//  3. aws-node is deleted, ours applied without the label condition;
//     every ENI in EC2 is managed by our daemon (the AWS VPC CNI's
//     adopted), every address EC2 has is a pod's or in the daemon's warm
//     pool, and vpcctl status explains each ENI;
//  4. the same back to the AWS VPC CNI.
//
// No request to the Service may fail, and no running pod may lose its
// network before its drain (each pod is probed by its own address).
func TestClusterMigrateFromAWSVPCCNI(t *testing.T) {
	bin, cb, archive := clusterPrereqs(t)
	awsNode, awsInit := buildAWSCNIImages(t, bin, t.TempDir())
	specs := []clusterNodeSpec{{"k1", false}, {"k2", false}, {"k3", true}}
	kc := startK8sCluster(t, cb, specs, archive, awsNode, awsInit)
	mod, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	awsManifest := filepath.Join(mod, "config/master/aws-k8s-cni.yaml")

	// EKS's control plane has the CNINode CRD (the VPC resource
	// controller's), which ipamd reads; the manifest does not carry it.
	rc, err := awscnipeer.ModuleDir("github.com/aws/amazon-vpc-resource-controller-k8s")
	if err != nil {
		t.Fatal(err)
	}
	kc.kubectlOK("", "apply", "--server-side", "-f", filepath.Join(rc, "config/crd/bases/vpcresources.k8s.aws_cninodes.yaml"))

	start := time.Now()
	kc.applyOverlay(t, awsManifest, awsCNIOverlay, "aws-node")
	kc.ready(180 * time.Second)
	t.Logf("the AWS VPC CNI rolled out, all %d nodes Ready %v after kubectl apply", len(kc.nodes), time.Since(start).Round(time.Second))

	ns := "migrate-" + vpcsim.RandomRunID()
	kc.kubectlOK("", "create", "namespace", ns)
	t.Cleanup(func() {
		_, _ = kc.k.kubectl("", "delete", "namespace", ns, "--wait=true", "--timeout=120s")
	})
	svc := kc.deployMigrationWeb(t, ns, 6)
	awsENIs := map[string][]string{}
	for _, kn := range kc.nodes {
		awsENIs[kn.n.name] = kc.logEC2(t, kn, "on the AWS VPC CNI")
	}

	// The prober starts once kube-proxy on its node has the Service.
	from := kc.c.nodes["k1"]
	waitFor(t, 60*time.Second, "the Service programmed on k1", kc.alive, func() error {
		return from.do(func() error { _, err := httpGet(svc); return err })
	})
	prober := startMigrationProber(t, kc, from, ns, svc, "on the AWS VPC CNI")
	time.Sleep(3 * time.Second) // a baseline

	// Step 1: aws-node off nodes labelled for us, ours only on them.
	prober.phase("aws-node kept off migrated nodes")
	kc.kubectlOK("", "-n", "kube-system", "patch", "daemonset", "aws-node", "--type=json", "-p", affinityPatch("NotIn"))
	kc.rollout(t, "aws-node")
	prober.phase("ours applied (on no node yet)")
	ours := clusterOverlay + migrationAffinity("vpcchain", "In")
	kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", ours, "vpcchain")

	// Step 2: node by node.
	for _, kn := range kc.nodes {
		prober.phase("migrating " + kn.n.name)
		kc.switchNode(t, kn, true)
		if got := listDir(t, kn.cniConf); !slices.Equal(got, []string{"10-aws.conflist.vpcchain-disabled", "10-vpcchain.conflist"}) {
			t.Errorf("node %s's CNI conf dir after the switch: %v, want the AWS VPC CNI's set aside and ours", kn.n.name, got)
		}
	}

	// Step 3: the AWS VPC CNI goes, ours stays everywhere.
	prober.phase("aws-node deleted, ours everywhere")
	kc.deleteAWSNode(t)
	kc.applyOverlay(t, "../../conflist/manifests/vpcchain.yaml", clusterOverlay, "vpcchain")
	kc.kubectlOK("", "label", "nodes", "--all", migrationLabel+"-")
	prober.phase("on vpcchain")
	kc.checkAdopted(t, bin, awsENIs)
	time.Sleep(3 * time.Second) // steady state on ours

	// Rollback: ours kept on labelled nodes, aws-node applied off them.
	prober.phase("rollback: ours kept on labelled nodes")
	kc.kubectlOK("", "label", "nodes", "--all", migrationLabel+"=vpcchain")
	kc.kubectlOK("", "-n", "kube-system", "patch", "daemonset", "vpcchain", "--type=json", "-p", affinityPatch("In"))
	kc.rollout(t, "vpcchain")
	prober.phase("rollback: aws-node applied (no node)")
	kc.applyOverlay(t, awsManifest, awsCNIOverlay+migrationAffinity("aws-node", "NotIn"), "aws-node")
	for _, kn := range kc.nodes {
		prober.phase("rolling back " + kn.n.name)
		kc.switchNode(t, kn, false)
		// Our preStop uninstalled (the DaemonSet no longer selects the
		// node): the AWS VPC CNI's configuration alone, as before.
		if got := listDir(t, kn.cniConf); !slices.Equal(got, []string{"10-aws.conflist"}) {
			t.Errorf("node %s's CNI conf dir after the rollback: %v, want the AWS VPC CNI's alone", kn.n.name, got)
		}
	}
	prober.phase("ours deleted, aws-node everywhere")
	kc.kubectlOK("", "-n", "kube-system", "delete", "daemonset", "vpcchain", "--wait=true", "--timeout=120s")
	kc.applyOverlay(t, awsManifest, awsCNIOverlay, "aws-node")
	prober.phase("back on the AWS VPC CNI")
	time.Sleep(3 * time.Second)
	sent, failed := prober.report()
	for _, kn := range kc.nodes {
		kc.logEC2(t, kn, "after the rollback")
		kc.checkIpamdHasAll(t, kn)
	}
	t.Logf("migration and rollback: %d requests to the Service, %d failed", sent, failed)
}

// deployMigrationWeb runs n web pods in ns behind a ClusterIP Service and
// returns its address. The pods are made for drains: a readiness probe (no
// traffic before they serve), a preStop pause (they serve until kube-proxy
// has taken them out of the Service), a PodDisruptionBudget (one at a
// time) and a spread over the nodes that ignores cordoned ones.
func (kc *k8sCluster) deployMigrationWeb(t *testing.T, ns string, n int) netip.AddrPort {
	t.Helper()
	kc.kubectlOK(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: Honor, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: %[3]s
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "busybox mkdir -p /www && echo $POD_NAME > /www/name && exec busybox httpd -f -p 8080 -h /www"]
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        readinessProbe: {httpGet: {path: /name, port: 8080}, periodSeconds: 1}
        lifecycle: {preStop: {exec: {command: ["/bin/busybox", "sleep", "8"]}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: %[1]s}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`, ns, n, busyboxImage), "apply", "-f", "-")
	if out, err := kc.k.kubectl("", "-n", ns, "rollout", "status", "deployment/web", "--timeout=300s"); err != nil {
		pods, _ := kc.k.kubectl("", "-n", ns, "get", "pods", "-o", "wide")
		ev, _ := kc.k.kubectl("", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("%v\n%s\n%s\n%s", err, out, pods, tail(ev, 40))
	}
	t.Logf("web pods:\n%s", kc.kubectlOK("", "-n", ns, "get", "pods", "-o", "wide"))
	ip := netip.MustParseAddr(kc.kubectlOK("", "-n", ns, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"))
	return netip.AddrPortFrom(ip, 80)
}

// rollout waits for DaemonSet ds in kube-system to roll out.
func (kc *k8sCluster) rollout(t *testing.T, ds string) {
	t.Helper()
	if out, err := kc.k.kubectl("", "-n", "kube-system", "rollout", "status", "daemonset/"+ds, "--timeout=300s"); err != nil {
		pods, _ := kc.k.kubectl("", "-n", "kube-system", "get", "pods", "-o", "wide")
		t.Fatalf("%v\n%s\n%s", err, out, pods)
	}
}

// dsPodsOn lists DaemonSet pods with the selector on node: name -> Ready.
func (kc *k8sCluster) dsPodsOn(selector, node string) (map[string]string, error) {
	out, err := kc.k.kubectl("", "-n", "kube-system", "get", "pods", "-l", selector, "--field-selector", "spec.nodeName="+node, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	pods := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			pods[f[0]] = f[1]
		} else if len(f) == 1 {
			pods[f[0]] = ""
		}
	}
	return pods, nil
}

// switchNode moves one node between the CNIs as the README says: cordon,
// drain (DaemonSets stay), label for ours (toOurs) or unlabel, wait until
// the other DaemonSet's pod is gone and the new one's is Ready and the
// node Ready, uncordon.
func (kc *k8sCluster) switchNode(t *testing.T, kn *kubeNode, toOurs bool) {
	t.Helper()
	name := kn.n.name
	start := time.Now()
	kc.kubectlOK("", "cordon", name)
	if out, err := kc.k.kubectl("", "drain", name, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=300s"); err != nil {
		t.Fatalf("drain %s: %v\n%s", name, err, out)
	}
	drained := time.Since(start)
	from, to := "k8s-app=aws-node", "app.kubernetes.io/name=vpcchain"
	if toOurs {
		kc.kubectlOK("", "label", "node", name, migrationLabel+"=vpcchain", "--overwrite")
	} else {
		from, to = to, from
		kc.kubectlOK("", "label", "node", name, migrationLabel+"-")
	}
	waitFor(t, 180*time.Second, "node "+name+" switched to "+to, kc.alive, func() error {
		old, err := kc.dsPodsOn(from, name)
		if err != nil {
			return err
		}
		if len(old) > 0 {
			return fmt.Errorf("%s still has %v", name, old)
		}
		cur, err := kc.dsPodsOn(to, name)
		if err != nil {
			return err
		}
		for p, ready := range cur {
			if ready == "True" {
				return nil
			}
			return fmt.Errorf("%s not Ready yet", p)
		}
		return fmt.Errorf("no %s pod on %s yet", to, name)
	})
	kc.ready(120 * time.Second)
	kc.kubectlOK("", "uncordon", name)
	t.Logf("node %s switched to %s: drained in %v, switched in %v; CNI conf dir %v", name, to, drained.Round(time.Second),
		(time.Since(start) - drained).Round(time.Second), listDir(t, kn.cniConf))
}

// deleteAWSNode removes what the AWS VPC CNI's manifest installed except
// its ENIConfig CRD (ours reads ENIConfigs for custom networking; deleting
// a CRD deletes every object of it).
func (kc *k8sCluster) deleteAWSNode(t *testing.T) {
	t.Helper()
	kc.kubectlOK("", "-n", "kube-system", "delete", "daemonset/aws-node", "configmap/amazon-vpc-cni", "serviceaccount/aws-node",
		"--wait=true", "--timeout=120s")
	kc.kubectlOK("", "delete", "clusterrolebinding/aws-node", "clusterrole/aws-node")
}

// logEC2 logs the node's ENIs as EC2 has them and returns the IDs of those
// the AWS VPC CNI created.
func (kc *k8sCluster) logEC2(t *testing.T, kn *kubeNode, when string) (aws []string) {
	t.Helper()
	inet, ok := kc.c.sim.Cloud.InstanceNetwork(kn.n.vn.InstanceID)
	if !ok {
		t.Fatalf("node %s unknown to EC2", kn.n.name)
	}
	var b strings.Builder
	addrs := 0
	for _, e := range inet.ENIs {
		v, _ := kc.c.sim.Cloud.ENI(e.ID)
		fmt.Fprintf(&b, "\n  device %d %s %q: %d secondary addresses", e.DeviceIndex, e.ID, v.Description, len(e.Secondary))
		addrs += len(e.Secondary)
		if strings.HasPrefix(v.Description, "aws-K8S-") {
			aws = append(aws, e.ID)
		}
	}
	t.Logf("EC2, node %s %s: %d ENIs, %d secondary addresses:%s", kn.n.name, when, len(inet.ENIs), addrs, b.String())
	return aws
}

// introspectNode asks the node's daemon for its view.
func introspectNode(kn *kubeNode) (*ipamv1.IntrospectReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := ipamclient.Dial(ctx, filepath.Join(kn.state, "ipamd.sock"))
	if err != nil {
		return nil, fmt.Errorf("the daemon of %s: %w", kn.n.name, err)
	}
	defer cl.Close()
	r, err := cl.Introspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("introspect the daemon of %s: %w", kn.n.name, err)
	}
	return r, nil
}

// checkAdopted: on every node, each ENI EC2 has is managed by our daemon
// (none left alone), the AWS VPC CNI's ones adopted or given back, and
// every address EC2 has on the node is in the daemon's pool; the pool
// settles to its warm target (what it does not need is released). vpcctl
// status is logged for each node.
func (kc *k8sCluster) checkAdopted(t *testing.T, bin string, awsENIs map[string][]string) {
	t.Helper()
	for _, kn := range kc.nodes {
		var r *ipamv1.IntrospectReply
		// The daemon scales down what the warm target does not need
		// (VPCCHAIN_SCALE_DOWN_INTERVAL 30 s): wait until EC2 and the
		// daemon agree and nothing is left to release.
		waitFor(t, 4*time.Minute, "node "+kn.n.name+"'s pool settled on the adopted ENIs", kc.alive, func() error {
			var err error
			if r, err = introspectNode(kn); err != nil {
				return err
			}
			if len(r.GetUnmanaged()) > 0 {
				return fmt.Errorf("ENIs left alone: %v", r.GetUnmanaged())
			}
			inet, _ := kc.c.sim.Cloud.InstanceNetwork(kn.n.vn.InstanceID)
			managed := map[string]*ipamv1.IntrospectENI{}
			for _, e := range r.GetEnis() {
				managed[e.GetId()] = e
			}
			for _, e := range inet.ENIs {
				m := managed[e.ID]
				if m == nil {
					return fmt.Errorf("EC2's ENI %s (device %d) is not the daemon's", e.ID, e.DeviceIndex)
				}
				for _, a := range e.Secondary {
					if !slices.Contains(m.GetIps(), a.String()) {
						return fmt.Errorf("EC2's address %s on %s is not in the daemon's pool", a, e.ID)
					}
				}
			}
			if len(inet.ENIs) != len(managed) {
				return fmt.Errorf("EC2 has %d ENIs, the daemon %d", len(inet.ENIs), len(managed))
			}
			// WARM_ENI_TARGET=1 on an m5.large: one spare ENI's 9
			// addresses; more free than two ENIs' worth is excess.
			if free := r.GetAvailable() + r.GetCooling(); free > 18 {
				return fmt.Errorf("%d addresses free or cooling (%d assigned), more than the warm target needs", free, r.GetAssigned())
			}
			return nil
		})
		origins := map[string]string{}
		for _, e := range r.GetEnis() {
			origins[e.GetId()] = e.GetOrigin()
		}
		for _, id := range awsENIs[kn.n.name] {
			if o, ok := origins[id]; ok && !strings.Contains(o, "AWS VPC CNI") {
				t.Errorf("node %s: the AWS VPC CNI's ENI %s has origin %q", kn.n.name, id, o)
			}
		}
		out, err := exec.Command(filepath.Join(bin, "vpcctl"), "status", "--socket", filepath.Join(kn.state, "ipamd.sock")).CombinedOutput()
		if err != nil {
			t.Errorf("vpcctl status on %s: %v\n%s", kn.n.name, err, out)
		}
		t.Logf("vpcctl status on %s:\n%s", kn.n.name, out)
		kc.logEC2(t, kn, "on vpcchain")
	}
}

// checkIpamdHasAll: after the rollback the AWS VPC CNI's ipamd manages
// every ENI EC2 has on the node (ours included: it takes every ENI not
// tagged no_manage), as its introspection (/v1/enis on 127.0.0.1:61679,
// DISABLE_INTROSPECTION=false in its manifest) lists them.
func (kc *k8sCluster) checkIpamdHasAll(t *testing.T, kn *kubeNode) {
	t.Helper()
	inet, _ := kc.c.sim.Cloud.InstanceNetwork(kn.n.vn.InstanceID)
	waitFor(t, 60*time.Second, "ipamd of "+kn.n.name+" managing every ENI", kc.alive, func() error {
		body, err := httpGetIn(kn.n, "127.0.0.1:61679", "/v1/enis")
		if err != nil {
			return err
		}
		for _, e := range inet.ENIs {
			if !strings.Contains(body, e.ID) {
				return fmt.Errorf("ipamd does not list %s (device %d): %s", e.ID, e.DeviceIndex, tail(body, 5))
			}
		}
		return nil
	})
}
