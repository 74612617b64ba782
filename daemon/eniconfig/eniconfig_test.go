package eniconfig

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The AWS VPC CNI's documented order: the external label, the annotation
// (ENI_CONFIG_ANNOTATION_DEF), the label (ENI_CONFIG_LABEL_DEF), "default".
func TestChooseName(t *testing.T) {
	const zone = "topology.kubernetes.io/zone"
	tests := []struct {
		name          string
		labels, annot map[string]string
		labelDef      string
		want, from    string
	}{
		{"nothing set", nil, nil, DefaultKey, "default", "the default name"},
		{"default label", map[string]string{DefaultKey: "pods-a"}, nil, DefaultKey, "pods-a", `label "k8s.amazonaws.com/eniConfig"`},
		{"zone label", map[string]string{zone: "us-west-2a", DefaultKey: "ignored"}, nil, zone, "us-west-2a", `label "topology.kubernetes.io/zone"`},
		{"annotation wins over the label", map[string]string{zone: "us-west-2a"}, map[string]string{DefaultKey: "special"}, zone, "special", `annotation "k8s.amazonaws.com/eniConfig"`},
		{"external label wins over all", map[string]string{ExternalLabel: "ext", zone: "us-west-2a"}, map[string]string{DefaultKey: "special"}, zone, "ext", `label "vpc.amazonaws.com/externalEniConfig"`},
		{"empty values are unset", map[string]string{ExternalLabel: "", zone: ""}, map[string]string{DefaultKey: ""}, zone, "default", "the default name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, from := ChooseName(tt.labels, tt.annot, tt.labelDef, DefaultKey)
			if name != tt.want || from != tt.from {
				t.Errorf("ChooseName = %q, %q; want %q, %q", name, from, tt.want, tt.from)
			}
		})
	}
}

func eniConfigObj(name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetAPIVersion("crd.k8s.amazonaws.com/v1alpha1")
	u.SetKind("ENIConfig")
	u.SetName(name)
	return u
}

// groupList is n distinct well-formed group IDs.
func groupList(n int) []any {
	var out []any
	for i := 1; i <= n; i++ {
		out = append(out, fmt.Sprintf("sg-%08x", i))
	}
	return out
}

