package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestProbesAndInstall(t *testing.T) {
	dir, err := os.MkdirTemp("", "vci")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "ipamd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()

	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--check-health", "--socket", sock}, 1},
		{[]string{"--check-live", "--socket", sock}, 0},
		{[]string{"--check-live", "--socket", filepath.Join(dir, "none")}, 1},
		{[]string{"--bogus"}, 2},
		{[]string{"--binaries-only", "--conflist-only"}, 2},
	} {
		if got := run(tc.args); got != tc.want {
			t.Errorf("run %v = %d, want %d", tc.args, got, tc.want)
		}
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	if got := run([]string{"--check-health", "--socket", sock}); got != 0 {
		t.Errorf("--check-health on a SERVING daemon = %d, want 0", got)
	}

	src, bin, conf := filepath.Join(dir, "src"), filepath.Join(dir, "bin"), filepath.Join(dir, "conf")
	os.Mkdir(src, 0o755)
	for _, b := range []string{"vpc-bridge", "vpc-ipam", "vpc-snat", "portmap"} {
		os.WriteFile(filepath.Join(src, b), []byte(b), 0o755)
	}
	t.Setenv("AWS_VPC_ENI_MTU", "1500")
	// A node migrating from the AWS VPC CNI: its configuration sorts first.
	aws := filepath.Join(conf, "10-aws.conflist")
	os.MkdirAll(conf, 0o755)
	os.WriteFile(aws, []byte(`{"cniVersion":"1.0.0","name":"aws-cni","plugins":[{"type":"aws-cni"}]}`), 0o644)
	if got := run([]string{"--bin-src", src, "--cni-bin-dir", bin, "--cni-conf-dir", conf, "--socket", sock, "--timeout", "5s"}); got != 0 {
		t.Fatalf("install = %d, want 0", got)
	}
	if _, err := os.Stat(filepath.Join(conf, "10-vpcchain.conflist")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(aws + ".vpcchain-disabled"); err != nil {
		t.Errorf("the AWS VPC CNI's configuration was not set aside: %v", err)
	}
	if got := run([]string{"--uninstall", "--cni-conf-dir", conf, "--cni-bin-dir", bin}); got != 0 {
		t.Fatalf("uninstall = %d", got)
	}
	if _, err := os.Stat(filepath.Join(conf, "10-vpcchain.conflist")); !os.IsNotExist(err) {
		t.Errorf("conflist still there after --uninstall: %v", err)
	}
	// The node gets its former network back.
	if _, err := os.Stat(aws); err != nil {
		t.Errorf("--uninstall did not put back what the install set aside: %v", err)
	}
}
