package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vpcchain/vpcchain/internal/cniargs"
	"github.com/vpcchain/vpcchain/internal/nodeconf"
	"github.com/vpcchain/vpcchain/internal/vethname"
)

// Defaults and limits of the configuration.
const (
	// DefaultMTU is the MTU of both veth ends when "mtu" is absent or 0: the
	// EC2 jumbo-frame MTU, as AWS_VPC_ENI_MTU / POD_MTU default to.
	DefaultMTU = 9001
	// MinMTU and MaxMTU bound "mtu" (the AWS VPC CNI's IPv4 range).
	MinMTU = 576
	MaxMTU = 9001
)

// NetConf is vpc-bridge's network configuration (stdin). Example:
//
//	{
//	  "cniVersion": "1.1.0",
//	  "name": "vpcchain",
//	  "type": "vpc-bridge",
//	  "vethPrefix": "eni",
//	  "mtu": 9001,
//	  "ipam": {"type": "vpc-ipam"}
//	}
type NetConf struct {
	types.NetConf

	// VethPrefix is the host veth name prefix; default "eni". 1..4
	// characters, not "eth", "lo" or "vlan" (vethname.ValidatePrefix). It must
	// match Felix's interfacePrefix when Calico enforces policy.
	VethPrefix string `json:"vethPrefix,omitempty"`
	// MTU of both veth ends; default 9001, allowed 576..9001.
	MTU int `json:"mtu,omitempty"`
	// PodSGMode is how a pod with a branch ENI is wired (branch.go):
	// "strict" (default) or "standard", the AWS VPC CNI's
	// podSGEnforcingMode (POD_SECURITY_GROUP_ENFORCING_MODE).
	PodSGMode string `json:"podSGEnforcingMode,omitempty"`
}

// standard says whether branch-ENI pods are wired in standard mode.
func (c *NetConf) standard() bool { return c.PodSGMode == nodeconf.PodSGStandard }

// parseConfig decodes and validates the configuration, applies defaults and
// parses prevResult when present. Errors are *types.Error with code
// ErrDecodingFailure (6) for undecodable JSON and ErrInvalidNetworkConfig (7)
// for invalid values; messages name the field and the allowed values.
func parseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("vpc-bridge: cannot decode network configuration: %v", err), "")
	}
	if err := conf.applyDefaultsAndValidate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "vpc-bridge: invalid network configuration: "+err.Error(), "")
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("vpc-bridge: cannot decode prevResult: %v", err), "")
		}
	}
	return conf, nil
}

func (c *NetConf) applyDefaultsAndValidate() error {
	var errs []error
	if c.VethPrefix == "" {
		c.VethPrefix = vethname.DefaultPrefix
	} else if err := vethname.ValidatePrefix(c.VethPrefix); err != nil {
		errs = append(errs, fmt.Errorf("vethPrefix: %w (default %q)", err, vethname.DefaultPrefix))
	}
	switch {
	case c.MTU == 0:
		c.MTU = DefaultMTU
	case c.MTU < MinMTU || c.MTU > MaxMTU:
		errs = append(errs, fmt.Errorf("mtu %d is out of range: allowed %d..%d (default %d)", c.MTU, MinMTU, MaxMTU, DefaultMTU))
	}
	if c.PodSGMode == "" {
		c.PodSGMode = nodeconf.PodSGStrict
	} else if err := nodeconf.ValidPodSGMode(c.PodSGMode); err != nil {
		errs = append(errs, fmt.Errorf("podSGEnforcingMode %q is invalid: %w", c.PodSGMode, err))
	}
	switch t := c.IPAM.Type; {
	case t == "":
		errs = append(errs, errors.New(`ipam.type is required: the name of an IPAM plugin binary in CNI_PATH, e.g. "vpc-ipam" or "host-local"`))
	case strings.ContainsAny(t, `/\`) || t == "." || t == "..":
		errs = append(errs, fmt.Errorf("ipam.type %q is not a plugin name: give the binary's name in CNI_PATH, not a path", t))
	}
	return errors.Join(errs...)
}

// K8sArgs are the CNI_ARGS keys that kubelet/containerd pass. Unknown keys are
// always ignored (kubelet sends IgnoreUnknown=1, other runtimes may not).
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_UID                types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
}

// loadK8sArgs parses CNI_ARGS; a malformed value is ErrInvalidEnvironmentVariables (4).
func loadK8sArgs(cniArgs string) (*K8sArgs, error) {
	a := &K8sArgs{}
	a.IgnoreUnknown = true
	if err := cniargs.Load(cniArgs, a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("vpc-bridge: invalid CNI_ARGS %q: %v", cniArgs, err), "")
	}
	// The pod's names pick the host veth name; refuse ones Kubernetes
	// cannot have (ADD would otherwise build a veth no Felix would match).
	if err := cniargs.ValidatePod(string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME)); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "vpc-bridge: invalid CNI_ARGS: "+err.Error(), "")
	}
	return a, nil
}

// hostVethName is vethname.HostName for a Kubernetes pod, or the documented
// fallback (vethname.FallbackHostName) when the runtime passes no pod
// namespace/name.
func hostVethName(prefix string, k *K8sArgs, containerID, ifName string) string {
	if k != nil && k.K8S_POD_NAMESPACE != "" && k.K8S_POD_NAME != "" {
		return vethname.HostName(prefix, string(k.K8S_POD_NAMESPACE), string(k.K8S_POD_NAME))
	}
	return vethname.FallbackHostName(prefix, containerID, ifName)
}

// checkIfName validates CNI_IFNAME; ErrInvalidEnvironmentVariables (4).
func checkIfName(ifName string) error {
	if err := vethname.ValidateIfName(ifName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "vpc-bridge: invalid CNI_IFNAME: "+err.Error(), "")
	}
	return nil
}
