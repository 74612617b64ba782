package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

// A machine on which no network namespace was ever named has /run/netns as
// a plain directory (or none at all). Whoever mounts the first namespace
// there must first make the directory a shared mount point, as iproute2
// does; if our simulator mounts into the plain directory and `ip netns add`
// later turns it into a mount point, the simulator's namespaces can no
// longer be removed. These tests recreate that machine in a private mount
// namespace: the test binary re-executes itself there (see freshChild),
// mounts an empty tmpfs on /run and makes /run/netns a plain directory, runs
// the product, and reports what it left. Nothing of it is visible outside,
// and the kernel drops every mount of it when the child exits.

const (
	freshChildEnv = "VPCCHAIN_FRESH_CHILD" // "demo" or "vpcsim": run as the child
	freshArgEnv   = "VPCCHAIN_FRESH_ARG"   // the demo script's path, or the run ID
	freshReport   = "FRESH-REPORT "        // prefix of the child's last stdout line
)

// freshResult is what the child reports.
type freshResult struct {
	Exit      int      // exit status of what it ran
	DirMount  []string // mountinfo lines of /run/netns while it ran
	DuringRun []string // /run/netns entries while it ran
	Entries   []string // /run/netns entries afterwards
	NSFS      []string // nsfs mounts afterwards (mountinfo lines)
	Err       string   // the child's own failure
}

