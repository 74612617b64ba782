// Command fakeipam is a test IPAM plugin for vpc-bridge's integration tests.
// It returns the addresses and the vpcchain extension given in its ipam
// config, records every call in <stateDir>/calls, keeps one allocation file
// per attachment in stateDir, and fails a command on request:
//
//	"ipam": {
//	  "type": "fakeipam",
//	  "stateDir": "/tmp/...",
//	  "ips": ["10.1.2.3/24"],
//	  "ext": {"routeTable": 3, "eniID": "eni-0abc", "deviceNumber": 2},
//	  "fail": {"DEL": {"code": 100, "msg": "daemon unreachable"}}
//	}
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vpcchain/vpcchain/internal/cniext"
)

type failure struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

type ipamConf struct {
	StateDir string              `json:"stateDir"`
	IPs      []string            `json:"ips"`
	Ext      *cniext.Ext         `json:"ext"`
	Fail     map[string]*failure `json:"fail"`
}

type netConf struct {
	types.NetConf
	IPAM ipamConf `json:"ipam"`
}

func load(args *skel.CmdArgs, cmd string) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(args.StdinData, c); err != nil {
		return nil, err
	}
	if c.IPAM.StateDir == "" {
		return nil, fmt.Errorf("fakeipam: stateDir is required")
	}
	f, err := os.OpenFile(filepath.Join(c.IPAM.StateDir, "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "%s %s %s\n", cmd, args.ContainerID, args.IfName)
	f.Close()
	if fl := c.IPAM.Fail[cmd]; fl != nil {
		return nil, types.NewError(fl.Code, fl.Msg, "")
	}
	return c, nil
}

func allocFile(c *netConf, args *skel.CmdArgs) string {
	return filepath.Join(c.IPAM.StateDir, "alloc-"+args.ContainerID+"-"+args.IfName)
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := load(args, "ADD")
	if err != nil {
		return err
	}
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	for _, s := range c.IPAM.IPs {
		ip, ipn, err := net.ParseCIDR(s)
		if err != nil {
			return err
		}
		ipn.IP = ip
		res.IPs = append(res.IPs, &types100.IPConfig{Address: *ipn})
	}
	if err := os.WriteFile(allocFile(c, args), []byte(strings.Join(c.IPAM.IPs, "\n")), 0o644); err != nil {
		return err
	}
	return cniext.PrintResult(res, c.IPAM.Ext, c.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	c, err := load(args, "DEL")
	if err != nil {
		return err
	}
	if err := os.Remove(allocFile(c, args)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	c, err := load(args, "CHECK")
	if err != nil {
		return err
	}
	if _, err := os.Stat(allocFile(c, args)); err != nil {
		return fmt.Errorf("fakeipam: no allocation for %s/%s", args.ContainerID, args.IfName)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	_, err := load(args, "STATUS")
	return err
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus}, version.All, "fakeipam")
}
