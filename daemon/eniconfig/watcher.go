package eniconfig

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The core resources the Watcher reads and writes, through the dynamic
// client: client-go's typed clientset and informers register every API
// group at start, which cost the daemon about 20 MiB of resident memory
// for two resources (docs/benchmarks.md, "Against the AWS VPC CNI").
var (
	nodesGVR  = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	eventsGVR = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// Options configure a Watcher.
type Options struct {
	NodeName      string
	LabelDef      string // ENI_CONFIG_LABEL_DEF (DefaultKey when empty)
	AnnotationDef string // ENI_CONFIG_ANNOTATION_DEF (DefaultKey when empty)
	// Resync is the informers' resync period (10 min when 0).
	Resync time.Duration
	// Poll is how often the selection is recomputed from the caches
	// besides on every change, which catches the CRD being installed
	// later (2 s when 0).
	Poll time.Duration
}

// Watcher follows the node's ENIConfig.
type Watcher struct {
	dyn      dynamic.Interface
	o        Options
	onChange func(Selection)
	logf     func(string, ...any)

	reportMu   sync.Mutex // held across onChange
	mu         sync.Mutex
	last       Selection
	reported   bool
	crdMissing bool
	nodeUID    string
	lastEvent  sentEvent
	nodes      cache.SharedIndexInformer
	configs    cache.SharedIndexInformer
}

// sentEvent is the last Event posted, to drop repeats.
type sentEvent struct {
	typ, reason, message string
	at                   time.Time
}

// eventRepeat is how long an identical Event is not posted again.
const eventRepeat = 5 * time.Minute

// New builds a Watcher on the API server cfg points at; onChange is
// called (from the Watcher's goroutines, one call at a time) with each
// new Selection.
func New(cfg *rest.Config, o Options, onChange func(Selection), logf func(string, ...any)) (*Watcher, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return newWatcher(dyn, o, onChange, logf), nil
}

func newWatcher(dyn dynamic.Interface, o Options, onChange func(Selection), logf func(string, ...any)) *Watcher {
	if o.LabelDef == "" {
		o.LabelDef = DefaultKey
	}
	if o.AnnotationDef == "" {
		o.AnnotationDef = DefaultKey
	}
	if o.Resync == 0 {
		o.Resync = 10 * time.Minute
	}
	if o.Poll == 0 {
		o.Poll = 2 * time.Second
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Watcher{dyn: dyn, o: o, onChange: onChange, logf: logf}
}

// informer is a shared informer of one cluster-scoped resource, as
// unstructured objects; tweak narrows its list and watch.
func (w *Watcher) informer(gvr schema.GroupVersionResource, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	res := w.dyn.Resource(gvr)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, lo metav1.ListOptions) (runtime.Object, error) {
			tweak(&lo)
			return res.List(ctx, lo)
		},
		WatchFuncWithContext: func(ctx context.Context, lo metav1.ListOptions) (watch.Interface, error) {
			tweak(&lo)
			return res.Watch(ctx, lo)
		},
	}
	return cache.NewSharedIndexInformer(lw, &unstructured.Unstructured{}, w.o.Resync, cache.Indexers{})
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	nodes := w.informer(nodesGVR, func(lo *metav1.ListOptions) {
		lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.o.NodeName).String()
	})
	configs := w.informer(GVR, func(*metav1.ListOptions) {})
	w.mu.Lock()
	w.nodes, w.configs = nodes, configs
	w.mu.Unlock()
	// A missing CRD shows as list errors of the ENIConfig informer, which
	// keeps retrying: the selection says so until the CRD is installed.
	if err := configs.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
		w.mu.Lock()
		w.crdMissing = apierrors.IsNotFound(err)
		w.mu.Unlock()
		w.logf("custom networking: listing ENIConfigs: %v", err)
	}); err != nil {
		return fmt.Errorf("ENIConfig informer: %w", err)
	}
	changed := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.recompute() },
		UpdateFunc: func(any, any) { w.recompute() },
		DeleteFunc: func(any) { w.recompute() },
	}
	for _, inf := range []cache.SharedIndexInformer{w.nodes, w.configs} {
		if _, err := inf.AddEventHandler(changed); err != nil {
			return fmt.Errorf("informer handler: %w", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range []cache.SharedIndexInformer{nodes, configs} {
		wg.Add(1)
		go func() { defer wg.Done(); inf.RunWithContext(ctx) }()
	}
	// An empty list brings no event: the selection is computed again once
	// both caches hold their first lists.
	wg.Add(1)
	go func() {
		defer wg.Done()
		if cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, configs.HasSynced) {
			w.recompute()
		}
	}()
	t := time.NewTicker(w.o.Poll)
	defer t.Stop()
	for {
		w.recompute()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Current is the last Selection reported.
func (w *Watcher) Current() Selection {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// recompute derives the selection from the caches and reports it if new,
// one report at a time and in order (onChange may call Event).
func (w *Watcher) recompute() {
	w.reportMu.Lock()
	defer w.reportMu.Unlock()
	w.mu.Lock()
	sel := w.selectLocked()
	if w.reported && sel.olderThan(w.last) {
		// A cache behind what was already reported (a relist served
		// stale): keep the newer spec.
		last := w.last
		w.mu.Unlock()
		w.logf("custom networking: ENIConfig %q generation %d is older than the one in use (%d); ignored", sel.Name, sel.Generation, last.Generation)
		return
	}
	same := w.reported && reflect.DeepEqual(sel, w.last)
	w.last, w.reported = sel, true
	w.mu.Unlock()
	if !same {
		w.onChange(sel)
	}
}

func (w *Watcher) selectLocked() Selection {
	if w.nodes == nil || !w.nodes.HasSynced() {
		return Selection{Err: "waiting for the node from the Kubernetes API"}
	}
	obj, ok, err := w.nodes.GetStore().GetByKey(w.o.NodeName)
	if err != nil || !ok {
		return Selection{Err: fmt.Sprintf("node %q is not in the Kubernetes API (MY_NODE_NAME)", w.o.NodeName)}
	}
	node := obj.(*unstructured.Unstructured)
	w.nodeUID = string(node.GetUID())
	name, from := ChooseName(node.GetLabels(), node.GetAnnotations(), w.o.LabelDef, w.o.AnnotationDef)
	sel := Selection{Name: name, From: from}
	if !w.configs.HasSynced() {
		sel.Err = "waiting for the ENIConfigs from the Kubernetes API"
		if w.crdMissing {
			sel.Err = fmt.Sprintf("the ENIConfig CRD (%s) is not installed", CRDName)
		}
		return sel
	}
	obj, ok, err = w.configs.GetStore().GetByKey(name)
	switch {
	case err != nil:
		sel.Err = fmt.Sprintf("reading ENIConfig %q: %v", name, err)
	case ok:
		u := obj.(*unstructured.Unstructured)
		sel.UID, sel.Generation = string(u.GetUID()), u.GetGeneration()
		spec, err := ParseSpec(u)
		if err != nil {
			sel.Err = fmt.Sprintf("ENIConfig %q (%s): %v", name, from, err)
		} else {
			sel.Spec = &spec
		}
	}
	return sel
}

// Event records a Kubernetes Event on the node ("Normal" or "Warning"),
// in the background: the caller never waits for the API server. An Event
// identical to the last one within eventRepeat is dropped.
func (w *Watcher) Event(eventType, reason, message string) {
	now := time.Now()
	w.mu.Lock()
	uid := w.nodeUID
	last := w.lastEvent
	if last.typ == eventType && last.reason == reason && last.message == message && now.Sub(last.at) < eventRepeat {
		w.mu.Unlock()
		return
	}
	w.lastEvent = sentEvent{typ: eventType, reason: reason, message: message, at: now}
	w.mu.Unlock()
	ev := nodeEvent(w.o.NodeName, uid, eventType, reason, message, now)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := w.dyn.Resource(eventsGVR).Namespace(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			w.logf("custom networking: recording event %s on node %s: %v", reason, w.o.NodeName, err)
		}
	}()
}

// nodeEvent is a core/v1 Event about the node, as client-go's recorder
// writes one: in the default namespace (a Node has none), named after
// the object and the time.
func nodeEvent(node, uid, eventType, reason, message string, at time.Time) *unstructured.Unstructured {
	ts := at.UTC().Format(time.RFC3339)
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion":         "v1",
		"kind":               "Event",
		"metadata":           map[string]any{"name": fmt.Sprintf("%s.%x", node, at.UnixNano()), "namespace": metav1.NamespaceDefault},
		"involvedObject":     map[string]any{"kind": "Node", "apiVersion": "v1", "name": node, "uid": uid},
		"type":               eventType,
		"reason":             reason,
		"message":            message,
		"source":             map[string]any{"component": "vpcchaind", "host": node},
		"firstTimestamp":     ts,
		"lastTimestamp":      ts,
		"count":              int64(1),
		"reportingComponent": "vpcchaind",
		"reportingInstance":  node,
	}}
}
