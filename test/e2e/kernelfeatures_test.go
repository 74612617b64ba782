//go:build kernel

// The kernel features the CNI's next links need, proved with packets in the
// kernel tier's guest (TestKernelVM boots it): 802.1Q VLAN links over a
// veth, WireGuard, and ESP. What each test expects is read off the wire by
// a packet socket on the veth under the link (the VLAN id in the tag, the
// UDP port and message type of WireGuard, the ESP protocol and SPI), not
// taken from the tools that set the links up.

package e2e

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// vethPair joins two new namespaces with a veth (la in the first, lb in the
// second) with address ipa and ipb (prefix /24) on it, each namespace's
// loopback up.
func vethPair(t *testing.T, la, lb, ipa, ipb string) (ns.NetNS, ns.NetNS) {
	t.Helper()
	a, b := newNetNS(t), newNetNS(t)
	ipIn(t, a, "link", "add", la, "type", "veth", "peer", "name", lb, "netns", nsName(b))
	for _, s := range []struct {
		n        ns.NetNS
		link, ip string
	}{{a, la, ipa}, {b, lb, ipb}} {
		ipIn(t, s.n, "link", "set", "lo", "up")
		if s.ip != "" {
			ipIn(t, s.n, "addr", "add", s.ip+"/24", "dev", s.link)
		}
		ipIn(t, s.n, "link", "set", s.link, "up")
	}
	return a, b
}

func ping(t *testing.T, from ns.NetNS, to string) {
	t.Helper()
	inNetNS(t, from, "ping", "-c", "3", "-i", "0.2", "-W", "2", to)
}

func TestGuestVLAN(t *testing.T) {
	requireGuest(t)
	a, b := vethPair(t, "va", "vb", "", "")
	ipIn(t, a, "link", "add", "link", "va", "name", "va.7", "type", "vlan", "id", "7")
	ipIn(t, b, "link", "add", "link", "vb", "name", "vb.7", "type", "vlan", "id", "7")
	ipIn(t, a, "addr", "add", "10.77.0.1/24", "dev", "va.7")
	ipIn(t, b, "addr", "add", "10.77.0.2/24", "dev", "vb.7")
	ipIn(t, a, "link", "set", "va.7", "up")
	ipIn(t, b, "link", "set", "vb.7", "up")
	wire := openCapture(t, b, "vb")
	onVLAN := openCapture(t, b, "vb.7")
	aWire := openCapture(t, a, "va")
	src, dst := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")

	ping(t, a, dst.String())
	// Every echo request and reply crossed the veth tagged with VLAN 7.
	echoes := wire.seen(func(f frame) bool {
		return f.proto == 1 && len(f.l4) > 0 && (f.src == src && f.dst == dst && f.l4[0] == 8 || f.src == dst && f.dst == src && f.l4[0] == 0)
	})
	if len(echoes) < 6 {
		t.Fatalf("on vb, %d echo requests and replies between %v and %v, want 3 of each: %v", len(echoes), src, dst, wire.all())
	}
	for _, f := range echoes {
		if f.vlan != 7 {
			t.Errorf("on vb, an echo %v with VLAN id %d, want 7", f, f.vlan)
		}
	}

	// An echo request to vb.7's address and MAC tagged with VLAN 8 reaches vb
	// but not vb.7, and is not answered; the same frame tagged with 7 is
	// (so the frame itself is sound).
	srcMAC, dstMAC := ifaceIn(t, a, "va").HardwareAddr, ifaceIn(t, b, "vb.7").HardwareAddr
	other, same := uint16(mrand.N(30000)+1), uint16(mrand.N(30000)+30001)
	sendFrame(t, a, "va", icmpEchoFrame(dstMAC, srcMAC, 8, src, dst, other))
	if f, ok := wire.waitFor(5*time.Second, isICMPEcho(8, other)); !ok || f.vlan != 8 {
		t.Fatalf("the echo request tagged 8 did not reach vb as sent (%v, %v): %v", f, ok, wire.all())
	}
	sendFrame(t, a, "va", icmpEchoFrame(dstMAC, srcMAC, 7, src, dst, same))
	if f, ok := onVLAN.waitFor(5*time.Second, isICMPEcho(8, same)); !ok {
		t.Fatalf("the echo request tagged 7 did not reach vb.7: %v", onVLAN.all())
	} else if f.vlan != -1 {
		t.Errorf("on vb.7 the echo request still has a tag: %v", f)
	}
	if f, ok := aWire.waitFor(5*time.Second, isICMPEcho(0, same)); !ok || f.vlan != 7 {
		t.Fatalf("no echo reply tagged 7 to the request tagged 7 (%v, %v): %v", f, ok, aWire.all())
	}
	// By now the request tagged 8, sent first, would have been handled.
	if fs := onVLAN.seen(isICMPEcho(8, other)); len(fs) > 0 {
		t.Errorf("the echo request tagged 8 reached vb.7: %v", fs)
	}
	if fs := aWire.seen(isICMPEcho(0, other)); len(fs) > 0 {
		t.Errorf("the echo request tagged 8 was answered: %v", fs)
	}
}

