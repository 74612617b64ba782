package hostnet

// Sysctls the node needs, read before they are written: the daemon runs
// with a read-only /proc/sys, and reports what it cannot set.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// SysctlError lists sysctls that hold another value than the one the node
// needs and could not be written: the daemon runs unprivileged, its
// /proc/sys read-only, and the privileged setup step did not set them (it
// did not run, or the link did not exist then). The call that returns it
// did everything else it does, so a caller can go on and report it.
type SysctlError struct {
	Problems []SysctlProblem
}

// SysctlProblem is one sysctl SysctlError lists.
type SysctlProblem struct {
	Key  string // dotted, e.g. net.ipv4.conf.eth1.rp_filter
	Have string // the value it holds ("" if unreadable)
	Want string
	Err  error // why it could not be written
}

func (p SysctlProblem) String() string {
	have := p.Have
	if have == "" {
		have = "unreadable"
	}
	return fmt.Sprintf("sysctl %s is %s, needs %s, and cannot be set: %v", p.Key, have, p.Want, p.Err)
}

func (e *SysctlError) Error() string {
	s := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// sysctlProblems collects the SysctlErrors of several writes.
type sysctlProblems []SysctlProblem

// add keeps err if it is a *SysctlError and returns any other error.
func (b *sysctlProblems) add(err error) error {
	var se *SysctlError
	if errors.As(err, &se) {
		*b = append(*b, se.Problems...)
		return nil
	}
	return err
}

// err is nil or a *SysctlError with every problem added.
func (b sysctlProblems) err() error {
	if len(b) == 0 {
		return nil
	}
	return &SysctlError{Problems: b}
}

// setRPFilterLoose sets rp_filter=2 on one link. The kernel applies
// max(conf/all, conf/<link>), so this loosens the link even when "all" is
// strict (1) without touching any other interface. When it cannot be
// written, a link that filters loosely anyway ("all" is 2) or not at all
// is no problem: only strict filtering drops the flows above.
func setRPFilterLoose(name string) error {
	err := ensureSysctl(filepath.Join("net/ipv4/conf", name, "rp_filter"), "2")
	var se *SysctlError
	if !errors.As(err, &se) {
		return err
	}
	link, lerr := sysctlInt(filepath.Join("net/ipv4/conf", name, "rp_filter"))
	all, aerr := sysctlInt("net/ipv4/conf/all/rp_filter")
	if lerr == nil && aerr == nil && max(link, all) != 1 {
		return nil
	}
	return err
}

// ensureSysctl writes value to /proc/sys/<key> unless it holds that value
// already (so an already-prepared node also works with a read-only
// /proc/sys); a failed write is a *SysctlError. /proc/sys/net resolves to
// the network namespace of the thread that opens the file, so the goroutine
// stays on its thread meanwhile; the lock nests with a caller's (ns.Do)
// and does not move the thread anywhere.
func ensureSysctl(key, value string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, _ := sysctlValue(key)
	if cur == value {
		return nil
	}
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return &SysctlError{Problems: []SysctlProblem{{Key: strings.ReplaceAll(key, "/", "."), Have: cur, Want: value, Err: err}}}
	}
	return nil
}

// sysctlValue reads /proc/sys/<key>, trimmed (see ensureSysctl for the
// thread).
func sysctlValue(key string) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	return strings.TrimSpace(string(b)), err
}

func sysctlInt(key string) (int, error) {
	v, err := sysctlValue(key)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s: %w", key, err)
	}
	return n, nil
}
