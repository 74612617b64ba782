package netlinkutil

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
)

// NeighbourProblems says how the neighbour entry for ip on link index (in
// the current netns) differs from "lladdr mac nud permanent" (any lladdr
// when mac is ""); what names the link in the messages. None: it matches.
// The plugins' CHECKs use it for the entries that spare them ARP and NDP.
func NeighbourProblems(index int, what string, ip net.IP, mac string) []string {
	neighs, err := NeighList(index, Family(ip))
	if err != nil {
		return []string{fmt.Sprintf("list neighbours of %s: %v", what, err)}
	}
	var n *netlink.Neigh
	for i := range neighs {
		if neighs[i].IP.Equal(ip) {
			n = &neighs[i]
		}
	}
	if n == nil {
		return []string{fmt.Sprintf("%s has no neighbour entry for %s (want lladdr %s nud permanent)", what, ip, mac)}
	}
	var out []string
	if n.State&netlink.NUD_PERMANENT == 0 {
		out = append(out, fmt.Sprintf("neighbour %s on %s is not permanent (state %s)", ip, what, neighStateString(n.State)))
	}
	if mac != "" && !strings.EqualFold(n.HardwareAddr.String(), mac) {
		out = append(out, fmt.Sprintf("neighbour %s on %s has lladdr %s, want %s", ip, what, n.HardwareAddr, mac))
	}
	return out
}

func neighStateString(s int) string {
	names := map[int]string{
		netlink.NUD_INCOMPLETE: "incomplete", netlink.NUD_REACHABLE: "reachable", netlink.NUD_STALE: "stale",
		netlink.NUD_DELAY: "delay", netlink.NUD_PROBE: "probe", netlink.NUD_FAILED: "failed",
		netlink.NUD_NOARP: "noarp", netlink.NUD_PERMANENT: "permanent",
	}
	var out []string
	for bit, n := range names {
		if s&bit != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return fmt.Sprintf("%#x", s)
	}
	return strings.Join(out, "|")
}
