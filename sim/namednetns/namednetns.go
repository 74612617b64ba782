// Package namednetns creates and removes named network namespaces (bind mounts
// under /var/run/netns) exactly as iproute2's `ip netns add` and `ip netns
// del` do, so that our namespaces, `ip netns`, the CNI test utilities and
// container runtimes share one consistent directory whoever mounts first.
//
// The directory must be a shared mount point before the first namespace is
// mounted in it. If a namespace is bind-mounted onto a file of a plain
// directory, a later `ip netns add` turns the directory into a mount point
// stacked on top of it: the earlier mounts are then hidden from everyone,
// cannot be unmounted through their paths, and copies of them held by the
// mount namespaces of `ip netns exec` keep the namespaces alive. Making it
// shared first also lets an unmount propagate into those copies.
package namednetns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named network namespaces are bind-mounted (iproute2's
// NETNS_RUN_DIR; /var/run is /run on current distributions).
const Dir = "/var/run/netns"

// Path returns the bind-mount path of the namespace called name.
func Path(name string) string { return filepath.Join(Dir, name) }

// prepareMu serialises PrepareDir within the process; the flock in
// PrepareDir does it between processes that use this package.
var prepareMu sync.Mutex

// PrepareDir makes dir a shared mount point, creating it (0755) if needed,
// the way iproute2 does before its first mount: make the mount point shared
// and, when dir is not a mount point yet (EINVAL), bind it onto itself
// (recursively, so existing namespace mounts are carried along) and retry.
func PrepareDir(dir string) error {
	prepareMu.Lock()
	defer prepareMu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Two processes that both find dir unmounted would stack two bind
	// mounts; a lock on the directory's inode (which the bind mount shares)
	// makes the check and the mount one step.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer func() { _ = unix.Flock(int(d.Fd()), unix.LOCK_UN) }()

	bound := false
	for {
		err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount point: %w", dir, err)
		}
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", dir, err)
		}
		bound = true
	}
}

// Create makes a new network namespace and mounts it at Path(name). It fails
// with an error wrapping fs.ErrExist if the name is taken.
//
// netns.NewNamed switches the calling thread into the new namespace, so it
// runs on a dedicated locked thread that is never unlocked: the Go runtime
// destroys that thread when the goroutine exits, and no other goroutine ever
// runs in the wrong namespace.
func Create(name string) (netns.NsHandle, error) {
	if err := PrepareDir(Dir); err != nil {
		return netns.None(), fmt.Errorf("netns %s: %w", name, err)
	}
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		if !errors.Is(r.err, fs.ErrExist) {
			// NewNamed may leave its (unmounted) placeholder file behind.
			p := Path(name)
			_ = unix.Unmount(p, unix.MNT_DETACH)
			_ = os.Remove(p)
		}
		return netns.None(), fmt.Errorf("netns %s: %w", name, r.err)
	}
	return r.h, nil
}

// Delete unmounts and removes the namespace called name (lazily, as `ip
// netns del`: processes still inside keep it until they leave). A name that
// does not exist is not an error.
func Delete(name string) error {
	p := Path(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}
