package store

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func key(c string) Key { return Key{Network: "vpcchain", ContainerID: c, IfName: "eth0"} }

func alloc(ip string) Allocation {
	return Allocation{IP: netip.MustParseAddr(ip), ENIID: "eni-1", PodNamespace: "default", PodName: "pod-" + ip, AssignedAt: t0}
}

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "ipam.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestOperations(t *testing.T) {
	type step struct {
		op      string // assign, release, drop, forget
		key     Key
		ip      string
		wantErr error
		found   bool // release/drop
	}
	tests := []struct {
		name        string
		steps       []step
		wantAllocs  map[string]string // container -> IP
		wantCooling []string
	}{
		{"assign", []step{{op: "assign", key: key("a"), ip: "10.0.0.1"}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"same key and IP twice is idempotent", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: key("a"), ip: "10.0.0.1"}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"same IP to another key refused", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: key("b"), ip: "10.0.0.1", wantErr: ErrIPInUse}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"same IP to another ifname refused", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: Key{"vpcchain", "a", "eth1"}, ip: "10.0.0.1", wantErr: ErrIPInUse}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"IPv4-mapped form is the same address", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: key("b"), ip: "::ffff:10.0.0.1", wantErr: ErrIPInUse}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"key holding another IP refused", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: key("a"), ip: "10.0.0.2", wantErr: ErrKeyInUse}},
			map[string]string{"a": "10.0.0.1"}, nil},
		{"release moves the IP to cooldown", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "release", key: key("a"), found: true}},
			map[string]string{}, []string{"10.0.0.1"}},
		{"release of an unknown key is not an error", []step{
			{op: "release", key: key("a"), found: false}},
			map[string]string{}, nil},
		{"released IP may go to another key; cooldown record cleared", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "release", key: key("a"), found: true},
			{op: "assign", key: key("b"), ip: "10.0.0.1"}},
			map[string]string{"b": "10.0.0.1"}, nil},
		{"drop removes without cooldown", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "assign", key: key("b"), ip: "10.0.0.2"},
			{op: "drop", key: key("a"), found: true}},
			map[string]string{"b": "10.0.0.2"}, nil},
		{"forget cooling", []step{
			{op: "assign", key: key("a"), ip: "10.0.0.1"},
			{op: "release", key: key("a"), found: true},
			{op: "forget", ip: "10.0.0.1"},
			{op: "forget", ip: "10.0.0.9"}},
			map[string]string{}, nil},
		{"empty container ID refused", []step{{op: "assign", key: key(""), ip: "10.0.0.1", wantErr: ErrInvalid}},
			map[string]string{}, nil},
		{"NUL in key refused", []step{{op: "assign", key: key("a\x00b"), ip: "10.0.0.1", wantErr: ErrInvalid}},
			map[string]string{}, nil},
		{"missing IP refused", []step{{op: "assign", key: key("a"), ip: "", wantErr: ErrInvalid}},
			map[string]string{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTemp(t)
			for i, st := range tt.steps {
				var err error
				var found bool
				switch st.op {
				case "assign":
					a := Allocation{ENIID: "eni-1", AssignedAt: t0}
					if st.ip != "" {
						a.IP = netip.MustParseAddr(st.ip)
					}
					err = s.Assign(st.key, a)
				case "release":
					_, found, err = s.Release(st.key, t0)
				case "drop":
					_, found, err = s.Drop(st.key)
				case "forget":
					err = s.ForgetCooling(netip.MustParseAddr(st.ip))
				}
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("step %d %s: err = %v, want %v", i, st.op, err, st.wantErr)
				}
				if (st.op == "release" || st.op == "drop") && found != st.found {
					t.Fatalf("step %d %s: found = %v, want %v", i, st.op, found, st.found)
				}
			}
			recs, err := s.List()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, r := range recs {
				got[r.ContainerID] = r.IP.String()
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantAllocs) {
				t.Errorf("allocations = %v, want %v", got, tt.wantAllocs)
			}
			cool, err := s.Cooling()
			if err != nil {
				t.Fatal(err)
			}
			var gotCool []string
			for ip := range cool {
				gotCool = append(gotCool, ip.String())
			}
			slices.Sort(gotCool)
			if !slices.Equal(gotCool, tt.wantCooling) {
				t.Errorf("cooling = %v, want %v", gotCool, tt.wantCooling)
			}
		})
	}
}

