package hostnet

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// inReadOnlyProcSys runs fn in n with /proc/sys read-only, as an
// unprivileged container sees it. The remount happens in a mount namespace
// of fn's thread alone, so no other mount changes; the thread is never
// unlocked, and Go ends it with the goroutine.
func inReadOnlyProcSys(t *testing.T, n ns.NetNS, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare the mount namespace: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("make mounts slaves: %w", err)
			}
			if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind /proc/sys: %w", err)
			}
			if err := unix.Mount("", "/proc/sys", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("remount /proc/sys read-only: %w", err)
			}
			if err := n.Set(); err != nil {
				return fmt.Errorf("enter the test's network namespace: %w", err)
			}
			return fn()
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// After a reboot the ENIs the daemon attached before come up with the
// distribution's rp_filter, and the daemon's /proc/sys is read-only. A
// value that is right already is not written; a wrong one is reported as a
// *SysctlError while the ENI is wired all the same.
func TestSetupENIReadOnlySysctls(t *testing.T) {
	tests := []struct {
		name       string
		all, link  string // rp_filter before SetupENI
		wantErr    bool
		wantLinkRP string
	}{
		{name: "already loose", all: "1", link: "2", wantLinkRP: "2"},
		{name: "strict, cannot be set", all: "1", link: "1", wantErr: true, wantLinkRP: "1"},
		{name: "link strict but all loose", all: "2", link: "1", wantLinkRP: "1"},
		{name: "no filtering", all: "0", link: "0", wantLinkRP: "0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newNS(t)
			in(t, n, func() error {
				if err := addENILink("ens6", testENI.MAC); err != nil {
					return err
				}
				if err := writeTestSysctl("net/ipv4/conf/all/rp_filter", tc.all); err != nil {
					return err
				}
				return writeTestSysctl("net/ipv4/conf/ens6/rp_filter", tc.link)
			})
			var name string
			var err error
			inReadOnlyProcSys(t, n, func() error {
				name, err = SetupENI(context.Background(), testENI, 0)
				return nil
			})
			var se *SysctlError
			switch {
			case tc.wantErr && !errors.As(err, &se):
				t.Fatalf("SetupENI = %v, want a *SysctlError", err)
			case tc.wantErr:
				want := []SysctlProblem{{Key: "net.ipv4.conf.ens6.rp_filter", Have: "1", Want: "2"}}
				got := slices.Clone(se.Problems)
				for i := range got {
					if !errors.Is(got[i].Err, unix.EROFS) {
						t.Errorf("problem %d: err %v, want EROFS", i, got[i].Err)
					}
					got[i].Err = nil
				}
				if !slices.Equal(got, want) {
					t.Errorf("problems %+v, want %+v", got, want)
				}
			case err != nil:
				t.Fatalf("SetupENI: %v", err)
			}
			if name != "ens6" {
				t.Errorf("SetupENI returned link %q, want ens6", name)
			}
			// Wired whatever the sysctl: link, address, table, rule.
			in(t, n, func() error { return checkWired(t, testENI, "ens6", tc.wantLinkRP) })
		})
	}
}

// The node-wide sysctls: forwarding off and a strict primary ENI that
// cannot be fixed are both reported; the MTU is still set.
func TestSetupNodeReadOnlySysctls(t *testing.T) {
	primary := mustMAC("02:00:00:00:00:01")
	n := newNS(t)
	in(t, n, func() error {
		if err := addENILink("ens5", primary); err != nil {
			return err
		}
		for k, v := range map[string]string{"net/ipv4/ip_forward": "0", "net/ipv4/conf/all/rp_filter": "1",
			"net/ipv4/conf/ens5/rp_filter": "1"} {
			if err := writeTestSysctl(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	var err error
	inReadOnlyProcSys(t, n, func() error { err = SetupNode(primary, 9001); return nil })
	var se *SysctlError
	if !errors.As(err, &se) {
		t.Fatalf("SetupNode = %v, want a *SysctlError", err)
	}
	var keys []string
	for _, p := range se.Problems {
		keys = append(keys, p.Key+"="+p.Have)
	}
	if want := []string{"net.ipv4.ip_forward=0", "net.ipv4.conf.ens5.rp_filter=1"}; !slices.Equal(keys, want) {
		t.Errorf("problems %q, want %q", keys, want)
	}
	in(t, n, func() error {
		l, err := LinkByMAC(primary)
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 9001 {
			return fmt.Errorf("primary ENI MTU %d, want 9001", l.Attrs().MTU)
		}
		// What the privileged setup step does, after which the daemon's
		// read-only check passes.
		_, err = SetupNodeSysctls(primary, nil, false)
		return err
	})
	inReadOnlyProcSys(t, n, func() error { err = SetupNode(primary, 9001); return nil })
	if err != nil {
		t.Fatalf("SetupNode after SetupNodeSysctls: %v", err)
	}
}
