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
//   - An "outside" namespace stands for the internet (203.0.113.10 and
//     198.51.100.10). Every non-VPC destination is routed there, without NAT.
//
// All namespaces are named (bind-mounted under /var/run/netns) and carry the
// fabric's RunID, so binaries can be run in them with `ip netns exec` and two
// runs never collide. Nothing is created in, or changed in, the root network
// namespace.
package dataplane

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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
	NetNSDir = "/var/run/netns"

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
	DeviceIndex int              // node-side link is eth<DeviceIndex>; 0 is the primary ENI
	PrimaryIP   netip.Addr       // inside Subnet
	Subnet      netip.Prefix     // the ENI's subnet (masked IPv4 prefix)
}

// Fabric is one simulated VPC data plane. Its methods are safe for concurrent use.
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

	subnets      map[netip.Prefix]struct{}
	nodes        map[string]*node
	enis         map[string]*eniState
	addrOwner    map[netip.Addr]string   // secondary IP -> ENI ID
	prefixOwner  map[netip.Prefix]string // delegated prefix -> ENI ID
	rlinkNames   map[string]string       // router link name -> ENI ID
	outListeners []net.Listener
}

type node struct {
	name      string
	nsName    string
	ns        netns.NsHandle
	h         *netlink.Handle
	enis      map[int]string // device index -> ENI ID
	listeners []net.Listener
}

type eniState struct {
	ENI
	node      string
	rlink     string // router-side link name
	secondary map[netip.Addr]struct{}
	prefixes  map[netip.Prefix]struct{}
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
	if f.rtrNS, err = createNamedNS(f.rtrName); err != nil {
		return fmt.Errorf("create router netns: %w", err)
	}
	f.nsCreated = append(f.nsCreated, f.rtrName)
	if f.outNS, err = createNamedNS(f.outName); err != nil {
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
		{"net/ipv4/conf/all/rp_filter", "1"},
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
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
	}); err != nil {
		return fmt.Errorf("router sysctls: %w", err)
	}
	// The outside namespace is a set of hosts, not a router: packets for
	// addresses it does not own are dropped instead of bounced back.
	if err := writeSysctls(f.outName, []sysctl{
		{"net/ipv4/ip_forward", "0"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv6/conf/all/disable_ipv6", "1"},
		{"net/ipv6/conf/default/disable_ipv6", "1"},
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
	return nil
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
	return filepath.Join(NetNSDir, f.NodeNetNSName(name))
}

// NetNSPath returns the bind-mount path of the named namespace.
func NetNSPath(nsName string) string { return filepath.Join(NetNSDir, nsName) }

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

// AddSubnet makes the router the gateway (.1) of cidr. Addresses of the subnet
// not assigned to any ENI are black-holed by the router. Adding the same subnet
// twice is a no-op; overlapping subnets are rejected.
func (f *Fabric) AddSubnet(cidr netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	return f.addSubnetLocked(cidr)
}

func (f *Fabric) addSubnetLocked(cidr netip.Prefix) error {
	if !cidr.IsValid() || !cidr.Addr().Is4() || cidr.Masked() != cidr || cidr.Bits() > 28 || cidr.Bits() < 8 {
		return fmt.Errorf("dataplane: invalid subnet %v (want a masked IPv4 prefix /8../28)", cidr)
	}
	if _, ok := f.subnets[cidr]; ok {
		return nil
	}
	for s := range f.subnets {
		if s.Overlaps(cidr) {
			return fmt.Errorf("dataplane: subnet %v overlaps %v", cidr, s)
		}
	}
	lo, err := f.rtr.LinkByName("lo")
	if err != nil {
		return err
	}
	gw := netip.PrefixFrom(Gateway(cidr), 32)
	if err := f.rtr.AddrReplace(lo, addr(gw)); err != nil {
		return fmt.Errorf("router gateway address %v: %w", gw, err)
	}
	if err := f.rtr.RouteReplace(&netlink.Route{Dst: ipnet(cidr), Type: unix.RTN_BLACKHOLE}); err != nil {
		_ = f.rtr.AddrDel(lo, addr(gw))
		return fmt.Errorf("router blackhole route %v: %w", cidr, err)
	}
	f.subnets[cidr] = struct{}{}
	return nil
}

// AddNode creates the namespace of an EC2 instance: lo up, ip_forward=1,
// rp_filter=2 (loose) on conf/all and conf/default. It has no ENI yet.
func (f *Fabric) AddNode(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if !nodeNameRe.MatchString(name) {
		return fmt.Errorf("dataplane: invalid node name %q", name)
	}
	if _, ok := f.nodes[name]; ok {
		return fmt.Errorf("dataplane: node %q already exists", name)
	}
	n := &node{name: name, nsName: f.NodeNetNSName(name), ns: netns.None(), enis: map[int]string{}}
	var err error
	if n.ns, err = createNamedNS(n.nsName); err != nil {
		return fmt.Errorf("create node netns: %w", err)
	}
	fail := func(err error) error {
		if cerr := n.teardown(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("rollback: %w", cerr))
		}
		return err
	}
	if n.h, err = netlink.NewHandleAt(n.ns); err != nil {
		return fail(err)
	}
	if err := linkUpByName(n.h, "lo"); err != nil {
		return fail(err)
	}
	if err := writeSysctls(n.nsName, []sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "2"},
		{"net/ipv4/conf/default/rp_filter", "2"},
	}); err != nil {
		return fail(fmt.Errorf("node sysctls: %w", err))
	}
	f.nodes[name] = n
	return nil
}

