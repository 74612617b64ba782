// Package dataplane is the data plane of the VPC simulator: it models an EC2
// VPC with Linux network namespaces.
//
//   - A "router" namespace stands for the VPC fabric. It is the gateway (.1) of
//     every subnet, delivers traffic for an address only through the ENI the
//     address is assigned to, and enforces EC2's source/destination check with
//     strict reverse-path filtering.
//   - Each node (EC2 instance) is a namespace. Each ENI attached to a node is a
//     veth pair: the node end is eth<deviceIndex> carrying the ENI's MAC, the
//     router end is named after the ENI ID.
//   - A branch ENI associated with a trunk ENI by a VLAN id reaches the node
//     over the trunk's veth as 802.1Q frames tagged with that id; the router
//     treats it as an ENI of its own (see branch.go).
//   - An "outside" namespace stands for the internet (203.0.113.10 and
//     198.51.100.10; 2001:db8:ff::10 for IPv6). Every non-VPC destination is
//     routed there, without NAT. IPv6 passes an egress-only internet gateway
//     (see ipv6.go).
//
// All namespaces are named (bind-mounted under /var/run/netns, made a shared
// mount point first as iproute2 does; see sim/namednetns) and carry the
// fabric's RunID, so binaries can be run in them with `ip netns exec` and two
// runs never collide. Nothing is created in, or changed in, the root network
// namespace.
package dataplane

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vpcchain/vpcchain/sim/namednetns"
)

