package kernelvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeQEMU stands in for qemu: it records its pid and arguments in
// FAKE_DIR, reads the run's token and script from -append as the guest's
// init does, and acts as FAKE_MODE says; "run" runs the script on the host
// and reports as the guest does.
const fakeQEMU = `#!/bin/sh
echo $$ >"$FAKE_DIR/pid"
printf '%s\n' "$@" >"$FAKE_DIR/args"
while [ $# -gt 0 ]; do
	[ "$1" = -append ] && append=$2
	shift
done
for w in $append; do
	case $w in
	kernelvm_token=*) tok=${w#*=} ;;
	kernelvm_run=*) run=${w#*=} ;;
	esac
done
case $FAKE_MODE in
run)
	echo "kernelvm: $tok init"
	echo "kernelvm: $tok started"
	/bin/sh "$run" </dev/null
	echo "kernelvm: $tok exit $?"
	;;
initfails) echo "kernelvm: $tok error: mount the host's root over 9p" ;;
panics) echo "Kernel panic - not syncing: Attempted to kill init!" ;;
nostatus) echo "kernelvm: $tok started" ;;
otherrun) echo "kernelvm: 0000 exit 0" ;;
hang) exec sleep 600 ;;
hangrunning)
	echo "kernelvm: $tok started"
	exec sleep 600
	;;
esac
`

// fake returns a Config that boots fakeQEMU in mode, with a kernel and
// initramfs that exist, and the directory it records in.
func fake(t *testing.T, mode string) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	qemu := filepath.Join(dir, "qemu")
	if err := os.WriteFile(qemu, []byte(fakeQEMU), 0o755); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(dir, "guest")
	if err := os.Mkdir(guest, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initramfs.cpio"} {
		if err := os.WriteFile(filepath.Join(guest, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("FAKE_DIR", dir)
	t.Setenv("FAKE_MODE", mode)
	t.Setenv("TMPDIR", dir)
	return Config{Dir: guest, QEMU: qemu, Command: []string{"/bin/true"}, Accel: "tcg"}, dir
}

// gone fails unless the fake's process has ended and the run's files are
// removed.
func gone(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("qemu (pid %d) is still there: %v", pid, err)
	}
	runs, _ := filepath.Glob(filepath.Join(dir, "kernelvm-*"))
	if len(runs) > 0 {
		t.Errorf("run files left: %v", runs)
	}
}

// running waits until the fake has started.
func running(t *testing.T, dir string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(filepath.Join(dir, "args")); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the fake qemu did not start")
}

func TestRunReportsTheCommandsExitStatus(t *testing.T) {
	c, dir := fake(t, "run")
	work := t.TempDir()
	c.WorkDir = work
	c.Env = []string{"GREETING=it's a \"quoted\" $HOME `x`", "PATH=/usr/bin:/bin"}
	c.Command = []string{"/bin/sh", "-c", `echo "arg=$1"; echo "env=$GREETING"; echo "path=$PATH"; echo "pwd=$(pwd)"; exit 7`, "sh", "two words; 'q'"}
	var mu sync.Mutex
	var lines []string
	c.Console = func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }
	code, err := Run(context.Background(), c)
	if err != nil || code != 7 {
		t.Fatalf("Run = %d, %v; want 7, nil", code, err)
	}
	got := strings.Join(lines, "\n")
	for _, want := range []string{
		"arg=two words; 'q'",
		"env=it's a \"quoted\" $HOME `x`",
		"path=/run/kernelvm:/usr/bin:/bin",
		"pwd=" + work,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("console lacks %q:\n%s", want, got)
		}
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-no-reboot", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap", "tcg"} {
		if !strings.Contains(string(args), want) {
			t.Errorf("qemu's arguments lack %q:\n%s", want, args)
		}
	}
	gone(t, dir)
}

func TestMissingQEMUFails(t *testing.T) {
	c, _ := fake(t, "run")
	c.QEMU = "/nonexistent/qemu-system-x86_64"
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "make deps installs Debian's qemu-system-x86") {
		t.Fatalf("Run without qemu: %v", err)
	}
}

func TestMissingKernelFails(t *testing.T) {
	c, _ := fake(t, "run")
	if err := os.Remove(filepath.Join(c.Dir, "vmlinuz")); err != nil {
		t.Fatal(err)
	}
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "vmlinuz is missing (make kernel-tools builds it)") {
		t.Fatalf("Run without a kernel: %v", err)
	}
}

func TestBootTimeoutKillsQEMU(t *testing.T) {
	c, dir := fake(t, "hang")
	c.BootTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "did not start the command within 300ms") {
		t.Fatalf("Run of a guest that never boots: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("the boot timeout took %v", d)
	}
	gone(t, dir)
}

func TestTimeoutKillsQEMU(t *testing.T) {
	c, dir := fake(t, "hangrunning")
	c.Timeout = 500 * time.Millisecond
	_, err := Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "still ran after 500ms") {
		t.Fatalf("Run of a command that never ends: %v", err)
	}
	gone(t, dir)
}

func TestCancelAndCloseKillQEMU(t *testing.T) {
	c, dir := fake(t, "hangrunning")
	ctx, cancel := context.WithCancel(context.Background())
	vm, err := Start(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	running(t, dir)
	cancel()
	if _, err := vm.Wait(); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("Wait after cancel: %v", err)
	}
	vm.Close()
	gone(t, dir)

	// Close alone (an interrupt handler's) kills a running guest too.
	c, dir = fake(t, "hangrunning")
	vm, err = Start(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	running(t, dir)
	vm.Close()
	vm.Close()
	gone(t, dir)
}

func TestGuestFailuresAreErrors(t *testing.T) {
	for mode, want := range map[string]string{
		"initfails": "the guest's init failed: mount the host's root over 9p",
		"panics":    "ended before it started the command",
		"nostatus":  "ended without the command's exit status",
		// Another run's report (its token) is the command's output, not ours.
		"otherrun": "ended before it started the command",
	} {
		t.Run(mode, func(t *testing.T) {
			c, dir := fake(t, mode)
			code, err := Run(context.Background(), c)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Run = %d, %v; want an error with %q", code, err, want)
			}
			gone(t, dir)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	c, _ := fake(t, "run")
	c.Command = []string{"true"}
	if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("a relative command: %v", err)
	}
	c.Command = []string{"/bin/true"}
	c.Accel = "hvf"
	if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), `unknown accelerator "hvf"`) {
		t.Errorf("an unknown accelerator: %v", err)
	}
}