// RemoveNode detaches all of the node's ENIs, closes its listeners and deletes
// its namespace.
func (f *Fabric) RemoveNode(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	n, ok := f.nodes[name]
	if !ok {
		return fmt.Errorf("dataplane: unknown node %q", name)
	}
	return f.removeNodeLocked(n)
}

func (f *Fabric) removeNodeLocked(n *node) error {
	var errs []error
	for _, id := range sortedValues(n.enis) {
		if err := f.detachLocked(f.enis[id]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.teardown(); err != nil {
		errs = append(errs, err)
	}
	delete(f.nodes, n.name)
	return errors.Join(errs...)
}

func (n *node) teardown() error {
	for _, l := range n.listeners {
		_ = l.Close()
	}
	n.listeners = nil
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	if n.ns.IsOpen() {
		_ = n.ns.Close()
		n.ns = netns.None()
	}
	return deleteNamedNS(n.nsName)
}

// AttachENI hot-plugs e into node. The node gets link eth<DeviceIndex> with
// e.MAC (MTU 9001); the router gets a link named after e.ID with a permanent
// neighbour entry primaryIP->MAC and a /32 route for the primary IP. For the
// primary ENI (DeviceIndex 0) the node is configured like an EC2 OS after
// DHCP: primaryIP/<subnet bits> on eth0, up, default route via the subnet
// gateway. Other ENIs appear DOWN without addresses. e.Subnet is added (see
// AddSubnet) if needed. On error nothing is left behind.
func (f *Fabric) AttachENI(nodeName string, e ENI) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	n, ok := f.nodes[nodeName]
	if !ok {
		return fmt.Errorf("dataplane: unknown node %q", nodeName)
	}
	if err := f.validateENI(n, e); err != nil {
		return err
	}
	if err := f.addSubnetLocked(e.Subnet); err != nil {
		return err
	}
	rname := f.routerLinkName(e.ID)
	nodeLink := fmt.Sprintf("eth%d", e.DeviceIndex)
	mac := append(net.HardwareAddr(nil), e.MAC...)

	attrs := netlink.NewLinkAttrs()
	attrs.Name = rname
	attrs.MTU = ENIMTU
	veth := &netlink.Veth{
		LinkAttrs:        attrs,
		PeerName:         nodeLink,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(n.ns)),
		PeerMTU:          ENIMTU,
		PeerTxQLen:       -1,
	}
	if err := f.rtr.LinkAdd(veth); err != nil {
		return fmt.Errorf("dataplane: create ENI veth %s/%s: %w", rname, nodeLink, err)
	}
	fail := func(err error) error {
		if l, lerr := f.rtr.LinkByName(rname); lerr == nil {
			if derr := f.rtr.LinkDel(l); derr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", derr))
			}
		}
		return err
	}
	if err := writeSysctls(f.rtrName, []sysctl{
		{"net/ipv4/conf/" + rname + "/rp_filter", "1"},
		{"net/ipv4/conf/" + rname + "/proxy_arp", "1"},
		{"net/ipv4/conf/" + rname + "/arp_ignore", "0"},
		{"net/ipv4/conf/" + rname + "/send_redirects", "0"},
		{"net/ipv4/neigh/" + rname + "/proxy_delay", "0"},
	}); err != nil {
		return fail(fmt.Errorf("dataplane: router link sysctls: %w", err))
	}
	rl, err := f.rtr.LinkByName(rname)
	if err != nil {
		return fail(err)
	}
	if err := f.rtr.LinkSetUp(rl); err != nil {
		return fail(err)
	}
	if err := f.rtr.NeighSet(&netlink.Neigh{
		LinkIndex:    rl.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           ip(e.PrimaryIP),
		HardwareAddr: mac,
	}); err != nil {
		return fail(fmt.Errorf("dataplane: router neighbour %v: %w", e.PrimaryIP, err))
	}
	if err := f.rtr.RouteReplace(primaryRoute(rl.Attrs().Index, e.PrimaryIP)); err != nil {
		return fail(fmt.Errorf("dataplane: router route %v: %w", e.PrimaryIP, err))
	}

	nl, err := n.h.LinkByName(nodeLink)
	if err != nil {
		return fail(fmt.Errorf("dataplane: node link %s: %w", nodeLink, err))
	}
	if e.DeviceIndex == 0 {
		if err := n.h.AddrAdd(nl, addr(netip.PrefixFrom(e.PrimaryIP, e.Subnet.Bits()))); err != nil {
			return fail(fmt.Errorf("dataplane: node address: %w", err))
		}
		if err := n.h.LinkSetUp(nl); err != nil {
			return fail(err)
		}
		if err := n.h.RouteReplace(&netlink.Route{LinkIndex: nl.Attrs().Index, Gw: ip(Gateway(e.Subnet))}); err != nil {
			return fail(fmt.Errorf("dataplane: node default route: %w", err))
		}
		// Like a booted instance, return only once eth0 can carry traffic.
		if err := waitOperUp(n.h, nodeLink); err != nil {
			return fail(err)
		}
		if err := waitOperUp(f.rtr, rname); err != nil {
			return fail(err)
		}
	}

	f.enis[e.ID] = &eniState{
		ENI:       ENI{ID: e.ID, MAC: mac, DeviceIndex: e.DeviceIndex, PrimaryIP: e.PrimaryIP, Subnet: e.Subnet},
		node:      n.name,
		rlink:     rname,
		secondary: map[netip.Addr]struct{}{},
		prefixes:  map[netip.Prefix]struct{}{},
	}
	f.rlinkNames[rname] = e.ID
	n.enis[e.DeviceIndex] = e.ID
	return nil
}

