package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The preStop decides from the API server's answer for the DaemonSet, as
// Kubernetes gives it: 404 once deleted, metadata.deletionTimestamp while a
// foreground deletion runs; anything else keeps the install.
func TestDaemonSetGone(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		gone   bool
		err    bool
	}{
		{"deleted", http.StatusNotFound, `{"kind":"Status","code":404}`, true, false},
		{"being deleted", http.StatusOK, `{"kind":"DaemonSet","metadata":{"name":"vpcchain","deletionTimestamp":"2026-12-02T17:00:00Z"}}`, true, false},
		{"rolling update", http.StatusOK, `{"kind":"DaemonSet","metadata":{"name":"vpcchain"}}`, false, false},
		{"our ServiceAccount deleted", http.StatusUnauthorized, `{"kind":"Status","code":401}`, true, false},
		{"API error", http.StatusForbidden, `{"kind":"Status","code":403}`, false, true},
		{"API down", http.StatusServiceUnavailable, ``, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/apis/apps/v1/namespaces/kube-system/daemonsets/vpcchain" {
					http.Error(w, "unexpected path "+r.URL.Path, http.StatusBadRequest)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c := &apiClient{host: srv.URL, http: srv.Client()}
			gone, err := c.daemonSetGone(context.Background(), "kube-system", "vpcchain")
			if gone != tc.gone || (err != nil) != tc.err {
				t.Fatalf("gone=%v err=%v; want gone=%v, error %v", gone, err, tc.gone, tc.err)
			}
		})
	}
}
