package namednetns

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests change mounts, so they run in a child process of this test
// binary inside a private mount namespace: nothing they mount is seen by
// the machine, and the kernel drops it all when the child exits.
const (
	childEnv = "NAMEDNS_TEST_CHILD"
	dirEnv   = "NAMEDNS_TEST_DIR" // the parent's t.TempDir(), removed by the parent
)

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		if err := childCases[name](); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runInPrivateMountNS(t *testing.T, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts in a private mount namespace")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+name, dirEnv+"="+t.TempDir())
	// Go remounts / recursively private in the child before exec when
	// CLONE_NEWNS is requested, so no mount propagates back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
}

// mountOf returns the mountinfo lines whose mount point is dir (symbolic
// links resolved, as the kernel shows it).
func mountOf(dir string) ([]string, error) {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		// Field 5 is the mount point (mountinfo(5)).
		if fs := strings.Fields(s.Text()); len(fs) > 4 && fs[4] == dir {
			out = append(out, s.Text())
		}
	}
	return out, s.Err()
}

// freshDir gives a plain directory (not a mount point) on a new tmpfs, as
// /run/netns is on a machine where no namespace was ever named.
func freshDir() (string, error) {
	base := os.Getenv(dirEnv)
	if err := unix.Mount("namednetns-test", base, "tmpfs", 0, "mode=0755"); err != nil {
		return "", fmt.Errorf("mount tmpfs: %w", err)
	}
	dir := filepath.Join(base, "netns")
	return dir, os.Mkdir(dir, 0o755)
}

var childCases = map[string]func() error{
	// A plain directory becomes one shared mount point, and a second call
	// does not stack another mount on it.
	"plain": func() error {
		dir, err := freshDir()
		if err != nil {
			return err
		}
		if m, _ := mountOf(dir); len(m) != 0 {
			return fmt.Errorf("%s is already a mount point: %v", dir, m)
		}
		for i := 0; i < 2; i++ {
			if err := PrepareDir(dir); err != nil {
				return err
			}
		}
		m, err := mountOf(dir)
		if err != nil {
			return err
		}
		if len(m) != 1 {
			return fmt.Errorf("want exactly one mount on %s, got %d: %v", dir, len(m), m)
		}
		// Optional field "shared:N" marks a shared peer group (mountinfo(5)).
		if !strings.Contains(m[0], " shared:") {
			return fmt.Errorf("%s is not a shared mount point: %s", dir, m[0])
		}
		return nil
	},
	// A missing directory is created 0755 and prepared.
	"missing": func() error {
		dir, err := freshDir()
		if err != nil {
			return err
		}
		dir = filepath.Join(dir, "sub")
		if err := PrepareDir(dir); err != nil {
			return err
		}
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if st.Mode().Perm() != 0o755 {
			return fmt.Errorf("%s mode %v, want 0755", dir, st.Mode().Perm())
		}
		if m, _ := mountOf(dir); len(m) != 1 || !strings.Contains(m[0], " shared:") {
			return fmt.Errorf("%s: want one shared mount, got %v", dir, m)
		}
		return nil
	},
	// Create and Delete in a fresh /var/run/netns: the namespace is mounted
	// at its path and gone after Delete; Delete of a missing name is fine.
	"create-delete": func() error {
		if err := unix.Mount("namednetns-test", "/run", "tmpfs", 0, "mode=0755"); err != nil {
			return fmt.Errorf("mount tmpfs on /run: %w", err)
		}
		if err := os.Mkdir(Dir, 0o755); err != nil {
			return err
		}
		name := fmt.Sprintf("namednetns-test-%d", os.Getpid())
		h, err := Create(name)
		if err != nil {
			return err
		}
		defer h.Close()
		if m, _ := mountOf(Path(name)); len(m) != 1 || !strings.Contains(m[0], " nsfs ") {
			return fmt.Errorf("%s: want one nsfs mount, got %v", Path(name), m)
		}
		if _, err := Create(name); err == nil || !os.IsExist(err) && !strings.Contains(err.Error(), "exists") {
			return fmt.Errorf("second Create(%q) = %v, want an exists error", name, err)
		}
		if err := Delete(name); err != nil {
			return err
		}
		if _, err := os.Stat(Path(name)); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there after Delete: %v", Path(name), err)
		}
		return Delete(name)
	},
}

func TestPrepareDirPlainDirectory(t *testing.T)   { runInPrivateMountNS(t, "plain") }
func TestPrepareDirMissingDirectory(t *testing.T) { runInPrivateMountNS(t, "missing") }
func TestCreateDelete(t *testing.T)               { runInPrivateMountNS(t, "create-delete") }
