package ipamclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Listen is the daemon's side of Dial: it creates the socket's directory
// (SocketDirMode) if missing, replaces a stale socket left by an earlier
// daemon, listens on path (DefaultSocket when empty) and makes the socket
// SocketMode. It refuses to remove anything that is not a socket, and a
// socket on which another daemon still answers.
func Listen(path string) (net.Listener, error) {
	if path == "" {
		path = DefaultSocket
	}
	dir := filepath.Dir(path)
	if err := ensureDir(dir); err != nil {
		return nil, fmt.Errorf("vpcchain daemon socket %s: %w", path, err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, fmt.Errorf("vpcchain daemon socket %s: %w", path, err)
	}
	// The mode is set on the socket before bind(2) (Linux creates the file
	// with the socket inode's mode, masked by the umask), so the socket is
	// never reachable by others, not even between bind and the Chmod below.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var chmodErr error
		if err := c.Control(func(fd uintptr) { chmodErr = syscall.Fchmod(int(fd), uint32(SocketMode)) }); err != nil {
			return err
		}
		return chmodErr
	}}
	l, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("vpcchain daemon socket %s: listen: %w", path, err)
	}
	// Exact mode whatever the umask and the OS did.
	if err := os.Chmod(path, SocketMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("vpcchain daemon socket %s: chmod %o: %w", path, SocketMode, err)
	}
	return l, nil
}

// ensureDir creates dir with SocketDirMode. An existing directory is left as
// it is: it may be shared (/run, /tmp), and the socket's own mode already
// restricts who can connect.
func ensureDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return fmt.Errorf("socket directory %s exists and is not a directory (mode %s)", dir, fi.Mode())
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("socket directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, SocketDirMode); err != nil {
		return fmt.Errorf("create socket directory %s: %w", dir, err)
	}
	// MkdirAll's mode is masked by the umask; make it exact.
	if err := os.Chmod(dir, SocketDirMode); err != nil {
		return fmt.Errorf("chmod %o socket directory %s: %w", SocketDirMode, dir, err)
	}
	return nil
}

// removeStaleSocket removes path if it is a socket nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("examine existing file: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("refusing to replace existing file: not a socket (file mode %s); remove it or choose another path", fi.Mode())
	}
	// A socket that accepts a connection belongs to a live daemon: taking it
	// over would leave two daemons handing out the same node's addresses.
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return errors.New("another daemon is listening on this socket")
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