const (
	// OutsideAddr is the internet host on the outside namespace's link.
	OutsideAddr = "203.0.113.10"
	// OutsideAltAddr is a second internet host (on the outside namespace's lo),
	// e.g. a target for excluded-CIDR tests.
	OutsideAltAddr = "198.51.100.10"
	// OutsideRouterAddr is the router's address on the router<->outside link;
	// the outside namespace's default gateway.
	OutsideRouterAddr = "203.0.113.1"
	// OutsidePrefixLen is the prefix length of the router<->outside link.
	OutsidePrefixLen = 24

	// ENIMTU is the MTU of ENI links (EC2 jumbo frames), on both veth ends.
	ENIMTU = 9001

	// NetNSDir is where the named namespaces are bind-mounted.
	NetNSDir = namednetns.Dir

	// RouterOutsideLink is the router-namespace end of the router<->outside link.
	RouterOutsideLink = "outside"
	// OutsideLink is the outside-namespace end of the router<->outside link.
	OutsideLink = "eth0"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("dataplane: fabric closed")

// Options configures New.
type Options struct {
	// RunID is a short unique token (1-6 chars, [a-z0-9]) used in every
	// namespace name so two runs never collide. Empty means: pick a random one
	// (see Fabric.RunID).
	RunID string
}

// ENI describes an elastic network interface to hot-plug into a node.
type ENI struct {
	ID          string           // e.g. "eni-0123456789abcdef0"; unique in the fabric
	MAC         net.HardwareAddr // unicast MAC, given to the node-side link
	DeviceIndex int              // node-side link is eth<DeviceIndex> on card 0; 0 is the primary ENI
	NetworkCard int              // card > 0: node-side link is nc<card>eth<DeviceIndex>
	PrimaryIP   netip.Addr       // inside Subnet
	Subnet      netip.Prefix     // the ENI's subnet (masked IPv4 prefix)
}

// Fabric is one simulated VPC data plane. Its methods are safe for concurrent use.
// NodeLink is the name of the ENI's link in the node namespace.
func (e ENI) NodeLink() string {
	if e.NetworkCard == 0 {
		return fmt.Sprintf("eth%d", e.DeviceIndex)
	}
	return fmt.Sprintf("nc%deth%d", e.NetworkCard, e.DeviceIndex)
}

type Fabric struct {
	mu     sync.Mutex
	runID  string
	closed bool

	rtrName string
	rtrNS   netns.NsHandle // -1 when not created
	rtr     *netlink.Handle
	outName string
	outNS   netns.NsHandle
	out     *netlink.Handle
	// nsCreated lists router/outside namespaces this fabric created (for teardown).
	nsCreated []string

	subnets     map[netip.Prefix]struct{}
	nodes       map[string]*node
	enis        map[string]*eniState
	addrOwner   map[netip.Addr]string   // secondary IP -> ENI ID
	prefixOwner map[netip.Prefix]string // delegated prefix -> ENI ID
	rlinkNames  map[string]string       // router link name -> ENI ID
	// Security groups (securitygroups.go): nil until SetSecurityGroups.
	sgPerms      map[string][]Permission
	sgENIs       map[string][]string
	outListeners []net.Listener
}

type node struct {
	name      string
	nsName    string
	utsPath   string // its UTS namespace, "" until made
	ns        netns.NsHandle
	h         *netlink.Handle
	enis      map[string]string // node link name -> ENI ID
	listeners []net.Listener
}

type eniState struct {
	ENI
	node      string
	rlink     string // router-side link name
	secondary map[netip.Addr]struct{}
	prefixes  map[netip.Prefix]struct{}
	ipv6      map[netip.Addr]struct{}   // IPv6 addresses (/128) delivered through the ENI
	prefixes6 map[netip.Prefix]struct{} // IPv6 prefixes (/80) delivered through the ENI
	// A branch ENI (branch.go) has no link of its own in the node: its
	// router link is a VLAN sub-interface of its trunk's.
	trunk string // the trunk ENI's ID; "" for an ENI attached to the node
	vlan  int
}

var (
	runIDRe    = regexp.MustCompile(`^[a-z0-9]{1,6}$`)
	nodeNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
)

// Gateway returns the VPC router's address in subnet: its first host address
// (base+1), as in EC2.
func Gateway(subnet netip.Prefix) netip.Addr {
	return subnet.Masked().Addr().Next()
}

// New creates the router and outside namespaces and links them. On error
// everything it created is removed again.
func New(opts Options) (*Fabric, error) {
	runID := opts.RunID
	if runID == "" {
		runID = randomRunID()
	}
	if !runIDRe.MatchString(runID) {
		return nil, fmt.Errorf("dataplane: invalid RunID %q (want 1-6 chars [a-z0-9])", runID)
	}
	f := &Fabric{
		runID:       runID,
		rtrName:     nsPrefix(runID) + "rtr",
		outName:     nsPrefix(runID) + "out",
		rtrNS:       netns.None(),
		outNS:       netns.None(),
		subnets:     map[netip.Prefix]struct{}{},
		nodes:       map[string]*node{},
		enis:        map[string]*eniState{},
		addrOwner:   map[netip.Addr]string{},
		prefixOwner: map[netip.Prefix]string{},
		rlinkNames:  map[string]string{},
	}
	if err := f.setup(); err != nil {
		if cerr := f.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("rollback: %w", cerr))
		}
		return nil, err
	}
	return f, nil
}