func (f *Fabric) validateENI(n *node, e ENI) error {
	if e.ID == "" {
		return errors.New("dataplane: ENI without ID")
	}
	if _, ok := f.enis[e.ID]; ok {
		return fmt.Errorf("dataplane: ENI %s already attached", e.ID)
	}
	if len(e.MAC) != 6 || e.MAC[0]&1 != 0 || isZero(e.MAC) {
		return fmt.Errorf("dataplane: ENI %s: invalid unicast MAC %v", e.ID, e.MAC)
	}
	if e.DeviceIndex < 0 || e.DeviceIndex > 999 {
		return fmt.Errorf("dataplane: ENI %s: invalid device index %d", e.ID, e.DeviceIndex)
	}
	if other, ok := n.enis[e.DeviceIndex]; ok {
		return fmt.Errorf("dataplane: node %s: device index %d already used by %s", n.name, e.DeviceIndex, other)
	}
	if !e.Subnet.IsValid() || !e.Subnet.Addr().Is4() || e.Subnet.Masked() != e.Subnet {
		return fmt.Errorf("dataplane: ENI %s: invalid subnet %v", e.ID, e.Subnet)
	}
	if !e.PrimaryIP.Is4() || !e.Subnet.Contains(e.PrimaryIP) || e.PrimaryIP == Gateway(e.Subnet) || e.PrimaryIP == e.Subnet.Addr() {
		return fmt.Errorf("dataplane: ENI %s: primary IP %v not usable in subnet %v", e.ID, e.PrimaryIP, e.Subnet)
	}
	for _, o := range f.enis {
		if o.PrimaryIP == e.PrimaryIP {
			return fmt.Errorf("dataplane: ENI %s: primary IP %v already used by %s", e.ID, e.PrimaryIP, o.ID)
		}
	}
	if owner, ok := f.addrOwner[e.PrimaryIP]; ok {
		return fmt.Errorf("dataplane: ENI %s: primary IP %v is a secondary IP of %s", e.ID, e.PrimaryIP, owner)
	}
	for p, owner := range f.prefixOwner {
		if p.Contains(e.PrimaryIP) {
			return fmt.Errorf("dataplane: ENI %s: primary IP %v is inside prefix %v of %s", e.ID, e.PrimaryIP, p, owner)
		}
	}
	return nil
}

