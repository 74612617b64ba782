// Package cniargs parses CNI_ARGS the same way in every vpcchain plugin:
// types.LoadArgs, plus what it lets through that a plugin must not act on --
// a key given twice (which value is the pod?) and Kubernetes pod names that
// the API server can never have created (they end up in the daemon's
// records, in Pod PATCH requests and in file names).
package cniargs

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Load parses cniArgs into into (a struct embedding types.CommonArgs, as for
// types.LoadArgs) after refusing a key that appears twice.
func Load(cniArgs string, into interface{}) error {
	seen := map[string]bool{}
	for _, pair := range strings.Split(cniArgs, ";") {
		if pair == "" {
			continue
		}
		k, _, _ := strings.Cut(pair, "=")
		if seen[k] {
			return fmt.Errorf("key %s is given more than once", k)
		}
		seen[k] = true
	}
	return types.LoadArgs(cniArgs, into)
}

var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// ValidatePod checks K8S_POD_NAMESPACE (a DNS-1123 label, at most 63
// characters) and K8S_POD_NAME (a DNS-1123 subdomain, at most 253), as the
// API server validates them. An empty value is not checked: the runtime
// is not Kubernetes, and each plugin decides what that means.
func ValidatePod(namespace, name string) error {
	if namespace != "" && (len(namespace) > 63 || !dnsLabel.MatchString(namespace)) {
		return fmt.Errorf("K8S_POD_NAMESPACE %s is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63 characters)", quote(namespace))
	}
	if name != "" && (len(name) > 253 || !dnsSubdomain.MatchString(name)) {
		return fmt.Errorf("K8S_POD_NAME %s is not a Kubernetes pod name (lowercase letters, digits, '-' and '.', at most 253 characters)", quote(name))
	}
	return nil
}

// quote keeps an absurdly long value from flooding the message.
func quote(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q... (%d bytes)", s[:80], len(s))
	}
	return fmt.Sprintf("%q", s)
}
