package podeni

import (
	"context"
	"errors"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// The annotation as the controller v1.8.2 writes it (json.Marshal of its
// []*trunk.ENIDetails, as its provider.CreateAndAnnotateResources does).
const controllerAnnotation = `[{"eniId":"eni-0b1a2b3c4d5e6f708","ifAddress":"02:6c:1f:aa:bb:cc","privateIp":"10.0.3.41","ipv6Addr":"","vlanId":1,"subnetCidr":"10.0.0.0/20","subnetV6Cidr":"","associationID":"trunk-assoc-0123456789abcdef0"}]`

func TestParseAnnotation(t *testing.T) {
	for _, tc := range []struct {
		name, v string
		want    Branch
		wantErr string
	}{
		{name: "the controller's", v: controllerAnnotation, want: Branch{ENIID: "eni-0b1a2b3c4d5e6f708", MAC: "02:6c:1f:aa:bb:cc",
			IPv4: "10.0.3.41", VLANID: 1, SubnetCIDR: "10.0.0.0/20", AssociationID: "trunk-assoc-0123456789abcdef0"}},
		// The AWS VPC CNI reads the key as vlanID: JSON names match
		// case-insensitively, as encoding/json does for it too.
		{name: "vlanID spelling", v: `[{"eniId":"eni-1","ifAddress":"02:00:00:00:00:01","privateIp":"10.0.0.5","vlanID":7,"subnetCidr":"10.0.0.0/24"}]`,
			want: Branch{ENIID: "eni-1", MAC: "02:00:00:00:00:01", IPv4: "10.0.0.5", VLANID: 7, SubnetCIDR: "10.0.0.0/24"}},
		{name: "not JSON", v: "eni-1", wantErr: "invalid character"},
		{name: "empty list", v: "[]", wantErr: "lists no branch"},
		{name: "no VLAN", v: `[{"eniId":"eni-1","ifAddress":"02:00:00:00:00:01","privateIp":"10.0.0.5","subnetCidr":"10.0.0.0/24"}]`, wantErr: "VLAN ID 0"},
		{name: "VLAN past 4094", v: `[{"eniId":"eni-1","ifAddress":"m","privateIp":"10.0.0.5","vlanId":4095,"subnetCidr":"10.0.0.0/24"}]`, wantErr: "VLAN ID 4095"},
		{name: "no MAC", v: `[{"eniId":"eni-1","privateIp":"10.0.0.5","vlanId":1,"subnetCidr":"10.0.0.0/24"}]`, wantErr: "no ifAddress"},
		{name: "IPv6 only", v: `[{"eniId":"eni-1","ifAddress":"m","ipv6Addr":"2600::5","vlanId":1,"subnetCidr":"10.0.0.0/24"}]`, wantErr: "not an IPv4 address"},
		{name: "no subnet", v: `[{"eniId":"eni-1","ifAddress":"m","privateIp":"10.0.0.5","vlanId":1}]`, wantErr: "subnet CIDR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAnnotation(tc.v)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("%v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	b, _ := ParseAnnotation(controllerAnnotation)
	if gw, err := b.Gateway(); err != nil || gw.String() != "10.0.0.1" {
		t.Errorf("gateway of 10.0.0.0/20: %v, %v; want 10.0.0.1 (EC2's router)", gw, err)
	}
}

func pod(ns, name string, limits map[string]any, annotations map[string]string) *unstructured.Unstructured {
	c := map[string]any{"name": "app", "image": "app"}
	if limits != nil {
		c["resources"] = map[string]any{"limits": limits, "requests": limits}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec":     map[string]any{"nodeName": "n1", "containers": []any{c}}}}
	u.SetAnnotations(annotations)
	return u
}

func cniNode(name string, features ...string) *unstructured.Unstructured {
	var fs []any
	for _, f := range features {
		fs = append(fs, map[string]any{"name": f, "value": "x"})
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "vpcresources.k8s.aws/v1alpha1", "kind": "CNINode",
		"metadata": map[string]any{"name": name}, "spec": map[string]any{"tags": map[string]any{"cluster.k8s.amazonaws.com/name": "c"}}}}
	if fs != nil {
		_ = unstructured.SetNestedSlice(u.Object, fs, "spec", "features")
	}
	return u
}

func fakeAPI(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		CNINodes: "CNINodeList", podsGVR: "PodList"}, objs...)
}

// A pod asks for a branch as the AWS VPC CNI decides it (the first
// container's limits); its branch is its annotation.
func TestBranch(t *testing.T) {
	want := map[string]any{ResourceName: "1"}
	c := NewFromDynamic(fakeAPI(
		pod("shop", "db", want, map[string]string{ResourceName: controllerAnnotation}),
		pod("shop", "pending", want, nil),
		pod("shop", "web", nil, nil),
		pod("shop", "bad", want, map[string]string{ResourceName: "[]"}),
	), "n1")
	for _, tc := range []struct {
		name          string
		wantRequested bool
		wantErr       error
		wantErrText   string
	}{
		{"db", true, nil, ""},
		{"pending", true, ErrNotAnnotated, ""},
		{"web", false, nil, ""},
		{"bad", true, nil, "lists no branch"},
		{"gone", false, nil, "not found"},
	} {
		b, requested, err := c.Branch(context.Background(), "shop", tc.name)
		switch {
		case requested != tc.wantRequested:
			t.Errorf("%s: requested %v, want %v", tc.name, requested, tc.wantRequested)
		case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.wantErr)
		case tc.wantErrText != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrText)):
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.wantErrText)
		case tc.wantErr == nil && tc.wantErrText == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.name == "db" && b.VLANID != 1:
			t.Errorf("db: branch %+v", b)
		}
	}
}

// Declare adds the feature to the node's CNINode, keeping the features
// already there, and only once; without a CNINode it says so.
func TestDeclare(t *testing.T) {
	ctx := context.Background()
	dyn := fakeAPI(cniNode("n1", "CustomNetworking"), cniNode("n2", FeatureSGP))
	for _, node := range []string{"n1", "n1", "n2"} {
		if err := NewFromDynamic(dyn, node).Declare(ctx); err != nil {
			t.Fatalf("%s: %v", node, err)
		}
	}
	for node, want := range map[string][]string{"n1": {"CustomNetworking", FeatureSGP}, "n2": {FeatureSGP}} {
		cn, err := dyn.Resource(CNINodes).Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fs, _, _ := unstructured.NestedSlice(cn.Object, "spec", "features")
		var names []string
		for _, f := range fs {
			names = append(names, f.(map[string]any)["name"].(string))
		}
		if strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s: features %v, want %v", node, names, want)
		}
	}
	if err := NewFromDynamic(dyn, "n3").Declare(ctx); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("no CNINode: %v, want not found", err)
	}
}
