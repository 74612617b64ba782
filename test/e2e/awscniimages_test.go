//go:build kubelet

// The AWS VPC CNI's two images, built offline from the unmodified v1.23.2
// source (`make peer-tools`) as its Dockerfiles lay them out, for the
// migration test.

package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vpcchain/vpcchain/internal/ociimage"
	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// The names the migration test's overlay gives the AWS VPC CNI's images
// (kustomize images:) in place of its ECR ones.
const (
	awsNodeImage = "vpcchain.e2e/amazon-k8s-cni:v1.23.2"
	awsInitImage = "vpcchain.e2e/amazon-k8s-cni-init:v1.23.2"
)

// buildAWSCNIImages writes the two images as OCI archives into dir and
// returns their paths:
//
//   - amazon-k8s-cni (scripts/dockerfiles/Dockerfile.release): /app holds
//     the entrypoint aws-vpc-cni, ipamd (aws-k8s-agent), the plugins aws-cni
//     and egress-cni, grpc-health-probe, misc/10-aws.conflist and
//     misc/eni-max-pods.txt; the entrypoint runs ./aws-k8s-agent and
//     ./grpc-health-probe from the working directory /app. Its userland is
//     Debian's iptables (testdata/aws-node/packages.lock) in place of the
//     EKS minimal base: ipamd runs the iptables commands.
//   - amazon-k8s-cni-init (Dockerfile.init): /init holds aws-vpc-cni-init
//     and the upstream plugins it copies to the node (loopback, portmap,
//     host-local); it needs no userland (static binaries).
func buildAWSCNIImages(t *testing.T, bin, dir string) (node, init string) {
	t.Helper()
	tools := filepath.Join(bin, "tools")
	for _, b := range []string{"aws-vpc-cni", "aws-k8s-agent", "aws-cni", "egress-cni", "grpc-health-probe", "aws-vpc-cni-init",
		"loopback", "portmap", "host-local"} {
		if _, err := os.Stat(filepath.Join(tools, b)); err != nil {
			t.Fatalf("%s missing: run `make tools node-tools peer-tools`: %v", b, err)
		}
	}
	mod, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}

	app := []ociimage.File{{Path: "/app", Mode: fs.ModeDir | 0o755}}
	for _, b := range []string{"aws-vpc-cni", "aws-k8s-agent", "aws-cni", "egress-cni", "grpc-health-probe"} {
		app = append(app, ociimage.File{Path: "/app/" + b, Mode: 0o755, Src: filepath.Join(tools, b)})
	}
	for _, f := range []string{"10-aws.conflist", "eni-max-pods.txt"} {
		app = append(app, ociimage.File{Path: "/app/" + f, Mode: 0o644, Src: filepath.Join(mod, "misc", f)})
	}
	userland := debianUserland(t, bin, dir, "aws-node")
	var layers []v1.Layer
	for _, files := range [][]ociimage.File{userland, app} {
		l, err := ociimage.Layer(files)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := ociimage.Image(layers, platform, v1.Config{Entrypoint: []string{"/app/aws-vpc-cni"}, WorkingDir: "/app",
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	node = filepath.Join(dir, "amazon-k8s-cni.oci.tar")
	if err := ociimage.WriteArchive(node, awsNodeImage, img); err != nil {
		t.Fatal(err)
	}

	files := []ociimage.File{{Path: "/init", Mode: fs.ModeDir | 0o755}, {Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}}
	for _, b := range []string{"aws-vpc-cni-init", "loopback", "portmap", "host-local"} {
		files = append(files, ociimage.File{Path: "/init/" + b, Mode: 0o755, Src: filepath.Join(tools, b)})
	}
	l, err := ociimage.Layer(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err = ociimage.Image([]v1.Layer{l}, platform, v1.Config{Cmd: []string{"/init/aws-vpc-cni-init"}, WorkingDir: "/init"})
	if err != nil {
		t.Fatal(err)
	}
	init = filepath.Join(dir, "amazon-k8s-cni-init.oci.tar")
	if err := ociimage.WriteArchive(init, awsInitImage, img); err != nil {
		t.Fatal(err)
	}
	return node, init
}
