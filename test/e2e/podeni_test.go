//go:build peer

package e2e

// Security groups for pods against the unmodified VPC resource controller
// v1.8.2 (`make peer-tools`), the controller EKS runs: it reads our
// daemon's CNINode, attaches a trunk ENI through the simulator's EC2, and
// gives a pod a branch ENI that our daemon's ADD answers with.
//
//	VPCCHAIN_BIN=bin go test -tags peer -v -run 'TestPodENIController$' ./test/e2e/

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/podeni"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// m5BranchLimit is the branch ENIs a trunk of an m5.large takes: 9, EC2's
// published limit ("Maximum branch interfaces" in the EC2 user guide's
// table for ENI trunking), the controller's pkg/aws/vpc/limits.go and our
// internal/instancelimits table.
const m5BranchLimit = 9

// controllerUser is the user the controller's annotation webhook lets
// change the pod-eni annotation (EKS's name for it).
const controllerUser = "eks:vpc-resource-controller"

func TestPodENIController(t *testing.T) {
	b := peerBinaries(t)
	rc := filepath.Join(binDir(t), "tools", "vpc-resource-controller")
	if _, err := os.Stat(rc); err != nil {
		t.Fatalf("%s missing: run `make peer-tools`: %v", rc, err)
	}
	rcModule, err := awscnipeer.ModuleDirIn(awscnipeer.ControllerGoMod, awscnipeer.Controller)
	if err != nil {
		t.Fatal(err)
	}
	c := newSimVPC(t, "10.0.0.0/20")
	n := c.addNode("m5.large", "sgp-1")
	k := startControlPlaneWith(t, n, b.etcd, b.apiserver, b.kubectl,
		controlPlaneOpts{users: map[string]string{controllerUser: "system:masters"}})

	installControllerObjects(t, k, rcModule)
	registerPeerNode(t, k, n)

	// Our daemon, with security groups for pods.
	n.env = append(n.env, "ENABLE_POD_ENI=true", "MY_NODE_NAME="+n.name, "KUBECONFIG="+k.kubeconfigFor("admin", k.server),
		"WARM_IP_TARGET=30") // asks for every ENI it may have
	n.start()
	t.Cleanup(n.stop)
	n.waitReady()

	// The controller, as on a worker node (no --role-arn: EC2 with the
	// instance's credentials), EC2 and IMDS pointed at the simulator.
	startVPCResourceController(t, k, n, rc, rcModule, c.vpc)

	// The CNINode the controller made, with our feature.
	waitFor(t, 90*time.Second, "CNINode "+n.name+" with "+podeni.FeatureSGP, n.alive, func() error {
		out, err := k.kubectl("", "get", "cninodes.vpcresources.k8s.aws", n.name, "-o", "jsonpath={.spec.features[*].name}")
		if err != nil || !strings.Contains(out, podeni.FeatureSGP) {
			return fmt.Errorf("features %q, %v", out, err)
		}
		return nil
	})

	// The trunk: attached to the instance, in the slot our pool left.
	ec2c, _ := inNodeSDK(c.sim, n.vn)
	var trunk ec2types.NetworkInterface
	waitFor(t, 90*time.Second, "a trunk ENI on "+n.vn.InstanceID, n.alive, func() error {
		out, err := ec2c.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{Filters: []ec2types.Filter{
			{Name: aws.String("attachment.instance-id"), Values: []string{n.vn.InstanceID}},
			{Name: aws.String("interface-type"), Values: []string{"trunk"}}}})
		if err != nil || len(out.NetworkInterfaces) != 1 {
			return fmt.Errorf("trunks %v, %v", out, err)
		}
		trunk = out.NetworkInterfaces[0]
		if trunk.Attachment == nil || trunk.Attachment.Status != ec2types.AttachmentStatusAttached {
			return fmt.Errorf("trunk %s not attached: %+v", aws.ToString(trunk.NetworkInterfaceId), trunk.Attachment)
		}
		return nil
	})
	trunkID := aws.ToString(trunk.NetworkInterfaceId)
	var tags []string
	for _, tg := range trunk.TagSet {
		tags = append(tags, aws.ToString(tg.Key)+"="+aws.ToString(tg.Value))
	}
	t.Logf("trunk %s at device %d, tags %v", trunkID, aws.ToInt32(trunk.Attachment.DeviceIndex), tags)
	before := eniSnapshot(t, c, trunkID)

	// The extended resource, at the controller's count for m5.large.
	waitFor(t, 60*time.Second, "vpc.amazonaws.com/pod-eni on "+n.name, n.alive, func() error {
		out, err := k.kubectl("", "get", "node", n.name, "-o", `jsonpath={.status.capacity.vpc\.amazonaws\.com/pod-eni}`)
		if err != nil || strings.TrimSpace(out) != fmt.Sprint(m5BranchLimit) {
			return fmt.Errorf("capacity %q, %v", out, err)
		}
		return nil
	})

	// Our pool: the primary ENI and one more, never the trunk's slot, and
	// the daemon reports the trunk.
	var intro *ipamv1.IntrospectReply
	waitFor(t, 30*time.Second, "the daemon to see the trunk", n.alive, func() error {
		intro = introspect(t, n)
		if intro.GetPodEni().GetTrunk().GetId() != trunkID {
			return fmt.Errorf("status: pod ENI %v, want the trunk %s", intro.GetPodEni(), trunkID)
		}
		return nil
	})
	if len(intro.GetEnis()) != 2 {
		t.Errorf("the pool has %d ENIs, want 2 (m5.large's 3, less the trunk's)", len(intro.GetEnis()))
	}
	for _, e := range intro.GetEnis() {
		if e.GetId() == trunkID {
			t.Fatalf("the pool took the trunk %s", trunkID)
		}
	}

	// A SecurityGroupPolicy, and a pod it selects, bound to the node.
	sg, err := c.sim.Cloud.AddSecurityGroup(c.vpc)
	if err != nil {
		t.Fatal(err)
	}
	k.retry(t, 30*time.Second, "", "create", "namespace", "sgp-e2e")
	// No controller-manager makes the namespace's service account.
	k.retry(t, 30*time.Second, "", "-n", "sgp-e2e", "create", "serviceaccount", "default")
	k.apply(t, fmt.Sprintf(`apiVersion: vpcresources.k8s.aws/v1beta1
kind: SecurityGroupPolicy
metadata: {name: db, namespace: sgp-e2e}
spec:
  podSelector: {matchLabels: {app: db}}
  securityGroups: {groupIds: [%s]}
`, sg))
	k.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: sgp-e2e, labels: {app: db}}
