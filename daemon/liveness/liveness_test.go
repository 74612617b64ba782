package liveness

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// runtimeStub answers ListPodSandbox as a CRI runtime does, on the real
// gRPC service definition of k8s.io/cri-api.
type runtimeStub struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	items []*runtimeapi.PodSandbox
	err   error
}

func (r *runtimeStub) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	if req.Filter != nil {
		return nil, status.Error(codes.InvalidArgument, "the daemon must list every sandbox, not a filtered set")
	}
	return &runtimeapi.ListPodSandboxResponse{Items: r.items}, r.err
}

func serve(t *testing.T, stub *runtimeStub) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, stub)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return sock
}

func TestCRISandboxes(t *testing.T) {
	sock := serve(t, &runtimeStub{items: []*runtimeapi.PodSandbox{
		{Id: "a1", State: runtimeapi.PodSandboxState_SANDBOX_READY, Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "default", Name: "web"}},
		{Id: "b2", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY, Metadata: &runtimeapi.PodSandboxMetadata{Namespace: "kube-system", Name: "dns"}},
		{Id: "c3", State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}, // no metadata: still a sandbox
	}})
	c, err := NewCRI(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.Sandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Sandbox{
		"a1": {Namespace: "default", Name: "web", Ready: true},
		"b2": {Namespace: "kube-system", Name: "dns"},
		"c3": {},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("sandbox %s: %+v, want %+v", id, got[id], w)
		}
	}
}

func TestCRIErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	missing, err := NewCRI(filepath.Join(t.TempDir(), "none.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close()
	if _, err := missing.Sandboxes(ctx); !errors.Is(err, ErrNoSocket) {
		t.Errorf("missing socket: %v, want ErrNoSocket", err)
	}

	failing, err := NewCRI(serve(t, &runtimeStub{err: status.Error(codes.Unavailable, "runtime restarting")}))
	if err != nil {
		t.Fatal(err)
	}
	defer failing.Close()
	if got, err := failing.Sandboxes(ctx); err == nil || status.Code(errors.Unwrap(err)) != codes.Unavailable {
		t.Errorf("runtime error: %v, %v; want the runtime's Unavailable", got, err)
	}
}

// Only a list holding the daemon's own pod proves anything: another
// runtime's answer (a wrong socket) would release every allocation.
func TestCheckOwnPod(t *testing.T) {
	own := Pod{Namespace: "kube-system", Name: "vpcchain-x7k2p"}
	for _, tc := range []struct {
		name  string
		boxes map[string]Sandbox
		own   Pod
		ok    bool
	}{
		{"listed", map[string]Sandbox{"a": {Namespace: "default", Name: "web", Ready: true}, "b": {Namespace: "kube-system", Name: "vpcchain-x7k2p", Ready: true}}, own, true},
		{"listed, not ready", map[string]Sandbox{"b": {Namespace: "kube-system", Name: "vpcchain-x7k2p"}}, own, true},
		{"empty list", map[string]Sandbox{}, own, false},
		{"nil list", nil, own, false},
		{"others only", map[string]Sandbox{"a": {Namespace: "default", Name: "web", Ready: true}}, own, false},
		{"same name, other namespace", map[string]Sandbox{"a": {Namespace: "default", Name: "vpcchain-x7k2p", Ready: true}}, own, false},
		{"name prefix", map[string]Sandbox{"a": {Namespace: "kube-system", Name: "vpcchain-x7k2p-2", Ready: true}}, own, false},
		{"no metadata", map[string]Sandbox{"a": {Ready: true}}, own, false},
		{"not run as a pod", nil, Pod{}, true},
	} {
		err := CheckOwnPod(tc.boxes, tc.own)
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrOwnPodNotListed) {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