func (f *Fabric) setup() error {
	var err error
	if f.rtrNS, err = namednetns.Create(f.rtrName); err != nil {
		return fmt.Errorf("create router netns: %w", err)
	}
	f.nsCreated = append(f.nsCreated, f.rtrName)
	if f.outNS, err = namednetns.Create(f.outName); err != nil {
		return fmt.Errorf("create outside netns: %w", err)
	}
	f.nsCreated = append(f.nsCreated, f.outName)
	if f.rtr, err = netlink.NewHandleAt(f.rtrNS); err != nil {
		return fmt.Errorf("netlink handle in router netns: %w", err)
	}
	if f.out, err = netlink.NewHandleAt(f.outNS); err != nil {
		return fmt.Errorf("netlink handle in outside netns: %w", err)
	}

	// Router sysctls. conf/default is set before any link is created so new
	// links inherit it; per-link values are also set explicitly later.
	if err := writeSysctls(f.rtrName, []sysctl{
		{"net/ipv4/ip_forward", "1"},
		// all/ at 0 and default/ at 1: every link is strict by its own
		// value (the kernel applies the larger), so that a branch's
		// sub-interface can be 0 (branch.go).
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "1"},
		{"net/ipv4/conf/all/arp_ignore", "0"},
		{"net/ipv4/conf/default/arp_ignore", "0"},
		{"net/ipv4/conf/all/arp_filter", "0"},
		{"net/ipv4/conf/all/proxy_arp", "0"},
		{"net/ipv4/conf/default/proxy_arp", "1"},
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/default/send_redirects", "0"},
		{"net/ipv4/conf/all/accept_local", "0"},
		{"net/ipv4/conf/all/log_martians", "0"},
		{"net/ipv4/conf/default/log_martians", "0"},
		{"net/ipv6/conf/all/disable_ipv6", "0"},
		{"net/ipv6/conf/default/disable_ipv6", "0"},
		{"net/ipv6/conf/all/forwarding", "1"},
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_ra", "0"},
	}); err != nil {
		return fmt.Errorf("router sysctls: %w", err)
	}
	// The outside namespace is a set of hosts, not a router: packets for
	// addresses it does not own are dropped instead of bounced back.
	if err := writeSysctls(f.outName, []sysctl{
		{"net/ipv4/ip_forward", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv6/conf/all/disable_ipv6", "0"},
		{"net/ipv6/conf/default/disable_ipv6", "0"},
		{"net/ipv6/conf/all/forwarding", "0"},
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
	}); err != nil {
		return fmt.Errorf("outside sysctls: %w", err)
	}
	for _, h := range []*netlink.Handle{f.rtr, f.out} {
		if err := linkUpByName(h, "lo"); err != nil {
			return err
		}
	}

	// router <-> outside veth, created in the router netns with the peer
	// placed straight into the outside netns.
	attrs := netlink.NewLinkAttrs()
	attrs.Name = RouterOutsideLink
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: OutsideLink, PeerNamespace: netlink.NsFd(int(f.outNS)), PeerTxQLen: -1}
	if err := f.rtr.LinkAdd(veth); err != nil {
		return fmt.Errorf("create router<->outside veth: %w", err)
	}
	if err := writeSysctls(f.rtrName, []sysctl{
		{"net/ipv4/conf/" + RouterOutsideLink + "/rp_filter", "1"},
		{"net/ipv4/conf/" + RouterOutsideLink + "/proxy_arp", "0"},
		{"net/ipv4/conf/" + RouterOutsideLink + "/arp_ignore", "0"},
		{"net/ipv4/conf/" + RouterOutsideLink + "/send_redirects", "0"},
	}); err != nil {
		return fmt.Errorf("router outside-link sysctls: %w", err)
	}
	rl, err := f.rtr.LinkByName(RouterOutsideLink)
	if err != nil {
		return err
	}
	if err := f.rtr.AddrAdd(rl, addr(netip.MustParsePrefix(OutsideRouterAddr+"/24"))); err != nil {
		return fmt.Errorf("router outside address: %w", err)
	}
	if err := f.rtr.LinkSetUp(rl); err != nil {
		return err
	}
	ol, err := f.out.LinkByName(OutsideLink)
	if err != nil {
		return err
	}
	if err := f.out.AddrAdd(ol, addr(netip.MustParsePrefix(OutsideAddr+"/24"))); err != nil {
		return fmt.Errorf("outside address: %w", err)
	}
	if err := f.out.LinkSetUp(ol); err != nil {
		return err
	}
	olo, err := f.out.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := f.out.AddrAdd(olo, addr(netip.MustParsePrefix(OutsideAltAddr+"/32"))); err != nil {
		return fmt.Errorf("outside alt address: %w", err)
	}
	for _, w := range []struct {
		h    *netlink.Handle
		name string
	}{{f.rtr, RouterOutsideLink}, {f.out, OutsideLink}} {
		if err := waitOperUp(w.h, w.name); err != nil {
			return err
		}
	}
	if err := f.out.RouteReplace(&netlink.Route{LinkIndex: ol.Attrs().Index, Gw: net.ParseIP(OutsideRouterAddr).To4()}); err != nil {
		return fmt.Errorf("outside default route: %w", err)
	}
	if err := f.rtr.RouteReplace(&netlink.Route{LinkIndex: rl.Attrs().Index, Gw: net.ParseIP(OutsideAddr).To4()}); err != nil {
		return fmt.Errorf("router default route: %w", err)
	}
	return f.setupIPv6(rl, ol)
}

