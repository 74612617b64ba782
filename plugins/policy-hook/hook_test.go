package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
)

// The annotation keys the other programs read, spelled out here: Calico's
// Pod -> WorkloadEndpoint conversion (libcalico-go: cni.projectcalico.org/podIP
// and podIPs) and the AWS VPC CNI's vpc.amazonaws.com/pod-ips.
const (
	calicoPodIP  = "cni.projectcalico.org/podIP"
	calicoPodIPs = "cni.projectcalico.org/podIPs"
	awsPodIPs    = "vpc.amazonaws.com/pod-ips"
)

// fakeAPI is a Kubernetes API server holding pods, serving GET
// /api/v1/namespaces/<ns>/pods/<name> and PATCH of it and its status
// subresource (JSON merge patch of metadata.annotations, honouring a
// resourceVersion precondition); it records every PATCH.
type fakeAPI struct {
	srv     *httptest.Server
	mu      sync.Mutex
	pods    map[string]*corev1.Pod // "ns/name"
	patches []recordedPatch
	rv      int
}

type recordedPatch struct {
	Path, ContentType string
	Body              map[string]any
}

func newFakeAPI(t *testing.T, pods ...string) *fakeAPI {
	f := &fakeAPI{pods: map[string]*corev1.Pod{}}
	for _, p := range pods {
		ns, name, _ := strings.Cut(p, "/")
		f.addPod(ns, name, nil)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", f.get)
	mux.HandleFunc("PATCH /api/v1/namespaces/{ns}/pods/{name}", f.patch)
	mux.HandleFunc("PATCH /api/v1/namespaces/{ns}/pods/{name}/status", f.patch)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) addPod(ns, name string, ann map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	f.pods[ns+"/"+name] = &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: ktypes.UID("uid-" + name), ResourceVersion: strconv.Itoa(f.rv), Annotations: ann},
	}
}

func (f *fakeAPI) annotations(ns, name string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pods[ns+"/"+name].Annotations
}

func (f *fakeAPI) recorded() []recordedPatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedPatch(nil), f.patches...)
}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func (f *fakeAPI) get(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.pods[r.PathValue("ns")+"/"+r.PathValue("name")]
	if p == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "pods not found")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p)
}

func (f *fakeAPI) patch(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	f.patches = append(f.patches, recordedPatch{Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Body: m})
	p := f.pods[r.PathValue("ns")+"/"+r.PathValue("name")]
	if p == nil {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound, "pods not found")
		return
	}
	if r.Header.Get("Content-Type") != "application/merge-patch+json" {
		writeStatus(w, http.StatusUnsupportedMediaType, metav1.StatusReasonUnsupportedMediaType, "want a merge patch")
		return
	}
	var mp struct {
		Metadata struct {
			ResourceVersion string             `json:"resourceVersion"`
			Annotations     map[string]*string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(body, &mp); err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	if rv := mp.Metadata.ResourceVersion; rv != "" && rv != p.ResourceVersion {
		writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified")
		return
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	for k, v := range mp.Metadata.Annotations {
		if v == nil {
			delete(p.Annotations, k)
		} else {
			p.Annotations[k] = *v
		}
	}
	f.rv++
	p.ResourceVersion = strconv.Itoa(f.rv)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(p)
}

// writeKubeconfig writes a kubeconfig for server into a temp dir.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q}
users:
- name: cni
  user: {token: test-token}
contexts:
- name: test
  context: {cluster: test, user: cni}
current-context: test
`, server)
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// downServer returns the URL of a server that is no longer listening.
func downServer() string {
	s := httptest.NewServer(http.NotFoundHandler())
	s.Close()
	return s.URL
}

// stdinFor returns a policy-hook config with prevResult for the pod: host
// veth hostIf, addresses ips.
func stdinFor(kubeconfig, extra, hostIf string, ips ...string) []byte {
	var ipj []string
	for _, ip := range ips {
		ipj = append(ipj, fmt.Sprintf(`{"address": %q, "interface": 1}`, ip))
	}
	return []byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "vpcchain", "type": "policy-hook", "vethPrefix": "eni",
  "kubeconfig": %q %s,
  "prevResult": {"cniVersion": "1.1.0",
    "interfaces": [{"name": %q, "mac": "aa:bb:cc:dd:ee:ff"}, {"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
    "ips": [%s]}}`, kubeconfig, extra, hostIf, strings.Join(ipj, ", ")))
}

func cmdArgs(ns, pod string, stdin []byte) *skel.CmdArgs {
	a := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/cni-1", StdinData: stdin}
	if ns != "" {
		a.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + ns + ";K8S_POD_NAME=" + pod + ";K8S_POD_INFRA_CONTAINER_ID=c1"
	}
	return a
}

