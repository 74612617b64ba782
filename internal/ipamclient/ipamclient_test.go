package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
)

// fakeDaemon is an IPAMServer whose answers the test sets: err (when not
// nil) is returned by every method, after block (when set) returns. It
// records the api_version of every request and refuses wrong ones with
// CheckVersion, like the real daemon.
type fakeDaemon struct {
	UnimplementedIPAM
	version uint32 // the version it speaks; 0 = APIVersion

	mu       sync.Mutex
	err      error
	block    bool
	versions map[string]uint32
}

func (f *fakeDaemon) answer(ctx context.Context, method string, v uint32) error {
	f.mu.Lock()
	if f.versions == nil {
		f.versions = map[string]uint32{}
	}
	f.versions[method] = v
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	if f.version != 0 && v != f.version {
		return VersionMismatchStatus(v, f.version)
	}
	if f.version == 0 {
		if err := CheckVersion(v); err != nil {
			return err
		}
	}
	return err
}

func (f *fakeDaemon) set(err error, block bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.block = err, block
}

var testAlloc = &ipamv1.Allocation{Ip: "10.0.1.23", EniId: "eni-0abc", DeviceNumber: 2, RouteTable: 3,
	SubnetCidr: "10.0.1.0/24", SubnetGateway: "10.0.1.1", VpcCidrs: []string{"10.0.0.0/16"}}

