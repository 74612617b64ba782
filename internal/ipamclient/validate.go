package ipamclient

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/utils"
)

// Limits of the request fields that the daemon stores. A CNI runtime passes
// a container ID of 64 hex characters and short network names; the bounds
// only keep a hostile or broken caller from storing what the daemon's bbolt
// file cannot hold (a key is at most 32 KiB) or what no runtime would send.
const (
	MaxNetworkLen     = 256
	MaxContainerIDLen = 256
	MaxNetnsLen       = 4096 // PATH_MAX
	MaxPodNamespace   = 63   // a DNS-1123 label
	MaxPodName        = 253  // a DNS-1123 subdomain
)

// KeyField names the part of a key that ValidateKey refused, so that the
// plugin can map it to the CNI error of its source (the configuration's name
// or the runtime's environment).
type KeyField string

// The key's fields, named as the CNI runtime passes them.
const (
	FieldNetwork     KeyField = "network name"
	FieldContainerID KeyField = "CNI_CONTAINERID"
	FieldIfName      KeyField = "CNI_IFNAME"
)

// KeyError is ValidateKey's error.
type KeyError struct {
	Field KeyField
	Value string
	Why   string
}

func (e *KeyError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "..."
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, v, e.Why)
}

// ValidateKey checks an attachment key by the CNI spec's rules (what libcni
// and skel check: network name and container ID start with an alphanumeric
// and continue with alphanumerics, '_', '.', '-'; the interface name is a
// Linux one) plus the length bounds above. Both the daemon (on every request)
// and vpc-ipam (before dialing) use it.
func ValidateKey(network, containerID, ifName string) error {
	if err := validateName(network, MaxNetworkLen); err != "" {
		return &KeyError{Field: FieldNetwork, Value: network, Why: err}
	}
	if err := validateName(containerID, MaxContainerIDLen); err != "" {
		return &KeyError{Field: FieldContainerID, Value: containerID, Why: err}
	}
	if !textOnly(ifName) {
		// utils.ValidateInterfaceName lets NUL and control bytes through;
		// an environment variable cannot carry NUL, a gRPC request can.
		return &KeyError{Field: FieldIfName, Value: ifName, Why: "contains control characters or is not UTF-8"}
	}
	if err := utils.ValidateInterfaceName(ifName); err != nil {
		why := err.Msg
		if err.Details != "" {
			why += " (" + err.Details + ")"
		}
		return &KeyError{Field: FieldIfName, Value: ifName, Why: why}
	}
	return nil
}

func validateName(s string, maxLen int) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxLen:
		return fmt.Sprintf("is %d bytes long, at most %d allowed", len(s), maxLen)
	case utils.ValidateContainerID(s) != nil:
		return "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
	}
	return ""
}

// ValidatePodInfo checks the informational fields of an Add: the pod's
// namespace and name (empty when the runtime is not Kubernetes) and the
// netns path (empty allowed: the daemon then never treats the sandbox as
// gone). They are stored and shown by introspection, so they must be text.
func ValidatePodInfo(namespace, name, netns string) error {
	for _, f := range []struct {
		field, v string
		max      int
	}{{"K8S_POD_NAMESPACE", namespace, MaxPodNamespace}, {"K8S_POD_NAME", name, MaxPodName}, {"CNI_NETNS", netns, MaxNetnsLen}} {
		switch {
		case len(f.v) > f.max:
			return fmt.Errorf("invalid %s: %d bytes long, at most %d allowed", f.field, len(f.v), f.max)
		case !textOnly(f.v):
			return fmt.Errorf("invalid %s %q: contains control characters or is not UTF-8", f.field, f.v)
		}
	}
	if netns != "" && !strings.HasPrefix(netns, "/") {
		// The daemon stats the path later to find sandboxes that are gone;
		// a relative path would be resolved against the daemon's directory.
		return fmt.Errorf("invalid CNI_NETNS %q: not an absolute path", netns)
	}
	return nil
}

// textOnly: valid UTF-8 without control characters (NUL, newline, DEL ...).
func textOnly(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
