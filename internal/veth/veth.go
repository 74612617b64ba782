// Package veth builds the routed veth pairs of vpcchain's interface
// plugins, as containernetworking/plugins' pkg/ip does for the upstream
// ones. vpc-bridge's pod interface and vpc-egress-v4's egress interface
// have one shape:
//
//	pod netns                                host netns
//	<ifname>  <ip>/32 ─────── veth ───────── <host name>   (no address)
//	  <gw>/32 dev <ifname> scope link          <ip>/32 dev <host name> scope link
//	  default via <gw> dev <ifname>
//	  neigh <gw> lladdr <host MAC> permanent
//
// (an IPv6 pod: /128, no route to its link-local gateway, DAD off). This
// package holds the steps that build and remove that shape, the rule that
// names vpc-bridge's host end and the alias that records its owner; each
// plugin adds its own rules (vpc-bridge: policy routing, vpc-egress-v4:
// NAT) and picks its names.
//
// Functions act on the network namespace of the calling thread unless they
// take one. Their errors do not name the plugin; the caller adds its name,
// as to its own messages.
//
// pkg/ip's SetupVethWithName is not used: it cannot give the host end the
// MAC address we pick, and it brings the host end up before we have
// labelled it and set its IPv6 sysctls.
package veth

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
	"github.com/vpcchain/vpcchain/internal/routing"
)

// Plugin is the name of a plugin that builds veths with this package. It
// starts the CNI errors the package makes for the plugin and the lines the
// plugin logs, so that a runtime's log says which plugin of the chain spoke.
type Plugin string

// Logf writes one line to stderr: stdout carries only the CNI result.
func (p Plugin) Logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, string(p)+": "+format+"\n", a...)
}

// OpenNetNS opens the container netns (CNI_NETNS); a missing or invalid
// path is ErrInvalidNetNS (8) naming the path.
func (p Plugin) OpenNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidNetNS, string(p)+": CNI_NETNS is empty", "")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		switch {
		case errors.As(err, &notExist):
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("%s: CNI_NETNS %q does not exist", p, path), err.Error())
		case errors.As(err, &notNS):
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("%s: CNI_NETNS %q is not a network namespace", p, path), err.Error())
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("%s: cannot open CNI_NETNS %q: %v", p, path, err), "")
	}
	return n, nil
}

// OpenNetNSIfExists opens the netns at path for DEL, which a netns that is
// gone must not fail: a path that no longer exists, or is no longer a
// netns, gives a nil NetNS and no error.
func OpenNetNSIfExists(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		if errors.As(err, &notExist) || errors.As(err, &notNS) {
			return nil, nil
		}
		return nil, fmt.Errorf("open netns %q: %w", path, err)
	}
	return n, nil
}

// IfExistsError is ADD's error when the pod netns already has the
// interface it is to create.
func (p Plugin) IfExistsError(ifName string, podNS ns.NetNS) error {
	return types.NewError(types.ErrInternal,
		fmt.Sprintf("%s: interface %q already exists in network namespace %q", p, ifName, podNS.Path()), "")
}

// UniqueHostMAC returns a random locally administered MAC that no link in
// the host netns uses.
func UniqueHostMAC() (net.HardwareAddr, error) {
	links, err := netlinkutil.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host links: %w", err)
	}
	for i := 0; i < 10; i++ {
		mac, err := netlinkutil.RandomLAAMAC()
		if err != nil {
			return nil, err
		}
		clash := false
		for _, l := range links {
			if l.Attrs().HardwareAddr.String() == mac.String() {
				clash = true
				break
			}
		}
		if !clash {
			return mac, nil
		}
	}
	return nil, errors.New("could not find an unused MAC address for the host veth")
}

// Create creates the pair from inside podNS with the peer placed directly
// in the calling thread's netns, the host's (no link moves between
// namespaces): podIf in the pod, hostIf with hostMAC in the host, both with
// mtu. It returns the pod end's MAC. A pair it made but cannot look up is
// deleted again.
func Create(podNS ns.NetNS, podIf, hostIf string, mtu int, hostMAC net.HardwareAddr) (podMAC net.HardwareAddr, err error) {
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open host network namespace: %w", err)
	}
	defer hostNS.Close()
	err = podNS.Do(func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = podIf
		la.MTU = mtu
		pair := &netlink.Veth{
			LinkAttrs:        la,
			PeerName:         hostIf,
			PeerNamespace:    netlink.NsFd(int(hostNS.Fd())),
			PeerHardwareAddr: hostMAC,
			PeerMTU:          uint32(mtu),
		}
		if err := netlink.LinkAdd(pair); err != nil {
			return fmt.Errorf("create veth pair %s (pod) / %s (host): %w", podIf, hostIf, err)
		}
		l, err := netlinkutil.LinkByName(podIf)
		if err != nil {
			_ = netlink.LinkDel(pair) // takes the peer with it
			return fmt.Errorf("look up new pod interface %s: %w", podIf, err)
		}
		podMAC = l.Attrs().HardwareAddr
		return nil
	})
	return podMAC, err
}

