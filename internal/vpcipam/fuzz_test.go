package vpcipam

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig: any stdin parses into a usable configuration or fails
// with a precise CNI error; never a panic.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"vpcchain","ipam":{"type":"vpc-ipam"}}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"vpc-ipam","socket":"/run/x.sock","timeout":"5s"}}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"vpc-ipam","timeout":5}}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"vpc-ipam","timeout":"-1s","bogus":1}}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"vpc-ipam"},"cni.dev/valid-attachments":[{"containerID":"c","ifname":"eth0"}]}`,
		`{"cniVersion":"1.1.0","name":"n","ipam":{"type":"vpc-ipam"},"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.9/32"}]}}`,
		`{`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := ParseConfig(stdin)
		if err != nil {
			var ce *types.Error
			if !errors.As(err, &ce) || ce.Code == 0 || ce.Msg == "" {
				t.Fatalf("error without a CNI code and message: %#v", err)
			}
			return
		}
		// The documented range: an absolute socket path, 0 < timeout <= 2m.
		if !filepath.IsAbs(conf.Socket) || conf.Timeout <= 0 || conf.Timeout > 2*time.Minute {
			t.Fatalf("accepted socket %q timeout %v", conf.Socket, conf.Timeout)
		}
	})
}

// FuzzParsePodArgs: CNI_ARGS never panics the parser.
func FuzzParsePodArgs(f *testing.F) {
	for _, s := range []string{"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web", "K8S_POD_NAME", "a=b=c;;", "K8S_POD_NAMESPACE=x;K8S_POD_NAMESPACE=y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		_, _ = ParsePodArgs(args)
	})
}