// DetachENI unplugs an ENI: its link disappears from the node and the router
// link, neighbour entry and all routes of its addresses are removed.
func (f *Fabric) DetachENI(eniID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	e, ok := f.enis[eniID]
	if !ok {
		return fmt.Errorf("dataplane: unknown ENI %q", eniID)
	}
	return f.detachLocked(e)
}

func (f *Fabric) detachLocked(e *eniState) error {
	var err error
	if l, lerr := f.rtr.LinkByName(e.rlink); lerr == nil {
		// Deleting one veth end deletes the node end too; routes and
		// neighbour entries on the link go with it.
		if derr := f.rtr.LinkDel(l); derr != nil {
			err = fmt.Errorf("dataplane: delete router link %s: %w", e.rlink, derr)
		}
	} else {
		var nf netlink.LinkNotFoundError
		if !errors.As(lerr, &nf) {
			err = lerr
		}
	}
	for a := range e.secondary {
		delete(f.addrOwner, a)
	}
	for p := range e.prefixes {
		delete(f.prefixOwner, p)
	}
	delete(f.rlinkNames, e.rlink)
	delete(f.enis, e.ID)
	if n, ok := f.nodes[e.node]; ok {
		delete(n.enis, e.DeviceIndex)
	}
	return err
}

// SetENIAddresses makes the router deliver exactly the ENI's primary IP, the
// given secondary IPs (/32) and delegated prefixes (typically /28) through the
// ENI; everything else previously assigned to it is removed. The change takes
// effect immediately. Addresses and prefixes must lie in the ENI's subnet. An
// address or prefix currently assigned to another ENI is moved (as EC2 does
// with AllowReassignment).
func (f *Fabric) SetENIAddresses(eniID string, secondary []netip.Addr, prefixes []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	e, ok := f.enis[eniID]
	if !ok {
		return fmt.Errorf("dataplane: unknown ENI %q", eniID)
	}
	wantAddrs := map[netip.Addr]struct{}{}
	for _, a := range secondary {
		if !a.Is4() || !e.Subnet.Contains(a) || a == Gateway(e.Subnet) || a == e.Subnet.Addr() {
			return fmt.Errorf("dataplane: ENI %s: secondary IP %v not usable in subnet %v", eniID, a, e.Subnet)
		}
		for _, o := range f.enis {
			if o.PrimaryIP == a {
				return fmt.Errorf("dataplane: ENI %s: %v is the primary IP of %s", eniID, a, o.ID)
			}
		}
		wantAddrs[a] = struct{}{}
	}
	wantPfx := map[netip.Prefix]struct{}{}
	for _, p := range prefixes {
		if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p || p.Bits() < e.Subnet.Bits() || p.Bits() > 32 || !e.Subnet.Contains(p.Addr()) {
			return fmt.Errorf("dataplane: ENI %s: prefix %v not a masked prefix inside subnet %v", eniID, p, e.Subnet)
		}
		wantPfx[p] = struct{}{}
	}

	rl, err := f.rtr.LinkByName(e.rlink)
	if err != nil {
		return fmt.Errorf("dataplane: router link %s: %w", e.rlink, err)
	}
	idx := rl.Attrs().Index
	desired := map[netip.Prefix]*netlink.Route{}
	desired[netip.PrefixFrom(e.PrimaryIP, 32)] = primaryRoute(idx, e.PrimaryIP)
	for a := range wantAddrs {
		desired[netip.PrefixFrom(a, 32)] = viaPrimaryRoute(idx, netip.PrefixFrom(a, 32), e.PrimaryIP)
	}
	for p := range wantPfx {
		desired[p] = viaPrimaryRoute(idx, p, e.PrimaryIP)
	}

	// Install (or move here) the desired routes first, then remove the rest.
	var errs []error
	for _, dst := range sortedPrefixes(desired) {
		if err := f.rtr.RouteReplace(desired[dst]); err != nil {
			errs = append(errs, fmt.Errorf("route %v: %w", dst, err))
		}
	}
	current, err := f.rtr.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		errs = append(errs, err)
	}
	for i := range current {
		r := current[i]
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixFromIPNet(r.Dst)
		if ok {
			if _, want := desired[dst]; want {
				continue
			}
		}
		if err := f.rtr.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r.Dst, err))
		}
	}

	// Book-keeping, including moves away from other ENIs.
	for a := range e.secondary {
		delete(f.addrOwner, a)
	}
	for p := range e.prefixes {
		delete(f.prefixOwner, p)
	}
	e.secondary = wantAddrs
	e.prefixes = wantPfx
	for a := range wantAddrs {
		if prev, ok := f.addrOwner[a]; ok && prev != e.ID {
			delete(f.enis[prev].secondary, a)
		}
		f.addrOwner[a] = e.ID
	}
	for p := range wantPfx {
		if prev, ok := f.prefixOwner[p]; ok && prev != e.ID {
			delete(f.enis[prev].prefixes, p)
		}
		f.prefixOwner[p] = e.ID
	}
	if len(errs) > 0 {
		return fmt.Errorf("dataplane: ENI %s: %w", eniID, errors.Join(errs...))
	}
	return nil
}