func (f *fakeDaemon) Add(ctx context.Context, r *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	if err := f.answer(ctx, "Add", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.AddReply{Allocation: testAlloc}, nil
}

func (f *fakeDaemon) Del(ctx context.Context, r *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	if err := f.answer(ctx, "Del", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.DelReply{Released: true, Allocation: testAlloc}, nil
}

func (f *fakeDaemon) Check(ctx context.Context, r *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	if err := f.answer(ctx, "Check", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.CheckReply{Allocation: testAlloc}, nil
}

func (f *fakeDaemon) Status(ctx context.Context, r *ipamv1.StatusRequest) (*ipamv1.StatusReply, error) {
	if err := f.answer(ctx, "Status", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.StatusReply{Ready: true, Available: 7}, nil
}

func (f *fakeDaemon) GC(ctx context.Context, r *ipamv1.GCRequest) (*ipamv1.GCReply, error) {
	if err := f.answer(ctx, "GC", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.GCReply{}, nil
}

func (f *fakeDaemon) Introspect(ctx context.Context, r *ipamv1.IntrospectRequest) (*ipamv1.IntrospectReply, error) {
	if err := f.answer(ctx, "Introspect", r.GetApiVersion()); err != nil {
		return nil, err
	}
	return &ipamv1.IntrospectReply{Mode: "secondary-ip"}, nil
}

// sockDir returns a short private directory: unix socket paths are limited to
// 107 bytes, and t.TempDir() embeds the (long) test name.
func sockDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ipamc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer answers f's API on l until the test ends.
func startServer(t *testing.T, l net.Listener, f ipamv1.TTRPCIPAMService) *ttrpc.Server {
	t.Helper()
	srv, err := NewServer(f)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return srv
}

// serve starts f on a fresh socket (made by Listen) and returns a client.
func serve(t *testing.T, f *fakeDaemon) (*Client, string) {
	t.Helper()
	path := filepath.Join(sockDir(t), "run", "ipamd.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	startServer(t, l, f)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// callAll runs every RPC once and returns the errors by method.
func callAll(ctx context.Context, c *Client) map[string]error {
	errs := map[string]error{}
	_, errs["Add"] = c.Add(ctx, &ipamv1.AddRequest{Key: &ipamv1.Key{Network: "n", ContainerId: "c", Ifname: "eth0"}})
	_, errs["Del"] = c.Del(ctx, &ipamv1.DelRequest{Key: &ipamv1.Key{Network: "n", ContainerId: "c", Ifname: "eth0"}})
	_, errs["Check"] = c.Check(ctx, &ipamv1.CheckRequest{Key: &ipamv1.Key{Network: "n", ContainerId: "c", Ifname: "eth0"}, Ip: "10.0.1.23"})
	_, errs["Status"] = c.Status(ctx)
	_, errs["GC"] = c.GC(ctx, &ipamv1.GCRequest{Network: "n"})
	_, errs["Introspect"] = c.Introspect(ctx)
	return errs
}

func TestSuccessAndAPIVersion(t *testing.T) {
	f := &fakeDaemon{}
	c, path := serve(t, f)
	if c.Socket() != path {
		t.Errorf("Socket() = %q, want %q", c.Socket(), path)
	}
	for method, err := range callAll(ctxTimeout(t, 5*time.Second), c) {
		if err != nil {
			t.Errorf("%s: %v", method, err)
		}
	}
	if len(f.versions) != 6 {
		t.Errorf("daemon saw %d methods, want 6: %v", len(f.versions), f.versions)
	}
	for method, v := range f.versions {
		if v != APIVersion {
			t.Errorf("%s carried api_version %d, want %d", method, v, APIVersion)
		}
	}
	// A nil request is filled in, not a panic.
	reply, err := c.Add(ctxTimeout(t, 5*time.Second), nil)
	if err != nil || reply.GetAllocation().GetIp() != "10.0.1.23" {
		t.Errorf("Add(nil) = %v, %v", reply, err)
	}
}

func TestErrorMapping(t *testing.T) {
	f := &fakeDaemon{}
	c, path := serve(t, f)

	tests := []struct {
		name    string
		err     error
		check   func(t *testing.T, err error)
		wantMsg string
	}{
		// The daemon's answers are built here from the wire contract, not
		// with the package's own NoAddressStatus/VersionMismatchStatus:
		// plugin and daemon may come from different releases.
		{
			name: "ResourceExhausted -> NoAddressError",
			err:  status.Error(codes.ResourceExhausted, "no free address on this node: max pods (29) reached"),
			check: func(t *testing.T, err error) {
				var na *NoAddressError
				if !errors.As(err, &na) || na.Reason != "no free address on this node: max pods (29) reached" {
					t.Errorf("want *NoAddressError with the daemon's reason, got %T %v", err, err)
				}
			},
			wantMsg: "no free address on this node: max pods (29) reached",
		},
		{
			name: "FailedPrecondition -> VersionMismatchError",
			err:  versionMismatchWire(t, "IPAM API version mismatch: the plugin speaks v1, the daemon speaks v2", "1", "2"),
			check: func(t *testing.T, err error) {
				var vm *VersionMismatchError
				if !errors.Is(err, ErrVersionMismatch) || !errors.As(err, &vm) {
					t.Fatalf("want *VersionMismatchError, got %T %v", err, err)
				}
				if vm.Client != 1 || vm.Daemon != 2 {
					t.Errorf("versions client %d daemon %d, want 1 2", vm.Client, vm.Daemon)
				}
			},
			wantMsg: "the plugin speaks v1, the daemon speaks v2",
		},
		{
			name: "NotFound -> ErrNotFound",
			err:  status.Error(codes.NotFound, "key n/c/eth0 holds 10.0.1.24, not 10.0.1.23"),
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("want ErrNotFound, got %T %v", err, err)
				}
			},
			wantMsg: "holds 10.0.1.24, not 10.0.1.23",
		},
		{
			name: "DeadlineExceeded from the daemon -> ErrTimeout",
			err:  status.Error(codes.DeadlineExceeded, "store write timed out"),
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrTimeout) {
					t.Errorf("want ErrTimeout, got %T %v", err, err)
				}
			},
			wantMsg: "store write timed out",
		},
		{
			name: "Unavailable from the daemon -> UnavailableError",
			err:  status.Error(codes.Unavailable, "shutting down"),
			check: func(t *testing.T, err error) {
				var ue *UnavailableError
				if !errors.Is(err, ErrDaemonUnavailable) || !errors.As(err, &ue) || ue.Socket != path {
					t.Errorf("want *UnavailableError for %s, got %T %v", path, err, err)
				}
			},
			wantMsg: "shutting down",
		},
		{
			name: "other codes keep the status",
			err:  status.Error(codes.Internal, "store corrupt"),
			check: func(t *testing.T, err error) {
				if status.Code(err) != codes.Internal {
					t.Errorf("status.Code = %v, want Internal", status.Code(err))
				}
				for _, s := range []error{ErrDaemonUnavailable, ErrVersionMismatch, ErrNotFound, ErrTimeout} {
					if errors.Is(err, s) {
						t.Errorf("errors.Is(%v, %v) is true", err, s)
					}
				}
			},
			wantMsg: "store corrupt",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.set(tt.err, false)
			for method, err := range callAll(ctxTimeout(t, 5*time.Second), c) {
				if err == nil {
					t.Fatalf("%s: no error", method)
				}
				tt.check(t, err)
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("%s: message %q does not contain %q", method, err, tt.wantMsg)
				}
			}
		})
	}
}

// versionMismatchWire is the daemon's refusal of an API version as it goes
// over the wire (API v1's contract): FailedPrecondition with an
// errdetails.ErrorInfo, reason API_VERSION_MISMATCH in domain
// ipam.vpcchain.io, metadata client_version and daemon_version.
func versionMismatchWire(t *testing.T, msg, client, daemon string) error {
	t.Helper()
	st, err := status.New(codes.FailedPrecondition, msg).WithDetails(&errdetails.ErrorInfo{
		Reason: "API_VERSION_MISMATCH", Domain: "ipam.vpcchain.io",
		Metadata: map[string]string{"client_version": client, "daemon_version": daemon},
	})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestCallerDeadline(t *testing.T) {
	f := &fakeDaemon{}
	c, path := serve(t, f)
	f.set(nil, true)
	start := time.Now()
	_, err := c.Add(ctxTimeout(t, 100*time.Millisecond), &ipamv1.AddRequest{})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want ErrTimeout and context.DeadlineExceeded, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("message %q does not name the socket", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Status(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("canceled ctx: want context.Canceled (not a timeout), got %v", err)
	}
}

func TestVersionMismatch(t *testing.T) {
	// A daemon of the next API version refuses this client.
	f := &fakeDaemon{version: APIVersion + 1}
	c, _ := serve(t, f)
	_, err := c.Add(ctxTimeout(t, 5*time.Second), &ipamv1.AddRequest{})
	var vm *VersionMismatchError
	if !errors.As(err, &vm) || !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("want *VersionMismatchError, got %T %v", err, err)
	}
	if vm.Client != APIVersion || vm.Daemon != APIVersion+1 {
		t.Errorf("got client v%d daemon v%d", vm.Client, vm.Daemon)
	}
	for _, want := range []string{"v1", "v2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not name %s", err, want)
		}
	}
}

