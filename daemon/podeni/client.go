package podeni

import (
	"context"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// Client reads and writes what the contract puts in the Kubernetes API,
// for one node, through the dynamic client (as daemon/eniconfig does: the
// typed clientset would register every API group).
type Client struct {
	dyn  dynamic.Interface
	node string
}

// New is a Client on the API server cfg points at, for node.
func New(cfg *rest.Config, node string) (*Client, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return NewFromDynamic(dyn, node), nil
}

// NewFromDynamic is a Client on dyn (tests give a fake).
func NewFromDynamic(dyn dynamic.Interface, node string) *Client {
	return &Client{dyn: dyn, node: node}
}

// Branch reads the pod from the API server, not a cache, as the AWS VPC
// CNI's ipamd does at ADD: the controller annotates the pod only once it
// is bound, shortly before the runtime calls ADD. requested is false for a
// pod that asks for no branch ENI (it gets a pool address).
func (c *Client) Branch(ctx context.Context, namespace, name string) (b Branch, requested bool, err error) {
	pod, err := c.dyn.Resource(podsGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return Branch{}, false, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return PodBranch(pod)
}

// PodBranchInfo is a pod of this node with its branch ENI.
type PodBranchInfo struct {
	Namespace, Name string
	Branch          Branch
}

// NodeBranches lists this node's pods that have a branch ENI, by their
// annotations (for status; a malformed annotation is skipped).
func (c *Client) NodeBranches(ctx context.Context) ([]PodBranchInfo, error) {
	l, err := c.dyn.Resource(podsGVR).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", c.node).String()})
	if err != nil {
		return nil, fmt.Errorf("list the pods of node %s: %w", c.node, err)
	}
	var out []PodBranchInfo
	for i := range l.Items {
		p := &l.Items[i]
		if b, requested, err := PodBranch(p); requested && err == nil {
			out = append(out, PodBranchInfo{Namespace: p.GetNamespace(), Name: p.GetName(), Branch: b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Branch.VLANID < out[j].Branch.VLANID })
	return out, nil
}

// Declare adds the feature SecurityGroupsForPods to the node's CNINode,
// as the AWS VPC CNI's ipamd does (AddFeatureToCNINode): the controller
// then manages the node. It returns whether the feature is there; an error
// when the CNINode is missing (the controller creates it when it first
// sees the Node) or changed meanwhile (the update carries the version it
// read, so another writer's features are never lost).
func (c *Client) Declare(ctx context.Context) error {
	r := c.dyn.Resource(CNINodes)
	cn, err := r.Get(ctx, c.node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get CNINode %s: %w", c.node, err)
	}
	if HasFeature(cn, FeatureSGP) {
		return nil
	}
	features, _, _ := unstructured.NestedSlice(cn.Object, "spec", "features")
	features = append(features, map[string]any{"name": FeatureSGP})
	if err := unstructured.SetNestedSlice(cn.Object, features, "spec", "features"); err != nil {
		return fmt.Errorf("CNINode %s: %w", c.node, err)
	}
	if _, err := r.Update(ctx, cn, metav1.UpdateOptions{FieldManager: "vpcchaind"}); err != nil {
		return fmt.Errorf("add feature %s to CNINode %s: %w", FeatureSGP, c.node, err)
	}
	return nil
}

// HasFeature reports whether a CNINode lists the feature name.
func HasFeature(cn *unstructured.Unstructured, name string) bool {
	features, _, _ := unstructured.NestedSlice(cn.Object, "spec", "features")
	for _, f := range features {
		if m, ok := f.(map[string]any); ok && m["name"] == name {
			return true
		}
	}
	return false
}
