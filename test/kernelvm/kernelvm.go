// Package kernelvm boots the kernel tier's VM: Debian's kernel under qemu
// with the initramfs build.sh makes, which mounts the host's root file
// system read-only over 9p (under a tmpfs overlay for writes), runs one
// command there and powers off. Tests of kernel features the machine's own
// kernel may lack (802.1Q VLAN links, WireGuard, ESP) run inside it, with
// every host tool and binary at its host path and nothing copied. It is
// test-only: nothing that ships imports it.
package kernelvm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is one run of a command in the guest.
type Config struct {
	// Dir holds vmlinuz and initramfs.cpio (make kernel-tools puts them in
	// bin/kernelvm).
	Dir string
	// Command is the program, by its absolute host path (the guest sees the
	// host's files at the same paths), and its arguments.
	Command []string
	// WorkDir is the command's working directory (default /).
	WorkDir string
	// Env is the command's whole environment, but for PATH, which gets
	// /run/kernelvm in front: there `modprobe` is the guest's busybox, which
	// knows the guest kernel's modules (the host's kmod would look for
	// indexes the initramfs does not have).
	Env []string
	// Console gets the guest's console (the kernel's warnings, the command's
	// output) line by line as it arrives.
	Console func(line string)
	// Timeout is the whole run's wall-clock limit (default 10 min); past it
	// qemu is killed.
	Timeout time.Duration
	// BootTimeout is how long the guest may take to start the command
	// (default 3 min, for software emulation on a loaded machine).
	BootTimeout time.Duration
	// Accel is qemu's accelerator: "tcg" (software emulation) or "kvm".
	// Default: VPCCHAIN_KERNELVM_ACCEL, else tcg. Nested KVM on the 2-core
	// build machines hangs right after the kernel is decompressed, while
	// TCG boots to the command in about 5 s.
	Accel string
	// MemoryMiB is the guest's memory (default 2048; the overlay's writes
	// live in it). qemu allocates it as the guest touches it.
	MemoryMiB int
	// CPUs is the guest's CPU count (default 2).
	CPUs int
	// QEMU is the emulator to run (default qemu-system-x86_64 on PATH).
	QEMU string
}

// Line prefix of the guest init's reports on the console, followed by the
// run's token: "started", "exit N" or "error: ...".
const reportPrefix = "kernelvm: "

// VM is a running guest.
type VM struct {
	cmd     *exec.Cmd
	tmp     string
	token   string
	started chan struct{} // closed when the guest starts the command
	exited  chan struct{} // closed when qemu has exited
	read    chan struct{} // closed when the console is read to its end
	stderr  *lockedBuffer
	waitErr error // qemu's exit, set before exited closes

	mu       sync.Mutex
	killedBy error  // why the harness killed qemu, if it did
	status   *int   // the command's exit status, as the guest reported it
	guestErr string // the init's own error, as the guest reported it

	closeOnce sync.Once
}

// InGuest reports whether this process runs inside the kernel tier's guest
// (its kernel command line carries the run's token).
func InGuest() bool {
	b, err := os.ReadFile("/proc/cmdline")
	return err == nil && bytes.Contains(b, []byte("kernelvm_token="))
}

