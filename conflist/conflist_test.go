package conflist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// fakeDaemon serves only the standard gRPC health service on a unix socket,
// as vpcchaind does.
type fakeDaemon struct {
	socket string
	health *health.Server
}

func startFakeDaemon(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) *fakeDaemon {
	t.Helper()
	// Short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "vcc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "ipamd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", st)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return &fakeDaemon{socket: sock, health: hs}
}

func (d *fakeDaemon) set(st healthpb.HealthCheckResponse_ServingStatus) {
	d.health.SetServingStatus("", st)
}

// fixture: a binary source dir with fake plugins, empty CNI bin and conf dirs.
type fixture struct {
	src, bin, conf string
}

func newFixture(t *testing.T, plugins ...string) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{src: filepath.Join(root, "src"), bin: filepath.Join(root, "opt/cni/bin"), conf: filepath.Join(root, "etc/cni/net.d")}
	if err := os.MkdirAll(f.src, 0o755); err != nil {
		t.Fatal(err)
	}
	if len(plugins) == 0 {
		plugins = []string{TypeBridge, TypeIPAM, TypeSNAT, TypePortmap, TypeBandwidth, "loopback"}
	}
	for _, p := range plugins {
		// 0644 in the source: the installer must make them 0755.
		if err := os.WriteFile(filepath.Join(f.src, p), []byte("#!/bin/sh\n# fake "+p+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f fixture) opts(sock string) InstallOptions {
	conf := DefaultOptions()
	conf.Socket = sock
	conf.VethPrefix = "cali"
	conf.MTU = 1500
	conf.SNATNodeConfig = "/run/vc/snat.json"
	conf.Bandwidth = true
	return InstallOptions{
		BinSrc: f.src, CNIBinDir: f.bin, CNIConfDir: f.conf,
		Conf: conf, WaitTimeout: 5 * time.Second, PollInterval: 20 * time.Millisecond,
	}
}

func (f fixture) confPath() string { return filepath.Join(f.conf, DefaultConfName) }

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists (or stat error %v), want it absent", p, err)
	}
}

func TestInstallWaitsForDaemonThenWritesConflist(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_NOT_SERVING)
	f := newFixture(t)
	o := f.opts(d.socket)

	// Daemon answers NOT_SERVING: Install gives up, binaries are there, no conflist.
	short := o
	short.WaitTimeout = time.Second
	_, err := Install(context.Background(), short)
	if !errors.Is(err, ErrNotServing) {
		t.Fatalf("Install with a NOT_SERVING daemon: err = %v, want ErrNotServing", err)
	}
	mustNotExist(t, f.confPath())
	// loopback too: the runtime runs it for every sandbox, and a bare node has none.
	for _, b := range []string{TypeBridge, TypeIPAM, TypeSNAT, TypePortmap, TypeBandwidth, "loopback"} {
		fi, err := os.Stat(filepath.Join(f.bin, b))
		if err != nil {
			t.Fatalf("binary %s not installed: %v", b, err)
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("binary %s mode %v, want 0755", b, fi.Mode().Perm())
		}
	}

	// Install waits; the conflist appears only after the daemon turns SERVING.
	done := make(chan error, 1)
	var rep Report
	go func() {
		var err error
		rep, err = Install(context.Background(), o)
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Install returned (%v) while the daemon was NOT_SERVING", err)
	default:
	}
	mustNotExist(t, f.confPath())
	d.set(healthpb.HealthCheckResponse_SERVING)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Install: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Install did not return after the daemon turned SERVING")
	}
	if !rep.ConfWritten || rep.Conflist != f.confPath() {
		t.Errorf("report %+v: want the conflist written at %s", rep, f.confPath())
	}
	fi, err := os.Stat(f.confPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("conflist mode %v, want 0644", fi.Mode().Perm())
	}
	data, err := os.ReadFile(f.confPath())
	if err != nil {
		t.Fatal(err)
	}
	checkConflist(t, data, o.Conf)
	// No temporary file left behind.
	for _, dir := range []string{f.bin, f.conf} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), tmpMarker) {
				t.Errorf("temporary file %s left in %s", e.Name(), dir)
			}
		}
	}
}