func TestIdempotentAssignKeepsFirstRecord(t *testing.T) {
	s, _ := openTemp(t)
	a := alloc("10.0.0.1")
	if err := s.Assign(key("a"), a); err != nil {
		t.Fatal(err)
	}
	b := a
	b.AssignedAt = t0.Add(time.Minute)
	if err := s.Assign(key("a"), b); err != nil {
		t.Fatalf("repeat ADD: %v", err)
	}
	got, found, err := s.Get(key("a"))
	if err != nil || !found || !got.AssignedAt.Equal(t0) {
		t.Fatalf("Get = %+v %v %v, want the first record", got, found, err)
	}
}

func TestDoubleAssignErrorNamesOwner(t *testing.T) {
	s, _ := openTemp(t)
	if err := s.Assign(key("a"), alloc("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	err := s.Assign(key("b"), alloc("10.0.0.1"))
	if !errors.Is(err, ErrIPInUse) || !strings.Contains(err.Error(), "vpcchain/a/eth0") {
		t.Fatalf("err = %v, want ErrIPInUse naming the owner", err)
	}
	k, found, err := s.Owner(netip.MustParseAddr("10.0.0.1"))
	if err != nil || !found || k != key("a") {
		t.Fatalf("Owner = %v %v %v", k, found, err)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	s, path := openTemp(t)
	for i := range 5 {
		if err := s.Assign(key(fmt.Sprint(i)), alloc(fmt.Sprintf("10.0.0.%d", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	released := t0.Add(42 * time.Second)
	if _, _, err := s.Release(key("3"), released); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The file holds schema 1's layout, which a later daemon must read
	// (written out here, not produced by the store's encoder): bucket
	// "allocations" maps "<network>\x00<container ID>\x00<ifname>" to the
	// record's JSON, "ips" the address text back to that key, "cooling" the
	// address text to its release time (RFC 3339, UTC).
	rec := func(c, ip string) string {
		return `{"network":"vpcchain","containerID":"` + c + `","ifName":"eth0","ip":"` + ip +
			`","eniID":"eni-1","podNamespace":"default","podName":"pod-` + ip + `","assignedAt":"2026-01-01T12:00:00Z"}`
	}
	wantFile := map[string]map[string]string{
		"meta": {"schema": "1"},
		"allocations": {
			"vpcchain\x000\x00eth0": rec("0", "10.0.0.1"),
			"vpcchain\x001\x00eth0": rec("1", "10.0.0.2"),
			"vpcchain\x002\x00eth0": rec("2", "10.0.0.3"),
			"vpcchain\x004\x00eth0": rec("4", "10.0.0.5"),
		},
		"ips": {
			"10.0.0.1": "vpcchain\x000\x00eth0",
			"10.0.0.2": "vpcchain\x001\x00eth0",
			"10.0.0.3": "vpcchain\x002\x00eth0",
			"10.0.0.5": "vpcchain\x004\x00eth0",
		},
		"cooling": {"10.0.0.4": "2026-01-01T12:00:42Z"},
	}
	if got := dumpBuckets(t, path); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", wantFile) {
		t.Errorf("file content\n got %q\nwant %q", got, wantFile)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	var want []Record
	for _, i := range []int{0, 1, 2, 4} {
		want = append(want, Record{Key: key(fmt.Sprint(i)), Allocation: alloc(fmt.Sprintf("10.0.0.%d", i+1))})
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen List = %v, want %v", got, want)
	}
	if a, found, _ := s2.Get(key("0")); !found || a != alloc("10.0.0.1") {
		t.Fatalf("Get after reopen = %+v %v", a, found)
	}
	cool, err := s2.Cooling()
	if err != nil || len(cool) != 1 || !cool[netip.MustParseAddr("10.0.0.4")].Equal(released) {
		t.Fatalf("cooling after reopen = %v, %v; want 10.0.0.4 released at %s", cool, err, released)
	}
	// The reopened store still refuses the double assignment.
	if err := s2.Assign(key("x"), alloc("10.0.0.1")); !errors.Is(err, ErrIPInUse) {
		t.Fatalf("double assign after reopen: %v", err)
	}
}

// dumpBuckets reads every bucket of a closed store file with bbolt itself.
func dumpBuckets(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]map[string]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			m := map[string]string{}
			out[string(name)] = m
			return b.ForEach(func(k, v []byte) error {
				m[string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCooldownSurvivesRestart(t *testing.T) {
	s, path := openTemp(t)
	if err := s.Assign(key("a"), alloc("10.0.0.7")); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 1, 12, 0, 5, 123456789, time.FixedZone("x", 3600))
	a, found, err := s.Release(key("a"), at)
	if err != nil || !found || a.IP != netip.MustParseAddr("10.0.0.7") {
		t.Fatalf("Release = %+v %v %v", a, found, err)
	}
	s.Close()
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	cool, err := s2.Cooling()
	if err != nil {
		t.Fatal(err)
	}
	if got := cool[netip.MustParseAddr("10.0.0.7")]; !got.Equal(at) || len(cool) != 1 {
		t.Fatalf("cooling after restart = %v, want 10.0.0.7 released at %s", cool, at)
	}
}

// TestCrashDurability: a daemon killed with SIGKILL right after Assign
// returned loses nothing (each Assign is a committed, fsynced transaction).
func TestCrashDurability(t *testing.T) {
	if p := os.Getenv("STORE_CRASH_PATH"); p != "" {
		s, err := Open(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := s.Assign(key("crash"), alloc("10.0.0.99")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	path := filepath.Join(t.TempDir(), "ipam.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDurability$")
	cmd.Env = append(os.Environ(), "STORE_CRASH_PATH="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die by SIGKILL: %v\n%s", err, out)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a, found, err := s.Get(key("crash")); err != nil || !found || a.IP != netip.MustParseAddr("10.0.0.99") {
		t.Fatalf("after crash Get = %+v %v %v", a, found, err)
	}
}

func TestConcurrentAssignNeverDoubleAssigns(t *testing.T) {
	s, _ := openTemp(t)
	const workers, ips = 16, 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := map[string][]string{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ips {
				ip := fmt.Sprintf("10.0.1.%d", i)
				k := key(fmt.Sprintf("w%d-ip%d", w, i))
				err := s.Assign(k, alloc(ip))
				switch {
				case err == nil:
					mu.Lock()
					winners[ip] = append(winners[ip], k.ContainerID)
					mu.Unlock()
				case !errors.Is(err, ErrIPInUse):
					t.Errorf("unexpected error: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for i := range ips {
		ip := fmt.Sprintf("10.0.1.%d", i)
		if len(winners[ip]) != 1 {
			t.Errorf("%s assigned to %v, want exactly one", ip, winners[ip])
		}
	}
	recs, _ := s.List()
	if len(recs) != ips {
		t.Errorf("%d records, want %d", len(recs), ips)
	}
}

func TestLockedFileTimesOut(t *testing.T) {
	s, path := openTemp(t)
	start := time.Now()
	s2, err := OpenWithOptions(path, Options{LockTimeout: 300 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second open of a locked store succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want ErrLocked naming the file", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %s, want about the 300ms timeout", d)
	}
	s.Close()
	s3, err := OpenWithOptions(path, Options{LockTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("open after the holder closed: %v", err)
	}
	s3.Close()
}

func TestFilePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "vpcchain")
	path := filepath.Join(dir, "ipam.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", p, fi.Mode().Perm(), want)
		}
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("pre-existing 0644 file left at %o", fi.Mode().Perm())
	}
}

// A state directory that exists already with a wider mode, as a DaemonSet's
// hostPath volume (DirectoryOrCreate) makes it (0755), is made 0700.
func TestExistingStateDirTightened(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vpcchain")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(dir, "ipam.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode %o, want 700", fi.Mode().Perm())
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	s, path := openTemp(t)
	if err := s.Assign(key("a"), alloc("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	setSchema(t, path, "2")

	_, err := Open(path)
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "schema version 2") || !strings.Contains(err.Error(), "up to 1") {
		t.Fatalf("err = %v, want ErrNewerSchema naming versions 2 and 1", err)
	}
	// Refusing must not rewrite the file.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaSchema); string(v) != "2" {
			t.Errorf("schema rewritten to %q", v)
		}
		return nil
	})
}

func TestSchemaStampedOnCreate(t *testing.T) {
	s, path := openTemp(t)
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaSchema); string(v) != fmt.Sprint(SchemaVersion) {
			t.Errorf("schema = %q, want %d", v, SchemaVersion)
		}
		return nil
	})
}

func setSchema(t *testing.T, path, v string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaSchema, []byte(v)) }); err != nil {
		t.Fatal(err)
	}
}