func TestGuestWireGuard(t *testing.T) {
	requireGuest(t)
	c, d := vethPair(t, "wc", "wd", "10.78.0.1", "10.78.0.2")
	dir := t.TempDir()
	type peer struct {
		n            ns.NetNS
		key, pub     string
		ip, endpoint string
	}
	peers := []*peer{{n: c, ip: "10.79.0.1", endpoint: "10.78.0.1:51820"}, {n: d, ip: "10.79.0.2", endpoint: "10.78.0.2:51820"}}
	for i, p := range peers {
		priv := strings.TrimSpace(inNetNS(t, p.n, "wg", "genkey"))
		p.key = filepath.Join(dir, "key"+strconv.Itoa(i))
		if err := os.WriteFile(p.key, []byte(priv+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		p.pub = strings.TrimSpace(inNetNS(t, p.n, "sh", "-c", `wg pubkey <"$0"`, p.key))
		ipIn(t, p.n, "link", "add", "wg0", "type", "wireguard")
	}
	for i, p := range peers {
		o := peers[1-i]
		inNetNS(t, p.n, "wg", "set", "wg0", "private-key", p.key, "listen-port", "51820",
			"peer", o.pub, "allowed-ips", o.ip+"/32", "endpoint", o.endpoint)
		ipIn(t, p.n, "addr", "add", p.ip+"/24", "dev", "wg0")
		ipIn(t, p.n, "link", "set", "wg0", "up")
	}
	wire := openCapture(t, d, "wd")

	ping(t, c, "10.79.0.2")
	// On the veth: WireGuard's handshake (message types 1 and 2) and
	// transport data (4) between the endpoints on UDP port 51820, and no
	// ICMP in the clear.
	types := map[byte]int{}
	for _, f := range wire.seen(func(f frame) bool { return f.proto == 17 && len(f.l4) > 8 }) {
		sport, dport := binary.BigEndian.Uint16(f.l4[0:2]), binary.BigEndian.Uint16(f.l4[2:4])
		if sport == 51820 && dport == 51820 {
			types[f.l4[8]]++
		}
	}
	if types[1] == 0 || types[2] == 0 || types[4] < 6 {
		t.Errorf("WireGuard messages by type on wd: %v, want a handshake (1, 2) and 6 or more transport data (4): %v", types, wire.all())
	}
	if fs := wire.seen(func(f frame) bool { return f.proto == 1 }); len(fs) > 0 {
		t.Errorf("ICMP in the clear on wd: %v", fs)
	}
	// And WireGuard's own account: a handshake with c's key, bytes received.
	hs := strings.Fields(inNetNS(t, d, "wg", "show", "wg0", "latest-handshakes"))
	if len(hs) != 2 || hs[0] != peers[0].pub || hs[1] == "0" {
		t.Errorf("wg show wg0 latest-handshakes in d: %v, want a handshake with %s", hs, peers[0].pub)
	}
}

func TestGuestESP(t *testing.T) {
	requireGuest(t)
	e, f := vethPair(t, "xe", "xf", "10.80.0.1", "10.80.0.2")
	key := func(n int) string {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return "0x" + hex.EncodeToString(b)
	}
	// AES-GCM (a 16-byte key and a 4-byte salt, a 16-byte ICV) in transport
	// mode, one SPI each way, the same states in both namespaces.
	out, in := key(20), key(20)
	for _, s := range []struct {
		n        ns.NetNS
		me, them string
	}{{e, "10.80.0.1", "10.80.0.2"}, {f, "10.80.0.2", "10.80.0.1"}} {
		ipIn(t, s.n, "xfrm", "state", "add", "src", "10.80.0.1", "dst", "10.80.0.2", "proto", "esp", "spi", "0x1001",
			"mode", "transport", "aead", "rfc4106(gcm(aes))", out, "128")
		ipIn(t, s.n, "xfrm", "state", "add", "src", "10.80.0.2", "dst", "10.80.0.1", "proto", "esp", "spi", "0x1002",
			"mode", "transport", "aead", "rfc4106(gcm(aes))", in, "128")
		ipIn(t, s.n, "xfrm", "policy", "add", "src", s.me+"/32", "dst", s.them+"/32", "dir", "out",
			"tmpl", "src", s.me, "dst", s.them, "proto", "esp", "mode", "transport")
		ipIn(t, s.n, "xfrm", "policy", "add", "src", s.them+"/32", "dst", s.me+"/32", "dir", "in",
			"tmpl", "src", s.them, "dst", s.me, "proto", "esp", "mode", "transport")
	}
	wire := openCapture(t, f, "xf")

	ping(t, e, "10.80.0.2")
	// On the veth: ESP (IP protocol 50) with SPI 0x1001 towards f and 0x1002
	// back, and no ICMP in the clear.
	spis := map[uint32]int{}
	for _, fr := range wire.seen(func(fr frame) bool { return fr.proto == 50 && len(fr.l4) >= 8 }) {
		spis[binary.BigEndian.Uint32(fr.l4[0:4])]++
	}
	if spis[0x1001] < 3 || spis[0x1002] < 3 {
		t.Errorf("ESP packets by SPI on xf: %v, want 3 or more with 0x1001 and with 0x1002: %v", spis, wire.all())
	}
	if fs := wire.seen(func(fr frame) bool { return fr.proto == 1 }); len(fs) > 0 {
		t.Errorf("ICMP in the clear on xf: %v", fs)
	}
	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains("\n"+string(mods), "\nesp4 ") {
		t.Errorf("esp4 is not loaded:\n%s", mods)
	}
	// AES-CBC with HMAC-SHA256, the other common ESP transform, loads too.
	ipIn(t, e, "xfrm", "state", "add", "src", "10.80.0.1", "dst", "10.80.0.3", "proto", "esp", "spi", "0x1003",
		"mode", "transport", "enc", "cbc(aes)", key(16), "auth", "hmac(sha256)", key(32))
}
