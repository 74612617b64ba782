package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/vpcchain/vpcchain/internal/cniargs"
	"github.com/vpcchain/vpcchain/internal/vethname"
)

// DefaultEndpointStatusDir is where Felix (EndpointStatusPathPrefix
// /var/run/calico, the default since Calico v3.30) writes one file per
// programmed workload endpoint.
const DefaultEndpointStatusDir = "/var/run/calico/endpoint-status"

// MaxWaitTimeout bounds waitForPolicy.timeout: the runtime's own deadline
// for a CNI ADD is a few minutes, and a pod should not sit longer than this
// waiting for policy.
const MaxWaitTimeout = 2 * time.Minute

// NetConf is policy-hook's configuration in the chain:
//
//	{"type": "policy-hook", "vethPrefix": "eni",
//	 "kubeconfig": "/etc/cni/net.d/vpcchain-kubeconfig",
//	 "waitForPolicy": {"timeout": "10s", "strict": false,
//	                   "endpointStatusDir": "/var/run/calico/endpoint-status"}}
type NetConf struct {
	types.NetConf
	// VethPrefix is vpc-bridge's vethPrefix and Felix's interface prefix
	// (the first entry of FELIX_INTERFACEPREFIX); default "eni".
	VethPrefix string `json:"vethPrefix,omitempty"`
	// Kubeconfig is the absolute path of the kubeconfig used to PATCH the
	// Pod; required unless publishPodIP is false.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// PublishPodIP (default true) publishes the pod's addresses on the Pod
	// during ADD and clears them on DEL.
	PublishPodIP *bool `json:"publishPodIP,omitempty"`
	// WaitForPolicy, when present with a timeout above 0, makes ADD wait for
	// Felix's endpoint-status file of the pod.
	WaitForPolicy *WaitConf `json:"waitForPolicy,omitempty"`

	// Parsed and defaulted values.
	publish     bool
	waitTimeout time.Duration // 0: do not wait
}

// WaitConf is the waitForPolicy section.
type WaitConf struct {
	// Timeout is a Go duration ("10s"); absent or "0s" means do not wait.
	Timeout string `json:"timeout,omitempty"`
	// Strict fails ADD (code 11, try again later) when Felix has not
	// programmed the endpoint in time; otherwise ADD logs and succeeds.
	Strict bool `json:"strict,omitempty"`
	// EndpointStatusDir is Felix's endpoint-status directory; default
	// DefaultEndpointStatusDir.
	EndpointStatusDir string `json:"endpointStatusDir,omitempty"`
}

func configError(format string, a ...any) error {
	return types.NewError(types.ErrInvalidNetworkConfig, "policy-hook: "+fmt.Sprintf(format, a...), "")
}

// parseConfig decodes stdin: code 6 for undecodable JSON or prevResult, 7
// for invalid values (all of them in one message).
func parseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("policy-hook: cannot decode network configuration: %v", err), "")
	}
	var errs []string
	if conf.VethPrefix == "" {
		conf.VethPrefix = vethname.DefaultPrefix
	}
	if err := vethname.ValidatePrefix(conf.VethPrefix); err != nil {
		errs = append(errs, "vethPrefix: "+err.Error())
	}
	conf.publish = conf.PublishPodIP == nil || *conf.PublishPodIP
	switch {
	case conf.publish && conf.Kubeconfig == "":
		errs = append(errs, `kubeconfig is required to publish the pod IP on the Pod (set "kubeconfig" to the path of a kubeconfig allowed to patch pods/status, or "publishPodIP": false)`)
	case conf.Kubeconfig != "" && !filepath.IsAbs(conf.Kubeconfig):
		errs = append(errs, fmt.Sprintf("kubeconfig %q must be an absolute path", conf.Kubeconfig))
	}
	if w := conf.WaitForPolicy; w != nil {
		if w.Timeout != "" {
			d, err := time.ParseDuration(w.Timeout)
			if err != nil || d < 0 || d > MaxWaitTimeout {
				errs = append(errs, fmt.Sprintf("waitForPolicy.timeout %q is invalid: want a duration from 0s (do not wait) to %s, such as \"10s\"", w.Timeout, MaxWaitTimeout))
			} else {
				conf.waitTimeout = d
			}
		}
		if w.EndpointStatusDir == "" {
			w.EndpointStatusDir = DefaultEndpointStatusDir
		}
		if !filepath.IsAbs(w.EndpointStatusDir) {
			errs = append(errs, fmt.Sprintf("waitForPolicy.endpointStatusDir %q must be an absolute path", w.EndpointStatusDir))
		}
		if conf.waitTimeout > 0 && !conf.publish {
			errs = append(errs, "waitForPolicy needs publishPodIP: Felix programs an endpoint only once the pod's IP is visible on the Pod, and the kubelet writes it only after ADD returns, so the wait would always time out")
		}
	}
	if len(errs) > 0 {
		return nil, configError("invalid configuration: %s", strings.Join(errs, "; "))
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "policy-hook: cannot parse prevResult: "+err.Error(), "")
		}
	}
	return conf, nil
}