func runAdd(t *testing.T, args *skel.CmdArgs) error {
	t.Helper()
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return add(context.Background(), conf, args)
}

func runDel(t *testing.T, args *skel.CmdArgs) error {
	t.Helper()
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return del(context.Background(), conf, args)
}

func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := logw
	logw = &buf
	t.Cleanup(func() { logw = old })
	return &buf
}

func TestAddPublishes(t *testing.T) {
	for _, tc := range []struct {
		name, ns, pod, veth string
		ips                 []string
		want                map[string]string
	}{
		{"one address", "default", "nginx", "enic440f455693", []string{"10.0.0.9/32"},
			map[string]string{calicoPodIP: "10.0.0.9/32", calicoPodIPs: "10.0.0.9/32", awsPodIPs: "10.0.0.9"}},
		{"subnet-length address", "kube-system", "coredns-5d78c9869d-abcde", "eni4d5f75c480c", []string{"10.0.1.23/20"},
			map[string]string{calicoPodIP: "10.0.1.23/32", calicoPodIPs: "10.0.1.23/32", awsPodIPs: "10.0.1.23"}},
		{"two addresses", "a", "b", "eni69f6642c9d7", []string{"10.0.0.5/32", "fd00::5/128"},
			map[string]string{calicoPodIP: "10.0.0.5/32", calicoPodIPs: "10.0.0.5/32,fd00::5/128", awsPodIPs: "10.0.0.5,fd00::5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, tc.ns+"/"+tc.pod)
			kc := writeKubeconfig(t, api.srv.URL)
			args := cmdArgs(tc.ns, tc.pod, stdinFor(kc, "", tc.veth, tc.ips...))
			if err := runAdd(t, args); err != nil {
				t.Fatal(err)
			}
			got := api.annotations(tc.ns, tc.pod)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("annotation %s = %q, want %q", k, got[k], v)
				}
			}
			p := api.recorded()
			if len(p) != 1 || p[0].Path != "/api/v1/namespaces/"+tc.ns+"/pods/"+tc.pod+"/status" || p[0].ContentType != "application/merge-patch+json" {
				t.Errorf("patches %+v", p)
			}
		})
	}
}

func TestAddErrors(t *testing.T) {
	api := newFakeAPI(t, "default/nginx")
	kc := writeKubeconfig(t, api.srv.URL)
	for _, tc := range []struct {
		name string
		args *skel.CmdArgs
		code uint
		want []string
	}{
		{"wrong veth name", cmdArgs("default", "nginx", stdinFor(kc, "", "veth1234")), types.ErrInvalidNetworkConfig,
			[]string{`"veth1234"`, `"enic440f455693"`, "Felix"}},
		{"other pod's name", cmdArgs("default", "nginx", stdinFor(kc, "", "eni69f6642c9d7", "10.0.0.9/32")), types.ErrInvalidNetworkConfig,
			[]string{`"eni69f6642c9d7"`, `"enic440f455693"`}},
		{"no pod in CNI_ARGS", cmdArgs("", "", stdinFor(kc, "", "enic440f455693", "10.0.0.9/32")), types.ErrInvalidNetworkConfig,
			[]string{"K8S_POD_NAMESPACE"}},
		{"no addresses", cmdArgs("default", "nginx", stdinFor(kc, "", "enic440f455693")), types.ErrInvalidNetworkConfig,
			[]string{"no IP addresses"}},
		{"API server down", cmdArgs("default", "nginx", stdinFor(writeKubeconfig(t, downServer()), "", "enic440f455693", "10.0.0.9/32")), types.ErrTryAgainLater,
			[]string{"cannot publish the IP of pod default/nginx"}},
		{"unreadable kubeconfig", cmdArgs("default", "nginx", stdinFor("/nonexistent/kubeconfig", "", "enic440f455693", "10.0.0.9/32")), types.ErrTryAgainLater,
			[]string{"/nonexistent/kubeconfig"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, runAdd(t, tc.args), tc.code, tc.want...)
		})
	}
	// The Pod does not exist: an API error, code 11.
	const veth = "enia68237850af" // printf %s default.gone | sha1sum
	wantCode(t, runAdd(t, cmdArgs("default", "gone", stdinFor(kc, "", veth, "10.0.0.9/32"))), types.ErrTryAgainLater, "not found")
	// prevResult missing.
	conf, _ := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "policy-hook", "kubeconfig": "/k"}`))
	wantCode(t, add(context.Background(), conf, cmdArgs("default", "nginx", nil)), types.ErrInvalidNetworkConfig, "chained after")
}

func TestAddWithoutPublishing(t *testing.T) {
	stdin := []byte(`{"cniVersion": "1.1.0", "name": "n", "type": "policy-hook", "publishPodIP": false,
	  "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "enic440f455693"}], "ips": [{"address": "10.0.0.9/32"}]}}`)
	if err := runAdd(t, cmdArgs("default", "nginx", stdin)); err != nil {
		t.Fatal(err)
	}
	log := captureLog(t)
	if err := runAdd(t, cmdArgs("", "", stdin)); err != nil || !strings.Contains(log.String(), "no pod") {
		t.Errorf("no pod, not publishing: %v, log %q", err, log)
	}
}

