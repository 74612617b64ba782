// Nodes (EC2 instances): their namespaces, subnets on the router, listeners
// and running code inside a node.

package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/sim/namednetns"
)

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
	if cidr.IsValid() && cidr.Addr().Is6() && !cidr.Addr().Is4In6() {
		return f.addSubnet6Locked(cidr)
	}
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

// AddNode creates the namespaces of an EC2 instance: its network namespace
// (lo up, ip_forward=1, rp_filter=2 (loose) on conf/all and conf/default;
// no ENI yet) and its UTS namespace, whose hostname is the node's name.
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
	n := &node{name: name, nsName: f.NodeNetNSName(name), ns: netns.None(), enis: map[string]string{}}
	var err error
	if n.ns, err = namednetns.Create(n.nsName); err != nil {
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
	if err := createUTS(f.NodeUTSNSPath(name), name); err != nil {
		return fail(err)
	}
	n.utsPath = f.NodeUTSNSPath(name)
	if err := linkUpByName(n.h, "lo"); err != nil {
		return fail(err)
	}
	if err := writeSysctls(n.nsName, []sysctl{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "2"},
		{"net/ipv4/conf/default/rp_filter", "2"},
		// A booted instance's links are past duplicate address detection.
		{"net/ipv6/conf/all/accept_dad", "0"},
		{"net/ipv6/conf/default/accept_dad", "0"},
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
	var errs []error
	if n.utsPath != "" {
		errs = append(errs, deleteUTS(n.utsPath))
	}
	return errors.Join(append(errs, namednetns.Delete(n.nsName))...)
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
