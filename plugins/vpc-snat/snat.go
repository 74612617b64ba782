package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// nodeConfig reads the daemon's file. Missing means the daemon has not
// started yet: try again later.
func nodeConfig(conf *NetConf) (snat.NodeConfig, error) {
	nc, err := snat.ReadNodeConfig(conf.NodeConfig)
	if errors.Is(err, fs.ErrNotExist) {
		return nc, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("vpc-snat: %s does not exist: the vpcchain daemon has not set up SNAT on this node yet", conf.NodeConfig), "")
	}
	if err != nil {
		return nc, types.NewError(types.ErrInternal, "vpc-snat: "+err.Error(), "")
	}
	return nc, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	res, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	nc, err := nodeConfig(conf)
	if err != nil {
		return err
	}
	if !nc.ExternalSNAT {
		for i, ip := range ips {
			if err := snat.AddPod(ip); err != nil {
				for _, done := range ips[:i] { // leave nothing half-done
					_ = snat.DelPod(done)
				}
				code := uint(types.ErrInternal)
				if errors.Is(err, snat.ErrNotSetUp) {
					code = types.ErrTryAgainLater
				}
				return types.NewError(code, "vpc-snat: "+err.Error(), "")
			}
		}
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// cmdDel removes the pod's addresses from the SNAT set whatever the mode
// (a mode switch may have happened since ADD); absent is success.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return nil // nothing to go by: the daemon's set has no owner info
	}
	_, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if err := snat.DelPod(ip); err != nil && !errors.Is(err, snat.ErrNotSetUp) {
			return types.NewError(types.ErrInternal, "vpc-snat: "+err.Error(), "")
		}
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	_, ips, err := conf.podIPv4s()
	if err != nil {
		return err
	}
	nc, err := nodeConfig(conf)
	if err != nil {
		return err
	}
	if nc.ExternalSNAT {
		return nil
	}
	for _, ip := range ips {
		ok, err := snat.HasPod(ip)
		if err != nil {
			return types.NewError(types.ErrInternal, "vpc-snat: CHECK: "+err.Error(), "")
		}
		if !ok {
			return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-snat: CHECK: %s is not in ipset %s", ip, snat.PodSet), "")
		}
	}
	return nil
}

// cmdStatus: ready once the daemon has written the node config.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := nodeConfig(conf); err != nil {
		return types.NewError(errPluginNotAvailable, err.Error(), "")
	}
	return nil
}

// errPluginNotAvailable is CNI 1.1's STATUS code 50 (not in cni v1.3.0's
// types).
const errPluginNotAvailable uint = 50
