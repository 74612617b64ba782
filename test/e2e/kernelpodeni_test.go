//go:build kernel && peer

// Security groups for pods end to end, in the kernel tier's guest (802.1Q):
// AWS's VPC resource controller v1.8.2, unmodified, with a control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) that
// runs Deployments, our daemon with ENABLE_POD_ENI, and the built chain run
// by libcni for each pod the scheduler binds to the node, as a kubelet runs
// it, on the simulator's data plane. The test plays the kubelet's part: it
// makes each bound pod's sandbox, ADDs it, and for a pod being deleted DELs
// it and then deletes the object.

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/vpcchain/vpcchain/daemon/podeni"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// The guest runs it when the tier's binary is built with the peer tag too
// (make kernel-test): it needs the peer tier's control plane and the
// controller.
func init() { guestTests = append(guestTests, "TestGuestPodENI") }

// daemonUser is the name the API server gives the token of our DaemonSet's
// ServiceAccount.
const daemonUser = "system:serviceaccount:kube-system:vpcchain"

// manifestDocs returns the documents of a manifest file whose kind is one
// of kinds and whose name starts with "vpcchain" (not the policy hook's).
func manifestDocs(t *testing.T, file string, kinds ...string) string {
	t.Helper()
	var out []string
	for _, doc := range manifestDocsOfKind(t, file, kinds...) {
		var meta struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Metadata.Name == "vpcchain" || meta.Metadata.Name == "vpcchain-pod-eni" {
			out = append(out, doc)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no %v of vpcchain", file, kinds)
	}
	return strings.Join(out, "\n---\n")
}

// c7iFlexBranchLimit is the branch ENIs a trunk of a c7i-flex.large takes:
// 3, EC2's published limit ("Maximum branch interfaces" in the EC2 user
// guide's ENI trunking table).
const c7iFlexBranchLimit = 3

// apiPod is what the test reads of a pod from the API server.
type apiPod struct {
	Metadata struct {
		Name              string            `json:"name"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Conditions []podCondition `json:"conditions"`
	} `json:"status"`
}

type podCondition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (k *kube) pods(namespace string) ([]apiPod, error) {
	out, err := k.kubectl("", "-n", namespace, "get", "pods", "-o", "json")
	if err != nil {
		return nil, err
	}
	var l struct {
		Items []apiPod `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, fmt.Errorf("pods of %s: %w", namespace, err)
	}
	return l.Items, nil
}

// sgpPod is a pod the test runs as the kubelet: its sandbox and the branch
// its annotation names (nil for a pod without).
type sgpPod struct {
	*pod
	branch *podeni.Branch
}

// serve starts echo servers on the pod's address, stopped by closeEcho.
func (p *sgpPod) serve(t *testing.T, ports ...uint16) {
	t.Helper()
	var stops []func()
	for _, port := range ports {
		stop, err := startEcho(p.doIn, netip.AddrPortFrom(p.ip, port), p.name)
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stop)
	}
	p.closeEcho = func() {
		for _, s := range stops {
			s()
		}
	}
	t.Cleanup(p.closeEcho)
}

// heartbeat does the kubelet's part for n's Node until the test ends: every
// 10 s it reports the node Ready and its allocatable resources, which for
// an extended resource such as vpc.amazonaws.com/pod-eni (which the
// controller puts in the capacity) are the capacity, as the kubelet copies
// them. The node lifecycle controller then lifts the not-ready taint the
// API server put on the new Node, and the scheduler counts the resource.
func heartbeat(t *testing.T, k *kube, n *node) {
	t.Helper()
	since := time.Now().UTC().Format(time.RFC3339)
	beat := func() error {
		out, err := k.kubectl("", "get", "node", n.name, "-o", "jsonpath={.status.capacity}")
		if err != nil {
			return err
		}
		var capacity map[string]string
		if err := json.Unmarshal([]byte(out), &capacity); err != nil {
			return fmt.Errorf("capacity %q: %w", out, err)
		}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"allocatable": capacity, "conditions": []map[string]string{{
			"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the test runs the node's pods",
			"lastHeartbeatTime": time.Now().UTC().Format(time.RFC3339), "lastTransitionTime": since}}}})
		_, err = k.kubectl("", "patch", "node", n.name, "--subresource=status", "--type=merge", "-p", string(patch))
		return err
	}
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if err := beat(); err != nil {
					t.Logf("node %s heartbeat: %v", n.name, err)
				}
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
}

