package vethname

// The rule that names a pod's host-side veth, shared by vpc-bridge (which
// creates the link), policy-hook (which checks it matches Calico's
// expectation) and the daemon and installer (which validate the prefix).
//
// The rule (docs/design.md, "Host veth naming") is the one the AWS VPC CNI and
// Calico use:
//
//	name = prefix + hex(sha1("<namespace>.<pod name>"))[:11]
//
// With the default prefix "eni" that is 14 bytes, below the kernel's 15-byte
// limit (IFNAMSIZ-1). Felix (policy-only mode, interface prefix "eni") computes
// the same name from the WorkloadEndpoint and so finds the pod's interface.

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

const (
	// DefaultPrefix is the host veth prefix used when none is configured; it
	// is also the AWS VPC CNI's default (AWS_VPC_K8S_CNI_VETHPREFIX).
	DefaultPrefix = "eni"
	// MaxPrefixLen is the longest prefix allowed: 4 + 11 hash characters = 15,
	// the longest Linux interface name.
	MaxPrefixLen = 4
	// HashLen is the number of hex characters of the SHA-1 that follow the prefix.
	HashLen = 11
	// MaxIfNameLen is the longest Linux interface name in bytes (IFNAMSIZ-1).
	MaxIfNameLen = 15
)

// reservedPrefixes are refused exactly as the AWS VPC CNI refuses them: "eth"
// would look like an ENI (eth0, eth1, ...), "lo" like the loopback, and "vlan"
// is what the reference uses for branch-ENI (security-groups-for-pods) links.
var reservedPrefixes = []string{"eth", "lo", "vlan"}

// HostName returns the host-side veth name for a Kubernetes pod:
// prefix + the first 11 hex characters of SHA-1("<namespace>.<pod>").
//
//	HostName("eni", "default", "nginx") == "enic440f455693"
//
// The prefix is not validated here; call ValidatePrefix on configuration.
func HostName(prefix, namespace, pod string) string {
	return prefix + hash11(namespace+"."+pod)
}

// FallbackHostName names the host veth when the runtime passes no
// K8S_POD_NAMESPACE / K8S_POD_NAME in CNI_ARGS (e.g. a plain libcni/cnitool
// caller): prefix + the first 11 hex characters of
// SHA-1("<containerID>.<ifname>"). It is unique per CNI attachment (container
// ID, ifname), which is the key the CNI spec uses for ADD/DEL, but Calico will
// not recognise it as a pod interface, so policy-hook cannot match it to a pod.
func FallbackHostName(prefix, containerID, ifName string) string {
	return prefix + hash11(containerID+"."+ifName)
}

func hash11(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])[:HashLen]
}

// ValidatePrefix checks a host veth prefix: 1 to 4 characters, not one of the
// reserved names "eth", "lo", "vlan", and only characters that are valid in a
// Linux interface name. To keep "characters" and "bytes" the same (the kernel
// limit is in bytes) only printable ASCII is accepted; '/', ':' and whitespace
// are refused as the kernel refuses them (dev_valid_name), and so are '%'
// (printf-style name templates like "eth%d") and '*' (Felix's wildcard).
func ValidatePrefix(p string) error {
	if len(p) == 0 || len(p) > MaxPrefixLen {
		return fmt.Errorf("veth prefix %q is %d characters: it must be 1 to %d characters so that prefix + %d hash characters fit the %d-byte interface name limit",
			p, len(p), MaxPrefixLen, HashLen, MaxIfNameLen)
	}
	for _, r := range reservedPrefixes {
		if p == r {
			return fmt.Errorf("veth prefix %q is reserved: %s are not allowed", p, quoteList(reservedPrefixes))
		}
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == '%' || c == '*' {
			return fmt.Errorf("veth prefix %q has invalid character %q at position %d: only printable ASCII except whitespace, '/', ':', '%%' and '*' is allowed in an interface name",
				p, rune(c), i)
		}
	}
	return nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// ValidateIfName checks a Linux interface name the way the kernel does
// (dev_valid_name): 1..15 bytes, not "." or "..", no '/', ':' or whitespace.
// The error names the value and the rule it breaks.
func ValidateIfName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("interface name is empty")
	case len(name) > MaxIfNameLen:
		return fmt.Errorf("interface name %q is %d bytes: Linux interface names are at most %d bytes", name, len(name), MaxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f' {
			return fmt.Errorf("interface name %q contains %q: '/', ':' and whitespace are not allowed", name, r)
		}
	}
	return nil
}

// VLANName is the host name of the VLAN link of a branch-ENI pod whose
// branch has vlanID: "vlan.eth.<id>", the AWS VPC CNI's name, so that tools
// written for its nodes find it (the reserved "vlan" prefix keeps host
// veths from taking it).
func VLANName(vlanID int) string { return VLANPrefix + strconv.Itoa(vlanID) }

// VLANPrefix begins every VLANName.
const VLANPrefix = "vlan.eth."
