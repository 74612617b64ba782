package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/vpcipam"
)

// The IPAM plugin is run through libcni's invoke package like
// plugins/pkg/ipam does, except that ADD is run raw (invoke.RawExec) so that
// vpc-bridge gets the plugin's stdout bytes and can read the vpcchain
// extension next to the standard result (cniext.Parse).
//
// vpc-ipam itself is called in-process (internal/vpcipam, the code the
// vpc-ipam command runs): the same verbs, result bytes and errors, without a
// second process start on every ADD and DEL, which on a busy node costs more
// CPU than the IPAM call itself.

func findIPAM(conf *NetConf) (string, error) {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	p, err := invoke.FindInPath(conf.IPAM.Type, paths)
	if err != nil {
		return "", types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: ipam.type %q: IPAM plugin not found in CNI_PATH %q", conf.IPAM.Type, os.Getenv("CNI_PATH")), err.Error())
	}
	return p, nil
}

// ipamAddRaw runs IPAM ADD and returns its stdout. A plugin error is the
// plugin's own *types.Error (code and message preserved).
func ipamAddRaw(ctx context.Context, conf *NetConf, args *skel.CmdArgs) ([]byte, error) {
	if conf.IPAM.Type == vpcipam.Type {
		ipamConf, err := vpcipam.ParseConfig(args.StdinData)
		if err != nil {
			return nil, err
		}
		pod, err := vpcipam.ParsePodArgs(args.Args)
		if err != nil {
			return nil, err
		}
		return vpcipam.Add(ipamConf, pod, args)
	}
	path, err := findIPAM(conf)
	if err != nil {
		return nil, err
	}
	env := (&invoke.DelegateArgs{Command: "ADD"}).AsEnv()
	out, err := (&invoke.RawExec{Stderr: os.Stderr}).ExecPlugin(ctx, path, args.StdinData, env)
	if err != nil {
		return nil, err
	}
	return withResultVersion(out, conf.CNIVersion), nil
}

// withResultVersion adds cniVersion to a result that lacks it: per the spec
// the result then has the configuration's version (as invoke does it).
func withResultVersion(raw []byte, confVersion string) []byte {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return raw // let the parser report it
	}
	if v, ok := obj["cniVersion"]; ok && string(v) != `""` && string(v) != "null" {
		return raw
	}
	if confVersion == "" {
		confVersion = "0.1.0"
	}
	obj["cniVersion"], _ = json.Marshal(confVersion)
	fixed, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return fixed
}

// inProcess are vpc-ipam's result-less verbs.
var inProcess = map[string]func(*skel.CmdArgs) error{
	"DEL": vpcipam.CmdDel, "CHECK": vpcipam.CmdCheck, "STATUS": vpcipam.CmdStatus, "GC": vpcipam.CmdGC,
}

// ipamDelegate runs a result-less IPAM command (DEL, CHECK, STATUS, GC).
func ipamDelegate(ctx context.Context, verb string, conf *NetConf, args *skel.CmdArgs) error {
	if f := inProcess[verb]; f != nil && conf.IPAM.Type == vpcipam.Type {
		return f(args)
	}
	path, err := findIPAM(conf)
	if err != nil {
		return err
	}
	return invoke.ExecPluginWithoutResult(ctx, path, args.StdinData, &invoke.DelegateArgs{Command: verb}, nil)
}

// isDaemonUnreachable reports whether an IPAM error says that the IPAM
// daemon could not be reached at all (cniext.ErrDaemonUnreachable).
func isDaemonUnreachable(err error) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code == cniext.ErrDaemonUnreachable
}
