//go:build kubelet

// What the real-node tests may leave on the host (cgroups, sandbox network
// namespaces), recorded before and removed after.

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupDirs lists every cgroup directory on the host.
func cgroupDirs() map[string]bool {
	dirs := map[string]bool{}
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs[p] = true
		}
		return nil
	})
	return dirs
}

func sandboxNetns() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "cni-") {
			m[filepath.Join("/var/run/netns", e.Name())] = true
		}
	}
	return m
}

func (kn *kubeNode) snapshotHost() {
	kn.cgroups = cgroupDirs()
	kn.netns = sandboxNetns()
	if _, err := os.Stat("/run/containerd"); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir("/run/containerd", 0o700); err != nil {
			kn.t.Fatal(err)
		}
		kn.madeRunCtrd = true
	}
}

func (kn *kubeNode) newSandboxNetns() []string {
	var left []string
	for p := range sandboxNetns() {
		if !kn.netns[p] {
			left = append(left, p)
		}
	}
	sort.Strings(left)
	return left
}

// noteContainers records the IDs of the containers this node's containerd
// has (sandboxes included): the cgroups forceTeardown may kill in.
func (kn *kubeNode) noteContainers() {
	out, err := kn.ctr("containers", "ls", "-q")
	if err != nil {
		return
	}
	kn.idsMu.Lock()
	defer kn.idsMu.Unlock()
	if kn.containerIDs == nil {
		kn.containerIDs = map[string]bool{}
	}
	for _, id := range strings.Fields(out) {
		kn.containerIDs[id] = true
	}
}

// forceTeardown kills whatever of the node is left (kubelet, containerd,
// shims, container processes), removes the cgroups and sandbox namespaces
// the run created, and returns what it had to remove. Safe to call twice and
// from the interrupt handler.
func (kn *kubeNode) forceTeardown() []string {
	kn.teardown.Lock()
	defer kn.teardown.Unlock()
	var left []string
	for _, p := range []*nodeProc{kn.kubelet, kn.containerd} {
		if p != nil {
			p.mu.Lock()
			if p.cmd != nil {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
			p.mu.Unlock()
		}
	}
	// Shims of our containerd (they run in their own process groups): by
	// the socket they name, or, in host layout (where every node's shims
	// name /run/containerd/containerd.sock), by containerd's mount namespace
	// they run in.
	var mntns uint64
	if kn.mntns != "" {
		var st syscall.Stat_t
		if syscall.Stat(kn.mntns, &st) == nil {
			mntns = st.Ino
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) {
			continue
		}
		var st syscall.Stat_t
		inNS := mntns != 0 && syscall.Stat(filepath.Join(filepath.Dir(f), "ns", "mnt"), &st) == nil && st.Ino == mntns
		if !bytes.Contains(b, []byte(kn.sock)) && !inNS {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		left = append(left, fmt.Sprintf("shim pid %d", pid))
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// New cgroups: kill what is in this node's containers' cgroups (other
	// nodes of the run may still have theirs), then remove them deepest
	// first; other new directories (k8s.io/) go once empty.
	kn.idsMu.Lock()
	ids := maps.Clone(kn.containerIDs)
	kn.idsMu.Unlock()
	var made, mine []string
	for d := range cgroupDirs() {
		if !kn.cgroups[d] {
			made = append(made, d)
			// Without a record of the node's containers (an interrupt
			// before any), everything new is taken for the node's.
			if len(ids) == 0 || ids[filepath.Base(d)] {
				mine = append(mine, d)
			}
		}
	}
	sort.Slice(made, func(i, j int) bool { return len(made[i]) > len(made[j]) })
	sort.Slice(mine, func(i, j int) bool { return len(mine[i]) > len(mine[j]) })
	for _, d := range mine {
		if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			left = append(left, fmt.Sprintf("processes in cgroup %s: %s", d, strings.Fields(string(b))))
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
	for _, d := range mine {
		var err error
		for range 50 {
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			left = append(left, fmt.Sprintf("cgroup %s NOT removable: %v", d, err))
		} else if filepath.Base(filepath.Dir(d)) == "k8s.io" {
			// a container's cgroup: runc removes it when the container goes
			left = append(left, "cgroup "+d)
		}
	}
	for _, d := range made {
		_ = syscall.Rmdir(d) // empty ones only; the node torn down last removes the rest
	}
	for _, p := range kn.newSandboxNetns() {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err == nil {
			left = append(left, "netns "+p)
		}
	}
	if kn.mntns != "" {
		if err := syscall.Unmount(kn.mntns, syscall.MNT_DETACH); err == nil {
			kn.mntns = ""
		}
	}
	if kn.madeRunCtrd {
		_ = os.Remove("/run/containerd")
	}
	return slices.Compact(left)
}
