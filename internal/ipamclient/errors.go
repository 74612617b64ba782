package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors; test with errors.Is.
var (
	// ErrDaemonUnavailable: the daemon cannot be reached (socket missing,
	// not a socket, nobody listening). The concrete error is *UnavailableError.
	ErrDaemonUnavailable = errors.New("vpcchain daemon unavailable")
	// ErrVersionMismatch: the daemon refused the request's API version. The
	// concrete error is *VersionMismatchError.
	ErrVersionMismatch = errors.New("IPAM API version mismatch")
	// ErrNotFound: the key holds no allocation (or not the asked address).
	ErrNotFound = errors.New("no such allocation")
	// ErrTimeout: the RPC's deadline passed before the daemon answered.
	ErrTimeout = errors.New("timed out waiting for the vpcchain daemon")
)

// versionMismatchReason is the errdetails.ErrorInfo reason that carries both
// versions from daemon to client, so the client need not parse the message.
const (
	errorDomain           = "ipam.vpcchain.io"
	versionMismatchReason = "API_VERSION_MISMATCH"
	metaClientVersion     = "client_version"
	metaDaemonVersion     = "daemon_version"
)

// UnavailableError says that the daemon could not be reached over Socket.
// errors.Is(err, ErrDaemonUnavailable) is true; Unwrap gives the cause.
type UnavailableError struct {
	Socket string // the socket path
	Op     string // "dial" or the RPC name
	Err    error  // the cause; may be nil (e.g. "not a socket")
	msg    string // the complete message, when the constructor wrote one
}

func (e *UnavailableError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	if e.Err == nil {
		return fmt.Sprintf("vpcchain daemon socket %s: %s: daemon unavailable", e.Socket, e.Op)
	}
	return fmt.Sprintf("vpcchain daemon socket %s: %s: daemon unavailable: %v", e.Socket, e.Op, e.Err)
}

// Is makes errors.Is(err, ErrDaemonUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrDaemonUnavailable }

// Unwrap returns the cause.
func (e *UnavailableError) Unwrap() error { return e.Err }

// NoAddressError says that the daemon has no address to give now (warm pool
// empty, max pods reached, subnet full ...). Reason is the daemon's own
// explanation, meant for the user as is.
type NoAddressError struct {
	Reason string
}

func (e *NoAddressError) Error() string {
	if e.Reason == "" {
		return "vpcchain daemon has no free address"
	}
	return e.Reason
}

// VersionMismatchError says that the daemon does not speak the client's API
// version. errors.Is(err, ErrVersionMismatch) is true. Daemon is 0 when the
// daemon did not say which version it speaks.
type VersionMismatchError struct {
	Client, Daemon uint32
	Msg            string // the daemon's message
}

func (e *VersionMismatchError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Daemon == 0 {
		return fmt.Sprintf("IPAM API version mismatch: client speaks v%d, the daemon refused it", e.Client)
	}
	return fmt.Sprintf("IPAM API version mismatch: client speaks v%d, daemon speaks v%d", e.Client, e.Daemon)
}

// Is makes errors.Is(err, ErrVersionMismatch) true.
func (e *VersionMismatchError) Is(target error) bool { return target == ErrVersionMismatch }

// mapErr turns an RPC error into the documented Go errors. The caller's ctx
// is consulted first: when it expired, the error the transport made up is
// not the daemon's answer.
func (c *Client) mapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	ctxErr := ctx.Err()
	if dl, ok := ctx.Deadline(); ok && ctxErr == nil && !time.Now().Before(dl) {
		// The transport may see the deadline pass before ctx's own timer
		// has marked it done.
		ctxErr = context.DeadlineExceeded
	}
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded):
		return fmt.Errorf("vpcchain daemon socket %s: %s: %w (%w)", c.socket, op, ErrTimeout, ctxErr)
	case ctxErr != nil:
		return fmt.Errorf("vpcchain daemon socket %s: %s: %w", c.socket, op, ctxErr)
	}
	if connectionLost(err) {
		return &UnavailableError{Socket: c.socket, Op: op, Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: %s: daemon unavailable (the daemon closed the connection: is it restarting?): %v", c.socket, op, err)}
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("vpcchain daemon socket %s: %s: %w", c.socket, op, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return &UnavailableError{Socket: c.socket, Op: op, Err: err,
			msg: fmt.Sprintf("vpcchain daemon socket %s: %s: daemon unavailable (is the daemon running?): %s", c.socket, op, st.Message())}
	case codes.ResourceExhausted:
		return &NoAddressError{Reason: st.Message()}
	case codes.FailedPrecondition:
		return versionMismatchFromStatus(st)
	case codes.NotFound:
		return fmt.Errorf("vpcchain daemon: %s: %w: %s", op, ErrNotFound, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("vpcchain daemon socket %s: %s: %w: %s", c.socket, op, ErrTimeout, st.Message())
	}
	return fmt.Errorf("vpcchain daemon socket %s: %s: %w", c.socket, op, err)
}

// connectionLost: the connection ended before the daemon answered (it
// stopped or restarted); the request may or may not have been served.
func connectionLost(err error) bool {
	return errors.Is(err, ttrpc.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// versionMismatchFromStatus reads the versions from the status' ErrorInfo.
func versionMismatchFromStatus(st *status.Status) *VersionMismatchError {
	e := &VersionMismatchError{Client: APIVersion, Msg: st.Message()}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetReason() != versionMismatchReason {
			continue
		}
		if v, err := strconv.ParseUint(info.GetMetadata()[metaDaemonVersion], 10, 32); err == nil {
			e.Daemon = uint32(v)
		}
		if v, err := strconv.ParseUint(info.GetMetadata()[metaClientVersion], 10, 32); err == nil {
			e.Client = uint32(v)
		}
	}
	return e
}

// CheckVersion is the daemon's check of a request's api_version: nil when it
// is APIVersion, else the FailedPrecondition status of VersionMismatchStatus.
func CheckVersion(v uint32) error {
	if v == APIVersion {
		return nil
	}
	return VersionMismatchStatus(v, APIVersion)
}

// VersionMismatchStatus is the gRPC status (FailedPrecondition) with which the
// daemon refuses a request of API version client; daemon is the version the
// daemon speaks. Both are named in the message and carried in an
// errdetails.ErrorInfo for the client.
func VersionMismatchStatus(client, daemon uint32) error {
	var msg string
	if client == 0 {
		msg = fmt.Sprintf("IPAM API version mismatch: the request carries no api_version (0), the daemon speaks v%d: the plugin is older than the API or not a vpc-ipam plugin", daemon)
	} else {
		msg = fmt.Sprintf("IPAM API version mismatch: the plugin speaks v%d, the daemon speaks v%d: install the vpc-ipam plugin and the daemon from the same release", client, daemon)
	}
	st := status.New(codes.FailedPrecondition, msg)
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Reason: versionMismatchReason,
		Domain: errorDomain,
		Metadata: map[string]string{
			metaClientVersion: strconv.FormatUint(uint64(client), 10),
			metaDaemonVersion: strconv.FormatUint(uint64(daemon), 10),
		},
	})
	if err != nil {
		return st.Err() // the message alone still names both versions
	}
	return withInfo.Err()
}

// NoAddressStatus is the gRPC status (ResourceExhausted) with which the
// daemon answers an Add it cannot serve now; reason reaches the user
// verbatim (e.g. "no free address on this node: max pods (29) reached").
func NoAddressStatus(reason string) error {
	if reason == "" {
		reason = "no free address on this node"
	}
	return status.Error(codes.ResourceExhausted, reason)
}
