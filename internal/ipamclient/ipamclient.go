// Package ipamclient is the one client of the vpcchain daemon's IPAM API
// (api/ipam/v1) and the home of what both sides share: the API version, the
// default socket path, the socket's creation (Listen) and the status codes.
//
// The API is served over ttrpc (containerd's protobuf RPC for short-lived
// clients on unix sockets): vpc-ipam runs once per ADD and once per DEL, and
// a ttrpc client costs one connect and one message where a gRPC client pays
// for HTTP/2 and links several times more code to start. The daemon answers
// the standard gRPC health service on the same socket (conflist.CheckHealth).
//
// The client is thin: every method fills the request's api_version and maps
// the daemon's status to a Go error the caller can branch on:
//
//	codes.Unavailable, connection lost -> ErrDaemonUnavailable (errors.Is; *UnavailableError)
//	codes.ResourceExhausted   -> *NoAddressError{Reason}
//	codes.FailedPrecondition  -> *VersionMismatchError (errors.Is ErrVersionMismatch)
//	codes.NotFound            -> ErrNotFound (errors.Is)
//	codes.DeadlineExceeded    -> ErrTimeout (errors.Is), also a caller's expired ctx
//	anything else             -> an error wrapping the status
//
// Dial checks that the socket exists and is a socket and connects, so a
// missing daemon is reported at once and precisely ("vpcchain daemon socket
// /var/run/vpcchain/ipamd.sock: no such file (is the daemon running?)").
//
// The daemon side uses CheckVersion on every request and the status helpers
// (NoAddressStatus, VersionMismatchStatus) so that both ends agree on codes,
// and Listen to create the socket (SocketMode, in a SocketDirMode directory,
// replacing a stale socket) where Dial expects it.
package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/containerd/ttrpc"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/internal/nodeconf"
)

// APIVersion is the version of the IPAM API this build speaks. Every request
// carries it; the daemon refuses any other (FailedPrecondition). Bump it on
// any change of meaning, not only on wire changes.
const APIVersion uint32 = 1

// DefaultSocket is where the daemon listens unless configured otherwise.
const DefaultSocket = nodeconf.DefaultSocket

// Permissions the daemon gives the socket and its directory: root-only, the
// socket is the authority over the node's pod addresses.
const (
	SocketMode    fs.FileMode = 0o600
	SocketDirMode fs.FileMode = 0o700
)

// Client is a connection to the daemon. It is safe for concurrent use.
type Client struct {
	socket string
	conn   *ttrpc.Client
	rpc    ipamv1.TTRPCIPAMService
}

// Dial connects to the daemon listening on socketPath. It fails with an
// *UnavailableError (errors.Is ErrDaemonUnavailable) when the path does not
// exist, is not a socket, cannot be examined or nobody listens on it; ctx
// bounds the connect.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	if err := checkSocket(socketPath); err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("vpcchain daemon socket %s: connect: %w (%w)", socketPath, ErrTimeout, ctx.Err())
		}
		return nil, &UnavailableError{Socket: socketPath, Op: "dial", Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: connect: daemon unavailable (is the daemon running?): %v", socketPath, err)}
	}
	c := ttrpc.NewClient(conn)
	return &Client{socket: socketPath, conn: c, rpc: ipamv1.NewTTRPCIPAMClient(c)}, nil
}

// checkSocket reports a missing or wrong socket file as *UnavailableError.
func checkSocket(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &UnavailableError{Socket: path, Op: "dial", Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: no such file (is the daemon running?)", path)}
	case errors.Is(err, fs.ErrPermission):
		return &UnavailableError{Socket: path, Op: "dial", Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: permission denied (the socket is root-only; run as root)", path)}
	case err != nil:
		return &UnavailableError{Socket: path, Op: "dial", Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: %v", path, err)}
	case fi.Mode().Type() != fs.ModeSocket:
		return &UnavailableError{Socket: path, Op: "dial",
			msg: fmt.Sprintf("vpcchain daemon socket %s: not a socket (file mode %s)", path, fi.Mode())}
	}
	return nil
}

// Socket returns the socket path the client talks to.
func (c *Client) Socket() string { return c.socket }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Add asks for the key's address (allocating one from the warm pool). It sets
// req.ApiVersion. An empty pool is *NoAddressError.
func (c *Client) Add(ctx context.Context, req *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	if req == nil {
		req = &ipamv1.AddRequest{}
	}
	req.ApiVersion = APIVersion
	reply, err := c.rpc.Add(ctx, req)
	return reply, c.mapErr(ctx, "Add", err)
}

// Del releases the key's address; an unknown key succeeds (Released false).
// It sets req.ApiVersion.
func (c *Client) Del(ctx context.Context, req *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	if req == nil {
		req = &ipamv1.DelRequest{}
	}
	req.ApiVersion = APIVersion
	reply, err := c.rpc.Del(ctx, req)
	return reply, c.mapErr(ctx, "Del", err)
}

// Check verifies that the key holds req.Ip; otherwise ErrNotFound. It sets
// req.ApiVersion.
func (c *Client) Check(ctx context.Context, req *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	if req == nil {
		req = &ipamv1.CheckRequest{}
	}
	req.ApiVersion = APIVersion
	reply, err := c.rpc.Check(ctx, req)
	return reply, c.mapErr(ctx, "Check", err)
}

// Status says whether the daemon can serve an Add now.
func (c *Client) Status(ctx context.Context) (*ipamv1.StatusReply, error) {
	reply, err := c.rpc.Status(ctx, &ipamv1.StatusRequest{ApiVersion: APIVersion})
	return reply, c.mapErr(ctx, "Status", err)
}

// GC releases every allocation of req.Network whose key is not in req.Valid.
// It sets req.ApiVersion.
func (c *Client) GC(ctx context.Context, req *ipamv1.GCRequest) (*ipamv1.GCReply, error) {
	if req == nil {
		req = &ipamv1.GCRequest{}
	}
	req.ApiVersion = APIVersion
	reply, err := c.rpc.GC(ctx, req)
	return reply, c.mapErr(ctx, "GC", err)
}

// Introspect dumps the pool.
func (c *Client) Introspect(ctx context.Context) (*ipamv1.IntrospectReply, error) {
	reply, err := c.rpc.Introspect(ctx, &ipamv1.IntrospectRequest{ApiVersion: APIVersion})
	return reply, c.mapErr(ctx, "Introspect", err)
}