// ENIAddresses returns the secondary IPs and prefixes currently assigned to
// the ENI in the router (sorted).
func (f *Fabric) ENIAddresses(eniID string) ([]netip.Addr, []netip.Prefix, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.enis[eniID]
	if !ok {
		return nil, nil, false
	}
	var as []netip.Addr
	for a := range e.secondary {
		as = append(as, a)
	}
	sort.Slice(as, func(i, j int) bool { return as[i].Less(as[j]) })
	var ps []netip.Prefix
	for p := range e.prefixes {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	return as, ps, true
}

// ListenTCP opens a TCP listener inside the node's namespace. If addr's IP is
// specified and not yet local in the node, it is first added as /32 on the
// node's lo (e.g. 169.254.169.254 for IMDS). The listener is closed when the
// node is removed or the fabric is closed.
func (f *Fabric) ListenTCP(nodeName string, a netip.AddrPort) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	n, ok := f.nodes[nodeName]
	if !ok {
		return nil, fmt.Errorf("dataplane: unknown node %q", nodeName)
	}
	// Host scope: the node's own connections never pick an endpoint address
	// (169.254.169.254, ...) as their source, as on EC2 where IMDS is not local.
	l, err := listenIn(n.nsName, n.h, a, netlink.SCOPE_HOST)
	if err != nil {
		return nil, err
	}
	n.listeners = append(n.listeners, l)
	return l, nil
}

// ListenTCPOutside opens a TCP listener in the outside ("internet")
// namespace, adding addr's IP as /32 on its lo if needed (any non-VPC address
// is routed to the outside namespace, so this creates a new internet host).
func (f *Fabric) ListenTCPOutside(a netip.AddrPort) (net.Listener, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	l, err := listenIn(f.outName, f.out, a, netlink.SCOPE_UNIVERSE)
	if err != nil {
		return nil, err
	}
	f.outListeners = append(f.outListeners, l)
	return l, nil
}

func listenIn(nsName string, h *netlink.Handle, a netip.AddrPort, scope netlink.Scope) (net.Listener, error) {
	if !a.IsValid() {
		return nil, fmt.Errorf("dataplane: invalid listen address %v", a)
	}
	ipa := a.Addr().Unmap()
	if !ipa.IsUnspecified() {
		if err := ensureLocal(h, ipa, scope); err != nil {
			return nil, err
		}
	}
	var l net.Listener
	err := ns.WithNetNSPath(NetNSPath(nsName), func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(ipa, a.Port()).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dataplane: listen %v in %s: %w", a, nsName, err)
	}
	return l, nil
}

func ensureLocal(h *netlink.Handle, a netip.Addr, scope netlink.Scope) error {
	fam := netlink.FAMILY_V4
	bits := 32
	if a.Is6() {
		fam, bits = netlink.FAMILY_V6, 128
	}
	addrs, err := h.AddrList(nil, fam)
	if err != nil {
		return err
	}
	for _, x := range addrs {
		if xa, ok := netip.AddrFromSlice(x.IP); ok && xa.Unmap() == a {
			return nil
		}
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	la := addr(netip.PrefixFrom(a, bits))
	la.Scope = int(scope)
	if err := h.AddrAdd(lo, la); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("dataplane: add %v to lo: %w", a, err)
	}
	return nil
}