func TestFreshMachineDemo(t *testing.T) {
	requireRoot(t)
	bin := binDir(t)
	if _, err := os.Stat(filepath.Join(bin, "tools", "cnitool")); err != nil {
		t.Fatalf("cnitool missing in %s/tools: run make tools", bin)
	}
	script, err := filepath.Abs("../../scripts/demo.sh")
	if err != nil {
		t.Fatal(err)
	}
	out, res := runFresh(t, "demo", script, "BIN="+bin)
	m := regexp.MustCompile(`every namespace of run ([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo output names no run:\n%s", out)
	}
	if res.Exit != 0 {
		t.Errorf("demo exited %d on a fresh /run/netns:\n%s", res.Exit, out)
	}
	checkFreshLeftovers(t, res, "vs"+m[1]+"-", "vd"+m[1]+"-")
}

func TestFreshMachineSimulator(t *testing.T) {
	requireRoot(t)
	bin := binDir(t)
	runID := vpcsim.RandomRunID()
	out, res := runFresh(t, "vpcsim", runID, "VPCCHAIN_BIN="+bin)
	if res.Exit != 0 {
		t.Errorf("vpcsim exited %d after SIGTERM:\n%s", res.Exit, out)
	}
	// While it ran: its four namespaces, in a directory that is a shared
	// mount point (mountinfo(5): optional field "shared:N").
	if n := len(withPrefix(res.DuringRun, "vs"+runID+"-")); n != 4 {
		t.Errorf("while running, /run/netns held %d namespaces of run %s, want 4 (router, outside, 2 nodes): %v", n, runID, res.DuringRun)
	}
	if len(res.DirMount) == 0 {
		t.Errorf("while running, /run/netns was not a mount point")
	}
	for _, l := range res.DirMount {
		if !strings.Contains(l, " shared:") {
			t.Errorf("while running, /run/netns was not a shared mount point: %s", l)
		}
	}
	checkFreshLeftovers(t, res, "vs"+runID+"-")
}

func withPrefix(names []string, prefixes ...string) []string {
	var out []string
	for _, n := range names {
		for _, p := range prefixes {
			if strings.HasPrefix(filepath.Base(n), p) || strings.Contains(n, "/run/netns/"+p) {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

func checkFreshLeftovers(t *testing.T, res freshResult, prefixes ...string) {
	t.Helper()
	if left := withPrefix(res.Entries, prefixes...); len(left) > 0 {
		t.Errorf("namespaces of the run left in /run/netns: %v", left)
	}
	if left := withPrefix(res.NSFS, prefixes...); len(left) > 0 {
		t.Errorf("namespace mounts of the run left: %v", left)
	}
}

// runFresh runs the child in a new private mount namespace and returns its
// output and report.
func runFresh(t *testing.T, what, arg string, env ...string) (string, freshResult) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), freshChildEnv+"="+what, freshArgEnv+"="+arg), env...)
	// Go makes / recursively private in the child before exec when
	// CLONE_NEWNS is asked for: no mount propagates back to the machine.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true}
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	unregister := onInterrupt(kill)
	defer unregister()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("fresh-machine child: %v\n%s", err, buf.String())
		}
	case <-time.After(5 * time.Minute):
		kill()
		<-done
		t.Fatalf("fresh-machine child still running after 5 minutes:\n%s", buf.String())
	}
	out := buf.String()
	i := strings.LastIndex(out, freshReport)
	if i < 0 {
		t.Fatalf("fresh-machine child sent no report:\n%s", out)
	}
	var res freshResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(out[i+len(freshReport):])), &res); err != nil {
		t.Fatalf("fresh-machine report: %v\n%s", err, out)
	}
	if res.Err != "" {
		t.Fatalf("fresh-machine child: %s\n%s", res.Err, out)
	}
	return out[:i], res
}

func init() {
	what := os.Getenv(freshChildEnv)
	if what == "" {
		return
	}
	// The child: this process is alone in its mount namespace.
	res, err := freshChild(what, os.Getenv(freshArgEnv))
	if err != nil {
		res.Err = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("\n%s%s\n", freshReport, b)
	os.Exit(0)
}

func freshChild(what, arg string) (freshResult, error) {
	var res freshResult
	if err := unix.Mount("vpcchain-fresh-run", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		return res, fmt.Errorf("tmpfs on /run: %w", err)
	}
	if err := os.Mkdir("/run/netns", 0o755); err != nil {
		return res, err
	}
	// The machine's own /run/netns mounts (a bind mount made by another
	// test, and its namespaces) are still listed in mountinfo, hidden under
	// the tmpfs: only mounts made after this point count.
	hidden, err := mountLines(func([]string) bool { return true })
	if err != nil {
		return res, err
	}
	isNew := func(f []string) bool {
		return !slices.ContainsFunc(hidden, func(l string) bool { return strings.Fields(l)[0] == f[0] })
	}
	switch what {
	case "demo":
		cmd := exec.Command("bash", arg)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		res.Exit, err = exitCode(cmd.Run())
	case "vpcsim":
		res, err = freshSimulator(arg, isNew)
	default:
		err = fmt.Errorf("unknown child %q", what)
	}
	if err != nil {
		return res, err
	}
	if res.Entries, err = dirNames("/run/netns"); err != nil {
		return res, err
	}
	res.NSFS, err = mountLines(func(f []string) bool { return f[len(f)-3] == "nsfs" && isNew(f) })
	return res, err
}

// freshSimulator starts `vpcsim -dataplane` with two nodes, records the
// directory's state once it serves, and stops it with SIGTERM.
func freshSimulator(runID string, isNew func([]string) bool) (freshResult, error) {
	var res freshResult
	cmd := exec.Command(filepath.Join(os.Getenv("VPCCHAIN_BIN"), "vpcsim"), "-dataplane", "-run-id", runID,
		"-nodes", "a:m5.large,b:m5.large")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return res, err
	}
	line, rerr := bufio.NewReader(stdout).ReadString('\n')
	if rerr == nil {
		fmt.Print(line)
		res.DuringRun, rerr = dirNames("/run/netns")
	}
	if rerr == nil {
		res.DirMount, rerr = mountLines(func(f []string) bool { return f[4] == "/run/netns" && isNew(f) })
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	res.Exit, err = exitCode(cmd.Wait())
	if rerr != nil {
		return res, fmt.Errorf("vpcsim did not start: %w", rerr)
	}
	return res, err
}

func exitCode(err error) (int, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func dirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, err
}

// mountLines returns the lines of /proc/self/mountinfo whose fields match.
func mountLines(match func(fields []string) bool) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 6 && match(f) {
			out = append(out, l)
		}
	}
	return out, err
}
