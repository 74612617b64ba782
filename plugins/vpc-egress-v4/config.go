package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults and limits of the configuration.
const (
	// DefaultIfName is the pod-side interface, the AWS VPC CNI's name.
	DefaultIfName = "v4if0"
	// DefaultMTU is the MTU of both veth ends; allowed MinMTU..MaxMTU.
	DefaultMTU = 9001
	MinMTU     = 576
	MaxMTU     = 9001
	// DefaultDataDir is where a host-local IPAM without "dataDir" keeps
	// this plugin's leases: apart from the pod network's own, so that the
	// two never release each other's addresses.
	DefaultDataDir = "/var/lib/cni/vpc-egress-v4"
	// hostVethPrefix starts every host-side veth name; Felix's interface
	// prefix (eni) does not match it, so policy applies on the pod's main
	// interface only.
	hostVethPrefix = "egv4"
)

// NetConf is vpc-egress-v4's configuration in the chain. Example:
//
//	{
//	  "type": "vpc-egress-v4",
//	  "ipam": {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]]}
//	}
type NetConf struct {
	types.NetConf
	// IfName is the pod-side interface; default v4if0.
	IfName string `json:"ifName,omitempty"`
	// MTU of both veth ends; default 9001.
	MTU int `json:"mtu,omitempty"`

	// raw is stdin, with ipam.dataDir defaulted for host-local, for the
	// delegated IPAM plugin.
	raw []byte
}

// parseConfig decodes and validates stdin: code 6 for undecodable JSON, 7
// for invalid values (the message names the field and what is allowed).
func parseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("vpc-egress-v4: cannot decode network configuration: %v", err), "")
	}
	if err := conf.validate(); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "vpc-egress-v4: invalid network configuration: "+err.Error(), "")
	}
	raw, err := withDataDir(stdin, conf.IPAM.Type)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "vpc-egress-v4: "+err.Error(), "")
	}
	conf.raw = raw
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "vpc-egress-v4: cannot decode prevResult: "+err.Error(), "")
		}
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	var errs []error
	if c.IPAM.Type == "" {
		errs = append(errs, errors.New(`ipam.type is missing: the plugin takes its IPv4 address from an IPAM plugin, e.g. {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]]}`))
	}
	switch {
	case c.IfName == "":
		c.IfName = DefaultIfName
	case len(c.IfName) > 15 || strings.ContainsAny(c.IfName, "/ \t\n:") || c.IfName == "." || c.IfName == "..":
		errs = append(errs, fmt.Errorf("ifName %q is not an interface name: 1 to 15 characters, no '/', ':' or whitespace (default %s)", c.IfName, DefaultIfName))
	}
	switch {
	case c.MTU == 0:
		c.MTU = DefaultMTU
	case c.MTU < MinMTU || c.MTU > MaxMTU:
		errs = append(errs, fmt.Errorf("mtu %d is out of range: allowed %d..%d (default %d)", c.MTU, MinMTU, MaxMTU, DefaultMTU))
	}
	return errors.Join(errs...)
}

// withDataDir gives a host-local IPAM section without dataDir this
// plugin's own directory.
func withDataDir(stdin []byte, ipamType string) ([]byte, error) {
	if ipamType != "host-local" {
		return stdin, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &top); err != nil {
		return nil, fmt.Errorf("cannot decode network configuration: %w", err)
	}
	var ipam map[string]json.RawMessage
	if err := json.Unmarshal(top["ipam"], &ipam); err != nil {
		return nil, fmt.Errorf("cannot decode ipam: %w", err)
	}
	if _, ok := ipam["dataDir"]; ok {
		return stdin, nil
	}
	ipam["dataDir"], _ = json.Marshal(DefaultDataDir)
	var err error
	if top["ipam"], err = json.Marshal(ipam); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}