// Start boots the guest with c's command. Everything missing to boot it (qemu,
// the kernel, the initramfs) is an error that says what provides it.
// Cancelling ctx kills qemu. Close must be called in every case after a
// successful Start.
func Start(ctx context.Context, c Config) (*VM, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("kernelvm: the guest runs the host's binaries and the tier boots amd64 only; this host is %s", runtime.GOARCH)
	}
	if len(c.Command) == 0 || !filepath.IsAbs(c.Command[0]) {
		return nil, fmt.Errorf("kernelvm: the command must start with an absolute path, got %q", c.Command)
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	qemu, err := exec.LookPath(c.QEMU)
	if err != nil {
		return nil, fmt.Errorf("kernelvm: no qemu to boot the guest (make deps installs Debian's qemu-system-x86): %w", err)
	}
	kernel, initrd := filepath.Join(c.Dir, "vmlinuz"), filepath.Join(c.Dir, "initramfs.cpio")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("kernelvm: the guest's %s is missing (make kernel-tools builds it): %w", filepath.Base(f), err)
		}
	}
	if c.Accel == "" {
		c.Accel = os.Getenv("VPCCHAIN_KERNELVM_ACCEL")
	}
	var accel []string
	switch c.Accel {
	case "", "tcg":
		accel = []string{"-accel", "tcg"}
	case "kvm":
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("kernelvm: accelerator kvm: %w", err)
		}
		f.Close()
		accel = []string{"-accel", "kvm", "-cpu", "host"}
	default:
		return nil, fmt.Errorf("kernelvm: unknown accelerator %q (tcg or kvm)", c.Accel)
	}
	c.Timeout = orDefault(c.Timeout, 10*time.Minute)
	c.BootTimeout = orDefault(c.BootTimeout, 3*time.Minute)
	c.MemoryMiB = orDefault(c.MemoryMiB, 2048)
	c.CPUs = orDefault(c.CPUs, 2)
	if c.WorkDir == "" {
		c.WorkDir = "/"
	}

	tok := make([]byte, 8)
	if _, err := rand.Read(tok); err != nil {
		return nil, fmt.Errorf("kernelvm: token: %w", err)
	}
	// The guest reads the script through the host's root: any directory of
	// the host will do. Its path goes on the kernel command line, which
	// splits at spaces.
	tmp, err := os.MkdirTemp("", "kernelvm-")
	if err != nil {
		return nil, fmt.Errorf("kernelvm: %w", err)
	}
	if tmp, err = filepath.Abs(tmp); err != nil || strings.ContainsAny(tmp, " \t\n\"") {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kernelvm: the temporary directory %q must be an absolute path without spaces (TMPDIR): %v", tmp, err)
	}
	run := filepath.Join(tmp, "run.sh")
	if err := os.WriteFile(run, []byte(script(c)), 0o644); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kernelvm: %w", err)
	}
	v := &VM{tmp: tmp, token: hex.EncodeToString(tok), started: make(chan struct{}), exited: make(chan struct{}),
		read: make(chan struct{}), stderr: &lockedBuffer{}}
	args := append(accel,
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-monitor", "none", "-serial", "stdio",
		"-m", strconv.Itoa(c.MemoryMiB), "-smp", strconv.Itoa(c.CPUs),
		"-kernel", kernel, "-initrd", initrd,
		// panic=-1 with -no-reboot: a guest that panics ends qemu at once.
		"-append", "console=ttyS0 panic=-1 quiet kernelvm_token="+v.token+" kernelvm_run="+run,
		// multidevs=remap: the host's root spans several file systems
		// (/proc, /sys, /dev, ...), whose inode numbers would collide.
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
	r, w, err := os.Pipe()
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kernelvm: %w", err)
	}
	v.cmd = exec.Command(qemu, args...)
	v.cmd.Stdout = w
	v.cmd.Stderr = v.stderr
	// A harness killed outright (a test binary's timeout) takes qemu along.
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := v.cmd.Start(); err != nil {
		r.Close()
		w.Close()
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("kernelvm: start %s: %w", qemu, err)
	}
	w.Close()
	go v.readConsole(r, c.Console)
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	go v.supervise(ctx, c)
	return v, nil
}

// script is the shell script the guest runs: the command in its directory
// with exactly its environment.
func script(c Config) string {
	var env []string
	path := "PATH=/run/kernelvm:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range c.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = "PATH=/run/kernelvm:" + v
			continue
		}
		env = append(env, shellQuote(e))
	}
	env = append(env, shellQuote(path))
	var cmd []string
	for _, a := range c.Command {
		cmd = append(cmd, shellQuote(a))
	}
	return fmt.Sprintf("cd %s || exit 125\nexec env -i %s %s\n", shellQuote(c.WorkDir), strings.Join(env, " "), strings.Join(cmd, " "))
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// readConsole passes the console on line by line and records the guest's
// reports.
func (v *VM) readConsole(r io.ReadCloser, console func(string)) {
	defer close(v.read)
	defer r.Close()
	prefix := reportPrefix + v.token + " "
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(line, "\r\n")
			if console != nil {
				console(line)
			}
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				v.report(rest)
			}
		}
		if err != nil {
			return
		}
	}
}

