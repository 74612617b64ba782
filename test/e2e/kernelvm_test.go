//go:build kernel

// The kernel tier (make kernel-test): tests of kernel features this
// machine's kernel may lack (802.1Q VLAN links, WireGuard, ESP) run inside
// a VM on Debian's kernel (test/kernelvm). On the host, TestKernelVM boots
// the VM with this test binary running guestTests; each of those runs only
// in the guest. Their namespaces are the guest's, made and removed as on
// the host.

package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/test/kernelvm"
)

// guestTests are the tests TestKernelVM runs in the guest; each must pass.
var guestTests = []string{"TestGuestVLAN", "TestGuestWireGuard", "TestGuestESP", "TestGuestBranchENI", "TestGuestBranchPod"}

func TestKernelVM(t *testing.T) {
	requireRoot(t)
	if kernelvm.InGuest() {
		t.Fatal("TestKernelVM boots the guest: run it on the host")
	}
	dir := os.Getenv("VPCCHAIN_KERNELVM_DIR")
	if dir == "" {
		bin := os.Getenv("VPCCHAIN_BIN")
		if bin == "" {
			bin = "../../bin"
		}
		dir = filepath.Join(bin, "kernelvm")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "TMPDIR=/tmp"}
	if b := os.Getenv("VPCCHAIN_BIN"); b != "" {
		env = append(env, "VPCCHAIN_BIN="+b)
	}
	var mu sync.Mutex
	passed := map[string]bool{}
	var failed []string
	console := func(line string) {
		t.Log("guest: " + line)
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "---" {
			mu.Lock()
			defer mu.Unlock()
			switch f[1] {
			case "PASS:":
				passed[f[2]] = true
			case "FAIL:":
				failed = append(failed, f[2])
			}
		}
	}
	// VPCCHAIN_GUEST_TESTS (comma-separated names) runs only those, while
	// working on one.
	tests := guestTests
	if only := os.Getenv("VPCCHAIN_GUEST_TESTS"); only != "" {
		tests = strings.Split(only, ",")
	}
	start := time.Now()
	vm, err := kernelvm.Start(context.Background(), kernelvm.Config{
		Dir:     dir,
		Command: []string{exe, "-test.run", "^(" + strings.Join(tests, "|") + ")$", "-test.v", "-test.count=1", "-test.timeout=20m"},
		WorkDir: wd,
		Env:     env,
		Console: console,
		Timeout: 25 * time.Minute,
		// The pod-ENI test runs a control plane, the controller and two
		// daemons in the guest; the overlay's writes live in memory too.
		MemoryMiB: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	unregister := onInterrupt(vm.Close)
	defer func() { unregister(); vm.Close() }()
	code, err := vm.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the guest booted and ran its tests in %v", time.Since(start).Round(time.Second))
	mu.Lock()
	defer mu.Unlock()
	if code != 0 {
		t.Fatalf("the guest's tests exited %d; failed: %v", code, failed)
	}
	for _, name := range tests {
		if !passed[name] {
			t.Errorf("%s did not pass in the guest", name)
		}
	}
}

// requireGuest skips a guest test outside the guest: on the host,
// TestKernelVM runs it in the VM.
func requireGuest(t *testing.T) {
	t.Helper()
	requireRoot(t)
	if !kernelvm.InGuest() {
		t.Skip("runs inside the kernel tier's VM, which TestKernelVM boots (make kernel-test)")
	}
}

// nsName is the name `ip netns` knows n by.
func nsName(n ns.NetNS) string { return filepath.Base(n.Path()) }

// inNetNS runs a command inside n and returns its output; a failure fails
// the test.
func inNetNS(t *testing.T, n ns.NetNS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", nsName(n)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", nsName(n), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ipIn runs `ip -n <n> args...`.
func ipIn(t *testing.T, n ns.NetNS, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", nsName(n)}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", nsName(n), strings.Join(args, " "), err, out)
	}
}

// ifaceIn is n's link called name.
func ifaceIn(t *testing.T, n ns.NetNS, name string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	if err := n.Do(func(ns.NetNS) error {
		var err error
		ifi, err = net.InterfaceByName(name)
		return err
	}); err != nil {
		t.Fatalf("link %s in %s: %v", name, nsName(n), err)
	}
	return ifi
}

// frame is one frame a capture saw, read from the wire's bytes: the 802.1Q
// tag wherever the kernel keeps it (in the frame, or beside it for a link
// that offloads tagging), and the IPv4 header if there is one.
type frame struct {
	vlan     int // -1: untagged
	outgoing bool
	ethType  uint16
	proto    uint8 // IPv4 protocol, 0 if not IPv4
	src, dst netip.Addr
	l4       []byte // the IPv4 payload
}

func (f frame) String() string {
	dir := "in"
	if f.outgoing {
		dir = "out"
	}
	s := fmt.Sprintf("%s vlan=%d type=%#04x", dir, f.vlan, f.ethType)
	if f.proto != 0 {
		s += fmt.Sprintf(" proto=%d %v>%v", f.proto, f.src, f.dst)
	}
	if f.proto == 1 && len(f.l4) > 0 {
		s += fmt.Sprintf(" icmp=%d", f.l4[0])
	}
	return s
}

// capture reads every frame one link sends and receives, on an AF_PACKET
// socket with PACKET_AUXDATA (which carries a tag the link took off the
// frame).
type capture struct {
	fd     int
	mu     sync.Mutex
	frames []frame
	done   chan struct{}
	ended  chan struct{}
	once   sync.Once
}

// stop ends the capture (the frames read so far stay readable); the test's
// end stops it too.
func (c *capture) stop() {
	c.once.Do(func() { close(c.done); <-c.ended; unix.Close(c.fd) })
}

func openCapture(t *testing.T, n ns.NetNS, link string) *capture {
	t.Helper()
	ifi := ifaceIn(t, n, link)
	c := &capture{fd: -1, done: make(chan struct{}), ended: make(chan struct{})}
	err := n.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return fmt.Errorf("PACKET_AUXDATA: %w", err)
		}
		// A short receive timeout lets the reader notice the end.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000}); err != nil {
			return fmt.Errorf("SO_RCVTIMEO: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		t.Fatalf("capture on %s in %s: %v", link, nsName(n), err)
	}
	go c.read(ifi.Index)
	t.Cleanup(c.stop)
	return c
}