spec:
  nodeName: %s
  containers: [{name: db, image: "db:1"}]
`, n.name))
	// The webhook asked for the resource.
	if out, _ := k.kubectl("", "-n", "sgp-e2e", "get", "pod", "db-0", "-o", `jsonpath={.spec.containers[0].resources.limits.vpc\.amazonaws\.com/pod-eni}`); out != "1" {
		t.Fatalf("the controller's webhook did not add the resource: limits %q", out)
	}
	var ann string
	waitFor(t, 90*time.Second, "the pod's "+podeni.ResourceName+" annotation", n.alive, func() error {
		out, err := k.kubectl("", "-n", "sgp-e2e", "get", "pod", "db-0", "-o", `jsonpath={.metadata.annotations.vpc\.amazonaws\.com/pod-eni}`)
		if err != nil || out == "" {
			return fmt.Errorf("annotation %q, %v", out, err)
		}
		ann = out
		return nil
	})
	br, err := podeni.ParseAnnotation(ann)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("annotation: %s", ann)

	// EC2's view: the branch associated with the trunk by that VLAN ID,
	// with the policy's security group.
	assocs, err := ec2c.DescribeTrunkInterfaceAssociations(context.Background(), &ec2.DescribeTrunkInterfaceAssociationsInput{
		Filters: []ec2types.Filter{{Name: aws.String("trunk-interface-association.trunk-interface-id"), Values: []string{trunkID}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(assocs.InterfaceAssociations) != 1 || aws.ToString(assocs.InterfaceAssociations[0].BranchInterfaceId) != br.ENIID ||
		int(aws.ToInt32(assocs.InterfaceAssociations[0].VlanId)) != br.VLANID {
		t.Fatalf("trunk associations %+v, want %s on VLAN %d", assocs.InterfaceAssociations, br.ENIID, br.VLANID)
	}
	bv, ok := c.sim.Cloud.ENI(br.ENIID)
	if !ok || strings.Join(bv.Groups, ",") != sg || bv.PrimaryIP.String() != br.IPv4 || bv.MAC != br.MAC {
		t.Fatalf("branch in EC2: %+v (found %v), want group %s, %s, %s", bv, ok, sg, br.IPv4, br.MAC)
	}

	// Our daemon's ADD for that pod: the branch and its trunk, no address.
	cl := n.client()
	defer cl.Close()
	reply, err := cl.Add(context.Background(), &ipamv1.AddRequest{Key: &ipamv1.Key{Network: "vpcchain", ContainerId: "sgp0", Ifname: "eth0"},
		PodNamespace: "sgp-e2e", PodName: "db-0", Netns: "/var/run/netns/none"})
	if err != nil {
		t.Fatal(err)
	}
	got := reply.GetBranch()
	if reply.GetAllocation() != nil || got.GetEniId() != br.ENIID || int(got.GetVlanId()) != br.VLANID || got.GetIp() != br.IPv4 ||
		got.GetMac() != br.MAC || got.GetTrunkEniId() != trunkID || got.GetTrunkMac() != aws.ToString(trunk.MacAddress) ||
		got.GetSubnetGateway() != "10.0.0.1" || got.GetSubnetCidr() != "10.0.0.0/20" {
		t.Fatalf("ADD's reply %v, want the branch %+v on trunk %s", reply, br, trunkID)
	}
	out, err := exec.Command(filepath.Join(binDir(t), "vpcctl"), "status", "--socket", n.socket).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^-\s+`+br.ENIID+`\s+`+fmt.Sprint(br.VLANID)+`\s+.*branch of pod sgp-e2e/db-0$`).Match(out) ||
		!regexp.MustCompile(`(?m)^2\s+`+trunkID+`\s+.*trunk$`).Match(out) {
		t.Errorf("vpcctl status: %v\n%s", err, out)
	}
	t.Logf("vpcctl status:\n%s", out)

	// Deleting the pod deletes the branch (after the controller's
	// cool-down, 30 s here); the trunk was never touched by our daemon.
	if _, err := k.kubectl("", "-n", "sgp-e2e", "delete", "pod", "db-0", "--grace-period=0", "--force"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "the branch "+br.ENIID+" deleted", n.alive, func() error {
		out, err := ec2c.DescribeNetworkInterfaces(context.Background(), &ec2.DescribeNetworkInterfacesInput{
			Filters: []ec2types.Filter{{Name: aws.String("network-interface-id"), Values: []string{br.ENIID}}}})
		if err != nil || len(out.NetworkInterfaces) != 0 {
			return fmt.Errorf("EC2 still lists it (%v)", err)
		}
		return nil
	})
	if after := eniSnapshot(t, c, trunkID); after != before {
		t.Errorf("the trunk changed: %s, was %s", after, before)
	}
}

