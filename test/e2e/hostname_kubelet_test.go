//go:build kubelet

package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// containerd and the kubelet of a node (started with nodeNSArgs) have the
// node's name for hostname: a hostNetwork pod shares containerd's UTS
// namespace and reports that name, which Kubernetes' service checks with
// hostNetwork endpoints compare with the node's name.
func TestNodeRuntimeHasTheNodesHostname(t *testing.T) {
	dir := t.TempDir()
	hostnameNodes(t, func(vn vpcsim.Node) string {
		out := filepath.Join(dir, vn.Name+".hostname")
		p := &nodeProc{t: t, name: "hostname", log: filepath.Join(dir, vn.Name+".log"),
			args: append(nodeNSArgs(vn, "--"), "sh", "-ec", "hostname > "+out)}
		p.start()
		defer p.stop()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("hostname in %s did not finish", vn.Name)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("hostname in %s: %v\n%s", vn.Name, err, tailFile(p.log, 10))
		}
		return string(b)
	})
}
