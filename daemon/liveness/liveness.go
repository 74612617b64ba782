// Package liveness tells the daemon which pods still exist, from the one
// party that knows: the node's container runtime, asked over the Kubernetes
// Container Runtime Interface (CRI) for its pod sandboxes.
//
// The daemon releases an allocation whose DEL never arrived only when the
// runtime no longer lists the allocation's sandbox (the CNI container ID of
// a pod is its sandbox ID under containerd, CRI-O and cri-dockerd). A
// network namespace path is no such proof: a runtime may pass
// /proc/<pid>/ns/net, or keep its namespaces in a directory the daemon does
// not see.
//
// A runtime that answers is not yet the right one: a CRI endpoint that is
// not the kubelet's (a wrong socket) lists none of the node's pods, and its
// word would release every allocation. The daemon, itself a pod, trusts a
// list only when it holds the daemon's own pod (CheckOwnPod).
package liveness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox is what the runtime says of one pod sandbox.
type Sandbox struct {
	Namespace, Name string
	Ready           bool // SANDBOX_READY; a NOTREADY sandbox still exists
}

// Pod names a pod as its sandbox's CRI metadata does.
type Pod struct{ Namespace, Name string }

func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// ErrOwnPodNotListed is returned (wrapped) by CheckOwnPod when the runtime
// does not list the daemon's own pod.
var ErrOwnPodNotListed = errors.New("no sandbox of the daemon's own pod")

// CheckOwnPod returns nil when boxes, a runtime's answer, hold a sandbox of
// own, the pod the daemon runs in: only the kubelet's runtime has it, so
// only then does a missing sandbox prove a pod gone. Any state counts (the
// sandbox exists). A zero own, a daemon not run as a pod, checks nothing.
func CheckOwnPod(boxes map[string]Sandbox, own Pod) error {
	if own == (Pod{}) {
		return nil
	}
	for _, b := range boxes {
		if b.Namespace == own.Namespace && b.Name == own.Name {
			return nil
		}
	}
	// The text names no count: the daemon logs each distinct failure once.
	return fmt.Errorf("it lists %w %s: not the kubelet's runtime? (VPCCHAIN_CRI_SOCKET)", ErrOwnPodNotListed, own)
}

// Source lists the pod sandboxes the node's runtime knows.
type Source interface {
	// Sandboxes returns every sandbox the runtime knows, ready or not, by ID.
	Sandboxes(ctx context.Context) (map[string]Sandbox, error)
	// String names the source for logs ("CRI at /run/containerd/containerd.sock").
	String() string
}

// CRI is a Source backed by a CRI runtime service on a unix socket.
type CRI struct {
	socket string
	conn   *grpc.ClientConn
	client sandboxLister
}

// sandboxLister is the one CRI call the daemon makes. The socket gives
// whoever holds it control of the node (creating privileged containers is
// a call away): the client's type keeps the daemon to listing sandboxes.
type sandboxLister interface {
	ListPodSandbox(ctx context.Context, in *runtimeapi.ListPodSandboxRequest, opts ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error)
}

// NewCRI prepares a client of the CRI socket at path. It does not connect:
// the runtime may start after the daemon, and every Sandboxes call says
// whether it answers.
func NewCRI(path string) (*CRI, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI client for %s: %w", path, err)
	}
	return &CRI{socket: path, conn: conn, client: runtimeapi.NewRuntimeServiceClient(conn)}, nil
}

func (c *CRI) String() string { return "CRI at " + c.socket }

// Close closes the connection.
func (c *CRI) Close() error { return c.conn.Close() }

// ErrNoSocket is returned (wrapped) when the CRI socket does not exist.
var ErrNoSocket = errors.New("no CRI socket")

// Sandboxes lists every pod sandbox (ListPodSandbox without a filter).
func (c *CRI) Sandboxes(ctx context.Context) (map[string]Sandbox, error) {
	// A missing socket is said plainly instead of as a dial timeout.
	if _, err := os.Stat(c.socket); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", c.socket, ErrNoSocket)
	}
	resp, err := c.client.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return nil, fmt.Errorf("ListPodSandbox on %s: %w", c.socket, err)
	}
	out := make(map[string]Sandbox, len(resp.Items))
	for _, s := range resp.Items {
		sb := Sandbox{Ready: s.State == runtimeapi.PodSandboxState_SANDBOX_READY}
		if m := s.Metadata; m != nil {
			sb.Namespace, sb.Name = m.Namespace, m.Name
		}
		out[s.Id] = sb
	}
	return out, nil
}
