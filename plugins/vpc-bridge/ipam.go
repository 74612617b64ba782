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
// CPU than the IPAM call itself. Its configuration is parsed once per
// invocation, and ADD hands it the pod that vpc-bridge's own CNI_ARGS parse
// found rather than have it parse CNI_ARGS again.

// ipamPlugin is the IPAM plugin that ipam.type names, for one invocation.
type ipamPlugin struct {
	conf *NetConf
	args *skel.CmdArgs
	// For vpc-ipam: its configuration, or why it does not parse. The error
	// is returned by each IPAM call, where the vpc-ipam binary would return
	// it, so that DEL still cleans the host side first.
	vpc    *vpcipam.Config
	vpcErr error
	// pod is what ADD tells the daemon about the pod, from vpc-bridge's
	// parse of CNI_ARGS.
	pod *vpcipam.PodArgs
}

// newIPAM prepares the IPAM plugin of conf; k8s are the CNI_ARGS that
// vpc-bridge parsed (nil when it did not).
func newIPAM(conf *NetConf, args *skel.CmdArgs, k8s *K8sArgs) *ipamPlugin {
	p := &ipamPlugin{conf: conf, args: args}
	if p.inProcess() {
		p.vpc, p.vpcErr = vpcipam.ParseConfig(args.StdinData)
		p.pod = &vpcipam.PodArgs{}
		if k8s != nil {
			p.pod.K8S_POD_NAMESPACE, p.pod.K8S_POD_NAME = k8s.K8S_POD_NAMESPACE, k8s.K8S_POD_NAME
		}
	}
	return p
}

func (p *ipamPlugin) inProcess() bool { return p.conf.IPAM.Type == vpcipam.Type }

func (p *ipamPlugin) find() (string, error) {
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	path, err := invoke.FindInPath(p.conf.IPAM.Type, paths)
	if err != nil {
		return "", types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-bridge: ipam.type %q: IPAM plugin not found in CNI_PATH %q", p.conf.IPAM.Type, os.Getenv("CNI_PATH")), err.Error())
	}
	return path, nil
}

// add runs IPAM ADD and returns its stdout. A plugin error is the plugin's
// own *types.Error (code and message preserved).
func (p *ipamPlugin) add(ctx context.Context) ([]byte, error) {
	if p.inProcess() {
		if p.vpcErr != nil {
			return nil, p.vpcErr
		}
		return vpcipam.Add(p.vpc, p.pod, p.args)
	}
	path, err := p.find()
	if err != nil {
		return nil, err
	}
	env := (&invoke.DelegateArgs{Command: "ADD"}).AsEnv()
	out, err := (&invoke.RawExec{Stderr: os.Stderr}).ExecPlugin(ctx, path, p.args.StdinData, env)
	if err != nil {
		return nil, err
	}
	return withResultVersion(out, p.conf.CNIVersion), nil
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

// run runs a result-less IPAM verb (DEL, CHECK, STATUS, GC).
func (p *ipamPlugin) run(ctx context.Context, verb string) error {
	if p.inProcess() {
		if p.vpcErr != nil {
			return p.vpcErr
		}
		switch verb {
		case "DEL":
			return vpcipam.Del(p.vpc, p.args)
		case "CHECK":
			return vpcipam.Check(p.vpc, p.args)
		case "STATUS":
			return vpcipam.Status(p.vpc)
		case "GC":
			return vpcipam.GC(p.vpc)
		}
	}
	path, err := p.find()
	if err != nil {
		return err
	}
	return invoke.ExecPluginWithoutResult(ctx, path, p.args.StdinData, &invoke.DelegateArgs{Command: verb}, nil)
}

// isDaemonUnreachable reports whether an IPAM error says that the IPAM
// daemon could not be reached at all (cniext.ErrDaemonUnreachable).
func isDaemonUnreachable(err error) bool {
	var e *types.Error
	return errors.As(err, &e) && e.Code == cniext.ErrDaemonUnreachable
}
