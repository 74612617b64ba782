package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/sim/vpcsim"
	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
)

// manifestDoc returns the document of kind and name from one of our
// manifests (a YAML stream).
func manifestDoc(t *testing.T, file, kind, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "conflist", "manifests", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		if strings.Contains(doc, "\nkind: "+kind+"\n") && strings.Contains(doc, "\n  name: "+name+"\n") {
			return doc
		}
	}
	t.Fatalf("no %s %s in %s", kind, name, file)
	return ""
}

// eniConfig is an ENIConfig object.
func eniConfig(name, subnet string, groups ...string) string {
	return fmt.Sprintf(`apiVersion: crd.k8s.amazonaws.com/v1alpha1
kind: ENIConfig
metadata: {name: %q}
spec: {subnet: %q, securityGroups: [%s]}
`, name, subnet, strings.Join(groups, ", "))
}

// Custom networking end to end, with a real kube-apiserver (RBAC on, the
// daemon under our manifest's ClusterRole): two nodes in two AZs, one
// ENIConfig per AZ on 100.64.0.0/16 subnets, pods addressed there talking
// across nodes, to the node network and to the internet; a node whose
// ENIConfig is missing or unusable creates nothing, says why, and recovers
// by itself.
func TestCustomNetworking(t *testing.T) {
	bin := binDir(t)
	tools := filepath.Join(bin, "tools")
	apiserverBin, kubectlBin := filepath.Join(tools, "kube-apiserver"), filepath.Join(tools, "kubectl")
	const etcdBin = "/usr/bin/etcd"
	for _, b := range []string{apiserverBin, kubectlBin, etcdBin} {
		if _, err := os.Stat(b); err != nil {
			t.Fatalf("%s missing: run `make heavy-tools` (kube-apiserver, kubectl) and `make deps` (etcd): %v", b, err)
		}
	}
	c := newSimVPC(t, "10.0.0.0/20") // us-west-2a
	cloud := c.sim.Cloud
	subnetB, err := cloud.AddSubnet(c.vpc, "10.0.16.0/20", "us-west-2b", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cloud.AddVPCCIDR(c.vpc, "100.64.0.0/16"); err != nil {
		t.Fatal(err)
	}
	podsA, _ := cloud.AddSubnet(c.vpc, "100.64.0.0/19", "us-west-2a", nil)
	podsB, _ := cloud.AddSubnet(c.vpc, "100.64.32.0/19", "us-west-2b", nil)
	otherVPC, _ := cloud.AddVPC("172.16.0.0/16")
	foreignSG, _ := cloud.AddSecurityGroup(otherVPC)
	// AZ a's pods get their own group: TCP 8080 from AZ b's pod subnet,
	// nothing else. The VPC's default group (the nodes', AZ b's pods')
	// admits them, as an EKS cluster's group admits its pods' group.
	podSG, aerr := cloud.CreateSecurityGroup(c.vpc, "pods-a", "pods of AZ a")
	if aerr != nil {
		t.Fatal(aerr)
	}
	if aerr := cloud.AuthorizeIngress(podSG, []vpcsim.Permission{{Protocol: "tcp", FromPort: 8080, ToPort: 8080,
		CIDRs: []netip.Prefix{netip.MustParsePrefix("100.64.32.0/19")}}}); aerr != nil {
		t.Fatal(aerr)
	}
	defaultSG := c.defaultGroup()
	if aerr := cloud.AuthorizeIngress(defaultSG, []vpcsim.Permission{{Protocol: "-1", Groups: []string{podSG}}}); aerr != nil {
		t.Fatal(aerr)
	}

	ctl := c.addNode("m5.large", "ctl")
	k := startControlPlaneWith(t, ctl, etcdBin, apiserverBin, kubectlBin,
		controlPlaneOpts{rbac: true, advertise: primaryIP(t, c, ctl), users: map[string]string{"vpcchain-e2e": ""}})
	if _, err := k.kubectl("", "apply", "-f", filepath.Join("..", "..", "conflist", "manifests", "eniconfig-crd.yaml")); err != nil {
		t.Fatal(err)
	}
	k.retry(t, time.Minute, "", "wait", "--for", "condition=established", "--timeout=60s", "crd/eniconfigs.crd.k8s.amazonaws.com")
	// The daemon runs with exactly our manifest's ClusterRole.
	k.apply(t, manifestDoc(t, "vpcchain.yaml", "ClusterRole", "vpcchain"))
	k.apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: vpcchain-e2e}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: vpcchain}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: vpcchain-e2e}]
