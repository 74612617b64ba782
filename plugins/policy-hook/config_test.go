package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

const prevJSON = `"prevResult": {"cniVersion": "1.1.0",
  "interfaces": [{"name": "enic440f455693"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
  "ips": [{"address": "10.0.0.9/32", "interface": 1}]}`

func wantCode(t *testing.T, err error, code uint, substr ...string) {
	t.Helper()
	var ce *types.Error
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T), want CNI error code %d", err, err, code)
	}
	if ce.Code != code {
		t.Fatalf("code %d (%s), want %d", ce.Code, ce.Msg, code)
	}
	for _, s := range substr {
		if !strings.Contains(ce.Msg, s) {
			t.Errorf("message %q does not contain %q", ce.Msg, s)
		}
	}
}

func TestParseConfig(t *testing.T) {
	head := `{"cniVersion": "1.1.0", "name": "vpcchain", "type": "policy-hook"`
	for _, tc := range []struct {
		name    string
		body    string // after head, before }
		code    uint   // 0 = valid
		want    []string
		check   func(*testing.T, *NetConf)
		noPrevR bool
	}{
		{name: "contract example", body: `, "vethPrefix": "eni", "kubeconfig": "/etc/cni/net.d/vpcchain-kubeconfig",
			"waitForPolicy": {"timeout": "10s", "strict": false, "endpointStatusDir": "/var/run/calico/endpoint-status"}`,
			check: func(t *testing.T, c *NetConf) {
				if !c.publish || c.waitTimeout != 10*time.Second || c.WaitForPolicy.Strict || c.VethPrefix != "eni" {
					t.Errorf("%+v", c)
				}
			}},
		{name: "defaults", body: `, "kubeconfig": "/k"`, check: func(t *testing.T, c *NetConf) {
			if c.VethPrefix != "eni" || !c.publish || c.waiting() {
				t.Errorf("%+v", c)
			}
		}},
		{name: "wait defaults dir", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "1s", "strict": true}`, check: func(t *testing.T, c *NetConf) {
			// The default of Calico's own CNI plugin (cni-plugin/pkg/k8s:
			// conf.EndpointStatusDir = "/var/run/calico/endpoint-status").
			if c.WaitForPolicy.EndpointStatusDir != "/var/run/calico/endpoint-status" || !c.WaitForPolicy.Strict || c.waitTimeout != time.Second {
				t.Errorf("%+v", c.WaitForPolicy)
			}
		}},
		{name: "timeout 0s does not wait", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "0s"}`, check: func(t *testing.T, c *NetConf) {
			if c.waiting() {
				t.Error("waiting with timeout 0s")
			}
		}},
		{name: "no publish without kubeconfig", body: `, "publishPodIP": false`, check: func(t *testing.T, c *NetConf) {
			if c.publish {
				t.Error("publish")
			}
		}},
		{name: "malformed", body: `, "kubeconfig": `, code: types.ErrDecodingFailure, want: []string{"cannot decode"}},
		{name: "wrong type", body: `, "waitForPolicy": {"timeout": 10}`, code: types.ErrDecodingFailure, want: []string{"timeout"}},
		{name: "kubeconfig missing", body: ``, code: types.ErrInvalidNetworkConfig, want: []string{"kubeconfig is required", "publishPodIP"}},
		{name: "kubeconfig relative", body: `, "kubeconfig": "kc"`, code: types.ErrInvalidNetworkConfig, want: []string{`"kc" must be an absolute path`}},
		{name: "prefix too long", body: `, "kubeconfig": "/k", "vethPrefix": "abcde"`, code: types.ErrInvalidNetworkConfig, want: []string{"vethPrefix", `"abcde"`}},
		{name: "prefix reserved", body: `, "kubeconfig": "/k", "vethPrefix": "eth"`, code: types.ErrInvalidNetworkConfig, want: []string{"reserved"}},
		{name: "bad timeout", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "soon"}`, code: types.ErrInvalidNetworkConfig, want: []string{`waitForPolicy.timeout "soon"`}},
		{name: "negative timeout", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "-1s"}`, code: types.ErrInvalidNetworkConfig, want: []string{`"-1s"`}},
		{name: "timeout too long", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "1h"}`, code: types.ErrInvalidNetworkConfig, want: []string{`"1h"`, "2m0s"}},
		{name: "relative status dir", body: `, "kubeconfig": "/k", "waitForPolicy": {"timeout": "1s", "endpointStatusDir": "st"}`, code: types.ErrInvalidNetworkConfig, want: []string{`endpointStatusDir "st"`}},
		{name: "wait without publish", body: `, "publishPodIP": false, "waitForPolicy": {"timeout": "1s"}`, code: types.ErrInvalidNetworkConfig, want: []string{"waitForPolicy needs publishPodIP"}},
		{name: "all errors at once", body: `, "vethPrefix": "eth", "waitForPolicy": {"timeout": "x"}`, code: types.ErrInvalidNetworkConfig, want: []string{"reserved", "kubeconfig is required", `"x"`}},
		{name: "bad prevResult", body: `, "kubeconfig": "/k", "prevResult": {"cniVersion": "1.1.0", "ips": "x"}`, code: types.ErrDecodingFailure, want: []string{"prevResult"}, noPrevR: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdin := head + tc.body
			if !tc.noPrevR && tc.code != types.ErrDecodingFailure {
				stdin += ", " + prevJSON
			}
			stdin += "}"
			conf, err := parseConfig([]byte(stdin))
			if tc.code != 0 {
				wantCode(t, err, tc.code, tc.want...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if conf.PrevResult == nil {
				t.Error("prevResult not parsed")
			}
			tc.check(t, conf)
		})
	}
}

// TestNamingCheck: the known vectors (`printf %s <ns>.<pod> | sha1sum`) pass, any other
// name fails with code 7 naming the expected and actual names and why.
func TestNamingCheck(t *testing.T) {
	for _, tc := range []struct {
		ns, pod, prefix, want string
	}{
		{"default", "nginx", "eni", "enic440f455693"},
		{"kube-system", "coredns-5d78c9869d-abcde", "eni", "eni4d5f75c480c"},
		{"a", "b", "eni", "eni69f6642c9d7"},
		{"namespace", "podname", "eni", "eni82111e10a96"},
		{"default", "nginx", "cali", "calic440f455693"},
	} {
		pod := podRef{tc.ns, tc.pod}
		got, err := checkName(tc.prefix, pod, []string{tc.want})
		if err != nil || got != tc.want {
			t.Errorf("%s prefix %s: %q %v, want %q", pod, tc.prefix, got, err, tc.want)
		}
		// Several host interfaces: one of them must be ours.
		if _, err := checkName(tc.prefix, pod, []string{"other", tc.want}); err != nil {
			t.Errorf("%s among others: %v", pod, err)
		}
		// The name vpc-bridge would give with another prefix, or for another pod.
		_, err = checkName(tc.prefix, pod, []string{"vethc440f455693"})
		wantCode(t, err, types.ErrInvalidNetworkConfig, `"vethc440f455693"`, `"`+tc.want+`"`, "Felix", "drops all traffic", "NetworkPolicy would silently not apply")
	}
	_, err := checkName("eni", podRef{"default", "nginx"}, nil)
	wantCode(t, err, types.ErrInvalidNetworkConfig, "no host-side interface", "enic440f455693")
}

func TestLoadPod(t *testing.T) {
	p, err := loadPod("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx;K8S_POD_UID=u")
	if err != nil || p != (podRef{"default", "nginx"}) {
		t.Errorf("%+v %v", p, err)
	}
	if p, err := loadPod("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;OTHER=x"); err != nil || p.String() != "a/b" {
		t.Errorf("unknown keys: %+v %v", p, err)
	}
	if _, err := loadPod(""); !errors.Is(err, errNoPod) {
		t.Errorf("empty: %v", err)
	}
	if _, err := loadPod("K8S_POD_NAMESPACE=a"); !errors.Is(err, errNoPod) {
		t.Errorf("no name: %v", err)
	}
	_, err = loadPod("K8S_POD_NAMESPACE")
	wantCode(t, err, types.ErrInvalidEnvironmentVariables, "CNI_ARGS")
}

func TestStatusFileName(t *testing.T) {
	for _, tc := range []struct{ ns, pod, want string }{
		{"default", "nginx", "/var/run/calico/endpoint-status/k8s default%2Fnginx eth0"},
		{"kube-system", "coredns-5d78c9869d-abcde", "/var/run/calico/endpoint-status/k8s kube-system%2Fcoredns-5d78c9869d-abcde eth0"},
		{"a", "b", "/var/run/calico/endpoint-status/k8s a%2Fb eth0"},
		{"default", "t est pod1", "/var/run/calico/endpoint-status/k8s default%2Ft%20est%20pod1 eth0"},
	} {
		if got := statusFile(DefaultEndpointStatusDir, podRef{tc.ns, tc.pod}); got != tc.want {
			t.Errorf("%s/%s: %q, want %q", tc.ns, tc.pod, got, tc.want)
		}
	}
}
