package hostnet

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/vpcchain/vpcchain/internal/snat"
)

// Host is the node's networking in the current network namespace, as the
// warm-pool daemon uses it (its ipamd.Host): each method is this package's
// function of the same name.
type Host struct{}

func (Host) SetupNode(mac net.HardwareAddr, mtu int) error { return SetupNode(mac, mtu) }
func (Host) SetupNodeIPv6(mac net.HardwareAddr) error      { return SetupNodeIPv6(mac) }
func (Host) SetupENI(ctx context.Context, e ENI, t time.Duration) (string, error) {
	return SetupENI(ctx, e, t)
}
func (Host) TeardownENI(e ENI) error                              { return TeardownENI(e) }
func (Host) LinkExists(name string) bool                          { return LinkExists(name) }
func (Host) SetupSNAT(c snat.NodeConfig, pods []netip.Addr) error { return SetupSNAT(c, pods) }
func (Host) PruneSNATPods(keep func(netip.Addr) bool) error       { return PruneSNATPods(keep) }
func (Host) RemoveSNATPod(ip netip.Addr) error                    { return RemoveSNATPod(ip) }

// PrimaryLinkName is the name of the link with the primary ENI's MAC.
func (Host) PrimaryLinkName(mac net.HardwareAddr) (string, error) {
	l, err := LinkByMAC(mac)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}
