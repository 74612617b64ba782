package eniconfig

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
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
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	o        Options
	onChange func(Selection)
	logf     func(string, ...any)

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder

	reportMu   sync.Mutex // held across onChange
	mu         sync.Mutex
	last       Selection
	reported   bool
	crdMissing bool
	nodeUID    string
	nodes      cache.SharedIndexInformer
	configs    cache.SharedIndexInformer
}

// New builds a Watcher on the API server cfg points at; onChange is
// called (from the Watcher's goroutines, one call at a time) with each
// new Selection.
func New(cfg *rest.Config, o Options, onChange func(Selection), logf func(string, ...any)) (*Watcher, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	return newWatcher(kube, dyn, o, onChange, logf), nil
}

func newWatcher(kube kubernetes.Interface, dyn dynamic.Interface, o Options, onChange func(Selection), logf func(string, ...any)) *Watcher {
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
	b := record.NewBroadcaster()
	return &Watcher{kube: kube, dyn: dyn, o: o, onChange: onChange, logf: logf, broadcaster: b,
		recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "vpcchaind", Host: o.NodeName})}
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	w.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: w.kube.CoreV1().Events("")})
	defer w.broadcaster.Shutdown()

	nf := informers.NewSharedInformerFactoryWithOptions(w.kube, w.o.Resync,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.o.NodeName).String()
		}))
	df := dynamicinformer.NewDynamicSharedInformerFactory(w.dyn, w.o.Resync)
	w.mu.Lock()
	w.nodes = nf.Core().V1().Nodes().Informer()
	w.configs = df.ForResource(GVR).Informer()
	w.mu.Unlock()
	// A missing CRD shows as list errors of the ENIConfig informer, which
	// keeps retrying: the selection says so until the CRD is installed.
	if err := w.configs.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
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
	nf.Start(ctx.Done())
	df.Start(ctx.Done())
	defer nf.Shutdown()
	defer df.Shutdown()
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
	node := obj.(*corev1.Node)
	w.nodeUID = string(node.UID)
	name, from := ChooseName(node.Labels, node.Annotations, w.o.LabelDef, w.o.AnnotationDef)
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

// Event records a Kubernetes Event on the node.
func (w *Watcher) Event(eventType, reason, message string) {
	w.mu.Lock()
	uid := w.nodeUID
	w.mu.Unlock()
	ref := &corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: w.o.NodeName, UID: types.UID(uid)}
	w.recorder.Event(ref, eventType, reason, message)
}