// checkConflist decodes data as a runtime does and checks the rendered values.
func checkConflist(t *testing.T, data []byte, o Options) {
	t.Helper()
	cl, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatalf("libcni cannot load the conflist: %v\n%s", err, data)
	}
	if cl.Name != o.Name || cl.CNIVersion != o.CNIVersion {
		t.Errorf("name %q cniVersion %q, want %s %s", cl.Name, cl.CNIVersion, o.Name, o.CNIVersion)
	}
	var types []string
	for _, p := range cl.Plugins {
		types = append(types, p.Network.Type)
	}
	// The runtime execs these names from the CNI bin dir: our binaries
	// (plugins/vpc-bridge, plugins/vpc-snat) and the upstream plugins.
	want := []string{"vpc-bridge", "vpc-snat", "portmap"}
	if o.Bandwidth {
		want = append(want, "bandwidth")
	}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Fatalf("plugins %v, want %v", types, want)
	}
	var bridge struct {
		VethPrefix string `json:"vethPrefix"`
		MTU        int    `json:"mtu"`
		PodSGMode  string `json:"podSGEnforcingMode"`
		IPAM       struct {
			Type   string `json:"type"`
			Socket string `json:"socket"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(cl.Plugins[0].Bytes, &bridge); err != nil {
		t.Fatal(err)
	}
	if bridge.VethPrefix != o.VethPrefix || bridge.MTU != o.MTU || bridge.IPAM.Type != "vpc-ipam" || bridge.IPAM.Socket != o.Socket {
		t.Errorf("vpc-bridge = %+v, want prefix %q mtu %d ipam vpc-ipam socket %q", bridge, o.VethPrefix, o.MTU, o.Socket)
	}
	// vpc-bridge's default is strict: only standard is written out.
	if want := map[string]string{"standard": "standard"}[o.PodSGMode]; bridge.PodSGMode != want {
		t.Errorf("vpc-bridge podSGEnforcingMode %q, want %q (options %q)", bridge.PodSGMode, want, o.PodSGMode)
	}
	var snat struct {
		NodeConfig string `json:"nodeConfig"`
	}
	if err := json.Unmarshal(cl.Plugins[1].Bytes, &snat); err != nil {
		t.Fatal(err)
	}
	if snat.NodeConfig != o.SNATNodeConfig {
		t.Errorf("vpc-snat nodeConfig %q, want %q", snat.NodeConfig, o.SNATNodeConfig)
	}
	if !cl.Plugins[2].Network.Capabilities["portMappings"] {
		t.Errorf("portmap capabilities %v, want portMappings", cl.Plugins[2].Network.Capabilities)
	}
	if o.Bandwidth && !cl.Plugins[3].Network.Capabilities["bandwidth"] {
		t.Errorf("bandwidth capabilities %v, want bandwidth", cl.Plugins[3].Network.Capabilities)
	}
}

func TestSecondInstallIsNoOp(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
	f := newFixture(t)
	o := f.opts(d.socket)
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	// Age every file so that any rewrite shows in the mtime.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	files := []string{f.confPath()}
	for _, b := range []string{TypeBridge, TypeIPAM, TypeSNAT, TypePortmap, TypeBandwidth} {
		files = append(files, filepath.Join(f.bin, b))
	}
	for _, p := range files {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Installed) != 0 || rep.ConfWritten || len(rep.Unchanged) != 6 {
		t.Errorf("second install report %+v, want nothing written, 6 unchanged", rep)
	}
	for _, p := range files {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s rewritten by the second install (mtime %v, want %v)", p, fi.ModTime(), old)
		}
	}

	// A changed binary and a changed option: only those files are rewritten.
	if err := os.WriteFile(filepath.Join(f.src, TypeSNAT), []byte("new snat"), 0o755); err != nil {
		t.Fatal(err)
	}
	o.Conf.MTU = 9001
	rep, err = Install(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Installed, ",") != TypeSNAT || !rep.ConfWritten {
		t.Errorf("report %+v, want only vpc-snat installed and the conflist rewritten", rep)
	}
	data, _ := os.ReadFile(f.confPath())
	checkConflist(t, data, o.Conf)
	if got, _ := os.ReadFile(filepath.Join(f.bin, TypeSNAT)); string(got) != "new snat" {
		t.Errorf("vpc-snat content %q, want the new one", got)
	}
}

func TestInstallRefusesMissingPluginOrDaemon(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)

	// bandwidth enabled but available nowhere: no conflist naming it.
	f := newFixture(t, TypeBridge, TypeIPAM, TypeSNAT, TypePortmap)
	if _, err := Install(context.Background(), f.opts(d.socket)); err == nil || !strings.Contains(err.Error(), "bandwidth") {
		t.Fatalf("Install without a bandwidth binary: err = %v, want one naming bandwidth", err)
	}
	mustNotExist(t, f.confPath())

	// A required binary missing from the source.
	f = newFixture(t, TypeBridge, TypeSNAT, TypePortmap, TypeBandwidth)
	if _, err := Install(context.Background(), f.opts(d.socket)); err == nil || !strings.Contains(err.Error(), "vpc-ipam") {
		t.Fatalf("Install without vpc-ipam: err = %v, want one naming vpc-ipam", err)
	}
	mustNotExist(t, f.confPath())

	// No daemon at all.
	f = newFixture(t)
	o := f.opts(filepath.Join(t.TempDir(), "none.sock"))
	o.WaitTimeout = 200 * time.Millisecond
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Install without a daemon: err = %v, want one saying the socket is missing", err)
	}
	mustNotExist(t, f.confPath())

	// Binaries only (the init container): no wait, no conflist.
	f = newFixture(t)
	o = f.opts(filepath.Join(t.TempDir(), "none.sock"))
	o.SkipConflist = true
	rep, err := Install(context.Background(), o)
	if err != nil || len(rep.Installed) != 6 {
		t.Fatalf("binaries-only install: %+v, %v", rep, err)
	}
	mustNotExist(t, f.confPath())
}

func TestUninstallLeavesForeignFiles(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
	f := newFixture(t)
	o := f.opts(d.socket)
	if _, err := Install(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	foreignConf := filepath.Join(f.conf, "05-other.conflist")
	foreignBin := filepath.Join(f.bin, "host-local")
	for _, p := range []string{foreignConf, foreignBin} {
		if err := os.WriteFile(p, []byte("not ours"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Conflist only.
	if err := Uninstall(context.Background(), UninstallOptions{CNIConfDir: f.conf, CNIBinDir: f.bin}); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, f.confPath())
	for _, p := range []string{foreignConf, foreignBin, filepath.Join(f.bin, TypeBridge)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	// Again, with binaries: idempotent; upstream plugins and foreign files stay.
	if err := Uninstall(context.Background(), UninstallOptions{CNIConfDir: f.conf, CNIBinDir: f.bin, RemoveBinaries: true}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{TypeBridge, TypeIPAM, TypeSNAT} {
		mustNotExist(t, filepath.Join(f.bin, b))
	}
	for _, p := range []string{foreignConf, foreignBin, filepath.Join(f.bin, TypePortmap), filepath.Join(f.bin, TypeBandwidth)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
}

func TestCheckHealth(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_NOT_SERVING)
	st, err := CheckHealth(context.Background(), d.socket)
	if st != healthpb.HealthCheckResponse_NOT_SERVING || !errors.Is(err, ErrNotServing) {
		t.Errorf("NOT_SERVING daemon: %v, %v", st, err)
	}
	d.set(healthpb.HealthCheckResponse_SERVING)
	if st, err := CheckHealth(context.Background(), d.socket); st != healthpb.HealthCheckResponse_SERVING || err != nil {
		t.Errorf("SERVING daemon: %v, %v", st, err)
	}
	notSock := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notSock, nil, 0o600)
	if _, err := CheckHealth(context.Background(), notSock); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: err = %v, want 'not a socket'", err)
	}
}

// wantDefaults are the options of a node with no configuration, written out
// from the values the other components default to: the daemon's
// AWS_VPC_K8S_CNI_VETHPREFIX "eni" and AWS_VPC_ENI_MTU 9001 (the AWS VPC
// CNI's defaults, daemon/config's TestDefaults), its socket
// /var/run/vpcchain/ipamd.sock and SNAT node config in the same state dir,
// and CNI version 1.0.0, the newest containerd 1.6 and 1.7 accept; with the
// policy hook, a 10 s wait for Felix (README's table).
var wantDefaults = Options{Name: "vpcchain", CNIVersion: "1.0.0", VethPrefix: "eni", MTU: 9001,
	Socket: "/var/run/vpcchain/ipamd.sock", SNATNodeConfig: "/var/run/vpcchain/snat.json",
	PolicyWait: 10 * time.Second, PodSGMode: "strict"}

func TestRenderDefaultsAndOptionalPlugins(t *testing.T) {
	data, err := Render(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	checkConflist(t, data, wantDefaults)
	if strings.Contains(string(data), "policy-hook") || strings.Contains(string(data), `"timeout"`) {
		t.Errorf("default conflist has policy-hook or an ipam timeout:\n%s", data)
	}
	o := DefaultOptions()
	o.PolicyHook = true
	o.IPAMTimeout = 5 * time.Second
	data, err = Render(o)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cl.Plugins) != 4 || cl.Plugins[2].Network.Type != "policy-hook" {
		t.Fatalf("with policy hook: %s", data)
	}
	// policy-hook's config (plugins/policy-hook/config.go): the same veth
	// prefix as vpc-bridge, the kubeconfig the installer writes (the path
	// conflist/calico-policy-only.md names) and the default 10 s wait for
	// Felix, not strict.
	const kubeconfig = "/etc/cni/net.d/vpcchain-kubeconfig"
	hookEntry := func(data []byte) map[string]any {
		t.Helper()
		cl, err := libcni.ConfListFromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		var hook map[string]any
		if err := json.Unmarshal(cl.Plugins[2].Bytes, &hook); err != nil {
			t.Fatal(err)
		}
		return hook
	}
	hook := hookEntry(data)
	wait, _ := hook["waitForPolicy"].(map[string]any)
	if hook["vethPrefix"] != o.VethPrefix || hook["kubeconfig"] != kubeconfig || len(hook) != 4 ||
		wait["timeout"] != "10s" || wait["strict"] != false || len(wait) != 2 {
		t.Errorf("policy-hook entry %v, want type, vethPrefix %q, kubeconfig %q and waitForPolicy {10s, not strict}", hook, o.VethPrefix, kubeconfig)
	}
	// No wait: no waitForPolicy section; strict is carried.
	o2 := o
	o2.PolicyWait = 0
	if d, err := Render(o2); err != nil || hookEntry(d)["waitForPolicy"] != nil {
		t.Errorf("wait 0: %v\n%s", err, d)
	}
	o2.PolicyWait, o2.PolicyWaitStrict = 90*time.Second, true
	if d, err := Render(o2); err != nil || fmt.Sprint(hookEntry(d)["waitForPolicy"]) != "map[strict:true timeout:1m30s]" {
		t.Errorf("wait 90s strict: %v\n%s", err, d)
	}
	if !strings.Contains(string(data), `"timeout": "5s"`) {
		t.Errorf("ipam timeout missing:\n%s", data)
	}
	if again, _ := Render(o); string(again) != string(data) {
		t.Error("Render is not deterministic")
	}
}

// IPv6 mode: vpc-egress-v4 right after vpc-bridge, delegating to
// host-local on 169.254.172.0/22 (the AWS VPC CNI's egress range) in its own
// data dir; the binaries it needs are required at install.
func TestRenderIPv6(t *testing.T) {
	o, err := OptionsFromEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"ENABLE_IPv6": "true", "ENABLE_IPv4": "false", "AWS_VPC_ENI_MTU": "1500"}[k]
		return v, ok
	})
	if err != nil || !o.IPv6 {
		t.Fatalf("options %+v, %v", o, err)
	}
	data, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range cl.Plugins {
		types = append(types, p.Network.Type)
	}
	if strings.Join(types, ",") != "vpc-bridge,vpc-egress-v4,vpc-snat,portmap" {
		t.Fatalf("plugins %v", types)
	}
	var egress struct {
		MTU  int `json:"mtu"`
		IPAM struct {
			Type    string                `json:"type"`
			Ranges  [][]map[string]string `json:"ranges"`
			DataDir string                `json:"dataDir"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(cl.Plugins[1].Bytes, &egress); err != nil {
		t.Fatal(err)
	}
	if egress.MTU != 1500 || egress.IPAM.Type != "host-local" || fmt.Sprint(egress.IPAM.Ranges) != "[[map[subnet:169.254.172.0/22]]]" ||
		egress.IPAM.DataDir != "/var/lib/cni/vpc-egress-v4" {
		t.Errorf("egress entry %+v", egress)
	}
	if got := strings.Join(o.PluginTypes(), ","); got != "vpc-bridge,vpc-ipam,vpc-egress-v4,host-local,vpc-snat,portmap" {
		t.Errorf("plugin types %s", got)
	}
}

func TestRenderValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"mtu too small", func(o *Options) { o.MTU = 575 }, "mtu 575"},
		{"mtu too large", func(o *Options) { o.MTU = 9002 }, "mtu 9002"},
		{"mtu zero", func(o *Options) { o.MTU = 0 }, "mtu 0"},
		{"prefix too long", func(o *Options) { o.VethPrefix = "abcde" }, `"abcde"`},
		{"prefix empty", func(o *Options) { o.VethPrefix = "" }, "veth prefix"},
		{"prefix reserved", func(o *Options) { o.VethPrefix = "eth" }, "reserved"},
		{"prefix wildcard", func(o *Options) { o.VethPrefix = "e*" }, "invalid character"},
		{"relative socket", func(o *Options) { o.Socket = "ipamd.sock" }, "socket"},
		{"relative snat", func(o *Options) { o.SNATNodeConfig = "snat.json" }, "nodeConfig"},
		{"old cni version", func(o *Options) { o.CNIVersion = "0.4.0" }, "cniVersion"},
		{"no name", func(o *Options) { o.Name = "" }, "network name"},
		{"timeout", func(o *Options) { o.IPAMTimeout = time.Hour }, "timeout"},
		{"policy wait", func(o *Options) { o.PolicyWait = 3 * time.Minute }, "policy wait 3m0s"},
		{"pod security group mode", func(o *Options) { o.PodSGMode = "Standard" }, `podSGEnforcingMode "Standard" is invalid`},
	} {
		o := DefaultOptions()
		tc.mod(&o)
		if _, err := Render(o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// All problems at once.
	o := DefaultOptions()
	o.MTU, o.VethPrefix = 1, "toolong"
	_, err := Render(o)
	if err == nil || !strings.Contains(err.Error(), "mtu 1") || !strings.Contains(err.Error(), "toolong") {
		t.Errorf("two problems: err = %v, want both named", err)
	}
}

func TestOptionsFromEnv(t *testing.T) {
	env := func(m map[string]string) Lookup {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	o, err := OptionsFromEnv(env(nil))
	if err != nil || o != wantDefaults {
		t.Fatalf("empty env: %+v, %v; want the defaults %+v", o, err, wantDefaults)
	}
	if DefaultOptions() != wantDefaults {
		t.Errorf("DefaultOptions() = %+v, want %+v", DefaultOptions(), wantDefaults)
	}
	o, err = OptionsFromEnv(env(map[string]string{
		EnvVethPrefix: "cali", EnvMTU: "1500", EnvStateDir: "/run/vc/", EnvBandwidth: "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if o.VethPrefix != "cali" || o.MTU != 1500 || o.Socket != "/run/vc/ipamd.sock" || o.SNATNodeConfig != "/run/vc/snat.json" || !o.Bandwidth || o.PolicyHook {
		t.Errorf("options %+v", o)
	}
	o, err = OptionsFromEnv(env(map[string]string{EnvMTU: "9001", EnvPodMTU: "1400", EnvSocket: "/s/ipamd.sock", EnvIPAMTimout: "3s"}))
	if err != nil || o.MTU != 1400 || o.Socket != "/s/ipamd.sock" || o.SNATNodeConfig != wantDefaults.SNATNodeConfig || o.IPAMTimeout != 3*time.Second {
		t.Errorf("POD_MTU/socket/timeout: %+v, %v", o, err)
	}
	_, err = OptionsFromEnv(env(map[string]string{
		EnvVethPrefix: "eth", EnvMTU: "100", EnvSocket: "rel.sock", EnvBandwidth: "yes",
	}))
	if err == nil {
		t.Fatal("invalid env accepted")
	}
	for _, want := range []string{`AWS_VPC_K8S_CNI_VETHPREFIX="eth"`, `AWS_VPC_ENI_MTU="100"`, `VPCCHAIN_SOCKET="rel.sock"`, `ENABLE_BANDWIDTH_PLUGIN="yes"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Security groups for pods in standard mode: vpc-bridge is told so.
	o, err = OptionsFromEnv(env(map[string]string{"POD_SECURITY_GROUP_ENFORCING_MODE": "standard"}))
	if err != nil || o.PodSGMode != "standard" {
		t.Fatalf("standard mode: %+v, %v", o, err)
	}
	data, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	checkConflist(t, data, o)
	// WireGuard: vpc-bridge gives pods the ENI MTU less WireGuard's 60
	// bytes (IPv4 20 + UDP 8 + WireGuard 32), what Calico's wireguard.cali has.
	o, err = OptionsFromEnv(env(map[string]string{"ENABLE_WIREGUARD": "true"}))
	if err != nil || o.MTU != 8941 {
		t.Fatalf("ENABLE_WIREGUARD=true: MTU %d, %v; want 9001 - 60", o.MTU, err)
	}
	if data, err = Render(o); err != nil || !strings.Contains(string(data), `"mtu": 8941`) {
		t.Errorf("ENABLE_WIREGUARD=true renders %s, %v; want mtu 8941", data, err)
	}
	if _, err = OptionsFromEnv(env(map[string]string{"POD_SECURITY_GROUP_ENFORCING_MODE": "loose"})); err == nil ||
		!strings.Contains(err.Error(), `POD_SECURITY_GROUP_ENFORCING_MODE="loose" is invalid`) {
		t.Errorf("POD_SECURITY_GROUP_ENFORCING_MODE=loose: err %v, want it named", err)
	}
	o, err = OptionsFromEnv(env(map[string]string{EnvPolicyHook: "true", EnvPolicyWait: "0s", EnvPolicyStrict: "true"}))
	if err != nil || !o.PolicyHook || o.PolicyWait != 0 || !o.PolicyWaitStrict {
		t.Errorf("policy hook, no wait, strict: %+v, %v", o, err)
	}
	for _, v := range []string{"-1s", "121s", "soon"} {
		_, err = OptionsFromEnv(env(map[string]string{EnvPolicyWait: v}))
		if err == nil || !strings.Contains(err.Error(), `VPCCHAIN_POLICY_WAIT_TIMEOUT="`+v+`"`) {
			t.Errorf("%s=%s: err %v, want it named", EnvPolicyWait, v, err)
		}
	}
}
