package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listeningTCP returns the local addresses of the TCP sockets in LISTEN
// state that process pid holds (from its netns's /proc/<pid>/net/tcp and its
// file descriptors).
func listeningTCP(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			// local_address st ... inode
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] { // 0A = LISTEN
				continue
			}
			out = append(out, file+" "+hexAddr(fs[1]))
		}
		f.Close()
	}
	return out
}

// hexAddr decodes /proc/net/tcp's "0100007F:F04E" (IPv4 only; IPv6 raw).
func hexAddr(s string) string {
	host, port, _ := strings.Cut(s, ":")
	p, _ := strconv.ParseUint(port, 16, 16)
	if len(host) != 8 {
		return fmt.Sprintf("[%s]:%d", host, p)
	}
	v, _ := strconv.ParseUint(host, 16, 32)
	return fmt.Sprintf("%d.%d.%d.%d:%d", byte(v), byte(v>>8), byte(v>>16), byte(v>>24), p)
}

// TestSecurity: the daemon's socket and state are root-only, it listens on
// no non-loopback TCP port unless told to, and IMDS answers only IMDSv2
// (token) requests, so a working daemon is an IMDSv2 client.
func TestSecurity(t *testing.T) {
	c := newCluster(t, "m5.large", []string{"s"})
	n := c.nodes["s"]
	p := n.newPod("default", "sec")
	if err := p.addRetrying(n.chain(nil), time.Minute); err != nil {
		t.Fatal(err)
	}

	modes := map[string]os.FileMode{
		n.state:                             0o700,
		n.socket:                            0o600,
		filepath.Join(n.state, "ipam.db"):   0o600,
		filepath.Join(n.state, "snat.json"): 0o600,
	}
	for path, want := range modes {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got := fi.Mode().Perm(); got&0o077 != 0 || got != want {
			t.Errorf("%s has mode %v, want %v (root-only)", path, got, want)
		}
	}

	n.mu.Lock()
	pid := n.cmd.Process.Pid
	n.mu.Unlock()
	for _, l := range listeningTCP(t, pid) {
		if !strings.Contains(l, " 127.0.0.1:") {
			t.Errorf("daemon listens on %s: only loopback is allowed unless configured", l)
		}
	}

	// IMDS refuses IMDSv1 (no token): the daemon, which works, uses tokens.
	// inNodeHTTP dials from inside the node (an http.Client's dials run on
	// other goroutines, so n.do around Get would dial from the root netns).
	resp, err := inNodeHTTP(c.sim, n.name).Get("http://169.254.169.254/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("IMDS answered a token-less request with %d, want 401", resp.StatusCode)
	}
}
