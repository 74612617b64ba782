package conflist

import (
	"context"
	"fmt"
	"maps"
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

// writeFiles writes name -> content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkFiles fails unless dir holds exactly want (name -> content).
func checkFiles(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range ents {
		if e.IsDir() {
			got[e.Name()+"/"] = ""
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = string(b)
	}
	for n, c := range want {
		if g, ok := got[n]; !ok {
			t.Errorf("%s missing", n)
		} else if g != c {
			t.Errorf("%s holds %q, want %q", n, g, c)
		}
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			t.Errorf("%s unexpected", n)
		}
	}
}

// Exclusive mode sets aside only competing primary networks. A meta
// plugin's configuration sorting first (Multus's 00-multus.conf) is how
// that plugin works: it delegates each pod to the primary network, which
// then is ours. Files that are no network configuration stay whatever
// their name.
func TestExclusiveLeavesMetaPluginsAndOtherFiles(t *testing.T) {
	const bridge = `{"cniVersion":"0.4.0","name":"b","type":"bridge"}`
	stay := map[string]string{
		"00-multus.conf":     `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim","socketDir":"/host/run/multus/"}`,
		"00-multus.conflist": `{"cniVersion":"0.3.1","name":"multus-cni-network","plugins":[{"type":"multus","kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[]}]}`,
		"01-genie.conf":      `{"cniVersion":"0.3.0","name":"k8s-pod-network","type":"genie"}`,
		"02-broken.conf":     `{"cniVersion":"1.0.0", "type": `,
		"03-notes.json":      `{"owner":"ops","comment":"not a network configuration"}`,
		"04-empty.conflist":  `{"cniVersion":"1.0.0","name":"empty","plugins":[]}`,
		"05-list.conf":       `{"cniVersion":"1.0.0","name":"l","plugins":[{"type":"bridge"}]}`, // a list in a .conf: no type
		"06-readme.md":       "# notes",
		"07-bridge.conf.bak": bridge,
		"multus.d/":          "",
	}
	for _, exclusive := range []bool{true, false} {
		t.Run(map[bool]string{true: "exclusive", false: "keep"}[exclusive], func(t *testing.T) {
			d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
			f := newFixture(t)
			files := map[string]string{"08-bridge.conf": bridge}
			for n, c := range stay {
				if !strings.HasSuffix(n, "/") {
					files[n] = c
				}
			}
			writeFiles(t, f.conf, files)
			if err := os.Mkdir(filepath.Join(f.conf, "multus.d"), 0o755); err != nil {
				t.Fatal(err)
			}
			o := f.opts(d.socket)
			o.Keep = !exclusive
			r, err := Install(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := os.ReadFile(f.confPath())
			if err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(stay)
			want[DefaultConfName] = string(ours)
			if exclusive {
				want["08-bridge.conf"+SetAsideSuffix] = bridge
			} else {
				want["08-bridge.conf"] = bridge
			}
			checkFiles(t, f.conf, want)
			if exclusive && !slices.Equal(r.SetAside, []string{"08-bridge.conf"}) ||
				!exclusive && !slices.Equal(r.Shadowing, []string{"08-bridge.conf"}) {
				t.Errorf("report %+v: only 08-bridge.conf competes with ours", r)
			}
		})
	}
}

// Uninstalling (kubectl delete of the manifest runs it in the sidecar's
// preStop; or vpcchain-install --uninstall) puts back what the install set
// aside, before ours goes: the node is never left with no network
// configuration. A configuration written again since under the same name
// wins: the set-aside copy then stays. Only names the install could have
// made are restored.
func TestUninstallRestoresSetAside(t *testing.T) {
	const (
		aws     = `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}`
		calico  = `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`
		calico2 = `{"cniVersion":"1.0.0","name":"k8s-pod-network","plugins":[{"type":"calico","mtu":1450}]}`
	)
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
	f := newFixture(t)
	writeFiles(t, f.conf, map[string]string{"10-aws.conflist": aws, "10-calico.conflist": calico, "00-notes.txt": "notes"})
	if _, err := Install(context.Background(), f.opts(d.socket)); err != nil {
		t.Fatal(err)
	}
	// Calico's installer writes its configuration again meanwhile; a
	// user's file happens to end like ours.
	writeFiles(t, f.conf, map[string]string{"10-calico.conflist": calico2, "notes.txt" + SetAsideSuffix: "a user's"})
	var logs []string
	err := Uninstall(context.Background(), UninstallOptions{CNIConfDir: f.conf,
		Logf: func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) }})
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, f.conf, map[string]string{
		"10-aws.conflist":                     aws,
		"10-calico.conflist":                  calico2,
		"10-calico.conflist" + SetAsideSuffix: calico,
		"00-notes.txt":                        "notes",
		"notes.txt" + SetAsideSuffix:          "a user's",
	})
	if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "10-aws.conflist") }) ||
		!slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "10-calico.conflist") }) {
		t.Errorf("logs %q: want what was restored and what was kept set aside named", logs)
	}
	// Again: nothing left to do.
	if err := Uninstall(context.Background(), UninstallOptions{CNIConfDir: f.conf}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.conf, "10-aws.conflist")); err != nil {
		t.Error(err)
	}
}

// A meta plugin's configuration an earlier install set aside (before it
// knew better) is put back by the next install; a competing one is not.
func TestInstallRestoresSetAsideMetaPlugin(t *testing.T) {
	const (
		multus = `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}`
		aws    = `{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}`
	)
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
	f := newFixture(t)
	writeFiles(t, f.conf, map[string]string{"00-multus.conf" + SetAsideSuffix: multus, "10-aws.conflist" + SetAsideSuffix: aws})
	if _, err := Install(context.Background(), f.opts(d.socket)); err != nil {
		t.Fatal(err)
	}
	ours, _ := os.ReadFile(f.confPath())
	checkFiles(t, f.conf, map[string]string{"00-multus.conf": multus, "10-aws.conflist" + SetAsideSuffix: aws, DefaultConfName: string(ours)})
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