func TestCheckVersion(t *testing.T) {
	if err := CheckVersion(APIVersion); err != nil {
		t.Errorf("CheckVersion(APIVersion) = %v", err)
	}
	for _, v := range []uint32{0, APIVersion + 1, 99} {
		err := CheckVersion(v)
		st, ok := status.FromError(err)
		if !ok || st.Code() != codes.FailedPrecondition {
			t.Errorf("CheckVersion(%d) = %v, want FailedPrecondition", v, err)
			continue
		}
		want := []string{"v" + strconv.Itoa(int(APIVersion))}
		if v == 0 {
			want = append(want, "no api_version (0)")
		} else {
			want = append(want, "v"+strconv.Itoa(int(v)))
		}
		for _, w := range want {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("CheckVersion(%d) message %q does not contain %q", v, st.Message(), w)
			}
		}
		// The details an older or newer client reads (see versionMismatchWire).
		var infos []string
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				infos = append(infos, fmt.Sprintf("%s %s client_version=%s daemon_version=%s len=%d", info.GetReason(), info.GetDomain(),
					info.GetMetadata()["client_version"], info.GetMetadata()["daemon_version"], len(info.GetMetadata())))
			}
		}
		if want := fmt.Sprintf("API_VERSION_MISMATCH ipam.vpcchain.io client_version=%d daemon_version=1 len=2", v); len(infos) != 1 || infos[0] != want {
			t.Errorf("CheckVersion(%d) details %q, want [%q]", v, infos, want)
		}
		vm := versionMismatchFromStatus(st)
		if vm.Client != v || vm.Daemon != APIVersion {
			t.Errorf("CheckVersion(%d) details: client %d daemon %d", v, vm.Client, vm.Daemon)
		}
	}
	if st := status.Convert(NoAddressStatus("")); st.Code() != codes.ResourceExhausted || st.Message() == "" {
		t.Errorf("NoAddressStatus(\"\") = %v", st)
	}
	if st := status.Convert(NoAddressStatus("pool empty")); st.Code() != codes.ResourceExhausted || st.Message() != "pool empty" {
		t.Errorf("NoAddressStatus(\"pool empty\") = %v, want ResourceExhausted with the reason as message", st)
	}
}

func TestDialMissingSocket(t *testing.T) {
	path := filepath.Join(sockDir(t), "ipamd.sock")
	_, err := Dial(context.Background(), path)
	var ue *UnavailableError
	if !errors.Is(err, ErrDaemonUnavailable) || !errors.As(err, &ue) {
		t.Fatalf("want *UnavailableError, got %T %v", err, err)
	}
	want := "vpcchain daemon socket " + path + ": no such file (is the daemon running?)"
	if err.Error() != want {
		t.Errorf("message\n got %q\nwant %q", err, want)
	}
	if ue.Socket != path || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Socket %q, cause %v", ue.Socket, ue.Err)
	}
}

