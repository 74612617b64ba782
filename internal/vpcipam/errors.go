package vpcipam

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// CNI error codes of vpc-ipam beyond the library's (types.Err*):
//
//	 2 ErrUnsupportedField       unknown field in the ipam section
//	 4 ErrInvalidEnvironmentVariables  malformed CNI_ARGS
//	 6 ErrDecodingFailure        stdin, a field or prevResult does not decode
//	 7 ErrInvalidNetworkConfig   invalid value (socket, timeout); CHECK without
//	                             prevResult; GC without valid-attachments
//	11 ErrTryAgainLater          daemon unreachable (socket missing, nobody
//	                             listening), no free address (the daemon's
//	                             reason), no answer within ipam.timeout
//	50 ErrPluginNotAvailable     STATUS: daemon unreachable, not ready or no
//	                             address available
//	101 ErrAPIVersionMismatch    plugin and daemon speak different IPAM API versions
//	102 ErrAllocationNotFound    CHECK: the key does not hold prevResult's address
//	103 ErrBranchENINotWired     ADD: the pod has a branch ENI (security groups
//	                             for pods) that this caller cannot wire: an
//	                             IPv6 branch, or the vpc-ipam binary run by an
//	                             interface plugin other than vpc-bridge
//	999 ErrInternal              anything else, with context
//
// 100 is cniext.ErrDaemonUnreachable, reserved for the chain; vpc-ipam does
// not return it: its DEL already succeeds when the daemon is unreachable.
const (
	// ErrPluginNotAvailable is CNI 1.1's STATUS code 50; containernetworking/cni
	// v1.3.0 does not define it yet.
	ErrPluginNotAvailable uint = 50
	// ErrAPIVersionMismatch: the daemon refused our ipamclient.APIVersion (or
	// we got an answer we cannot read). Not transient: plugin binary and
	// daemon come from different releases; reinstalling fixes it, retrying
	// does not. Not types.ErrIncompatibleCNIVersion, which is about the CNI
	// spec version between runtime and plugin.
	ErrAPIVersionMismatch uint = 101
	// ErrAllocationNotFound: CHECK found that the daemon does not hold the
	// attachment's address for its key.
	ErrAllocationNotFound uint = 102
	// ErrBranchENINotWired: the daemon answered with the pod's branch ENI
	// (AWS's VPC resource controller gave it one) instead of an address,
	// and the caller cannot wire it (vpc-bridge wires IPv4 branches). Not
	// transient (retrying gets the same branch), and nothing was set up:
	// the pod fails rather than get a pool address without its security
	// groups.
	ErrBranchENINotWired uint = 103
)

// daemonError turns an ipamclient error of verb into the CNI error the
// runtime sees (the table above). Verb-specific exceptions (DEL, STATUS,
// CHECK's not-found) are handled by the callers first.
func daemonError(verb string, conf *Config, err error) error {
	var unavailable *ipamclient.UnavailableError
	var noAddr *ipamclient.NoAddressError
	var mismatch *ipamclient.VersionMismatchError
	switch {
	case errors.As(err, &unavailable):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("vpc-ipam: %s: %v", verb, err),
			"the vpcchain daemon is not running or not reachable on its socket; the runtime should retry once it is up")
	case errors.As(err, &noAddr):
		// The daemon's reason is for the user (pool empty, max pods, subnet
		// full); the daemon refills the pool in the background, so retry.
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("vpc-ipam: %s: %s", verb, noAddr.Error()), "")
	case errors.As(err, &mismatch):
		return types.NewError(ErrAPIVersionMismatch, fmt.Sprintf("vpc-ipam: %s: %v", verb, err),
			fmt.Sprintf("this vpc-ipam speaks IPAM API v%d; install the plugin and the daemon from the same release", ipamclient.APIVersion))
	case errors.Is(err, ipamclient.ErrTimeout):
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("vpc-ipam: %s: %v (ipam.timeout %s)", verb, err, conf.Timeout), "")
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-ipam: %s: %v", verb, err), "")
}
