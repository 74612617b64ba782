package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
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
			case !documentedPrefix(conf.VethPrefix):
				t.Fatalf("accepted vethPrefix %q", conf.VethPrefix)
			case conf.publish && !filepath.IsAbs(conf.Kubeconfig):
				t.Fatalf("publishing with kubeconfig %q", conf.Kubeconfig)
			case conf.waitTimeout < 0 || conf.waitTimeout > 2*time.Minute: // the documented maximum wait
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

// documentedPrefix is the vethPrefix rule, written out independently of
// package veth (which parseConfig calls): 1 to 4 bytes so that prefix + 11
// hash characters fit the kernel's 15-byte interface names; not "eth", "lo"
// or "vlan" (refused as the AWS VPC CNI refuses them); printable ASCII
// without whitespace, '/' and ':' (the kernel's dev_valid_name), '%'
// (name templates) or '*' (Felix's wildcard).
func documentedPrefix(p string) bool {
	if len(p) < 1 || len(p) > 4 || p == "eth" || p == "lo" || p == "vlan" {
		return false
	}
	for _, c := range []byte(p) {
		if c <= ' ' || c > '~' || strings.ContainsRune("/:%*", rune(c)) {
			return false
		}
	}
	return true
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