// EC2's ID formats: subnet-/sg- and 8 or 17 lowercase hex digits.
func TestParseSpec(t *testing.T) {
	tests := []struct {
		name string
		spec map[string]any
		want string // "" = valid
	}{
		{"long IDs", map[string]any{"subnet": "subnet-0123456789abcdef0", "securityGroups": []any{"sg-0123456789abcdef0"}}, ""},
		{"short IDs, no groups", map[string]any{"subnet": "subnet-0123abcd"}, ""},
		{"missing subnet", map[string]any{"securityGroups": []any{"sg-0123abcd"}}, "spec.subnet is missing"},
		{"a CIDR for a subnet", map[string]any{"subnet": "10.0.0.0/24"}, `spec.subnet "10.0.0.0/24" is not a subnet ID`},
		{"upper case", map[string]any{"subnet": "subnet-0123ABCD"}, "is not a subnet ID"},
		{"subnet a number", map[string]any{"subnet": int64(12)}, "spec.subnet is a int64, want a string"},
		{"groups a string", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": "sg-0123abcd"}, "spec.securityGroups is a string, want a list"},
		{"a group a number", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": []any{int64(1)}}, "spec.securityGroups[0] is a int64"},
		{"malformed group", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": []any{"default"}}, `"default" is not a security group ID`},
		{"duplicate group", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": []any{"sg-0123abcd", "sg-0123abcd"}}, "listed twice"},
		// Security groups per network interface: 5 by default, adjustable
		// to 16 (Amazon VPC quotas); only EC2 knows the account's.
		{"six groups", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": groupList(6)}, ""},
		{"sixteen groups", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": groupList(16)}, ""},
		{"seventeen groups", map[string]any{"subnet": "subnet-0123abcd", "securityGroups": groupList(17)}, "has 17 groups; an ENI takes at most 16"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec(eniConfigObj("x", tt.spec))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("valid spec refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want it to say %q", err, tt.want)
			}
		})
	}
}

type reports struct {
	mu  sync.Mutex
	got []Selection
}

func (r *reports) add(s Selection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}

// waitFor waits until the last report satisfies ok.
func (r *reports) waitFor(t *testing.T, what string, ok func(Selection) bool) Selection {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		var last Selection
		n := len(r.got)
		if n > 0 {
			last = r.got[n-1]
		}
		r.mu.Unlock()
		if n > 0 && ok(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last selection %+v (%d reports)", what, last, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatcherFollowsNodeAndENIConfigs(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "uid-n1",
		Labels: map[string]string{"topology.kubernetes.io/zone": "us-west-2a"}}}
	dyn := fakeAPI(t, node)
	var r reports
	w := newWatcher(dyn, Options{NodeName: "n1", LabelDef: "topology.kubernetes.io/zone", Poll: 20 * time.Millisecond}, r.add, t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The ENIConfig the zone label names does not exist yet.
	r.waitFor(t, "missing ENIConfig", func(s Selection) bool {
		return s.Name == "us-west-2a" && s.From == `label "topology.kubernetes.io/zone"` && s.Spec == nil && s.Err == ""
	})
	res := dyn.Resource(GVR)
	if _, err := res.Create(ctx, eniConfigObj("us-west-2a", map[string]any{"subnet": "subnet-0123abcd"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "created ENIConfig", func(s Selection) bool { return s.Spec != nil && s.Spec.Subnet == "subnet-0123abcd" })
	if _, err := res.Update(ctx, eniConfigObj("us-west-2a", map[string]any{"subnet": "subnet-0123abcd",
		"securityGroups": []any{"sg-0123abcd"}}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "updated ENIConfig", func(s Selection) bool { return s.Spec != nil && len(s.Spec.SecurityGroups) == 1 })
	// The node is annotated with a malformed ENIConfig.
	if _, err := res.Create(ctx, eniConfigObj("bad", map[string]any{"subnet": "nope"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node.Annotations = map[string]string{DefaultKey: "bad"}
	if _, err := dyn.Resource(nodesGVR).Update(ctx, toUnstructured(t, node), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "malformed ENIConfig", func(s Selection) bool {
		return s.Name == "bad" && s.Spec == nil && strings.Contains(s.Err, `spec.subnet "nope" is not a subnet ID`)
	})
	// Nothing changes: nothing is reported again.
	r.mu.Lock()
	n := len(r.got)
	r.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	r.mu.Lock()
	if len(r.got) != n {
		t.Errorf("%d reports without a change: %+v", len(r.got)-n, r.got[n:])
	}
	r.mu.Unlock()

	// An Event on the node.
	w.Event(corev1.EventTypeWarning, "ENIConfigNotUsable", "ENIConfig \"bad\": no")
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := dyn.Resource(eventsGVR).Namespace("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, u := range evs.Items {
			// The object the API server gets must be a core/v1 Event.
			var e corev1.Event
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &e, true); err != nil {
				t.Fatalf("the event is no core/v1 Event: %v: %v", err, u.Object)
			}
			if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == "n1" && e.InvolvedObject.UID == "uid-n1" &&
				e.Namespace == metav1.NamespaceDefault && e.Reason == "ENIConfigNotUsable" && e.Type == corev1.EventTypeWarning &&
				e.Source.Component == "vpcchaind" && e.Count == 1 {
				found = true
			}
		}
		if found {
			// The same Event again soon after is not posted twice.
			w.Event(corev1.EventTypeWarning, "ENIConfigNotUsable", "ENIConfig \"bad\": no")
			time.Sleep(100 * time.Millisecond)
			again, err := dyn.Resource(eventsGVR).Namespace("").List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Items) != len(evs.Items) {
				t.Errorf("a repeated Event was posted again: %d events, then %d", len(evs.Items), len(again.Items))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Warning event on node n1 among %d events", len(evs.Items))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatcherWithoutTheCRD(t *testing.T) {
	dyn := fakeAPI(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	// As an API server without the CRD answers: 404 on the list, until the
	// CRD is installed.
	var mu sync.Mutex
	installed := false
	dyn.PrependReactor("list", "eniconfigs", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if installed {
			return false, nil, nil
		}
		return true, nil, apierrors.NewNotFound(GVR.GroupResource(), "")
	})
	var r reports
	w := newWatcher(dyn, Options{NodeName: "n1", Poll: 20 * time.Millisecond}, r.add, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.waitFor(t, "no CRD", func(s Selection) bool {
		return s.Name == "default" && s.Spec == nil && strings.Contains(s.Err, "CRD (eniconfigs.crd.k8s.amazonaws.com) is not installed")
	})
	mu.Lock()
	installed = true
	mu.Unlock()
	r.waitFor(t, "CRD installed later", func(s Selection) bool { return s.Name == "default" && s.Spec == nil && s.Err == "" })
}

// An older generation of the same ENIConfig, as a cache that went back
// would show it, does not undo the newer spec already reported; a newer
// generation, or the ENIConfig recreated, is followed.
func TestWatcherDoesNotGoBackToAnOlderGeneration(t *testing.T) {
	dyn := fakeAPI(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	var r reports
	w := newWatcher(dyn, Options{NodeName: "n1", Poll: time.Hour}, r.add, t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	r.waitFor(t, "no ENIConfig yet", func(s Selection) bool { return s.Name == DefaultName && s.Spec == nil && s.Err == "" })

	res := dyn.Resource(GVR)
	version := func(uid string, gen int64, subnet string) *unstructured.Unstructured {
		u := eniConfigObj(DefaultName, map[string]any{"subnet": subnet})
		u.SetUID(types.UID(uid))
		u.SetGeneration(gen)
		return u
	}
	// cached waits until the watcher's cache holds generation gen.
	cached := func(gen int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			obj, ok, _ := w.configs.GetStore().GetByKey(DefaultName)
			if ok && obj.(*unstructured.Unstructured).GetGeneration() == gen {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("generation %d never reached the cache", gen)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, err := res.Create(ctx, version("uid-1", 2, "subnet-0000000a"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "generation 2", func(s Selection) bool { return s.Spec != nil && s.Spec.Subnet == "subnet-0000000a" })

	if _, err := res.Update(ctx, version("uid-1", 1, "subnet-0000000b"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cached(1)
	w.recompute()
	if s := w.Current(); s.Spec == nil || s.Spec.Subnet != "subnet-0000000a" {
		t.Errorf("after an older generation: %+v (spec %+v), want generation 2's subnet-0000000a kept", s, s.Spec)
	}

	if _, err := res.Update(ctx, version("uid-1", 3, "subnet-0000000c"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "generation 3", func(s Selection) bool { return s.Spec != nil && s.Spec.Subnet == "subnet-0000000c" })

	// Deleted and created again: a new object starts at generation 1.
	if err := res.Delete(ctx, DefaultName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Create(ctx, version("uid-2", 1, "subnet-0000000d"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "recreated", func(s Selection) bool { return s.Spec != nil && s.Spec.Subnet == "subnet-0000000d" })
}

// fakeAPI is an API server (client-go's fake dynamic client) holding nodes.
func fakeAPI(t *testing.T, nodes ...*corev1.Node) *dynamicfake.FakeDynamicClient {
	t.Helper()
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, toUnstructured(t, n))
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		GVR: "ENIConfigList", nodesGVR: "NodeList", eventsGVR: "EventList"}, objs...)
}

func toUnstructured(t *testing.T, n *corev1.Node) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(n)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("v1")
	u.SetKind("Node")
	return u
}
