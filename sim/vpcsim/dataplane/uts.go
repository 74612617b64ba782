// Node hostnames: every node has a UTS namespace of its own whose hostname
// is the node's name, as every EC2 instance is a host with its own name.

package dataplane

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/sim/namednetns"
)

// UTSNSDir is where the nodes' UTS namespaces are bind-mounted, named as
// their network namespaces. It is made a shared mount point before the
// first mount (as NetNSDir), so unmounting a namespace also unmounts the
// copies that mount namespaces made since (`ip netns exec`, a container
// runtime's) hold, and nothing keeps it alive.
const UTSNSDir = "/var/run/vpcsim-uts"

// NodeUTSNSPath is where node name's UTS namespace is mounted: software
// entering it (`nsenter --uts=<path>`) has the node's name for hostname.
func (f *Fabric) NodeUTSNSPath(name string) string {
	return filepath.Join(UTSNSDir, f.NodeNetNSName(name))
}

// createUTS makes a UTS namespace with hostname and mounts it at path. The
// namespace is made on a dedicated thread that is locked and never
// unlocked: the runtime destroys the thread when the goroutine ends, so no
// other goroutine ever runs with the node's hostname.
func createUTS(path, hostname string) error {
	if err := namednetns.PrepareDir(UTSNSDir); err != nil {
		return fmt.Errorf("uts namespace %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("uts namespace %s: %w", path, err)
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			errc <- fmt.Errorf("sethostname %q: %w", hostname, err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/uts", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", self, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("uts namespace %s: %w", path, err)
	}
	return nil
}

// deleteUTS unmounts (lazily: processes inside keep it) and removes a UTS
// namespace; one that does not exist is not an error.
func deleteUTS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// leftoverUTS lists the UTS namespaces of run runID still mounted.
func leftoverUTS(runID string) ([]string, error) {
	ents, err := os.ReadDir(UTSNSDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), nsPrefix(runID)) {
			out = append(out, filepath.Join(UTSNSDir, e.Name()))
		}
	}
	return out, nil
}
