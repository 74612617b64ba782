package veth

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// The host veth carries an interface alias (IFLA_IFALIAS, `ip link show`
// prints it as "alias ...") that records which CNI attachment created it:
//
//	vpcchain:v1:<container ID>:<ifname>:<route table>
//
// The host veth name is derived from the pod's namespace/name, not from the
// container ID, so two sandboxes of the same pod (a restarted sandbox whose old
// DEL comes late, or an ADD retried after a crash) share one name. The alias
// lets vpc-bridge tell "left over by an earlier attempt for this very
// attachment" (safe to replace/delete) from "belongs to another sandbox"
// (never touch), and lets CHECK know which route table the pod was given.
// Felix ignores aliases; it only strips addresses from eni* links.

const aliasPrefix = "vpcchain:v1:"

// maxAliasContainerID bounds the container ID stored verbatim; longer IDs are
// stored as "#sha1-<hex>" so the alias stays far below the kernel's 255 bytes.
// '#' cannot occur in a CNI container ID, so the two forms never collide.
const maxAliasContainerID = 128

// Owner identifies the CNI attachment that owns a host veth.
type Owner struct {
	ContainerID string
	IfName      string
	// RouteTable is the table of the pod's from-pod rule (254 = main, no rule).
	RouteTable int
}

// Alias renders the owner as the interface alias to set on the host veth.
func (o Owner) Alias() string {
	return aliasPrefix + aliasContainerID(o.ContainerID) + ":" + o.IfName + ":" + strconv.Itoa(o.RouteTable)
}

// SameAttachment reports whether other names the same (container ID, ifname)
// attachment as o; the route table is not compared.
func (o Owner) SameAttachment(other Owner) bool {
	return aliasContainerID(o.ContainerID) == aliasContainerID(other.ContainerID) && o.IfName == other.IfName
}

// Owns reports whether link carries the alias of o's attachment.
func (o Owner) Owns(link netlink.Link) bool {
	other, ok := ParseAlias(link.Attrs().Alias)
	return ok && other.SameAttachment(o)
}

func (o Owner) String() string {
	return fmt.Sprintf("container %s ifname %s", o.ContainerID, o.IfName)
}

func aliasContainerID(id string) string {
	if len(id) <= maxAliasContainerID {
		return id
	}
	sum := sha1.Sum([]byte(id))
	return "#sha1-" + hex.EncodeToString(sum[:])
}

// ParseAlias parses an alias written by Owner.Alias. ok is false for
// any other alias (empty, or set by someone else). ContainerID may be the
// "#sha1-<hex>" form for very long IDs; compare with SameAttachment.
func ParseAlias(alias string) (owner Owner, ok bool) {
	rest, found := strings.CutPrefix(alias, aliasPrefix)
	if !found {
		return Owner{}, false
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return Owner{}, false
	}
	table, err := strconv.Atoi(parts[2])
	if err != nil || table < 0 {
		return Owner{}, false
	}
	return Owner{ContainerID: parts[0], IfName: parts[1], RouteTable: table}, true
}
