// Helpers run inside the fabric's namespaces: sysctls and link state.

package dataplane

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// sysctl is one /proc/sys key (relative, e.g. "net/ipv4/ip_forward") and value.
// Missing net/ipv6 keys are ignored (IPv6 disabled in the kernel).
type sysctl struct{ key, val string }

// writeSysctls writes /proc/sys/<key> from a thread inside the namespace;
// /proc/sys/net resolves against the writing thread's network namespace.
func writeSysctls(nsName string, kvs []sysctl) error {
	return ns.WithNetNSPath(NetNSPath(nsName), func(ns.NetNS) error {
		for _, s := range kvs {
			if err := os.WriteFile("/proc/sys/"+s.key, []byte(s.val), 0o644); err != nil {
				if strings.HasPrefix(s.key, "net/ipv6/") && errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return fmt.Errorf("sysctl %s=%s: %w", s.key, s.val, err)
			}
		}
		return nil
	})
}

// readSysctl reads /proc/sys/<key> inside the namespace.
func readSysctl(nsName, key string) (string, error) {
	var v string
	err := ns.WithNetNSPath(NetNSPath(nsName), func(ns.NetNS) error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

func linkUpByName(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// WaitOperUp waits (up to 5s) until link name, reached through h, is
// operationally up. Right after a veth is set up the kernel activates its
// queueing discipline asynchronously (linkwatch); packets sent before that,
// e.g. the first ARP request, are silently dropped and only retried a second
// later. Callers that bring up links themselves can use this to avoid that.
func WaitOperUp(h *netlink.Handle, name string) error { return waitOperUp(h, name) }

func waitOperUp(h *netlink.Handle, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dataplane: link %s not operationally up (%v)", name, l.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