func (c *capture) read(ifindex int) {
	defer close(c.ended)
	buf := make([]byte, 65536)
	oob := make([]byte, unix.CmsgSpace(binary.Size(unix.TpacketAuxdata{})))
	for {
		select {
		case <-c.done:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Ifindex != ifindex {
			continue
		}
		vlan := -1
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				var aux unix.TpacketAuxdata
				if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA &&
					binary.Read(bytes.NewReader(m.Data), binary.NativeEndian, &aux) == nil &&
					aux.Status&unix.TP_STATUS_VLAN_VALID != 0 {
					vlan = int(aux.Vlan_tci & 0xfff)
				}
			}
		}
		// A copy: the frame's fields point into it, and buf is read into again.
		f := parseFrame(append([]byte(nil), buf[:n]...), vlan)
		f.outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

// parseFrame reads an Ethernet frame; vlan is the tag from the auxiliary
// data (-1 if none), else the frame's own 802.1Q header is read.
func parseFrame(b []byte, vlan int) frame {
	f := frame{vlan: vlan}
	if len(b) < 14 {
		return f
	}
	f.ethType = binary.BigEndian.Uint16(b[12:14])
	p := b[14:]
	if f.ethType == 0x8100 && len(p) >= 4 {
		f.vlan = int(binary.BigEndian.Uint16(p[0:2]) & 0xfff)
		f.ethType = binary.BigEndian.Uint16(p[2:4])
		p = p[4:]
	}
	if f.ethType != 0x0800 || len(p) < 20 {
		return f
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl {
		return f
	}
	f.proto = p[9]
	f.src = netip.AddrFrom4([4]byte(p[12:16]))
	f.dst = netip.AddrFrom4([4]byte(p[16:20]))
	f.l4 = p[ihl:]
	return f
}

// seen returns the frames captured so far that match.
func (c *capture) seen(match func(frame) bool) []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []frame
	for _, f := range c.frames {
		if match(f) {
			out = append(out, f)
		}
	}
	return out
}

// waitFor waits up to within for a frame that matches.
func (c *capture) waitFor(within time.Duration, match func(frame) bool) (frame, bool) {
	for end := time.Now().Add(within); ; {
		if fs := c.seen(match); len(fs) > 0 {
			return fs[0], true
		}
		if time.Now().After(end) {
			return frame{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// all is every frame captured so far, for a failure's message.
func (c *capture) all() []frame { return c.seen(func(frame) bool { return true }) }

// sendFrame sends b, a whole Ethernet frame, out of link in n.
func sendFrame(t *testing.T, n ns.NetNS, link string, b []byte) {
	t.Helper()
	ifi := ifaceIn(t, n, link)
	if err := n.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], b[0:6])
		return unix.Sendto(fd, b, 0, to)
	}); err != nil {
		t.Fatalf("send a frame out of %s in %s: %v", link, nsName(n), err)
	}
}

// icmpEchoFrame is an Ethernet frame with an 802.1Q tag for vlan carrying
// an ICMP echo request from src to dst with the given id.
func icmpEchoFrame(dstMAC, srcMAC net.HardwareAddr, vlan int, src, dst netip.Addr, id uint16) []byte {
	icmp := make([]byte, 8+32)
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], 1)
	copy(icmp[8:], "vpcchain kernel tier echo probe!")
	binary.BigEndian.PutUint16(icmp[2:4], inetChecksum(icmp))
	ip := make([]byte, 20, 20+len(icmp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+len(icmp)))
	ip[8] = 64 // TTL
	ip[9] = 1  // ICMP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], inetChecksum(ip))
	ip = append(ip, icmp...)
	b := make([]byte, 0, 18+len(ip))
	b = append(b, dstMAC...)
	b = append(b, srcMAC...)
	b = binary.BigEndian.AppendUint16(b, 0x8100)
	b = binary.BigEndian.AppendUint16(b, uint16(vlan))
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	return append(b, ip...)
}

// inetChecksum is the Internet checksum (RFC 1071).
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// isICMPEcho matches an ICMP echo request (typ 8) or reply (0) with id.
func isICMPEcho(typ uint8, id uint16) func(frame) bool {
	return func(f frame) bool {
		return f.proto == 1 && len(f.l4) >= 8 && f.l4[0] == typ && binary.BigEndian.Uint16(f.l4[4:6]) == id
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