// installControllerObjects makes what the resource controller reads: its
// CRDs (SecurityGroupPolicy, CNINode) from its module, the aws-node service
// account, and its cool-down (the shortest it takes) in the AWS VPC CNI's
// ConfigMap, where it reads it.
func installControllerObjects(t testing.TB, k *kube, rcModule string) {
	t.Helper()
	for _, f := range []string{"vpcresources.k8s.aws_securitygrouppolicies.yaml", "vpcresources.k8s.aws_cninodes.yaml"} {
		if _, err := k.kubectl("", "apply", "--server-side", "-f", filepath.Join(rcModule, "config/crd/bases", f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.kubectl("", "wait", "--for", "condition=established", "--timeout=60s", "crd", "--all"); err != nil {
		t.Fatal(err)
	}
	k.retry(t, 60*time.Second, "", "-n", "kube-system", "create", "serviceaccount", "aws-node")
	k.apply(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: amazon-vpc-cni, namespace: kube-system}
data: {branch-eni-cooldown: "30"}
`)
}

// alive fails once the node's daemon has exited.
func (n *node) alive() error {
	n.mu.Lock()
	exited := n.exited
	n.mu.Unlock()
	select {
	case <-exited:
		return fmt.Errorf("the daemon of %s exited:\n%s", n.name, tailFile(n.logPath, 40))
	default:
		return nil
	}
}

func introspect(t *testing.T, n *node) *ipamv1.IntrospectReply {
	t.Helper()
	cl := n.client()
	defer cl.Close()
	r, err := cl.Introspect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// eniSnapshot is what must not change on an ENI our daemon leaves alone.
func eniSnapshot(t *testing.T, c *cluster, id string) string {
	t.Helper()
	v, ok := c.sim.Cloud.ENI(id)
	if !ok {
		return "deleted"
	}
	return fmt.Sprintf("%s attachment=%s dev=%d primary=%s secondary=%v prefixes=%v groups=%v",
		v.Status, v.AttachmentID, v.DeviceIndex, v.PrimaryIP, v.Secondary, v.Prefixes, v.Groups)
}

// startVPCResourceController runs the controller in the node's network
// (where the API server is): its webhook serves 127.0.0.1:9443 with a
// certificate of a CA made here, which the webhook configurations (the
// module's config/webhook/manifests.yaml, its service reference replaced
// by that URL) give the API server.
func startVPCResourceController(t *testing.T, k *kube, n *node, bin, module, vpc string) {
	t.Helper()
	dir := t.TempDir()
	// controller-runtime's default certificate directory is under
	// os.TempDir(): TMPDIR puts it here.
	certDir := filepath.Join(dir, "k8s-webhook-server", "serving-certs")
	caPEM := writeServingCert(t, certDir, net.ParseIP("127.0.0.1"))
	hooks, err := os.ReadFile(filepath.Join(module, "config/webhook/manifests.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	svc := regexp.MustCompile(`(?m)^    service:\n      name: webhook-service\n      namespace: system\n      path: (\S+)$`)
	if len(svc.FindAll(hooks, -1)) != 3 {
		t.Fatalf("the controller's webhook manifest changed shape:\n%s", hooks)
	}
	hooks = svc.ReplaceAll(hooks, []byte("    url: https://127.0.0.1:9443$1\n    caBundle: "+base64.StdEncoding.EncodeToString(caPEM)))
	k.apply(t, string(hooks))

	env := []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + dir, "HOME=" + dir,
		"KUBECONFIG=" + k.kubeconfigFor(controllerUser, k.server),
		"AWS_ACCESS_KEY_ID=AKIDE2E", "AWS_SECRET_ACCESS_KEY=secret",
		"AWS_ENDPOINT_URL_EC2=" + n.vn.EC2Endpoint, "AWS_EC2_METADATA_SERVICE_ENDPOINT=" + n.vn.IMDSEndpoint}
	p := startInNode(t, n, dir, "vpc-resource-controller", env, bin, "--cluster-name=sgp", "--vpc-id="+vpc,
		"--leader-elect=false", "--log-level=debug", "--metrics-bind-address=127.0.0.1:8081", "--introspect-bind-addr=127.0.0.1:22775")
	waitFor(t, 60*time.Second, "the controller's health", p.running, func() error {
		_, err := httpGetIn(n, "127.0.0.1:61779", "/healthz")
		return err
	})
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("VPCCHAIN_E2E_LOGS") != "" {
			t.Logf("controller log:\n%s", tailFile(p.log, 80))
		}
	})
}

// writeServingCert writes tls.crt and tls.key for ip, signed by a CA it
// makes, into dir, and returns the CA's certificate (PEM).
func writeServingCert(t *testing.T, dir string, ip net.IP) []byte {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caDER, der, keyDER := signedPair(t, "webhook-ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "vpc-resource-controller-webhook"}, IPAddresses: []net.IP{ip},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, 24*time.Hour)
	for f, b := range map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}
