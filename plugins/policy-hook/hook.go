package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// logw receives the plugin's log lines (stderr; stdout carries only the result).
var logw io.Writer = os.Stderr

func logf(format string, a ...any) {
	fmt.Fprintf(logw, "policy-hook: "+format+"\n", a...)
}

// errPluginNotAvailable is CNI 1.1's STATUS code 50 (not in cni v1.3.0's types).
const errPluginNotAvailable uint = 50

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if err := add(context.Background(), conf, args); err != nil {
		return err
	}
	return types.PrintResult(conf.PrevResult, conf.CNIVersion)
}

// add does ADD's work; the result is conf.PrevResult, unchanged.
func add(ctx context.Context, conf *NetConf, args *skel.CmdArgs) error {
	att, err := conf.attachment()
	if err != nil {
		return err
	}
	pod, err := loadPod(args.Args)
	if errors.Is(err, errNoPod) {
		if conf.publish || conf.waiting() {
			return configError("%v: policy-hook needs the pod's namespace and name to check the host veth name, publish the pod IP and wait for policy (is the runtime a Kubernetes CRI?)", err)
		}
		logf("%v: no pod, nothing to check (container %s)", err, args.ContainerID)
		return nil
	}
	if err != nil {
		return err
	}
	iface, err := checkName(conf.VethPrefix, pod, att.hostIfs)
	if err != nil {
		return err
	}
	if !conf.publish {
		return nil
	}
	if len(att.addresses) == 0 {
		return configError("prevResult has no IP addresses for pod %s: nothing to publish (policy-hook must come after the plugin that assigns the address)", pod)
	}
	client, err := newClient(conf.Kubeconfig)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("policy-hook: cannot publish the IP of pod %s: %v", pod, err), "")
	}
	if err := publish(ctx, client, pod, att.addresses); err != nil {
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("policy-hook: cannot publish the IP of pod %s on the Pod (patch pods/status annotations): %v", pod, err), "")
	}
	if !conf.waiting() {
		return nil
	}
	path := statusFile(conf.WaitForPolicy.EndpointStatusDir, pod)
	werr := waitForEndpoint(ctx, path, iface, att.addresses, conf.waitTimeout)
	if werr == nil {
		return nil
	}
	hint := "is calico-node running on this node (v3.30+ or FELIX_ENDPOINTSTATUSPATHPREFIX=/var/run/calico), with FELIX_INTERFACEPREFIX=" + conf.VethPrefix + "?"
	if !conf.WaitForPolicy.Strict {
		logf("pod %s: %v; starting the pod anyway (waitForPolicy.strict is false): %s", pod, werr, hint)
		return nil
	}
	// Roll back what this ADD did on the Pod; the runtime retries ADD.
	if _, err := unpublish(ctx, client, pod, att.addresses); err != nil {
		logf("pod %s: rolling back the pod IP annotations: %v", pod, err)
	}
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("policy-hook: pod %s: %v (waitForPolicy.strict is true, so the pod does not start without its policy): %s", pod, werr, hint), "")
}

// cmdDel clears the annotations if they still hold the released address.
// It never fails on Kubernetes trouble: the annotations only speed up
// Felix's withdrawal of the endpoint (deleting the Pod does it too), and a
// failing DEL would block the pod's teardown.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return del(context.Background(), conf, args)
}

func del(ctx context.Context, conf *NetConf, args *skel.CmdArgs) error {
	if conf.PrevResult == nil || !conf.publish {
		return nil
	}
	att, err := conf.attachment()
	if err != nil {
		return err
	}
	pod, err := loadPod(args.Args)
	if err != nil || len(att.addresses) == 0 {
		return nil // no pod or no address: nothing was published
	}
	client, err := newClient(conf.Kubeconfig)
	if err != nil {
		logf("DEL pod %s: not clearing the pod IP annotations: %v", pod, err)
		return nil
	}
	if _, err := unpublish(ctx, client, pod, att.addresses); err != nil {
		logf("DEL pod %s: not clearing the pod IP annotations (Felix withdraws the endpoint when the Pod is deleted): %v", pod, err)
	}
	return nil
}

// cmdCheck verifies the host veth name and, when waiting is configured, that
// Felix still reports the endpoint programmed.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	return check(conf, args)
}

func check(conf *NetConf, args *skel.CmdArgs) error {
	att, err := conf.attachment()
	if err != nil {
		return err
	}
	pod, err := loadPod(args.Args)
	if errors.Is(err, errNoPod) {
		if conf.publish || conf.waiting() {
			return configError("%v: cannot check the pod's host veth name", err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	iface, err := checkName(conf.VethPrefix, pod, att.hostIfs)
	if err != nil {
		return err
	}
	if conf.waiting() {
		if err := endpointReady(statusFile(conf.WaitForPolicy.EndpointStatusDir, pod), iface, att.addresses); err != nil {
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("policy-hook: pod %s: Felix does not report the endpoint programmed: %v", pod, err), "")
		}
	}
	return nil
}

// cmdStatus: ready when the kubeconfig (if publishing) can be loaded.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	if conf.publish {
		if _, err := newClient(conf.Kubeconfig); err != nil {
			return types.NewError(errPluginNotAvailable, "policy-hook: cannot publish pod IPs: "+err.Error(), "")
		}
	}
	return nil
}
