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
// tokens it issues; fail makes it answer 403.
type fakeTokenAPI struct {
	srv    *httptest.Server
	issued atomic.Int32
	fail   atomic.Bool
	asked  atomic.Int64 // expirationSeconds of the last request
}

func newFakeTokenAPI(t *testing.T, lifetime time.Duration) *fakeTokenAPI {
	f := &fakeTokenAPI{}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/namespaces/kube-system/serviceaccounts/vpcchain/token" {
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
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Kind != "TokenRequest" {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
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
	const lifetime = 24 * time.Hour
	api := newFakeTokenAPI(t, lifetime)
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	now := start
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.srv.Certificate().Raw})
	p := &policyCredentials{
		c:  &apiClient{host: api.srv.URL, http: api.srv.Client(), caPEM: ca},
		ns: "kube-system", sa: "vpcchain", now: func() time.Time { return now },
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
	if err != nil || token(kc) != "token-1" || api.asked.Load() != 86400 {
		t.Fatalf("first: %v, token %q, asked %d s", err, kc, api.asked.Load())
	}
	now = start.Add(7 * time.Hour) // before a third of 24 h
	if kc, _ := p.kubeconfig(context.Background()); token(kc) != "token-1" || api.issued.Load() != 1 {
		t.Errorf("renewed too early")
	}
	now = start.Add(8*time.Hour + time.Second)
	if kc, err := p.kubeconfig(context.Background()); err != nil || token(kc) != "token-2" {
		t.Errorf("not renewed after a third: %v", err)
	}
	// The API refuses: the current token serves while it is valid.
	api.fail.Store(true)
	now = start.Add(20 * time.Hour)
	if kc, err := p.kubeconfig(context.Background()); err != nil || token(kc) != "token-2" {
		t.Errorf("failed renewal dropped a valid token: %v", err)
	}
	now = start.Add(25 * time.Hour) // token-2 expired (the fake's fixed expiry)
	if _, err := p.kubeconfig(context.Background()); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("expired and refused: err = %v, want the API's answer", err)
	}
}

func TestNewPolicyCredentialsNeedsServiceAccount(t *testing.T) {
	t.Setenv("POD_SERVICE_ACCOUNT", "")
	if _, err := newPolicyCredentials(); err == nil || !strings.Contains(err.Error(), "POD_SERVICE_ACCOUNT") {
		t.Errorf("err = %v, want POD_SERVICE_ACCOUNT named", err)
	}
}
