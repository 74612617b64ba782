// Branch ENIs: ENIs associated with a trunk ENI by a VLAN id. EC2 carries
// a branch's traffic over the trunk's link as 802.1Q frames tagged with
// that id and treats the branch as an ENI of its own, so the router gives
// each branch a VLAN sub-interface of the trunk's router link and handles
// that like an ENI's link: routes of the branch's addresses through it, a
// permanent neighbour entry for its MAC, strict reverse-path filtering (the
// source/destination check: only the branch's addresses, only with its
// tag) and the branch's own security groups (securitygroups.go matches the
// sub-interface). Untagged frames stay the trunk's own.

package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Branch describes a branch ENI to associate with an attached trunk ENI.
type Branch struct {
	ID        string           // unique in the fabric, like an ENI's
	MAC       net.HardwareAddr // the branch's MAC: the source of its frames
	VLANID    int              // 802.1Q VLAN id on the trunk's link, 1-4094
	PrimaryIP netip.Addr       // inside Subnet
	Subnet    netip.Prefix     // the branch's subnet (masked IPv4 prefix)
}

// ErrNoVLAN wraps the error of associating a branch on a kernel without
// 802.1Q VLAN links.
var ErrNoVLAN = errors.New("the kernel has no 802.1Q VLAN links (module 8021q), which branch ENIs need")

// AssociateBranch makes the router deliver b's primary IP through trunk
// trunkID's link, tagged with b.VLANID, and accept from that link, with
// that tag, only b's addresses. The trunk must be attached; its node needs
// a VLAN link with the id on the trunk's eth<N> to take part. Secondary
// IPs and prefixes are set with SetENIAddresses (which also brings source
// groups' member sets up to date) and security groups with
// SetSecurityGroups, by the branch's ID as for an ENI. On error nothing is
// left behind.
func (f *Fabric) AssociateBranch(trunkID string, b Branch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	t, ok := f.enis[trunkID]
	if !ok || t.trunk != "" {
		return fmt.Errorf("dataplane: branch %s: %q is not an attached trunk ENI", b.ID, trunkID)
	}
	if err := f.validateBranchLocked(t, b); err != nil {
		return err
	}
	if err := f.addSubnetLocked(b.Subnet); err != nil {
		return err
	}
	tl, err := f.rtr.LinkByName(t.rlink)
	if err != nil {
		return fmt.Errorf("dataplane: trunk link %s: %w", t.rlink, err)
	}
	rname := f.routerLinkName(b.ID)
	mac := append(net.HardwareAddr(nil), b.MAC...)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = rname
	attrs.MTU = ENIMTU
	attrs.ParentIndex = tl.Attrs().Index
	if err := f.rtr.LinkAdd(&netlink.Vlan{LinkAttrs: attrs, VlanId: b.VLANID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w: %w", ErrNoVLAN, err)
		}
		return fmt.Errorf("dataplane: branch %s: VLAN %d on %s: %w", b.ID, b.VLANID, t.rlink, err)
	}
	fail := func(err error) error {
		if l, lerr := f.rtr.LinkByName(rname); lerr == nil {
			if derr := f.rtr.LinkDel(l); derr != nil {
				err = errors.Join(err, fmt.Errorf("rollback: %w", derr))
			}
		}
		return fmt.Errorf("dataplane: branch %s: %w", b.ID, err)
	}
	// As an ENI's router link, proxy ARP answers for the gateway; but
	// rp_filter is 0, the source/destination check is the rpfilter match
	// of the raw table (renderBranchRPFLocked): EC2's router answers ARP
	// for the gateway on a branch whatever address asks, and a trunking
	// CNI asks from its VLAN link, which has no address of its own (the
	// kernel's rp_filter would check the asking address).
	if _, err := f.wireRouterLink(rname, mac, b.PrimaryIP, "0"); err != nil {
		return fail(err)
	}
	f.enis[b.ID] = &eniState{
		ENI:       ENI{ID: b.ID, MAC: mac, PrimaryIP: b.PrimaryIP, Subnet: b.Subnet},
		node:      t.node,
		rlink:     rname,
		trunk:     t.ID,
		vlan:      b.VLANID,
		secondary: map[netip.Addr]struct{}{},
		prefixes:  map[netip.Prefix]struct{}{},
		ipv6:      map[netip.Addr]struct{}{},
		prefixes6: map[netip.Prefix]struct{}{},
	}
	f.rlinkNames[rname] = b.ID
	if err := f.renderBranchRPFLocked(); err != nil {
		delete(f.enis, b.ID)
		delete(f.rlinkNames, rname)
		return fail(err)
	}
	return nil
}

// renderBranchRPFLocked writes the router's IPv4 raw table: for each
// branch's sub-interface the strict reverse-path check its rp_filter does
// not do (only the branch's addresses, only with its tag), for IP only.
func (f *Fabric) renderBranchRPFLocked() error {
	var ids []string
	for id, e := range f.enis {
		if e.trunk != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var b strings.Builder
	b.WriteString("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, id := range ids {
		fmt.Fprintf(&b, "-A PREROUTING -i %s -m rpfilter --invert -j DROP\n", f.enis[id].rlink)
	}
	b.WriteString("COMMIT\n")
	if err := iptablesRestore(f.rtrName, "iptables-restore", b.String()); err != nil {
		return fmt.Errorf("branch source checks in the router: %w", err)
	}
	return nil
}

func (f *Fabric) validateBranchLocked(t *eniState, b Branch) error {
	if err := f.validateNewLocked("branch", b.ID, b.MAC); err != nil {
		return err
	}
	if b.VLANID < 1 || b.VLANID > 4094 {
		return fmt.Errorf("dataplane: branch %s: invalid VLAN id %d", b.ID, b.VLANID)
	}
	for _, id := range f.branchesLocked(t.ID) {
		if f.enis[id].vlan == b.VLANID {
			return fmt.Errorf("dataplane: branch %s: VLAN %d on trunk %s already used by %s", b.ID, b.VLANID, t.ID, id)
		}
	}
	return f.validatePrimaryLocked(b.ID, b.PrimaryIP, b.Subnet)
}

// DisassociateBranch removes a branch: its VLAN sub-interface, and with it
// the routes and neighbour entry of its addresses and its security groups'
// rules' effect.
func (f *Fabric) DisassociateBranch(branchID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	e, ok := f.enis[branchID]
	if !ok || e.trunk == "" {
		return fmt.Errorf("dataplane: unknown branch %q", branchID)
	}
	return f.detachLocked(e)
}

// BranchVLAN returns an associated branch's trunk ENI and VLAN id.
func (f *Fabric) BranchVLAN(branchID string) (trunkID string, vlan int, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.enis[branchID]
	if !ok || e.trunk == "" {
		return "", 0, false
	}
	return e.trunk, e.vlan, true
}

// branchesLocked lists the IDs of a trunk's branches, sorted.
func (f *Fabric) branchesLocked(trunkID string) []string {
	var out []string
	for id, e := range f.enis {
		if e.trunk == trunkID && trunkID != "" {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