// SetupHost labels the new host end with alias, sets its IPv6 and brings
// it up. The host end carries no address at all, as Felix expects of a
// workload interface: for an IPv4 pod IPv6 is off on it; for an IPv6 pod
// IPv6 is on (to forward) but makes no link-local address, does no DAD and
// takes no router advertisement.
func SetupHost(name, alias string, ipv6 bool) (netlink.Link, error) {
	link, err := netlinkutil.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("look up host veth %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(link, alias); err != nil {
		return nil, fmt.Errorf("set alias of host veth %s: %w", name, err)
	}
	settings := [][2]string{{"accept_ra", "0"}, {"disable_ipv6", "1"}}
	if ipv6 {
		settings = [][2]string{{"accept_ra", "0"}, {"accept_dad", "0"}, {"addr_gen_mode", "1"}, {"disable_ipv6", "0"}}
	}
	if err := ipv6Sysctls(name, !ipv6, settings); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set host veth %s up: %w", name, err)
	}
	return netlinkutil.LinkByName(name)
}

// ipv6Sysctls writes net.ipv6.conf.<name>.* in the current netns. A kernel
// without IPv6 is fine when optional (nothing to turn off), an error when
// the pod needs IPv6.
func ipv6Sysctls(name string, optional bool, settings [][2]string) error {
	if _, err := os.Stat("/proc/sys/net/ipv6/conf/" + name); err != nil {
		if optional {
			return nil
		}
		return fmt.Errorf("IPv6 pod on %s, but the kernel has no IPv6 there: %w", name, err)
	}
	for _, kv := range settings {
		// Slashes, not dots: an interface name may contain a dot.
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+name+"/"+kv[0], kv[1]); err != nil {
			return fmt.Errorf("sysctl net.ipv6.conf.%s.%s=%s: %w", name, kv[0], kv[1], err)
		}
	}
	return nil
}

// SetupPod runs inside the pod netns. It brings ifName up with ip as its
// /32 (/128), routes everything via gw and answers gw with a permanent
// neighbour entry for hostMAC, so that the pod never resolves it.
func SetupPod(ifName string, ip, gw net.IP, hostMAC net.HardwareAddr) error {
	link, err := netlinkutil.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("look up pod interface %s: %w", ifName, err)
	}
	v6 := ip.To4() == nil
	if v6 {
		// The address is the VPC's and unique: no DAD delay before use.
		if err := ipv6Sysctls(ifName, false, [][2]string{{"accept_dad", "0"}, {"accept_ra", "0"}, {"disable_ipv6", "0"}}); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set pod interface %s up: %w", ifName, err)
	}
	addr := &netlink.Addr{IPNet: netlinkutil.HostNet(ip)}
	if v6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("add address %s to pod interface %s: %w", addr.IPNet, ifName, err)
	}
	idx := link.Attrs().Index
	if !v6 {
		// IPv4 needs an on-link route to a gateway outside the pod's /32;
		// IPv6's fe80::/64 is on-link by definition.
		gwRoute := &netlink.Route{LinkIndex: idx, Dst: netlinkutil.HostNet(gw), Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(gwRoute); err != nil {
			return fmt.Errorf("add pod route %s dev %s scope link: %w", gwRoute.Dst, ifName, err)
		}
	}
	defRoute := &netlink.Route{LinkIndex: idx, Dst: DefaultNet(ip), Gw: gw, Scope: netlink.SCOPE_UNIVERSE}
	if err := netlink.RouteReplace(defRoute); err != nil {
		return fmt.Errorf("add pod route default via %s dev %s: %w", gw, ifName, err)
	}
	if err := setNeighbour(link, gw, hostMAC); err != nil {
		return fmt.Errorf("add pod neighbour %s lladdr %s dev %s nud permanent: %w", gw, hostMAC, ifName, err)
	}
	return nil
}

// DefaultNet is the default route's destination of ip's family.
func DefaultNet(ip net.IP) *net.IPNet {
	if ip.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// AddHostRoute routes ip/32 (/128) in the main table out of the host end:
// "<ip> dev <host> scope link".
func AddHostRoute(host netlink.Link, ip net.IP) error {
	route := &netlink.Route{
		LinkIndex: host.Attrs().Index,
		Dst:       netlinkutil.HostNet(ip),
		Scope:     netlink.SCOPE_LINK,
		Table:     routing.MainTable,
		Protocol:  routing.HostRouteProtocol,
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("add host route %s dev %s scope link: %w", route.Dst, host.Attrs().Name, err)
	}
	return nil
}

// SetHostNeighbour answers the pod's address on the host end with a
// permanent neighbour entry for the pod's MAC, so that the host never
// resolves it either.
func SetHostNeighbour(host netlink.Link, ip net.IP, podMAC net.HardwareAddr) error {
	if err := setNeighbour(host, ip, podMAC); err != nil {
		return fmt.Errorf("add host neighbour %s lladdr %s dev %s nud permanent: %w", ip, podMAC, host.Attrs().Name, err)
	}
	return nil
}

func setNeighbour(link netlink.Link, ip net.IP, mac net.HardwareAddr) error {
	return netlink.NeighSet(&netlink.Neigh{
		LinkIndex:    link.Attrs().Index,
		Family:       netlinkutil.Family(ip),
		State:        netlink.NUD_PERMANENT,
		IP:           ip,
		HardwareAddr: mac,
	})
}
