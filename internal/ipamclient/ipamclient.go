// Package ipamclient is the one client of the vpcchain daemon's IPAM API
// (api/ipam/v1) and the home of the constants both sides share: the API
// version and the default socket path.
//
// The client is thin: every method fills the request's api_version and maps
// the daemon's gRPC status to a Go error the caller can branch on:
//
//	codes.Unavailable         -> ErrDaemonUnavailable (errors.Is; *UnavailableError)
//	codes.ResourceExhausted   -> *NoAddressError{Reason}
//	codes.FailedPrecondition  -> *VersionMismatchError (errors.Is ErrVersionMismatch)
//	codes.NotFound            -> ErrNotFound (errors.Is)
//	codes.DeadlineExceeded    -> ErrTimeout (errors.Is), also a caller's expired ctx
//	anything else             -> an error wrapping the gRPC status
//
// Dial checks that the socket exists and is a socket before it returns, so a
// missing daemon is reported at once and precisely ("vpcchain daemon socket
// /var/run/vpcchain/ipamd.sock: no such file (is the daemon running?)")
// instead of as a gRPC connection error after a timeout.
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
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// APIVersion is the version of the IPAM API this build speaks. Every request
// carries it; the daemon refuses any other (FailedPrecondition). Bump it on
// any change of meaning, not only on wire changes.
const APIVersion uint32 = 1

// DefaultSocket is where the daemon listens unless configured otherwise.
const DefaultSocket = "/var/run/vpcchain/ipamd.sock"

// Permissions the daemon gives the socket and its directory: root-only, the
// socket is the authority over the node's pod addresses.
const (
	SocketMode    fs.FileMode = 0o600
	SocketDirMode fs.FileMode = 0o700
)

// Client is a connection to the daemon. It is safe for concurrent use.
type Client struct {
	socket string
	conn   *grpc.ClientConn
	rpc    ipamv1.IPAMClient
}

// Dial returns a client of the daemon listening on socketPath. It fails with
// an *UnavailableError (errors.Is ErrDaemonUnavailable) when the path does
// not exist, is not a socket or cannot be examined. It does not connect: the
// first RPC does, and fails fast (codes.Unavailable -> ErrDaemonUnavailable)
// when nobody listens. ctx is not used for connecting; pass the RPC deadline
// to the methods.
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
	target := "unix:" + socketPath // relative: unix:path
	if filepath.IsAbs(socketPath) {
		target = "unix://" + socketPath // absolute: unix:///path
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("vpcchain daemon socket %s: cannot create gRPC client: %w", socketPath, err)
	}
	return &Client{socket: socketPath, conn: conn, rpc: ipamv1.NewIPAMClient(conn)}, nil
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