func (v *VM) report(rest string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case rest == "started":
		select {
		case <-v.started:
		default:
			close(v.started)
		}
	case strings.HasPrefix(rest, "exit "):
		if n, err := strconv.Atoi(strings.TrimPrefix(rest, "exit ")); err == nil {
			v.status = &n
		}
	case strings.HasPrefix(rest, "error: "):
		v.guestErr = strings.TrimPrefix(rest, "error: ")
	}
}

// supervise kills qemu when the guest does not start the command in time,
// runs past the limit, or ctx ends.
func (v *VM) supervise(ctx context.Context, c Config) {
	boot := time.NewTimer(c.BootTimeout)
	defer boot.Stop()
	total := time.NewTimer(c.Timeout)
	defer total.Stop()
	// Each fires once: a nil channel is never ready.
	started, done := v.started, ctx.Done()
	for {
		select {
		case <-v.exited:
			return
		case <-started:
			boot.Stop()
			started = nil
		case <-boot.C:
			v.kill(fmt.Errorf("kernelvm: the guest did not start the command within %v (accelerator %s): qemu killed", c.BootTimeout, c.Accel))
		case <-total.C:
			v.kill(fmt.Errorf("kernelvm: the guest still ran after %v: qemu killed", c.Timeout))
		case <-done:
			v.kill(fmt.Errorf("kernelvm: %w: qemu killed", ctx.Err()))
			done = nil
		}
	}
}

func (v *VM) kill(why error) {
	v.mu.Lock()
	if v.killedBy == nil {
		v.killedBy = why
	}
	v.mu.Unlock()
	_ = v.cmd.Process.Kill()
}

// Wait waits for qemu to end and returns the command's exit status in the
// guest. An error means the guest did not report one: it could not boot or
// mount the host's root, the harness killed it, or it died.
func (v *VM) Wait() (int, error) {
	<-v.exited
	<-v.read
	v.mu.Lock()
	defer v.mu.Unlock()
	stderr := strings.TrimSpace(v.stderr.String())
	if stderr != "" {
		stderr = "; qemu said: " + stderr
	}
	switch {
	case v.killedBy != nil:
		return -1, fmt.Errorf("%w%s", v.killedBy, stderr)
	case v.guestErr != "":
		return -1, fmt.Errorf("kernelvm: the guest's init failed: %s%s", v.guestErr, stderr)
	case v.status != nil:
		return *v.status, nil
	}
	select {
	case <-v.started:
		return -1, fmt.Errorf("kernelvm: the guest ended without the command's exit status (qemu: %v)%s", v.waitErr, stderr)
	default:
		return -1, fmt.Errorf("kernelvm: the guest ended before it started the command (qemu: %v)%s", v.waitErr, stderr)
	}
}

// Close kills qemu if it still runs, waits for it and removes the run's
// files. It may be called more than once, and from an interrupt handler.
func (v *VM) Close() {
	v.closeOnce.Do(func() {
		select {
		case <-v.exited:
		default:
			v.kill(errors.New("kernelvm: closed: qemu killed"))
		}
		<-v.exited
		<-v.read
		os.RemoveAll(v.tmp)
	})
}

// Run boots the guest, runs c's command and returns its exit status.
func Run(ctx context.Context, c Config) (int, error) {
	v, err := Start(ctx, c)
	if err != nil {
		return -1, err
	}
	defer v.Close()
	return v.Wait()
}

// lockedBuffer is qemu's stderr, kept for errors (qemu says little there).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
