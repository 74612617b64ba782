// Package vpcipam is the vpc-ipam IPAM plugin: the verbs, its configuration
// and its error codes. The vpc-ipam command runs it as a plugin (CmdAdd,
// CmdDel, ...: parse stdin and CNI_ARGS, then run the verb); vpc-bridge
// calls it in-process when its ipam.type is vpc-ipam (Type), which saves a
// process start per ADD and DEL and behaves exactly as the command does. The
// verbs (Add, Del, ...) take the parsed configuration and pod, so that a
// caller parses them once per invocation.
package vpcipam

// The verbs. Every one parses the configuration, dials the daemon and makes
// one RPC within ipam.timeout; the daemon owns all state, so the plugin
// keeps none on disk.
//
//	ADD     Add(key, pod, netns) -> result {ips: [<ip>/32 gw 169.254.1.1]},
//	        or in IPv6 mode {ips: [<ip>/128 gw fe80::1]},
//	        plus the vpcchain extension {routeTable, eniID, deviceNumber};
//	        for a branch-ENI pod the branch's address and the extension's
//	        branch, which only vpc-bridge (in-process) wires.
//	        The daemon returns the same address for the same key, so a
//	        repeated ADD is harmless.
//	DEL     Del(key). Unknown key, or the daemon unreachable: success (the
//	        daemon reclaims a leaked address itself when it reconciles).
//	CHECK   Check(key, prevResult's address).
//	STATUS  Status(): the daemon answers and can serve an ADD (an empty pool
//	        is still ready: ADD answers 11 with the reason), else 50.
//	GC      GC(network, cni.dev/valid-attachments as keys).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/cniext"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
	"github.com/vpcchain/vpcchain/internal/routing"
)

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "vpc-ipam: "+format+"\n", a...)
}

func attachmentKey(conf *Config, args *skel.CmdArgs) *ipamv1.Key {
	return &ipamv1.Key{Network: conf.Name, ContainerId: args.ContainerID, Ifname: args.IfName}
}

// checkKey refuses, before the daemon does, a key the daemon cannot store
// (ipamclient.ValidateKey): code 7 for the network name (configuration), 4
// for the container ID or ifname (runtime environment).
func checkKey(k *ipamv1.Key) error {
	err := ipamclient.ValidateKey(k.GetNetwork(), k.GetContainerId(), k.GetIfname())
	if err == nil {
		return nil
	}
	code := types.ErrInvalidEnvironmentVariables
	var ke *ipamclient.KeyError
	if errors.As(err, &ke) && ke.Field == ipamclient.FieldNetwork {
		code = types.ErrInvalidNetworkConfig
	}
	return types.NewError(code, "vpc-ipam: "+err.Error(), "")
}

func keyString(k *ipamv1.Key) string {
	return fmt.Sprintf("network %q container %s ifname %s", k.GetNetwork(), k.GetContainerId(), k.GetIfname())
}

