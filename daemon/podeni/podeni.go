// Package podeni is the node's side of security groups for pods
// (ENABLE_POD_ENI): what AWS's VPC resource controller reads from a node's
// CNI and what it writes for the CNI to read, through the Kubernetes API
// (docs/design.md, "Security groups for pods: the contract").
//
// The controller manages a node once its CNINode lists the feature
// SecurityGroupsForPods; it then attaches a trunk ENI to the instance,
// advertises vpc.amazonaws.com/pod-eni on the Node, and gives each pod
// that requests that resource a branch ENI, described in the pod's
// annotation vpc.amazonaws.com/pod-eni. The daemon declares the feature,
// and at a pod's ADD reads the annotation.
package podeni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The controller's names (its pkg/config and apis/vpcresources/v1alpha1).
const (
	// ResourceName is the extended resource the controller advertises on
	// the Node and its webhook adds to the first container of a pod that
	// a SecurityGroupPolicy selects; also the annotation's key.
	ResourceName = "vpc.amazonaws.com/pod-eni"
	// FeatureSGP is the CNINode feature that asks for a trunk ENI.
	FeatureSGP = "SecurityGroupsForPods"
)

// CNINodes is the controller's CNINode resource (cluster scoped, named
// after the node; the controller creates it when it sees the Node).
var CNINodes = schema.GroupVersionResource{Group: "vpcresources.k8s.aws", Version: "v1alpha1", Resource: "cninodes"}

// Branch is one branch ENI as the controller's annotation gives it (its
// trunk.ENIDetails, JSON names as written).
type Branch struct {
	ENIID         string `json:"eniId"`
	MAC           string `json:"ifAddress"`
	IPv4          string `json:"privateIp"`
	IPv6          string `json:"ipv6Addr"`
	VLANID        int    `json:"vlanId"`
	SubnetCIDR    string `json:"subnetCidr"`
	SubnetV6CIDR  string `json:"subnetV6Cidr"`
	AssociationID string `json:"associationID"`
}

// Gateway is EC2's router in the branch's IPv4 subnet: its first address
// (the AWS VPC CNI uses the same for branch pods).
func (b Branch) Gateway() (netip.Addr, error) {
	p, err := netip.ParsePrefix(b.SubnetCIDR)
	if err != nil || !p.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("branch %s: subnet CIDR %q is not an IPv4 prefix", b.ENIID, b.SubnetCIDR)
	}
	return p.Masked().Addr().Next(), nil
}

// ParseAnnotation reads the annotation's value: a JSON list of branches,
// of which the first is the pod's (the AWS VPC CNI uses the first; the
// controller gives one unless a pod asks for more). It is checked as the
// AWS VPC CNI checks it, for IPv4: an address, a MAC and a VLAN ID, and a
// subnet to route by.
func ParseAnnotation(v string) (Branch, error) {
	var bs []Branch
	if err := json.Unmarshal([]byte(v), &bs); err != nil {
		return Branch{}, fmt.Errorf("annotation %s: %w", ResourceName, err)
	}
	if len(bs) == 0 {
		return Branch{}, fmt.Errorf("annotation %s lists no branch ENI", ResourceName)
	}
	b := bs[0]
	switch {
	case b.ENIID == "":
		return Branch{}, fmt.Errorf("annotation %s: the branch has no eniId", ResourceName)
	case b.MAC == "":
		return Branch{}, fmt.Errorf("annotation %s: branch %s has no ifAddress (MAC)", ResourceName, b.ENIID)
	case b.VLANID < 1 || b.VLANID > 4094:
		return Branch{}, fmt.Errorf("annotation %s: branch %s has VLAN ID %d, not 1 to 4094", ResourceName, b.ENIID, b.VLANID)
	}
	if a, err := netip.ParseAddr(b.IPv4); err != nil || !a.Is4() {
		return Branch{}, fmt.Errorf("annotation %s: branch %s has privateIp %q, not an IPv4 address", ResourceName, b.ENIID, b.IPv4)
	}
	if _, err := b.Gateway(); err != nil {
		return Branch{}, fmt.Errorf("annotation %s: %w", ResourceName, err)
	}
	return b, nil
}

// ErrNotAnnotated: the pod requests a branch ENI, and the controller has
// not annotated it yet (it does so asynchronously, once the pod is bound).
var ErrNotAnnotated = errors.New("the VPC resource controller has not given the pod its branch ENI yet (no " + ResourceName + " annotation)")

// PodBranch says whether pod (a v1 Pod) requests a branch ENI, as the AWS
// VPC CNI decides it (the first container's limits name the resource),
// and if so which one it got. A pod that requests one and has no
// annotation yet gets ErrNotAnnotated.
func PodBranch(pod *unstructured.Unstructured) (Branch, bool, error) {
	containers, _, _ := unstructured.NestedSlice(pod.Object, "spec", "containers")
	if len(containers) == 0 {
		return Branch{}, false, nil
	}
	first, _ := containers[0].(map[string]any)
	if _, found, _ := unstructured.NestedFieldNoCopy(first, "resources", "limits", ResourceName); !found {
		return Branch{}, false, nil
	}
	v, ok := pod.GetAnnotations()[ResourceName]
	if !ok {
		return Branch{}, true, ErrNotAnnotated
	}
	b, err := ParseAnnotation(v)
	return b, true, err
}
