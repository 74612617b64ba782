package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

// fakeTokenAPI answers the TokenRequest subresource as the API server does
// (201 with status.token and status.expirationTimestamp), numbering the
// tokens it issues, and a GET of node n1; fail makes it answer 403,
// noNodeBinding 400 to a token bound to a Node (as an API server before
// Kubernetes 1.31 does).
type fakeTokenAPI struct {
	srv           *httptest.Server
	issued        atomic.Int32
	fail          atomic.Bool
	noNodeBinding atomic.Bool
	asked         atomic.Int64           // expirationSeconds of the last request
	bound         atomic.Pointer[string] // "Kind name uid" of the last request's boundObjectRef
}

func newFakeTokenAPI(t *testing.T, lifetime time.Duration) *fakeTokenAPI {
	f := &fakeTokenAPI{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1/nodes/n1" {
			_, _ = w.Write([]byte(`{"kind":"Node","apiVersion":"v1","metadata":{"name":"n1","uid":"node-uid-1"}}`))
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/kube-system/serviceaccounts/vpcchain-policy-hook/token" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		if f.fail.Load() {
			http.Error(w, `{"kind":"Status","code":403}`, http.StatusForbidden)
			return
		}
		var req struct {
			Kind string `json:"kind"`
			Spec struct {
				ExpirationSeconds int64 `json:"expirationSeconds"`
				BoundObjectRef    *struct {
					Kind, APIVersion, Name, UID string
				} `json:"boundObjectRef"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Kind != "TokenRequest" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		if b := req.Spec.BoundObjectRef; b != nil {
			s := b.Kind + " " + b.Name + " " + b.UID
			f.bound.Store(&s)
			if b.Kind == "Node" && f.noNodeBinding.Load() {
				http.Error(w, `{"kind":"Status","code":400,"message":"cannot bind token to object of type Node"}`, http.StatusBadRequest)
				return
			}
		}
		f.asked.Store(req.Spec.ExpirationSeconds)
		n := f.issued.Add(1)
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
			"status": map[string]any{
				"token":               "token-" + string(rune('0'+n)),
				"expirationTimestamp": time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC).Add(lifetime).Format(time.RFC3339),
			},
		})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestPolicyCredentialsRenewAfterAThird(t *testing.T) {
	const lifetime = time.Hour
	api := newFakeTokenAPI(t, lifetime)
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	now := start
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.srv.Certificate().Raw})
	p := &policyCredentials{
		c:  &apiClient{host: api.srv.URL, http: api.srv.Client(), caPEM: ca},
		ns: "kube-system", sa: "vpcchain-policy-hook", node: "n1", now: func() time.Time { return now },
		pod: boundTo{kind: "Pod", name: "vpcchain-x", uid: "pod-uid-1"},
	}
	token := func(kc []byte) string {
		t.Helper()
		cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
		if err != nil {
			t.Fatalf("kubeconfig does not load: %v", err)
		}
		if cfg.Host != api.srv.URL {
			t.Errorf("server %q, want %q", cfg.Host, api.srv.URL)
		}
		return cfg.BearerToken
	}
	kc, err := p.kubeconfig(context.Background())
	if err != nil || token(kc) != "token-1" || api.asked.Load() != 3600 {
		t.Fatalf("first: %v, token %q, asked %d s", err, kc, api.asked.Load())
	}
	if b := api.bound.Load(); b == nil || *b != "Node n1 node-uid-1" {
		t.Errorf("token bound to %v, want Node n1 node-uid-1", b)
	}
	now = start.Add(19 * time.Minute) // before a third of an hour
	if kc, _ := p.kubeconfig(context.Background()); token(kc) != "token-1" || api.issued.Load() != 1 {
		t.Errorf("renewed too early")
	}
	now = start.Add(20*time.Minute + time.Second)
	if kc, err := p.kubeconfig(context.Background()); err != nil || token(kc) != "token-2" {
		t.Errorf("not renewed after a third: %v", err)
	}
	// The API refuses: the current token serves while it is valid.
	api.fail.Store(true)
	now = start.Add(50 * time.Minute)
	if kc, err := p.kubeconfig(context.Background()); err != nil || token(kc) != "token-2" {
		t.Errorf("failed renewal dropped a valid token: %v", err)
	}
	now = start.Add(61 * time.Minute) // token-2 expired (the fake's fixed expiry)
	if _, err := p.kubeconfig(context.Background()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("expired and refused: err = %v, want the API's answer", err)
	}
}

// An API server that cannot bind tokens to a Node gets the installer's pod
// as the bound object.
func TestPolicyCredentialsBindToThePodWithoutNodeBinding(t *testing.T) {
	api := newFakeTokenAPI(t, time.Hour)
	api.noNodeBinding.Store(true)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.srv.Certificate().Raw})
	p := &policyCredentials{c: &apiClient{host: api.srv.URL, http: api.srv.Client(), caPEM: ca},
		ns: "kube-system", sa: "vpcchain-policy-hook", node: "n1", now: time.Now,
		pod: boundTo{kind: "Pod", name: "vpcchain-x", uid: "pod-uid-1"}}
	if _, err := p.kubeconfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := api.bound.Load(); b == nil || *b != "Pod vpcchain-x pod-uid-1" {
		t.Errorf("token bound to %v, want Pod vpcchain-x pod-uid-1", b)
	}
}

func TestNewPolicyCredentialsNeedsServiceAccountAndNode(t *testing.T) {
	for _, env := range []map[string]string{{envPolicyHookSA: "", envNodeName: "n1"}, {envPolicyHookSA: "vpcchain-policy-hook", envNodeName: ""}} {
		for k, v := range env {
			t.Setenv(k, v)
		}
		if _, err := newPolicyCredentials(); err == nil || !strings.Contains(err.Error(), envPolicyHookSA) || !strings.Contains(err.Error(), envNodeName) {
			t.Errorf("with %v: err = %v, want %s and %s named", env, err, envPolicyHookSA, envNodeName)
		}
	}
}