// withDaemon dials the daemon and runs fn; dial and fn share one deadline
// of conf.Timeout, so an invocation never outlives it.
func withDaemon(conf *Config, fn func(context.Context, *ipamclient.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	c, err := ipamclient.Dial(ctx, conf.Socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// Type is the plugin's name, the ipam.type that selects it.
const Type = "vpc-ipam"

// CmdAdd is ADD: it writes the result, with the vpcchain extension, to
// stdout.
func CmdAdd(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	pod, err := ParsePodArgs(args.Args)
	if err != nil {
		return err
	}
	// Only vpc-bridge (which calls Add in-process) wires a branch ENI; an
	// interface plugin that runs this binary would give the pod an address
	// whose traffic EC2 drops.
	raw, err := add(conf, pod, args, false)
	if err != nil {
		return err
	}
	if _, err := os.Stdout.Write(raw); err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("vpc-ipam: ADD: write result: %v", err), "")
	}
	return nil
}

// Add is ADD without output, for the configuration and pod that the caller
// parsed (ParseConfig, ParsePodArgs): it returns the result with the
// vpcchain extension, in the configuration's CNI version, as the plugin
// prints it.
//
// A pod with a branch ENI gets the branch's address and the extension's
// branch, which vpc-bridge wires; the caller must be able to.
func Add(conf *Config, pod *PodArgs, args *skel.CmdArgs) ([]byte, error) {
	return add(conf, pod, args, true)
}

func add(conf *Config, pod *PodArgs, args *skel.CmdArgs, wiresBranches bool) ([]byte, error) {
	key := attachmentKey(conf, args)
	if err := checkKey(key); err != nil {
		return nil, err
	}
	if err := ipamclient.ValidatePodInfo("", "", args.Netns); err != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, "vpc-ipam: "+err.Error(), "")
	}
	var alloc *ipamv1.Allocation
	var branch *ipamv1.BranchENI
	err := withDaemon(conf, func(ctx context.Context, c *ipamclient.Client) error {
		reply, err := c.Add(ctx, &ipamv1.AddRequest{
			Key:          key,
			PodNamespace: string(pod.K8S_POD_NAMESPACE),
			PodName:      string(pod.K8S_POD_NAME),
			Netns:        args.Netns,
		})
		alloc, branch = reply.GetAllocation(), reply.GetBranch()
		return err
	})
	if err != nil {
		return nil, daemonError("ADD", conf, err)
	}
	if branch != nil {
		return branchResult(conf, pod, key, branch, wiresBranches)
	}
	result, ext, err := resultFromAllocation(alloc)
	if err != nil {
		// The daemon holds the key; the runtime's DEL after this failure
		// releases it.
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("vpc-ipam: ADD: the daemon's allocation for %s is unusable: %v", keyString(key), err), "")
	}
	var out bytes.Buffer
	if err := cniext.WriteResult(&out, result, ext, conf.CNIVersion); err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("vpc-ipam: ADD: encode result (cniVersion %q): %v", conf.CNIVersion, err), "")
	}
	return out.Bytes(), nil
}

// branchResult is ADD's result for a pod with a branch ENI: the branch's
// address as /32 and the extension's branch. ErrBranchENINotWired when the
// caller cannot wire it or the branch is IPv6 (not built).
func branchResult(conf *Config, pod *PodArgs, key *ipamv1.Key, b *ipamv1.BranchENI, wiresBranches bool) ([]byte, error) {
	what := fmt.Sprintf("pod %s/%s has branch ENI %s (%s, VLAN %d on trunk %s)",
		pod.K8S_POD_NAMESPACE, pod.K8S_POD_NAME, b.GetEniId(), b.GetIp(), b.GetVlanId(), b.GetTrunkEniId())
	const hint = "security groups for pods (ENABLE_POD_ENI=true): the pod was not wired; remove it from the SecurityGroupPolicy's selection to give it a pool address"
	switch {
	case !wiresBranches:
		return nil, types.NewError(ErrBranchENINotWired,
			"vpc-ipam: ADD: "+what+": only vpc-bridge (with ipam.type vpc-ipam) wires branch ENIs, not an interface plugin that runs the vpc-ipam binary", hint)
	case b.GetIp() == "":
		return nil, types.NewError(ErrBranchENINotWired,
			"vpc-ipam: ADD: "+what+": IPv6 branch ENIs are not wired (security groups for pods are IPv4 only)", hint)
	}
	result, ext, err := resultFromBranch(b)
	if err != nil {
		return nil, types.NewError(types.ErrInternal,
			fmt.Sprintf("vpc-ipam: ADD: the daemon's branch ENI for %s is unusable: %v", keyString(key), err), "")
	}
	var out bytes.Buffer
	if err := cniext.WriteResult(&out, result, ext, conf.CNIVersion); err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("vpc-ipam: ADD: encode result (cniVersion %q): %v", conf.CNIVersion, err), "")
	}
	return out.Bytes(), nil
}

