package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// NetConf is vpc-snat's configuration in the chain:
//
//	{"type": "vpc-snat", "nodeConfig": "/var/run/vpcchain/snat.json"}
type NetConf struct {
	types.NetConf
	// NodeConfig is the file the daemon keeps current (primary IP, VPC
	// CIDRs, mode); default snat.DefaultNodeConfig.
	NodeConfig string `json:"nodeConfig,omitempty"`
}

// parseConfig decodes stdin: code 6 for undecodable JSON, 7 for bad values.
func parseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("vpc-snat: cannot decode network configuration: %v", err), "")
	}
	if conf.NodeConfig == "" {
		conf.NodeConfig = snat.DefaultNodeConfig
	}
	if !filepath.IsAbs(conf.NodeConfig) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-snat: nodeConfig %q must be an absolute path", conf.NodeConfig), "")
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "vpc-snat: cannot parse prevResult: "+err.Error(), "")
		}
	}
	return conf, nil
}

// podIPv4s returns the IPv4 addresses of prevResult (what vpc-bridge gave
// the pod).
func (c *NetConf) podIPv4s() (*types100.Result, []netip.Addr, error) {
	if c.PrevResult == nil {
		return nil, nil, types.NewError(types.ErrInvalidNetworkConfig,
			"vpc-snat: no prevResult: vpc-snat must be chained after the interface plugin (vpc-bridge)", "")
	}
	res, err := types100.NewResultFromResult(c.PrevResult)
	if err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "vpc-snat: cannot convert prevResult: "+err.Error(), "")
	}
	var ips []netip.Addr
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok && ipc.Address.IP.To4() != nil {
			ips = append(ips, a)
		}
	}
	return res, ips, nil
}