func TestGuestPodENI(t *testing.T) {
	requireGuest(t)
	b := peerBinaries(t)
	tools := filepath.Join(binDir(t), "tools")
	rc, kcm, sched := filepath.Join(tools, "vpc-resource-controller"), filepath.Join(tools, "kube-controller-manager"), filepath.Join(tools, "kube-scheduler")
	for _, f := range []string{rc, kcm, sched} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s missing: run `make peer-tools cluster-tools`: %v", f, err)
		}
	}
	rcModule, err := awscnipeer.ModuleDirIn(awscnipeer.ControllerGoMod, awscnipeer.Controller)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	step := func(what string) { t.Logf("%v: %s", time.Since(start).Round(time.Second), what) }

	// Two nodes and a machine of the VPC that is not in the cluster, all
	// in the VPC's default group (which lets its members in).
	c := newSimVPC(t, "10.0.0.0/20")
	n := c.addNode("c7i-flex.large", "sgp-a")
	other := c.addNode("m5.large", "sgp-b")
	outsider, err := c.sim.LaunchNode(vpcsim.LaunchSpec{Name: "outside", InstanceType: "m5.large", SubnetID: c.subnet})
	if err != nil {
		t.Fatal(err)
	}
	outNS := getNS(t, outsider.NetNSPath)
	inOutside := func(f func() error) error { return outNS.Do(func(ns.NetNS) error { return f() }) }
	outNet, _ := c.sim.Cloud.InstanceNetwork(outsider.InstanceID)
	outIP := outNet.PrimaryIP

	k := startControlPlaneWith(t, n, b.etcd, b.apiserver, b.kubectl, controlPlaneOpts{users: map[string]string{
		controllerUser: "system:masters", "system:kube-controller-manager": "", "system:kube-scheduler": "",
		daemonUser: "system:serviceaccounts"}})
	startInNode(t, n, k.dir, "kube-controller-manager", k.env, kcm,
		"--kubeconfig="+k.kubeconfigFor("system:kube-controller-manager", k.server),
		"--service-account-private-key-file="+filepath.Join(k.pki, "sa.key"),
		"--root-ca-file="+filepath.Join(k.pki, "certs", "apiserver.crt"),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--allocate-node-cidrs=false", "--node-monitor-grace-period=40s")
	startInNode(t, n, k.dir, "kube-scheduler", k.env, sched,
		"--kubeconfig="+k.kubeconfigFor("system:kube-scheduler", k.server), "--leader-elect=false", "--bind-address=127.0.0.1")
	installControllerObjects(t, k, rcModule)
	registerPeerNode(t, k, n)
	heartbeat(t, k, n)
	step("control plane up")

	// The daemon's credentials are the manifests': our ServiceAccount with
	// the ClusterRoles of vpcchain.yaml and pod-eni.yaml, nothing more.
	k.apply(t, manifestDocs(t, "../../conflist/manifests/vpcchain.yaml", "ClusterRole", "ClusterRoleBinding"))
	k.apply(t, manifestDocs(t, "../../conflist/manifests/pod-eni.yaml", "ClusterRole", "ClusterRoleBinding"))
	n.env = append(n.env, "ENABLE_POD_ENI=true", "MY_NODE_NAME="+n.name,
		"KUBECONFIG="+k.kubeconfigFor(daemonUser, k.server),
		"WARM_IP_TARGET=30") // every ENI the pool may have, from the start
	n.start()
	t.Cleanup(n.stop)
	other.start()
	t.Cleanup(other.stop)
	n.waitReady()
	other.waitReady()
	startVPCResourceController(t, k, n, rc, rcModule, c.vpc)

	ec2c, _ := inNodeSDK(c.sim, n.vn)
	var trunkID string
	waitFor(t, 3*time.Minute, "a trunk ENI on "+n.name, n.alive, func() error {
		out, err := ec2c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{n.vn.InstanceID}},
			{Name: aws.String("interface-type"), Values: []string{"trunk"}}}})
		if err != nil || len(out.NetworkInterfaces) != 1 || out.NetworkInterfaces[0].Attachment == nil ||
			out.NetworkInterfaces[0].Attachment.Status != ec2types.AttachmentStatusAttached {
			return fmt.Errorf("trunks %v, %v", out, err)
		}
		trunkID = aws.ToString(out.NetworkInterfaces[0].NetworkInterfaceId)
		return nil
	})
	waitFor(t, 2*time.Minute, "vpc.amazonaws.com/pod-eni on "+n.name, n.alive, func() error {
		out, err := k.kubectl("", "get", "node", n.name, "-o", `jsonpath={.status.capacity.vpc\.amazonaws\.com/pod-eni}`)
		if err != nil || strings.TrimSpace(out) != fmt.Sprint(c7iFlexBranchLimit) {
			return fmt.Errorf("capacity %q, %v", out, err)
		}
		return nil
	})
	waitFor(t, time.Minute, "the daemon to see the trunk", n.alive, func() error {
		if id := introspect(t, n).GetPodEni().GetTrunk().GetId(); id != trunkID {
			return fmt.Errorf("the daemon's trunk %q, want %s", id, trunkID)
		}
		return nil
	})
	nodeNS := getNS(t, n.vn.NetNSPath)
	// What a node with no pod has: compared with what is left after every
	// pod is gone, before and after the node's reboot. IPv4 only: the
	// kernel's IPv6 link-local routes come and go with the links' state
	// (after a duplicate address check), and the chain sets up no IPv6 here.
	state := func() string { return nodeLinksRulesRoutesOf(t, nodeNS, netlink.FAMILY_V4) }
	// conf.all.rp_filter as the kernel and systemd leave it (0), so that in
	// strict mode the node's own connections to a branch pod (kubelet
	// probes), which go out to the VPC and come back in by the VLAN link,
	// are not dropped as martians (vpc-bridge's branch.go).
	inNode := func(f func() error) error { return nodeNS.Do(func(ns.NetNS) error { return f() }) }
	if err := inNode(func() error { return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("0"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	baseline := state()
	step("trunk " + trunkID + " attached, node capacity " + fmt.Sprint(c7iFlexBranchLimit))

	// The database pods' group: TCP 8080 from the VPC, nothing else.
	dbGroup, aerr := c.sim.Cloud.CreateSecurityGroup(c.vpc, "db-pods", "db pods")
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := c.sim.Cloud.AuthorizeIngress(dbGroup, []vpcsim.Permission{{Protocol: "tcp", FromPort: 8080, ToPort: 8080,
		CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")}}}); aerr != nil {
		t.Fatal(aerr)
	}
	k.retry(t, 30*time.Second, "", "create", "namespace", "shop")
	// One more db replica than the node has branches for.
	k.apply(t, fmt.Sprintf(`apiVersion: vpcresources.k8s.aws/v1beta1
kind: SecurityGroupPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: db}}
  securityGroups: {groupIds: [%[1]s]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: shop}
spec:
  replicas: %[2]d
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db, tier: db}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[3]s}
      containers: [{name: db, image: "db:1"}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: %[3]s}
      containers: [{name: web, image: "web:1"}]
`, dbGroup, c7iFlexBranchLimit+1, n.name))

	// The scheduler binds as many db pods as the node has branches, the
	// controller gives each bound one a branch; the last stays Pending.
	var bound, pending []apiPod
	waitFor(t, 3*time.Minute, "db pods bound with branches, one Pending for want of vpc.amazonaws.com/pod-eni", n.alive, func() error {
		ps, err := k.pods("shop")
		if err != nil {
			return err
		}
		bound, pending = nil, nil
		for _, p := range ps {
			switch {
			case p.Metadata.Labels["app"] != "db":
			case p.Spec.NodeName == n.name && p.Metadata.Annotations[podeni.ResourceName] != "":
				bound = append(bound, p)
			case p.Spec.NodeName == "" && slices.ContainsFunc(p.Status.Conditions, func(c podCondition) bool {
				return c.Type == "PodScheduled" && c.Status == "False" && strings.Contains(c.Message, "Insufficient "+podeni.ResourceName)
			}):
				pending = append(pending, p)
			}
		}
		if len(bound) != c7iFlexBranchLimit || len(pending) != 1 {
			var seen []string
			for _, p := range ps {
				seen = append(seen, fmt.Sprintf("%s on %q %v annotated %v", p.Metadata.Name, p.Spec.NodeName, p.Status.Conditions,
					p.Metadata.Annotations[podeni.ResourceName] != ""))
			}
			return fmt.Errorf("%d bound with a branch, %d Pending for the resource: %s", len(bound), len(pending), strings.Join(seen, "; "))
		}
		return nil
	})
	step(fmt.Sprintf("%d db pods with branches, %s Pending", len(bound), pending[0].Metadata.Name))
	var web apiPod
	waitFor(t, time.Minute, "the web pod bound", n.alive, func() error {
		ps, err := k.pods("shop")
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Metadata.Labels["app"] == "web" && p.Spec.NodeName == n.name {
				web = p
				return nil
			}
		}
		return errors.New("not yet")
	})
	if a := web.Metadata.Annotations[podeni.ResourceName]; a != "" {
		t.Errorf("the web pod, which no policy selects, has a branch: %s", a)
	}

	// EC2 lists the branches, on the trunk, in the policy's group.
	assocs, err := ec2c.DescribeTrunkInterfaceAssociations(ctx, &ec2.DescribeTrunkInterfaceAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("trunk-interface-association.trunk-interface-id"), Values: []string{trunkID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(assocs.InterfaceAssociations) != c7iFlexBranchLimit {
		t.Fatalf("EC2 lists %d branches on the trunk, want %d: %+v", len(assocs.InterfaceAssociations), c7iFlexBranchLimit, assocs.InterfaceAssociations)
	}

	// The kubelet's part: a sandbox and an ADD for each pod bound to the
	// node, and a pod on the other node.
	chain := n.chain(nil)
	var dbs []*sgpPod
	for _, p := range bound {
		br, err := podeni.ParseAnnotation(p.Metadata.Annotations[podeni.ResourceName])
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := c.sim.Cloud.ENI(br.ENIID); !ok || strings.Join(v.Groups, ",") != dbGroup || v.PrimaryIP.String() != br.IPv4 {
			t.Fatalf("branch %s in EC2: %+v (found %v), want group %s and %s", br.ENIID, v, ok, dbGroup, br.IPv4)
		}
		dbs = append(dbs, &sgpPod{pod: n.newPod("shop", p.Metadata.Name), branch: &br})
	}
	wp := &sgpPod{pod: n.newPod("shop", web.Metadata.Name)}
	client := &sgpPod{pod: other.newPod("default", "client")}
	runPods := func(ps ...*sgpPod) {
		t.Helper()
		for _, p := range ps {
			l := chain
			if p.n == other {
				l = other.chain(nil)
			}
			if _, err := p.add(l); err != nil {
				t.Fatalf("ADD %s/%s: %v\nnode: %s", p.namespace, p.name, err, nodeLinksRulesRoutes(t, nodeNS))
			}
			if p.branch != nil && p.ip.String() != p.branch.IPv4 {
				t.Errorf("%s got %v, want its branch's %s", p.name, p.ip, p.branch.IPv4)
			}
			p.serve(t, 8080, 9090)
		}
	}
	all := append(append([]*sgpPod{}, dbs...), wp)
	// The daemon killed as the first db pod's sandbox comes: its ADD fails
	// with the code a runtime retries, and the runtime's DEL after it
	// leaves the node as it was.
	n.kill9()
	if _, err := dbs[0].add(chain); !isTryAgain(err) {
		t.Errorf("ADD of %s with the daemon down: %v, want CNI code 11 (try again later)", dbs[0].name, err)
	}
	if err := dbs[0].del(chain); err != nil {
		t.Errorf("DEL of %s after its failed ADD: %v", dbs[0].name, err)
	}
	if got := state(); got != baseline {
		t.Errorf("after a failed ADD and its DEL, the node differs from before any pod:\nbefore:\n%s\nafter:\n%s", baseline, got)
	}
	n.start()
	n.waitReady()
	runPods(append(all, client)...)
	step("pods ADDed (the first one's ADD failed with the daemon down, then succeeded)")

	// Who reaches what: a branch's group lets TCP 8080 in from anywhere
	// in the VPC and drops 9090, from another node's pod, from a machine
	// outside the cluster and, in strict mode (its traffic goes out to the
	// VPC), from the pods and the node itself of its own node; in standard
	// mode those two reach it directly, on every port. The web pod, in the
	// nodes' group, is reached on both.
	standard := false
	reach := func(why string) {
		t.Helper()
		from := []struct {
			name     string
			do       func(func() error) error
			toWeb    bool
			sameNode bool
		}{
			{"the other node's pod", client.doIn, true, false},
			{"the machine outside the cluster", inOutside, true, false},
			{"the web pod on the same node", wp.doIn, false, true},
			{"the node itself (as its kubelet's probes)", inNode, false, true},
		}
		for _, f := range from {
			for _, db := range dbs {
				expectEcho(t, why, f.name, f.do, netip.AddrPortFrom(db.ip, 8080), db.name)
				if standard && f.sameNode {
					expectEcho(t, why+" (standard mode)", f.name, f.do, netip.AddrPortFrom(db.ip, 9090), db.name)
				} else {
					expectDropped(t, f.do, netip.AddrPortFrom(db.ip, 9090), why+": "+f.name+" to "+db.name)
				}
			}
			if f.toWeb {
				expectEcho(t, why, f.name, f.do, netip.AddrPortFrom(wp.ip, 9090), wp.name)
			}
		}
		// Out of a branch: to the machine outside and to the other node's pod.
		for _, db := range dbs {
			expectEcho(t, why, db.name, db.doIn, netip.AddrPortFrom(client.ip, 9090), client.name)
			expectEcho(t, why, db.name, db.doIn, netip.AddrPortFrom(outIP, 7070), "outside")
		}
	}
	echoServer(t, inOutside, netip.AddrPortFrom(outIP, 7070), "outside")
	// Out of a branch, the VPC sees the branch's groups: the default group,
	// which only lets its own members in, drops the db pods' connections
	// until it lets their group in too (as users let their pods' groups
	// into the nodes' group).
	expectDropped(t, dbs[0].doIn, netip.AddrPortFrom(client.ip, 9090), dbs[0].name+" to the other node's pod, before the default group lets db-pods in")
	if aerr := c.sim.Cloud.AuthorizeIngress(c.defaultGroup(), []vpcsim.Permission{{Protocol: "-1", Groups: []string{dbGroup}}}); aerr != nil {
		t.Fatal(aerr)
	}
	reach("with every pod up")
	checkAll := func(why string) {
		t.Helper()
		for _, p := range all {
			if err := p.check(chain); err != nil {
				t.Errorf("%s: CHECK %s: %v", why, p.name, err)
			}
		}
	}
	checkAll("with every pod up")
	step("traffic as the groups say")

	// The daemon killed: the pods' traffic does not depend on it, and the
	// daemon that starts again answers CHECK for every pod as before.
	n.kill9()
	expectEcho(t, "daemon down", client.name, client.doIn, netip.AddrPortFrom(dbs[0].ip, 8080), dbs[0].name)
	n.start()
	n.waitReady()
	checkAll("after the daemon's restart")
	reach("after the daemon's restart")
	step("daemon killed and restarted")

	// The node reboots, and comes back with POD_SECURITY_GROUP_ENFORCING_MODE
	// standard (the installer renders it into vpc-bridge's config): its
	// processes, the pods' sandboxes and everything the chain made in its
	// namespace are gone. The runtime DELs each old sandbox (no namespace
	// any more), then makes a new one: each db pod gets its branch back,
	// with the same address, wired in standard mode.
	n.kill9()
	for _, p := range all {
		if err := killSandbox(p.pod); err != nil {
			t.Fatal(err)
		}
	}
	if err := rebootKernel(n); err != nil {
		t.Fatal(err)
	}
	n.start()
	n.waitReady()
	for _, p := range all {
		if err := p.del(chain); err != nil {
			t.Errorf("DEL of %s's sandbox after the reboot: %v", p.name, err)
		}
	}
	if got := state(); got != baseline {
		t.Errorf("after the reboot and the old sandboxes' DEL, the node differs from before any pod:\nbefore:\n%s\nafter:\n%s", baseline, got)
	}
	for _, p := range all {
		p.pod = n.newPod(p.namespace, p.name) // a new sandbox for the same pod
	}
	chain, standard = withPodSGMode(t, chain, "standard"), true
	runPods(all...)
	checkAll("after the reboot, in standard mode")
	reach("after the reboot, in standard mode")
	step("node rebooted, pods wired in standard mode")

	// The db Deployment scaled to zero: the Pending pod goes at once; for
	// each bound one the kubelet DELs its sandbox and deletes the object.
	// The controller deletes each branch after its cool-down, and the freed
	// capacity is the node's again.
	if _, err := k.kubectl("", "-n", "shop", "scale", "deployment", "db", "--replicas=0"); err != nil {
		t.Fatal(err)
	}
	for _, p := range dbs {
		p.closeEcho()
		if err := p.del(chain); err != nil {
			t.Errorf("DEL %s: %v", p.name, err)
		}
		if _, err := k.kubectl("", "-n", "shop", "delete", "pod", p.name, "--grace-period=0", "--force"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 3*time.Minute, "every branch deleted from EC2", n.alive, func() error {
		out, err := ec2c.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			{Name: aws.String("interface-type"), Values: []string{"branch"}}}})
		if err != nil || len(out.NetworkInterfaces) != 0 {
			return fmt.Errorf("EC2 lists %d branch ENIs (%v)", len(out.NetworkInterfaces), err)
		}
		return nil
	})
	step("branches deleted")
	wp.closeEcho()
	if err := wp.del(chain); err != nil {
		t.Errorf("DEL %s: %v", wp.name, err)
	}
	if got := state(); got != baseline {
		t.Errorf("with every pod gone, the node differs from before any pod:\nbefore:\n%s\nafter:\n%s", baseline, got)
	}
	if after := eniSnapshot(t, c, trunkID); after == "deleted" {
		t.Errorf("the trunk %s is gone", trunkID)
	}
}

// expectEcho: a connection from do's namespace to dst gets the echo of
// the server named want.
func expectEcho(t *testing.T, why, from string, do func(func() error) error, dst netip.AddrPort, want string) {
	t.Helper()
	got, err := dialEcho(do, dst)
	if err != nil || !strings.HasPrefix(got, want+" ") {
		t.Errorf("%s: %s to %s (%s): %q, %v; want its echo", why, from, want, dst, got, err)
	}
}

// withPodSGMode is l with vpc-bridge's podSGEnforcingMode set to mode.
func withPodSGMode(t *testing.T, l *libcni.NetworkConfigList, mode string) *libcni.NetworkConfigList {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(l.Bytes, &raw); err != nil {
		t.Fatal(err)
	}
	raw["plugins"].([]any)[0].(map[string]any)["podSGEnforcingMode"] = mode
	b, _ := json.Marshal(raw)
	out, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