// resultFromBranch is the CNI result of a branch ENI: its IPv4 address as
// /32 behind the pods' link-local gateway (vpc-bridge gives the pod the
// same routes as any other) and the extension's branch.
func resultFromBranch(b *ipamv1.BranchENI) (*types100.Result, *cniext.Ext, error) {
	ip := net.ParseIP(b.GetIp()).To4()
	if ip == nil {
		return nil, nil, fmt.Errorf("branch address %q is not an IPv4 address", b.GetIp())
	}
	ext := &cniext.Ext{ENIID: b.GetEniId(), Branch: &cniext.Branch{
		ENIID:         b.GetEniId(),
		MAC:           b.GetMac(),
		VLANID:        int(b.GetVlanId()),
		SubnetGateway: b.GetSubnetGateway(),
		TrunkENIID:    b.GetTrunkEniId(),
		TrunkMAC:      b.GetTrunkMac(),
	}}
	if err := ext.Validate(); err != nil {
		return nil, nil, err
	}
	result := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		IPs:        []*types100.IPConfig{{Address: net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}, Gateway: routing.PodGateway4}},
	}
	return result, ext, nil
}

// resultFromAllocation is the CNI result of an allocation: the address as
// /32 or /128 (the VPC routes it to the ENI, not the subnet to the pod), no routes
// (vpc-bridge installs the pod's default route itself), and the extension
// that names the ENI's route table.
func resultFromAllocation(a *ipamv1.Allocation) (*types100.Result, *cniext.Ext, error) {
	if a == nil {
		return nil, nil, errors.New("the reply has no allocation")
	}
	ip := net.ParseIP(a.GetIp())
	if ip == nil {
		return nil, nil, fmt.Errorf("address %q is not an IP address", a.GetIp())
	}
	addr := net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)}
	gw := routing.PodGateway4
	if addr.IP == nil { // IPv6 mode: a /128 of the node's /80
		addr, gw = net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}, routing.PodGateway6
	}
	ext := &cniext.Ext{RouteTable: int(a.GetRouteTable()), ENIID: a.GetEniId(), DeviceNumber: int(a.GetDeviceNumber())}
	if err := ext.Validate(); err != nil {
		return nil, nil, err
	}
	result := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		IPs:        []*types100.IPConfig{{Address: addr, Gateway: gw}},
	}
	return result, ext, nil
}

// CmdDel is DEL.
func CmdDel(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return Del(conf, args)
}

// Del is DEL for a parsed configuration.
func Del(conf *Config, args *skel.CmdArgs) error {
	key := attachmentKey(conf, args)
	if err := checkKey(key); err != nil {
		// ADD refuses such a key, so it holds nothing to release.
		logf("DEL: %v; nothing to release", err)
		return nil
	}
	err := withDaemon(conf, func(ctx context.Context, c *ipamclient.Client) error {
		_, err := c.Del(ctx, &ipamv1.DelRequest{Key: key})
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ipamclient.ErrDaemonUnavailable):
		// Failing would block the pod's teardown for as long as the daemon
		// is down; the daemon finds the address of a container that no
		// longer exists when it reconciles (and through GC) and frees it.
		logf("DEL %s: %v; succeeding anyway: the daemon releases the address when it reconciles", keyString(key), err)
		return nil
	case errors.Is(err, ipamclient.ErrNotFound):
		return nil // already released: DEL is idempotent
	}
	return daemonError("DEL", conf, err)
}

// CmdCheck is CHECK.
func CmdCheck(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return Check(conf, args)
}

