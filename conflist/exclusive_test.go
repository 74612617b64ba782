package conflist

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A node that still has another CNI's configuration sorting before ours
// (migrating from the AWS VPC CNI's 10-aws.conflist, or Calico's own
// 10-calico.conflist): containerd and CRI-O use the first configuration in
// lexical order, so by default the installer renames those to
// <name>.vpcchain-disabled once ours is in place; configurations sorting
// after ours, and files that are not network configurations, stay. With
// VPCCHAIN_CNI_EXCLUSIVE=false nothing is renamed and the report names
// what the runtime uses instead.
func TestOtherConfigurations(t *testing.T) {
	others := map[string]string{
		"05-bridge.conf":      `{"cniVersion":"0.4.0","name":"b","type":"bridge"}`,
		"10-aws.conflist":     `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}`,
		"10-calico.conflist":  `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`,
		"99-loopback.conf":    `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`,
		"calico-kubeconfig":   "kubeconfig",
		"00-notes.txt":        "not a network configuration",
		"01-aws.conflist.bak": "a user's backup",
	}
	for _, exclusive := range []bool{true, false} {
		name := map[bool]string{true: "exclusive", false: "keep"}[exclusive]
		t.Run(name, func(t *testing.T) {
			d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
			f := newFixture(t)
			if err := os.MkdirAll(f.conf, 0o755); err != nil {
				t.Fatal(err)
			}
			for n, c := range others {
				if err := os.WriteFile(filepath.Join(f.conf, n), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			o := f.opts(d.socket)
			o.Keep = !exclusive
			r, err := Install(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			ents, _ := os.ReadDir(f.conf)
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			want := []string{"00-notes.txt", "01-aws.conflist.bak", "05-bridge.conf.vpcchain-disabled", "10-aws.conflist.vpcchain-disabled",
				"10-calico.conflist.vpcchain-disabled", "10-vpcchain.conflist", "99-loopback.conf", "calico-kubeconfig"}
			shadowing := []string{"05-bridge.conf", "10-aws.conflist", "10-calico.conflist"}
			if !exclusive {
				want = []string{"00-notes.txt", "01-aws.conflist.bak", "05-bridge.conf", "10-aws.conflist", "10-calico.conflist",
					"10-vpcchain.conflist", "99-loopback.conf", "calico-kubeconfig"}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("conf dir %v, want %v", got, want)
			}
			if exclusive && (!slices.Equal(r.SetAside, shadowing) || r.Shadowing != nil) ||
				!exclusive && (!slices.Equal(r.Shadowing, shadowing) || r.SetAside != nil) {
				t.Errorf("report %+v", r)
			}
			// Contents set aside are kept byte for byte.
			if exclusive {
				b, _ := os.ReadFile(filepath.Join(f.conf, "10-aws.conflist"+SetAsideSuffix))
				if string(b) != others["10-aws.conflist"] {
					t.Errorf("10-aws.conflist set aside as %q", b)
				}
			}
		})
	}
}

func TestExclusiveFromEnv(t *testing.T) {
	for v, want := range map[string]bool{"": true, "true": true, "false": false, "0": false} {
		got, err := ExclusiveFromEnv(func(string) (string, bool) { return v, true })
		if err != nil || got != want {
			t.Errorf("VPCCHAIN_CNI_EXCLUSIVE=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := ExclusiveFromEnv(func(string) (string, bool) { return "sometimes", true }); err == nil ||
		!strings.Contains(err.Error(), `VPCCHAIN_CNI_EXCLUSIVE="sometimes" is invalid`) {
		t.Errorf("bad value: %v", err)
	}
}