// waiting reports whether ADD waits for Felix's endpoint-status file.
func (c *NetConf) waiting() bool { return c.waitTimeout > 0 }

// podAttachment is what prevResult says about the pod.
type podAttachment struct {
	result    *types100.Result
	hostIfs   []string     // interfaces without a sandbox (vpc-bridge's host veth)
	addresses []netip.Addr // the pod's addresses, in prevResult order
}

// attachment reads prevResult; code 7 when it is missing (not chained).
func (c *NetConf) attachment() (*podAttachment, error) {
	if c.PrevResult == nil {
		return nil, configError("no prevResult: policy-hook must be chained after the interface plugin (vpc-bridge)")
	}
	res, err := types100.NewResultFromResult(c.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "policy-hook: cannot convert prevResult: "+err.Error(), "")
	}
	a := &podAttachment{result: res}
	for _, i := range res.Interfaces {
		if i != nil && i.Sandbox == "" {
			a.hostIfs = append(a.hostIfs, i.Name)
		}
	}
	for _, ipc := range res.IPs {
		if ipc == nil {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			a.addresses = append(a.addresses, ip.Unmap())
		}
	}
	return a, nil
}

// k8sArgs are the CNI_ARGS keys the kubelet passes. Unknown keys are always
// ignored (kubelet sends IgnoreUnknown=1, other runtimes may not).
type k8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive,stylecheck // CNI_ARGS key
}

// podRef is the pod a CNI call is for.
type podRef struct{ Namespace, Name string }

func (p podRef) String() string { return p.Namespace + "/" + p.Name }

var errNoPod = errors.New("no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS")

// loadPod parses CNI_ARGS: code 4 when malformed, errNoPod (unwrapped) when
// the pod keys are absent (a non-Kubernetes caller).
func loadPod(cniArgs string) (podRef, error) {
	a := &k8sArgs{}
	a.IgnoreUnknown = true
	if err := cniargs.Load(cniArgs, a); err != nil {
		return podRef{}, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("policy-hook: invalid CNI_ARGS %q: %v", cniArgs, err), "")
	}
	// The names go into a Pod PATCH and Felix's status file name.
	if err := cniargs.ValidatePod(string(a.K8S_POD_NAMESPACE), string(a.K8S_POD_NAME)); err != nil {
		return podRef{}, types.NewError(types.ErrInvalidEnvironmentVariables, "policy-hook: invalid CNI_ARGS: "+err.Error(), "")
	}
	p := podRef{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME)}
	if p.Namespace == "" || p.Name == "" {
		return p, errNoPod
	}
	return p, nil
}

// checkName is the naming contract: the host veth in prevResult must be the
// name Felix computes for the pod. Code 7 otherwise.
func checkName(prefix string, pod podRef, hostIfs []string) (string, error) {
	want := vethname.HostName(prefix, pod.Namespace, pod.Name)
	for _, n := range hostIfs {
		if n == want {
			return want, nil
		}
	}
	why := fmt.Sprintf("Felix (FELIX_INTERFACEPREFIX=%s) finds pod %s's interface by the computed name %q = %q + sha1(%q)[:11] and drops all traffic on %s* interfaces it does not know, so NetworkPolicy would silently not apply and the pod would have no connectivity; check that vpc-bridge's vethPrefix equals policy-hook's vethPrefix and Felix's interface prefix",
		prefix, pod, want, prefix, pod.Namespace+"."+pod.Name, prefix)
	if len(hostIfs) == 0 {
		return "", configError("prevResult has no host-side interface (one without \"sandbox\"), expected %q: %s", want, why)
	}
	return "", configError("host interface %s in prevResult is not the expected %q: %s", quoteAll(hostIfs), want, why)
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
