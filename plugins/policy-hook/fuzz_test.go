package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/naming"
)

// FuzzParseConfig: any stdin parses into a configuration within the
// documented limits or fails with a CNI error (6 or 7) and a message; the
// prevResult it accepts yields an attachment or a CNI error, never a panic.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","kubeconfig":"/etc/k","vethPrefix":"eni",` + prevJSON + `}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","publishPodIP":false}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","kubeconfig":"/k","waitForPolicy":{"timeout":"10s","strict":true,"endpointStatusDir":"/run/calico/endpoint-status"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","kubeconfig":"k","waitForPolicy":{"timeout":"-1s","endpointStatusDir":"../../etc"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","publishPodIP":false,"waitForPolicy":{"timeout":"1s"}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","kubeconfig":"/k","vethPrefix":"calico"}`,
		`{"cniVersion":"1.1.0","name":"n","type":"policy-hook","kubeconfig":"/k","prevResult":{"cniVersion":"9.9.9"}}`,
		`{"cniVersion":"0.4.0","name":"n","type":"policy-hook","kubeconfig":"/k","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.1/32"}]}}`,
		`{"publishPodIP":"yes"}`, `{`, `null`, ``, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		conf, err := parseConfig(stdin)
		if err == nil {
			switch {
			case naming.ValidatePrefix(conf.VethPrefix) != nil:
				t.Fatalf("accepted vethPrefix %q", conf.VethPrefix)
			case conf.publish && !filepath.IsAbs(conf.Kubeconfig):
				t.Fatalf("publishing with kubeconfig %q", conf.Kubeconfig)
			case conf.waitTimeout < 0 || conf.waitTimeout > MaxWaitTimeout:
				t.Fatalf("accepted wait timeout %v", conf.waitTimeout)
			case conf.waiting() && (!conf.publish || !filepath.IsAbs(conf.WaitForPolicy.EndpointStatusDir)):
				t.Fatalf("waiting with publish %v endpointStatusDir %q", conf.publish, conf.WaitForPolicy.EndpointStatusDir)
			}
			if conf.PrevResult == nil {
				return
			}
			_, err = conf.attachment()
			if err == nil {
				return
			}
		}
		var ce *types.Error
		if !errors.As(err, &ce) || (ce.Code != types.ErrDecodingFailure && ce.Code != types.ErrInvalidNetworkConfig) || ce.Msg == "" {
			t.Fatalf("error is not a CNI code 6/7 with a message: %#v", err)
		}
	})
}

// FuzzLoadPod: any CNI_ARGS yields a valid Kubernetes pod, errNoPod, or code
// 4 naming CNI_ARGS; never a panic.
func FuzzLoadPod(f *testing.F) {
	for _, s := range []string{
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_NAME=db",
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../etc",
		"K8S_POD_NAMESPACE=Default;K8S_POD_NAME=web",
		"K8S_POD_NAME", ";;", "=", "", "IgnoreUnknown=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cniArgs string) {
		pod, err := loadPod(cniArgs)
		var ce *types.Error
		switch {
		case err == nil:
			if pod.Namespace == "" || pod.Name == "" || filepath.Base(pod.Name) != pod.Name || pod.Name == ".." {
				t.Fatalf("accepted pod %q/%q", pod.Namespace, pod.Name)
			}
		case errors.Is(err, errNoPod):
		case errors.As(err, &ce):
			if ce.Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("code %d: %s", ce.Code, ce.Msg)
			}
		default:
			t.Fatalf("error %#v", err)
		}
	})
}
