// Package maxpods computes how many pods an EC2 instance type can run with
// VPC-native pod addressing, with the formulas of the AWS VPC CNI's
// eni-max-pods.txt and the EKS AMI's max-pods-calculator.sh, for every type
// of the embedded table in
// internal/instancelimits:
//
//	enis        = MaxENIs of the default network card, min(--max-eni) if set,
//	              minus one with custom networking (pods never use the primary ENI)
//	secondary   = enis × (IPv4PerENI − 1) + 2
//	prefix      = enis × (IPv4PerENI − 1) × 16 + 2   (Nitro/bare metal only)
//
// The "+ 2" counts the host-network pods (aws-node and kube-proxy); the "− 1"
// is each ENI's primary address. With Options.CNICap the calculator's
// recommended cap is applied: min(110, x) when the type has 30 vCPUs or
// fewer, min(250, x) otherwise.
//
// The instance table holds no vCPU counts, so the cap uses an estimate from
// the instance size (see EstimateVCPUs): xlarge = 4, N·xlarge = 4N,
// metal-Nxl = 4N, smaller sizes ≤ 2, a plain "metal" as the largest size of
// its family, plus a few known exceptions. Where no estimate exists (e.g.
// mac*.metal) the lower cap, 110, is used: it is kubelet's default max-pods
// and never more than the reference would recommend for a small type.
package maxpods

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// Caps of max-pods-calculator.sh (without --show-max-allowed).
const (
	SmallCap         = 110 // types with at most CapVCPUThreshold vCPUs (or unknown vCPUs)
	LargeCap         = 250 // types with more
	CapVCPUThreshold = 30
	// HostNetworkPods are the pods that need no VPC address (aws-node, kube-proxy).
	HostNetworkPods = 2
	// AddressesPerPrefix is the size of a /28 prefix.
	AddressesPerPrefix = 16
)

// Options select the CNI configuration the count is for.
type Options struct {
	PrefixDelegation bool // /28 prefixes instead of secondary IPs
	CustomNetworking bool // pods use secondary ENIs only (ENIConfig)
	MaxENI           int  // cap on the ENIs used; 0 = no cap
	CNICap           bool // apply the recommended 110/250 cap
	// IPv6: pods take /128s of the primary ENI's /80 (Nitro only). The
	// count is what EKS gives an IPv6 node: the prefix-delegation figure
	// with the recommended cap, whatever the other options say.
	IPv6 bool
}

// Result is the computed count and how it was reached.
type Result struct {
	InstanceType string
	ENIs         int // ENIs that hold pod addresses
	IPv4PerENI   int
	VCPUs        int // estimate used for the cap; 0 = unknown
	Uncapped     int // the formula's value
	Cap          int // cap applied (0 without Options.CNICap)
	MaxPods      int // min(Uncapped, Cap) with a cap, else Uncapped
}

// ErrPrefixDelegationUnsupported is returned for prefix delegation on a type
// that is neither Nitro-based nor bare metal.
var ErrPrefixDelegationUnsupported = errors.New("prefix delegation needs a Nitro-based or bare-metal instance type")

// ErrIPv6Unsupported is returned for IPv6 on a type EC2 gives no IPv6
// prefix (neither Nitro-based nor bare metal).
var ErrIPv6Unsupported = errors.New("IPv6 pods need a Nitro-based or bare-metal instance type (EC2 assigns IPv6 prefixes to those only)")

// UnknownTypeError is returned for an instance type missing from the table.
type UnknownTypeError struct {
	InstanceType string
	Suggestions  []string // up to 5 close matches
}

func (e *UnknownTypeError) Error() string {
	msg := fmt.Sprintf("unknown instance type %q", e.InstanceType)
	if len(e.Suggestions) > 0 {
		msg += " (did you mean " + strings.Join(e.Suggestions, ", ") + "?)"
	}
	return msg
}

// Compute returns the max pods of an instance type from the embedded table.
func Compute(instanceType string, o Options) (Result, error) {
	if err := instancelimits.Err(); err != nil {
		return Result{}, err
	}
	l, ok := instancelimits.Lookup(instanceType)
	if !ok {
		return Result{}, &UnknownTypeError{InstanceType: instanceType, Suggestions: instancelimits.Similar(instanceType, 5)}
	}
	return ComputeLimits(l, o)
}

