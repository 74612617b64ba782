package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// The annotations Calico's Pod -> WorkloadEndpoint conversion reads the pod's
// addresses from when status.podIPs is not yet set.
const (
	// AnnotPodIP is the first address as a CIDR ("10.0.0.9/32"); "" on a
	// terminating pod is Calico's "finished" signal (endpoint withdrawn).
	AnnotPodIP = "cni.projectcalico.org/podIP"
	// AnnotPodIPs is every address as a CIDR, comma-separated.
	AnnotPodIPs = "cni.projectcalico.org/podIPs"
	// AnnotAWSPodIPs is the AWS VPC CNI's annotation (plain addresses,
	// comma-separated), also read by Calico.
	AnnotAWSPodIPs = "vpc.amazonaws.com/pod-ips"
)

// APITimeout bounds every Kubernetes API request.
const APITimeout = 10 * time.Second

// newClient builds a clientset from the configured kubeconfig.
func newClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = APITimeout
	cfg.UserAgent = "vpcchain-policy-hook"
	return kubernetes.NewForConfig(cfg)
}

// annotations returns the three annotations for the pod's addresses.
func annotations(addrs []netip.Addr) map[string]string {
	cidrs := make([]string, len(addrs))
	plain := make([]string, len(addrs))
	for i, a := range addrs {
		cidrs[i] = netip.PrefixFrom(a, a.BitLen()).String()
		plain[i] = a.String()
	}
	return map[string]string{
		AnnotPodIP:     cidrs[0],
		AnnotPodIPs:    strings.Join(cidrs, ","),
		AnnotAWSPodIPs: strings.Join(plain, ","),
	}
}

type patchMeta struct {
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Annotations     map[string]string `json:"annotations"`
}

type podPatch struct {
	Metadata patchMeta `json:"metadata"`
}

// patchAnnotations JSON-merge-patches the Pod's annotations through the
// pods/status subresource, as Calico's CNI does: the RBAC it needs (patch
// pods/status) cannot change the pod's spec. A non-empty resourceVersion
// makes the patch conditional (409 Conflict when the Pod changed).
func patchAnnotations(ctx context.Context, c kubernetes.Interface, pod podRef, rv string, ann map[string]string) error {
	body, err := json.Marshal(podPatch{Metadata: patchMeta{ResourceVersion: rv, Annotations: ann}})
	if err != nil {
		return err
	}
	_, err = c.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, ktypes.MergePatchType, body, metav1.PatchOptions{}, "status")
	return err
}

// publish writes the pod's addresses on the Pod.
func publish(ctx context.Context, c kubernetes.Interface, pod podRef, addrs []netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	return patchAnnotations(ctx, c, pod, "", annotations(addrs))
}

// clearResult says what unpublish did.
type clearResult int

const (
	clearedNone    clearResult = iota // the Pod is gone, or its podIP annotation is not ours
	clearedPatched                    // the annotations were set to ""
)

// unpublish sets the three annotations to "" if the Pod's podIP annotation
// still holds one of addrs (a newer sandbox of the same pod may have
// published another address since). The patch carries the resourceVersion
// that was checked, so a concurrent change makes it fail with Conflict and
// the check is repeated.
func unpublish(ctx context.Context, c kubernetes.Interface, pod podRef, addrs []netip.Addr) (clearResult, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		p, err := c.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return clearedNone, nil
		}
		if err != nil {
			return clearedNone, err
		}
		if !holdsOneOf(p.Annotations[AnnotPodIP], addrs) {
			return clearedNone, nil
		}
		err = patchAnnotations(ctx, c, pod, p.ResourceVersion, map[string]string{AnnotPodIP: "", AnnotPodIPs: "", AnnotAWSPodIPs: ""})
		switch {
		case err == nil:
			return clearedPatched, nil
		case apierrors.IsNotFound(err):
			return clearedNone, nil
		case apierrors.IsConflict(err) && attempt < 4:
			continue
		default:
			return clearedNone, err
		}
	}
}

// holdsOneOf reports whether an annotation value (an address or a CIDR, as
// Calico parses it) is one of addrs.
func holdsOneOf(v string, addrs []netip.Addr) bool {
	v = strings.TrimSpace(v)
	if v == "" {
		return false
	}
	var a netip.Addr
	if p, err := netip.ParsePrefix(v); err == nil {
		a = p.Addr()
	} else if ip, err := netip.ParseAddr(v); err == nil {
		a = ip
	} else {
		return false
	}
	for _, b := range addrs {
		if a.Unmap() == b {
			return true
		}
	}
	return false
}