// DoInNode runs fn on a locked OS thread inside the node's namespace (via
// containernetworking's ns.Do). Sockets created by fn stay in the node's
// namespace; goroutines started by fn do not.
func (f *Fabric) DoInNode(nodeName string, fn func() error) error {
	f.mu.Lock()
	n, ok := f.nodes[nodeName]
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if !ok {
		return fmt.Errorf("dataplane: unknown node %q", nodeName)
	}
	return doIn(n.nsName, fn)
}

// DoInOutside runs fn inside the outside namespace (see DoInNode).
func (f *Fabric) DoInOutside(fn func() error) error { return f.doInFixed(f.outName, fn) }

// DoInRouter runs fn inside the router namespace (see DoInNode).
func (f *Fabric) DoInRouter(fn func() error) error { return f.doInFixed(f.rtrName, fn) }

func (f *Fabric) doInFixed(nsName string, fn func() error) error {
	f.mu.Lock()
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return doIn(nsName, fn)
}

func doIn(nsName string, fn func() error) error {
	return ns.WithNetNSPath(NetNSPath(nsName), func(ns.NetNS) error { return fn() })
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
		if err := deleteNamedNS(f.nsCreated[i]); err != nil {
			errs = append(errs, err)
		}
	}
	f.nsCreated = nil
	return errors.Join(errs...)
}

// Leftovers lists the names of what is still present of run runID: named
// namespaces of the run (in NetNSDir), and root-namespace links whose name
// carries "vs"+runID (the fabric never creates any). Tests use it to prove
// teardown.
func Leftovers(runID string) ([]string, error) {
	out, err := leftoverNamespaces(runID)
	if err != nil {
		return nil, err
	}
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

// RemoveLeftovers deletes the named namespaces of run runID, e.g. those left
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
		if err := deleteNamedNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ---- helpers ----

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

// routerLinkName derives a unique (per fabric) <=15 char link name from the
// ENI ID: "e" + the last 13 alphanumerics of the ID (without "eni-"), or a
// hash-based name on collision.
func (f *Fabric) routerLinkName(id string) string {
	var b strings.Builder
	for _, r := range strings.TrimPrefix(id, "eni-") {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if len(s) > 13 {
		s = s[len(s)-13:]
	}
	name := "e" + s
	if _, taken := f.rlinkNames[name]; !taken && s != "" {
		return name
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	for i := 0; ; i++ {
		name = fmt.Sprintf("h%08x%d", h.Sum32(), i)
		if _, taken := f.rlinkNames[name]; !taken {
			return name
		}
	}
}

// createNamedNS creates a named network namespace. netns.NewNamed switches
// the calling thread into the new namespace, so it runs on a dedicated locked
// thread that is never unlocked: the Go runtime destroys that thread when the
// goroutine exits, and no other goroutine ever runs in the wrong namespace.
func createNamedNS(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		if !errors.Is(r.err, fs.ErrExist) {
			// NewNamed may leave its (unmounted) placeholder file behind.
			p := NetNSPath(name)
			_ = unix.Unmount(p, unix.MNT_DETACH)
			_ = os.Remove(p)
		}
		return netns.None(), fmt.Errorf("netns %s: %w", name, r.err)
	}
	return r.h, nil
}

func deleteNamedNS(name string) error {
	p := NetNSPath(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

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

func primaryRoute(linkIndex int, primary netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipnet(netip.PrefixFrom(primary, 32)),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
}

func viaPrimaryRoute(linkIndex int, dst netip.Prefix, primary netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipnet(dst),
		Gw:        ip(primary),
		Flags:     int(netlink.FLAG_ONLINK),
		Scope:     netlink.SCOPE_UNIVERSE,
		Table:     unix.RT_TABLE_MAIN,
	}
}

func ip(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: ip(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addr(p netip.Prefix) *netlink.Addr { return &netlink.Addr{IPNet: ipnet(p)} }

func prefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedValues(m map[int]string) []string {
	vs := make([]string, 0, len(m))
	for _, v := range m {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return vs
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].String() < ps[j].String() })
	return ps
}