// RunID returns the fabric's run token.
func (f *Fabric) RunID() string { return f.runID }

// RouterNetNSName is the name of the router namespace (for `ip netns exec`).
func (f *Fabric) RouterNetNSName() string { return f.rtrName }

// OutsideNetNSName is the name of the outside ("internet") namespace.
func (f *Fabric) OutsideNetNSName() string { return f.outName }

// NodeNetNSName is the namespace name of node (whether or not it exists).
func (f *Fabric) NodeNetNSName(name string) string { return nsPrefix(f.runID) + "n-" + name }

// NodeNetNSPath is the bind-mount path of node's namespace, e.g. for libcni.
func (f *Fabric) NodeNetNSPath(name string) string {
	return namednetns.Path(f.NodeNetNSName(name))
}

// NetNSPath returns the bind-mount path of the named namespace.
func NetNSPath(nsName string) string { return namednetns.Path(nsName) }

// RouterLinkName returns the router-side link name of an attached ENI.
func (f *Fabric) RouterLinkName(eniID string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.enis[eniID]
	if !ok {
		return "", false
	}
	return e.rlink, true
}

// Close removes everything the fabric created: listeners, node, outside and
// router namespaces (and with them every link, address and route). It is
// idempotent and safe after a partial New failure.
func (f *Fabric) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	for _, name := range sortedKeys(f.nodes) {
		if err := f.removeNodeLocked(f.nodes[name]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range f.outListeners {
		_ = l.Close()
	}
	f.outListeners = nil
	if f.rtr != nil {
		f.rtr.Close()
		f.rtr = nil
	}
	if f.out != nil {
		f.out.Close()
		f.out = nil
	}
	for _, h := range []*netns.NsHandle{&f.rtrNS, &f.outNS} {
		if h.IsOpen() {
			_ = h.Close()
			*h = netns.None()
		}
	}
	for i := len(f.nsCreated) - 1; i >= 0; i-- {
		if err := namednetns.Delete(f.nsCreated[i]); err != nil {
			errs = append(errs, err)
		}
	}
	f.nsCreated = nil
	return errors.Join(errs...)
}

// Leftovers lists the names of what is still present of run runID: named
// namespaces of the run (in NetNSDir), the paths of its nodes' UTS
// namespaces (in UTSNSDir), and root-namespace links whose name carries
// "vs"+runID (the fabric never creates any). Tests use it to prove
// teardown.
func Leftovers(runID string) ([]string, error) {
	out, err := leftoverNamespaces(runID)
	if err != nil {
		return nil, err
	}
	uts, err := leftoverUTS(runID)
	if err != nil {
		return nil, err
	}
	out = append(out, uts...)
	h, err := rootHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if strings.Contains(l.Attrs().Name, "vs"+runID) {
			out = append(out, l.Attrs().Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

func leftoverNamespaces(runID string) ([]string, error) {
	var out []string
	ents, err := os.ReadDir(NetNSDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), nsPrefix(runID)) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// RemoveLeftovers deletes the named and UTS namespaces of run runID, e.g. those left
// behind by a crashed process that never called Close. Never call it for the
// RunID of a live Fabric.
func RemoveLeftovers(runID string) error {
	if !runIDRe.MatchString(runID) {
		return fmt.Errorf("dataplane: invalid RunID %q", runID)
	}
	names, err := leftoverNamespaces(runID)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := namednetns.Delete(n); err != nil {
			errs = append(errs, err)
		}
	}
	uts, err := leftoverUTS(runID)
	if err != nil {
		errs = append(errs, err)
	}
	for _, p := range uts {
		if err := deleteUTS(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rootHandle returns a netlink handle in the process's own (root) network
// namespace. Note /proc/self/ns/net is NOT reliable for that: it names the
// main thread's namespace, and the main thread may be temporarily inside
// another namespace under ns.Do. A thread running an unlocked goroutine
// always is in the root namespace (ns.Do restores before unlocking), so the
// namespace is taken from the current thread while it is locked.
func rootHandle() (*netlink.Handle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	root, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return netlink.NewHandleAt(root)
}

func nsPrefix(runID string) string { return "vs" + runID + "-" }

func randomRunID() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}
