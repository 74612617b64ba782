package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// hostnameNodes launches two nodes and checks, with run giving what
// `hostname` prints on a node, that each has its own name and that the
// machine's hostname is left alone.
func hostnameNodes(t *testing.T, run func(vn vpcsim.Node) string) {
	t.Helper()
	sim := startSim(t, 0)
	vpc, err := sim.Cloud.AddVPC("10.0.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := sim.Cloud.AddSubnet(vpc, "10.0.0.0/24", "us-west-2a", nil)
	if err != nil {
		t.Fatal(err)
	}
	machine, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"node-a", "node-b"} {
		vn, err := sim.LaunchNode(vpcsim.LaunchSpec{Name: name, InstanceType: "m5.large", SubnetID: sub})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(run(vn)); got != name {
			t.Errorf("hostname on node %s: %q, want %q", name, got, name)
		}
	}
	if now, _ := os.Hostname(); now != machine {
		t.Errorf("the machine's hostname changed from %q to %q", machine, now)
	}
}

// A simulated node is a host of its own: software started on it as the
// daemon tier starts the daemon (inNode) has the node's name for hostname,
// as a Kubernetes node's host has the node's name.
func TestNodeProcessesHaveTheNodesHostname(t *testing.T) {
	hostnameNodes(t, func(vn vpcsim.Node) string {
		out, err := inNode(vn, "hostname").CombinedOutput()
		if err != nil {
			t.Fatalf("hostname in %s: %v: %s", vn.Name, err, out)
		}
		return string(out)
	})
}
