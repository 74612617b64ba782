package main

import (
	"context"
	"encoding/json"
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
		{"our read grant deleted", http.StatusForbidden, `{"kind":"Status","code":403}`, true, false},
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
			gone, err := c.daemonSetGone(context.Background(), "kube-system", "vpcchain", "")
			if gone != tc.gone || (err != nil) != tc.err {
				t.Fatalf("gone=%v err=%v; want gone=%v, error %v", gone, err, tc.gone, tc.err)
			}
		})
	}
}

// A node taken off the DaemonSet by its labels (a migration's node switched
// back to another CNI) is an uninstall for that node; a DaemonSet that
// still selects it (a rolling update) keeps the install, and so does a node
// the installer cannot read.
func TestDaemonSetGoneFromNode(t *testing.T) {
	const affinity = `{"kind":"DaemonSet","metadata":{"name":"vpcchain"},"spec":{"template":{"spec":{` +
		`"nodeSelector":{"kubernetes.io/os":"linux"},"affinity":{"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":` +
		`{"nodeSelectorTerms":[{"matchExpressions":[{"key":"eks.amazonaws.com/compute-type","operator":"NotIn","values":["fargate"]},` +
		`{"key":"vpcchain.io/cni","operator":"In","values":["vpcchain"]}]}]}}}}}}}`
	cases := []struct {
		name       string
		nodeStatus int
		node       string
		gone, err  bool
	}{
		{"still selected", http.StatusOK, `{"metadata":{"name":"n1","labels":{"kubernetes.io/os":"linux","vpcchain.io/cni":"vpcchain"}}}`, false, false},
		{"label removed", http.StatusOK, `{"metadata":{"name":"n1","labels":{"kubernetes.io/os":"linux"}}}`, true, false},
		{"nodeSelector no longer met", http.StatusOK, `{"metadata":{"name":"n1","labels":{"vpcchain.io/cni":"vpcchain"}}}`, true, false},
		{"node unreadable", http.StatusForbidden, `{"kind":"Status","code":403}`, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/apis/apps/v1/namespaces/kube-system/daemonsets/vpcchain":
					_, _ = w.Write([]byte(affinity))
				case "/api/v1/nodes/n1":
					w.WriteHeader(tc.nodeStatus)
					_, _ = w.Write([]byte(tc.node))
				default:
					http.Error(w, "unexpected path "+r.URL.Path, http.StatusBadRequest)
				}
			}))
			defer srv.Close()
			c := &apiClient{host: srv.URL, http: srv.Client()}
			gone, err := c.daemonSetGone(context.Background(), "kube-system", "vpcchain", "n1")
			if gone != tc.gone || (err != nil) != tc.err {
				t.Fatalf("gone=%v err=%v; want gone=%v, error %v", gone, err, tc.gone, tc.err)
			}
		})
	}
}

func TestNodeSelectorOperators(t *testing.T) {
	labels := map[string]string{"a": "1", "n": "5"}
	for _, tc := range []struct {
		r    selectorRequirement
		want bool
	}{
		{selectorRequirement{"a", "In", []string{"1", "2"}}, true},
		{selectorRequirement{"a", "NotIn", []string{"1"}}, false},
		{selectorRequirement{"b", "NotIn", []string{"1"}}, true},
		{selectorRequirement{"a", "Exists", nil}, true},
		{selectorRequirement{"b", "DoesNotExist", nil}, true},
		{selectorRequirement{"n", "Gt", []string{"4"}}, true},
		{selectorRequirement{"n", "Lt", []string{"4"}}, false},
		{selectorRequirement{"a", "Whatever", nil}, true},
	} {
		if got := tc.r.matches(labels); got != tc.want {
			t.Errorf("%+v on %v: %v, want %v", tc.r, labels, got, tc.want)
		}
	}
	var p podPlacement
	if err := json.Unmarshal([]byte(`{"affinity":{"podAntiAffinity":{}}}`), &p); err != nil {
		t.Fatal(err)
	}
	if !p.selects("n1", labels) {
		t.Error("an affinity without node affinity must select every node")
	}
}