`)
	for name, az := range map[string]string{"a": "us-west-2a", "b": "us-west-2b"} {
		k.apply(t, fmt.Sprintf("apiVersion: v1\nkind: Node\nmetadata:\n  name: %s\n  labels: {topology.kubernetes.io/zone: %s}\n", name, az))
	}
	k.apply(t, eniConfig("us-west-2a", podsA, podSG))

	env := []string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG=true", "ENI_CONFIG_LABEL_DEF=topology.kubernetes.io/zone",
		"KUBECONFIG=" + k.kubeconfigFor("vpcchain-e2e", k.remoteServer), "WARM_IP_TARGET=3"}
	a := c.addNode("m5.large", "a", append(env, "MY_NODE_NAME=a")...)
	b := c.addNodeIn(subnetB, "m5.large", "b", append(env, "MY_NODE_NAME=b")...)
	for _, n := range []*node{a, b} {
		n.start()
		t.Cleanup(n.stop)
	}
	a.waitReady()
	enisOf := func(n *node) int {
		inet, _ := cloud.InstanceNetwork(n.vn.InstanceID)
		return len(inet.ENIs)
	}
	problem := func(n *node) string { return n.introspect().GetCustomNetworking().GetProblem() }

	// b's ENIConfig does not exist yet: nothing is created, and it says why.
	b.waitStatus(time.Minute, 200*time.Millisecond, "b reports its missing ENIConfig", func(r *ipamv1.StatusReply) error {
		if r.GetReady() || !strings.Contains(r.GetReason(), `ENIConfig "us-west-2b"`) || !strings.Contains(r.GetReason(), "does not exist") {
			return fmt.Errorf("ready %v, reason %q", r.GetReady(), r.GetReason())
		}
		return nil
	})
	k.retry(t, 30*time.Second, "", "get", "events", "--field-selector", "involvedObject.kind=Node,involvedObject.name=b,reason=ENIConfigNotUsable",
		"-o", "jsonpath={.items[0].message}")
	if out, _ := k.kubectl("", "get", "events", "--field-selector", "involvedObject.name=b", "-o", "jsonpath={.items[*].reason}"); !strings.Contains(out, "ENIConfigNotUsable") {
		t.Errorf("no ENIConfigNotUsable Event on node b: %q", out)
	}
	if n := enisOf(b); n != 1 {
		t.Errorf("b has %d ENIs without an ENIConfig, want its primary only", n)
	}

	// It appears: b recovers without a restart.
	k.apply(t, eniConfig("us-west-2b", podsB))
	b.waitReady()
	inA, inB := netip.MustParsePrefix("100.64.0.0/19"), netip.MustParsePrefix("100.64.32.0/19")
	la, lb := a.chain(nil, a.snatConf()), b.chain(nil, b.snatConf())
	pa, pb := a.newPod("default", "cn-a"), b.newPod("default", "cn-b")
	if err := pa.addRetrying(la, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := pb.addRetrying(lb, time.Minute); err != nil {
		t.Fatal(err)
	}
	if !inA.Contains(pa.ip) || !inB.Contains(pb.ip) {
		t.Fatalf("pods got %s and %s; want them in their AZ's ENIConfig subnets %s and %s", pa.ip, pb.ip, inA, inB)
	}
	for _, n := range []*node{a, b} {
		inet, _ := cloud.InstanceNetwork(n.vn.InstanceID)
		if len(inet.ENIs[0].Secondary)+len(inet.ENIs[0].Prefixes) != 0 {
			t.Errorf("node %s: the primary ENI holds pod addresses: %v", n.name, inet.ENIs[0].Secondary)
		}
		for _, e := range inet.ENIs[1:] {
			if want := map[*node]string{a: podSG, b: defaultSG}[n]; len(e.Groups) != 1 || e.Groups[0] != want {
				t.Errorf("node %s: ENI %s has groups %v, want the ENIConfig's [%s]", n.name, e.ID, e.Groups, want)
			}
		}
	}

	// Across nodes, to the node network, to the internet.
	echoServer(t, pb.doIn, netip.AddrPortFrom(pb.ip, 8080), "pod-b")
	nodeB := primaryIP(t, c, b)
	echoServer(t, b.do, netip.AddrPortFrom(nodeB, 8081), "node-b")
	internet := netip.AddrPortFrom(netip.MustParseAddr(dataplane.OutsideAddr), 8082)
	echoServer(t, c.sim.Fabric.DoInOutside, internet, "internet")
	for _, x := range []struct {
		what   string
		dst    netip.AddrPort
		server string
		source netip.Addr
	}{
		{"pod to pod across nodes (the far side sees the pod)", netip.AddrPortFrom(pb.ip, 8080), "pod-b", pa.ip},
		{"pod to another node", netip.AddrPortFrom(nodeB, 8081), "node-b", pa.ip},
		{"pod to the internet (SNAT to the node's primary address)", internet, "internet", primaryIP(t, c, a)},
	} {
		got, err := dialEcho(pa.doIn, x.dst)
		if err != nil || !strings.HasPrefix(got, x.server+" "+x.source.String()+":") {
			t.Errorf("%s: %q, %v; want %s to see %s", x.what, got, err, x.server, x.source)
		}
	}

	// The ENIConfig's group, enforced by the VPC for a's pods only.
	echoServer(t, pa.doIn, netip.AddrPortFrom(pa.ip, 8080), "pod-a")
	echoServer(t, pa.doIn, netip.AddrPortFrom(pa.ip, 22), "pod-a-ssh")
	echoServer(t, pb.doIn, netip.AddrPortFrom(pb.ip, 22), "pod-b-ssh")
	for _, x := range []struct {
		what  string
		from  func(func() error) error
		dst   netip.AddrPort
		flows bool
	}{
		{"b's pod to a's pod, TCP 8080 (allowed from 100.64.32.0/19)", pb.doIn, netip.AddrPortFrom(pa.ip, 8080), true},
		{"b's pod to a's pod, TCP 22", pb.doIn, netip.AddrPortFrom(pa.ip, 22), false},
		{"node b to a's pod, TCP 8080 (not from that CIDR)", b.do, netip.AddrPortFrom(pa.ip, 8080), false},
		{"a's pod to b's pod, TCP 22 (b's pods keep the default group)", pa.doIn, netip.AddrPortFrom(pb.ip, 22), true},
		{"node a to b's pod, TCP 22", a.do, netip.AddrPortFrom(pb.ip, 22), true},
	} {
		if err := waitDial(x.from, x.dst, x.flows, 10*time.Second); err != nil {
			t.Errorf("%s: %v", x.what, err)
		}
	}

	// Bad ENIConfigs, chosen by the annotation (it wins over the label):
	// b keeps serving its pods, creates nothing, and says why.
	before := enisOf(b)
	for _, bad := range []struct{ obj, want string }{
		{eniConfig("bad-subnet", "10.0.0.0/24"), "not a subnet ID"},
		{eniConfig("foreign-sg", podsB, foreignSG), "security group " + foreignSG + " is in " + otherVPC},
		{eniConfig("wrong-az", podsA), "availability zone us-west-2a"},
		{"", `ENIConfig "nowhere"`},
	} {
		name := "nowhere"
		if bad.obj != "" {
			k.apply(t, bad.obj)
			name = strings.Trim(strings.Fields(strings.SplitN(bad.obj, "name: ", 2)[1])[0], `"}`)
		}
		k.retry(t, 30*time.Second, "", "annotate", "--overwrite", "node", "b", "k8s.amazonaws.com/eniConfig="+name)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(problem(b), bad.want) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if p := problem(b); !strings.Contains(p, bad.want) {
			t.Errorf("ENIConfig %s: status says %q, want %q", name, p, bad.want)
		}
	}
	if n := enisOf(b); n != before {
		t.Errorf("b went from %d to %d ENIs under unusable ENIConfigs", before, n)
	}
	if got, err := dialEcho(pa.doIn, netip.AddrPortFrom(pb.ip, 8080)); err != nil || !strings.HasPrefix(got, "pod-b") {
		t.Errorf("b's pod while its ENIConfig is unusable: %q, %v", got, err)
	}
	k.retry(t, 30*time.Second, "", "annotate", "node", "b", "k8s.amazonaws.com/eniConfig-")
	deadline := time.Now().Add(30 * time.Second)
	for problem(b) != "" && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if p := problem(b); p != "" {
		t.Errorf("b back on its AZ's ENIConfig still says %q", p)
	}

	// Max pods: the daemon and vpcctl agree (m5.large with custom
	// networking: 20 in the max-pods calculator).
	out, err := exec.Command(filepath.Join(bin, "vpcctl"), "max-pods", "--instance-type", "m5.large", "--custom-networking").CombinedOutput()
	if err != nil {
		t.Fatalf("vpcctl max-pods: %v: %s", err, out)
	}
	if got := a.introspect().GetMaxPods(); strings.TrimSpace(string(out)) != fmt.Sprint(got) || got != 20 {
		t.Errorf("max pods: daemon %d, vpcctl %q; want both 20", got, strings.TrimSpace(string(out)))
	}
	for _, p := range []*pod{pa, pb} {
		l := la
		if p == pb {
			l = lb
		}
		if err := p.del(l); err != nil {
			t.Error(err)
		}
	}
}