func TestDialNotASocket(t *testing.T) {
	dir := sockDir(t)
	file := filepath.Join(dir, "ipamd.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, dir} {
		_, err := Dial(context.Background(), path)
		if !errors.Is(err, ErrDaemonUnavailable) {
			t.Fatalf("%s: want ErrDaemonUnavailable, got %v", path, err)
		}
		if want := "vpcchain daemon socket " + path + ": not a socket (file mode "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("message %q, want prefix %q", err, want)
		}
	}
}

func TestDialDefaultSocket(t *testing.T) {
	if _, err := os.Stat(DefaultSocket); err == nil {
		t.Skip(DefaultSocket + " exists on this machine")
	}
	_, err := Dial(context.Background(), "")
	if err == nil || !strings.Contains(err.Error(), DefaultSocket) {
		t.Errorf("Dial(\"\") = %v, want an error naming %s", err, DefaultSocket)
	}
}

func TestDialCanceledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, "/nonexistent"); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

// staleSocket leaves a socket file that nobody listens on, as a crashed
// daemon does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

func TestNobodyListening(t *testing.T) {
	path := filepath.Join(sockDir(t), "ipamd.sock")
	staleSocket(t, path)
	start := time.Now()
	_, err := Dial(ctxTimeout(t, 5*time.Second), path)
	var ue *UnavailableError
	if !errors.Is(err, ErrDaemonUnavailable) || !errors.As(err, &ue) || ue.Op != "dial" || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want *UnavailableError (connection refused) from Dial, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "is the daemon running?") {
		t.Errorf("message %q", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing took %v: a dead daemon must be reported fast", d)
	}
}

// A daemon that goes away while a call waits (a restart) is "unavailable",
// not an unknown error: the plugin's caller may retry.
func TestDaemonGoneDuringCall(t *testing.T) {
	f := &fakeDaemon{}
	path := filepath.Join(sockDir(t), "ipamd.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, l, f)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f.set(nil, true)
	go func() {
		time.Sleep(100 * time.Millisecond)
		srv.Close()
	}()
	_, err = c.Add(ctxTimeout(t, 10*time.Second), &ipamv1.AddRequest{})
	var ue *UnavailableError
	if !errors.Is(err, ErrDaemonUnavailable) || !errors.As(err, &ue) || ue.Op != "Add" {
		t.Fatalf("want *UnavailableError from Add, got %T %v", err, err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("message %q does not name the socket", err)
	}
}

func TestListenPermissions(t *testing.T) {
	// A permissive umask must not leak into the modes.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	dir := filepath.Join(sockDir(t), "a", "b")
	path := filepath.Join(dir, "ipamd.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode %s, want socket %s", fi.Mode(), SocketMode)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != SocketDirMode {
		t.Errorf("directory mode %s, want %s", di.Mode().Perm(), SocketDirMode)
	}
	if SocketMode != 0o600 || SocketDirMode != 0o700 {
		t.Errorf("modes %o/%o, want 600/700", SocketMode, SocketDirMode)
	}
}

func TestListenExistingDirUntouched(t *testing.T) {
	dir := sockDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(filepath.Join(dir, "ipamd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o755 {
		t.Errorf("existing directory changed to %s", di.Mode().Perm())
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	f := &fakeDaemon{}
	path := filepath.Join(sockDir(t), "ipamd.sock")
	staleSocket(t, path)
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	startServer(t, l, f)
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Errorf("Status through the new socket: %v", err)
	}
}

func TestListenRefuses(t *testing.T) {
	dir := sockDir(t)

	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v, want a not-a-socket error", err)
	}
	if data, _ := os.ReadFile(file); string(data) != "keep me" {
		t.Errorf("regular file was changed")
	}

	live := filepath.Join(dir, "live.sock")
	l1, err := Listen(live)
	if err != nil {
		t.Fatal(err)
	}
	defer l1.Close()
	go func() {
		for {
			conn, err := l1.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	if _, err := Listen(live); err == nil || !strings.Contains(err.Error(), "another daemon is listening") {
		t.Errorf("Listen over a live socket: %v, want refusal", err)
	}

	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(filepath.Join(notDir, "ipamd.sock")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Listen under a regular file: %v", err)
	}
}