// Check is CHECK for a parsed configuration.
func Check(conf *Config, args *skel.CmdArgs) error {
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "vpc-ipam: CHECK needs prevResult (the attachment's ADD result) in the configuration", "")
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("vpc-ipam: CHECK: cannot convert prevResult to %s: %v", types100.ImplementedSpecVersion, err), "")
	}
	ip, err := singleAddress(prev)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "vpc-ipam: CHECK: prevResult "+err.Error(), "")
	}
	key := attachmentKey(conf, args)
	if err := checkKey(key); err != nil {
		return err
	}
	err = withDaemon(conf, func(ctx context.Context, c *ipamclient.Client) error {
		reply, err := c.Check(ctx, &ipamv1.CheckRequest{Key: key, Ip: ip.String()})
		if err != nil {
			return err
		}
		// Belt and braces: the daemon answers NotFound itself on a mismatch.
		if got := reply.GetAllocation().GetIp(); got != "" && !net.ParseIP(got).Equal(ip) {
			return fmt.Errorf("%w: the key holds %s", ipamclient.ErrNotFound, got)
		}
		return nil
	})
	if errors.Is(err, ipamclient.ErrNotFound) {
		return types.NewError(ErrAllocationNotFound,
			fmt.Sprintf("vpc-ipam: CHECK: the daemon does not hold %s for %s: %v", ip, keyString(key), err), "")
	}
	if err != nil {
		return daemonError("CHECK", conf, err)
	}
	return nil
}

// singleAddress returns the one address of a result: vpc-ipam hands out
// exactly one, IPv4 or (in IPv6 mode) IPv6.
func singleAddress(r *types100.Result) (net.IP, error) {
	var all []string
	var ip net.IP
	for _, c := range r.IPs {
		if c == nil {
			continue
		}
		all = append(all, c.Address.String())
		ip = c.Address.IP
	}
	if len(all) != 1 {
		return nil, fmt.Errorf("has %d addresses [%s]: want exactly one (the address vpc-ipam handed out)", len(all), strings.Join(all, ", "))
	}
	if v4 := ip.To4(); v4 != nil {
		return v4, nil
	}
	return ip, nil
}

// CmdStatus is STATUS.
func CmdStatus(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return Status(conf)
}

// Status is STATUS for a parsed configuration.
func Status(conf *Config) error {
	var notReady string
	err := withDaemon(conf, func(ctx context.Context, c *ipamclient.Client) error {
		reply, err := c.Status(ctx)
		if err != nil {
			return err
		}
		// An empty pool is not a network that is not ready: ADD says "try
		// again later" with the reason, and the node stays in service.
		if reply.GetReady() {
			return nil
		}
		notReady = "the vpcchain daemon is not ready"
		if r := reply.GetReason(); r != "" {
			notReady += ": " + r
		}
		return nil
	})
	// Whatever keeps the daemon from confirming that an ADD would succeed
	// (down, hung, other API version) is "not available": that is all
	// STATUS may say (50), the message says why.
	if err != nil {
		return types.NewError(ErrPluginNotAvailable, fmt.Sprintf("vpc-ipam: STATUS: %v", err), "")
	}
	if notReady != "" {
		return types.NewError(ErrPluginNotAvailable, "vpc-ipam: STATUS: "+notReady, "")
	}
	return nil
}

// CmdGC is GC.
func CmdGC(args *skel.CmdArgs) error {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return GC(conf)
}

// GC is GC for a parsed configuration.
func GC(conf *Config) error {
	if !conf.HasValidAttachments {
		// Without the list every allocation of the network would look
		// stale; releasing the addresses of live pods is the one thing an
		// IPAM must never do.
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("vpc-ipam: GC needs cni.dev/valid-attachments in the configuration (a list, possibly empty); refusing to release every address of network %q", conf.Name), "")
	}
	req := &ipamv1.GCRequest{Network: conf.Name}
	for _, a := range conf.ValidAttachments {
		req.Valid = append(req.Valid, &ipamv1.Key{Network: conf.Name, ContainerId: a.ContainerID, Ifname: a.IfName})
	}
	var released []*ipamv1.Key
	err := withDaemon(conf, func(ctx context.Context, c *ipamclient.Client) error {
		reply, err := c.GC(ctx, req)
		released = reply.GetReleased()
		return err
	})
	if err != nil {
		return daemonError("GC", conf, err)
	}
	if len(released) > 0 {
		names := make([]string, 0, len(released))
		for _, k := range released {
			names = append(names, k.GetContainerId()+"/"+k.GetIfname())
		}
		logf("GC: released %d stale allocation(s) of network %q: %s", len(released), conf.Name, strings.Join(names, ", "))
	}
	return nil
}
