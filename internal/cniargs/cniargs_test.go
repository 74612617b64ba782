package cniargs

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
}

func TestLoadAndValidatePod(t *testing.T) {
	cases := []struct {
		args string
		want string // "" valid, else in the error
	}{
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0", ""},
		{"K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-5d78c9869d-abcde", ""},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=a.b.c", ""},
		{"", ""},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_NAME=db", "K8S_POD_NAME is given more than once"},
		{"K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=a", "K8S_POD_NAMESPACE is given more than once"},
		{"K8S_POD_NAME", "invalid"},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../etc", `"../../etc"`},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=Web", `"Web"`},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=-web", "K8S_POD_NAME"},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=a`id`", "K8S_POD_NAME"},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + strings.Repeat("a", 254), "(254 bytes)"},
		{"K8S_POD_NAMESPACE=" + strings.Repeat("n", 64) + ";K8S_POD_NAME=web", "K8S_POD_NAMESPACE"},
		{"K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=web", `"a.b"`},
	}
	for _, tc := range cases {
		t.Run(tc.args, func(t *testing.T) {
			a := &podArgs{}
			a.IgnoreUnknown = true
			err := Load(tc.args, a)
			if err == nil {
				err = ValidatePod(string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME))
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