// ComputeLimits returns the max pods for the given limits.
func ComputeLimits(l instancelimits.Limits, o Options) (Result, error) {
	if o.MaxENI < 0 {
		return Result{}, fmt.Errorf("max ENIs must not be negative, got %d", o.MaxENI)
	}
	if o.IPv6 {
		if o.CustomNetworking {
			return Result{}, errors.New("IPv6 pods use the primary ENI's /80: custom networking does not apply")
		}
		if !l.SupportsPrefixDelegation() {
			return Result{}, fmt.Errorf("%s: %w", l.InstanceType, ErrIPv6Unsupported)
		}
		o = Options{PrefixDelegation: true, CNICap: true}
	}
	if o.PrefixDelegation && !l.SupportsPrefixDelegation() {
		return Result{}, fmt.Errorf("%s: %w", l.InstanceType, ErrPrefixDelegationUnsupported)
	}
	enis := l.MaxENIs
	if o.MaxENI > 0 {
		enis = min(enis, o.MaxENI)
	}
	if o.CustomNetworking {
		enis--
	}
	enis = max(enis, 0)
	perENI := max(l.IPv4PerENI-1, 0)
	if o.PrefixDelegation {
		perENI *= AddressesPerPrefix
	}
	r := Result{InstanceType: l.InstanceType, ENIs: enis, IPv4PerENI: l.IPv4PerENI,
		Uncapped: enis*perENI + HostNetworkPods}
	r.MaxPods = r.Uncapped
	r.VCPUs, _ = EstimateVCPUs(l.InstanceType)
	if o.CNICap {
		r.Cap = CapFor(r.VCPUs)
		r.MaxPods = min(r.Uncapped, r.Cap)
	}
	return r, nil
}

// CapFor is the recommended cap for a type with vcpus vCPUs (0 = unknown).
func CapFor(vcpus int) int {
	if vcpus > CapVCPUThreshold {
		return LargeCap
	}
	return SmallCap
}

// vcpuExceptions are types whose vCPUs do not follow the size name, or
// bare-metal types without a sized sibling in their family.
var vcpuExceptions = map[string]int{
	"hs1.8xlarge":     16,
	"hpc7a.12xlarge":  24,
	"hpc7a.24xlarge":  48,
	"hpc7a.48xlarge":  96,
	"hpc7a.96xlarge":  192,
	"hpc7g.4xlarge":   16,
	"hpc7g.8xlarge":   32,
	"hpc7g.16xlarge":  64,
	"hpc6id.32xlarge": 64,
	"u-6tb1.metal":    448,
	"u-9tb1.metal":    448,
	"u-12tb1.metal":   448,
	"u-18tb1.metal":   448,
	"u-24tb1.metal":   448,
}

// EstimateVCPUs estimates an instance type's vCPUs from its size name; ok is
// false when it cannot (the count is then 0).
func EstimateVCPUs(instanceType string) (n int, ok bool) {
	if n, ok := vcpuExceptions[instanceType]; ok {
		return n, true
	}
	family, size, found := strings.Cut(instanceType, ".")
	if !found {
		return 0, false
	}
	if n := sizeVCPUs(size); n > 0 {
		return n, true
	}
	if size != "metal" {
		return 0, false
	}
	// A plain metal has the vCPUs of its family's largest virtualized size.
	best := 0
	for _, t := range instancelimits.Types() {
		f, s, _ := strings.Cut(t, ".")
		if f == family && s != "metal" {
			if n, ok := EstimateVCPUs(t); ok {
				best = max(best, n)
			}
		}
	}
	return best, best > 0
}

// sizeVCPUs maps a size name to vCPUs: 4 per xlarge unit; 0 when unknown.
func sizeVCPUs(size string) int {
	switch size {
	case "nano", "micro", "small", "medium", "large":
		return 2 // 1 or 2 in fact; either way under the cap threshold
	case "xlarge":
		return 4
	}
	var num string
	switch {
	case strings.HasSuffix(size, "xlarge"):
		num = strings.TrimSuffix(size, "xlarge")
	case strings.HasPrefix(size, "metal-") && strings.HasSuffix(size, "xl"):
		num = strings.TrimSuffix(strings.TrimPrefix(size, "metal-"), "xl")
	default:
		return 0
	}
	k, err := strconv.Atoi(num)
	if err != nil || k <= 0 {
		return 0
	}
	return 4 * k
}