// writeEndpointStatus writes Felix's file for the pod after delay.
func writeEndpointStatus(t *testing.T, dir string, pod podRef, content string, delay time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(delay)
		if err := os.WriteFile(statusFile(dir, pod), []byte(content), 0o644); err != nil {
			t.Error(err)
		}
	}()
	return done
}

func TestWaitForPolicy(t *testing.T) {
	pod := podRef{"default", "nginx"}
	const veth = "enic440f455693"
	good := `{"ifaceName":"enic440f455693","ipv4Nets":["10.0.0.9/32"]}`
	for _, tc := range []struct {
		name    string
		strict  bool
		content string        // "" = never written
		delay   time.Duration // when the file appears
		timeout string
		code    uint // 0 = success
		minTime time.Duration
		log     string
	}{
		{name: "file appears after 200ms", content: good, delay: 200 * time.Millisecond, timeout: "5s", minTime: 200 * time.Millisecond},
		{name: "strict, file appears in time", strict: true, content: good, delay: 100 * time.Millisecond, timeout: "5s", minTime: 100 * time.Millisecond},
		{name: "strict timeout", strict: true, timeout: "300ms", code: types.ErrTryAgainLater, minTime: 300 * time.Millisecond},
		{name: "non-strict timeout", timeout: "300ms", minTime: 300 * time.Millisecond, log: "starting the pod anyway"},
		{name: "stale file of another interface", strict: true, content: `{"ifaceName":"eni0000000000","ipv4Nets":["10.0.0.9/32"]}`, timeout: "300ms", code: types.ErrTryAgainLater},
		{name: "stale file of another address", strict: true, content: `{"ifaceName":"enic440f455693","ipv4Nets":["10.0.0.7/32"]}`, timeout: "300ms", code: types.ErrTryAgainLater},
		{name: "partial JSON", strict: true, content: `{"ifaceName":"enic44`, timeout: "300ms", code: types.ErrTryAgainLater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, pod.String())
			kc := writeKubeconfig(t, api.srv.URL)
			dir := t.TempDir()
			extra := fmt.Sprintf(`, "waitForPolicy": {"timeout": %q, "strict": %v, "endpointStatusDir": %q}`, tc.timeout, tc.strict, dir)
			log := captureLog(t)
			var done <-chan struct{}
			if tc.content != "" {
				done = writeEndpointStatus(t, dir, pod, tc.content, tc.delay)
			}
			start := time.Now()
			err := runAdd(t, cmdArgs(pod.Namespace, pod.Name, stdinFor(kc, extra, veth, "10.0.0.9/32")))
			took := time.Since(start)
			if done != nil {
				<-done
			}
			if tc.code != 0 {
				wantCode(t, err, tc.code, statusFile(dir, pod), "strict")
				// A failed strict ADD leaves no annotation behind.
				if got := api.annotations(pod.Namespace, pod.Name)[calicoPodIP]; got != "" {
					t.Errorf("after failed ADD podIP annotation %q, want cleared", got)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if took < tc.minTime {
				t.Errorf("ADD returned after %s, before %s", took, tc.minTime)
			}
			if tc.content == good && took > tc.delay+time.Second {
				t.Errorf("ADD returned %s after the file appeared", took-tc.delay)
			}
			if !strings.Contains(log.String(), tc.log) {
				t.Errorf("log %q does not contain %q", log, tc.log)
			}
			// CHECK agrees with the file.
			conf, _ := parseConfig(cmdArgs("", "", stdinFor(kc, extra, veth, "10.0.0.9/32")).StdinData)
			cerr := check(conf, cmdArgs(pod.Namespace, pod.Name, nil))
			if (cerr == nil) != (tc.content == good) {
				t.Errorf("CHECK: %v", cerr)
			}
		})
	}
}

func TestDel(t *testing.T) {
	pod := podRef{"default", "nginx"}
	const veth = "enic440f455693"
	published := map[string]string{calicoPodIP: "10.0.0.9/32", calicoPodIPs: "10.0.0.9/32", awsPodIPs: "10.0.0.9", "other": "kept"}
	for _, tc := range []struct {
		name      string
		ann       map[string]string // nil: the Pod does not exist
		ips       []string
		wantClear bool
	}{
		{"holds the released address", published, []string{"10.0.0.9/32"}, true},
		{"holds it as a plain IP", map[string]string{calicoPodIP: "10.0.0.9"}, []string{"10.0.0.9/32"}, true},
		{"a newer sandbox's address", published, []string{"10.0.0.7/32"}, false},
		{"already cleared", map[string]string{calicoPodIP: "", calicoPodIPs: ""}, []string{"10.0.0.9/32"}, false},
		{"no annotation", map[string]string{}, []string{"10.0.0.9/32"}, false},
		{"pod gone", nil, []string{"10.0.0.9/32"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t)
			if tc.ann != nil {
				ann := map[string]string{}
				for k, v := range tc.ann {
					ann[k] = v
				}
				api.addPod(pod.Namespace, pod.Name, ann)
			}
			kc := writeKubeconfig(t, api.srv.URL)
			args := cmdArgs(pod.Namespace, pod.Name, stdinFor(kc, "", veth, tc.ips...))
			for i := 0; i < 2; i++ { // idempotent
				if err := runDel(t, args); err != nil {
					t.Fatalf("DEL %d: %v", i+1, err)
				}
			}
			p := api.recorded()
			if !tc.wantClear {
				if len(p) != 0 {
					t.Errorf("patched %+v", p)
				}
				return
			}
			if len(p) != 1 {
				t.Fatalf("%d patches, want 1 (the second DEL finds them cleared): %+v", len(p), p)
			}
			md := p[0].Body["metadata"].(map[string]any)
			if md["resourceVersion"] == nil {
				t.Error("clearing patch has no resourceVersion precondition")
			}
			got := api.annotations(pod.Namespace, pod.Name)
			for _, k := range []string{calicoPodIP, calicoPodIPs, awsPodIPs} {
				if v, ok := got[k]; !ok || v != "" {
					t.Errorf("annotation %s = %q (present %v), want present and empty", k, v, ok)
				}
			}
			if tc.ann["other"] != "" && got["other"] != "kept" {
				t.Error("other annotations touched")
			}
		})
	}
}

func TestDelNeverFailsOnKubernetes(t *testing.T) {
	log := captureLog(t)
	for _, tc := range []struct{ name, kubeconfig, args string }{
		{"API server down", writeKubeconfig(t, downServer()), "x"},
		{"unreadable kubeconfig", "/nonexistent/kubeconfig", "x"},
		{"no pod in CNI_ARGS", "/nonexistent/kubeconfig", ""},
	} {
		ns := "default"
		if tc.args == "" {
			ns = ""
		}
		if err := runDel(t, cmdArgs(ns, "nginx", stdinFor(tc.kubeconfig, "", "enic440f455693", "10.0.0.9/32"))); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if !strings.Contains(log.String(), "not clearing") {
		t.Errorf("log %q", log)
	}
	// No prevResult: success without touching anything.
	conf, _ := parseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "policy-hook", "kubeconfig": "/nonexistent"}`))
	if err := del(context.Background(), conf, cmdArgs("default", "nginx", nil)); err != nil {
		t.Error(err)
	}
}

// TestDelConflictRetries: the Pod changes between DEL's GET and PATCH; the
// conditional patch fails with Conflict and DEL re-checks.
func TestDelConflictRetries(t *testing.T) {
	api := newFakeAPI(t)
	api.addPod("default", "nginx", map[string]string{calicoPodIP: "10.0.0.9/32"})
	var once sync.Once
	inner := api.srv.Config.Handler
	api.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			once.Do(func() { // a concurrent writer bumps the resourceVersion
				api.mu.Lock()
				api.rv++
				api.pods["default/nginx"].ResourceVersion = strconv.Itoa(api.rv)
				api.mu.Unlock()
			})
		}
		inner.ServeHTTP(w, r)
	})
	kc := writeKubeconfig(t, api.srv.URL)
	if err := runDel(t, cmdArgs("default", "nginx", stdinFor(kc, "", "enic440f455693", "10.0.0.9/32"))); err != nil {
		t.Fatal(err)
	}
	if n := len(api.recorded()); n != 2 {
		t.Errorf("%d patches, want 2 (conflict, then success)", n)
	}
	if got := api.annotations("default", "nginx")[calicoPodIP]; got != "" {
		t.Errorf("podIP %q after DEL", got)
	}
}

func TestStatus(t *testing.T) {
	api := newFakeAPI(t)
	kc := writeKubeconfig(t, api.srv.URL)
	ok := &skel.CmdArgs{StdinData: []byte(fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "n", "type": "policy-hook", "kubeconfig": %q}`, kc))}
	if err := cmdStatus(ok); err != nil {
		t.Error(err)
	}
	bad := &skel.CmdArgs{StdinData: []byte(`{"cniVersion": "1.1.0", "name": "n", "type": "policy-hook", "kubeconfig": "/nonexistent/kc"}`)}
	wantCode(t, cmdStatus(bad), 50, "/nonexistent/kc") // CNI 1.1 error code 50: plugin not available
}
