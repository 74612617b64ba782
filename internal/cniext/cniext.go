// Package cniext defines the vpcchain extension that the vpc-ipam plugin adds
// to its CNI result and that vpc-bridge reads.
//
// A pod whose address belongs to a secondary ENI must leave the node through
// that ENI (EC2 drops packets whose source address is not assigned to the ENI
// they leave by), so vpc-bridge installs a from-pod rule (priority 1536) that
// looks up the ENI's route table. The standard CNI result has no field for
// that table, so vpc-ipam adds one top-level key next to the standard ones:
//
//	{
//	  "cniVersion": "1.1.0",
//	  "ips": [{"address": "10.0.1.23/32", "gateway": "169.254.1.1"}],
//	  "vpcchain": {"routeTable": 1002, "eniID": "eni-0abc...", "deviceNumber": 2}
//	}
//
// For a pod with a branch ENI (security groups for pods) the extension
// carries "branch" instead: what vpc-bridge needs to wire the branch's VLAN.
//
// Other IPAM plugins (host-local, static, ...) do not write the key; the
// extension is then absent and the pod uses the main table (no 1536 rule).
// Only vpc-bridge reads the extension: its own result does not carry it, since
// chained plugins re-encode prevResult and would drop unknown keys anyway.
package cniext

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/vpcchain/vpcchain/internal/routing"
)

// Key is the top-level JSON key of the extension in an IPAM result.
const Key = "vpcchain"

// tableUnspec (RT_TABLE_UNSPEC) means "main" in the extension.
const tableUnspec = 0

// ErrDaemonUnreachable is the CNI error code (plugin-specific range, >= 100)
// by which an IPAM plugin may report on DEL that its daemon cannot be reached
// at all (socket missing, connection refused). vpc-bridge then succeeds once
// the host side is clean, as the reference does when ipamd is down. vpc-ipam
// itself does not need it: its DEL already succeeds in that case (the daemon
// reclaims the address through CNI GC or when the sandbox's netns is gone).
// Any other IPAM DEL error is returned so that the runtime retries.
const ErrDaemonUnreachable uint = 100

// Ext is the vpcchain extension object of an IPAM result.
type Ext struct {
	// RouteTable is the route table of the ENI that owns the pod's address:
	// 254 (or 0) = main, i.e. the primary ENI; anything else = a secondary
	// ENI, which gets a from-pod rule "from <ip>/32 lookup <RouteTable>".
	RouteTable int `json:"routeTable"`
	// ENIID is the EC2 ID of that ENI ("eni-..."); informational.
	ENIID string `json:"eniID,omitempty"`
	// DeviceNumber is the ENI's device index on the instance; informational.
	DeviceNumber int `json:"deviceNumber"`
	// Branch is set when the pod has a branch ENI of its own (security
	// groups for pods): vpc-bridge then wires it through a VLAN link of the
	// trunk instead of the node's ENIs, and RouteTable is unused.
	Branch *Branch `json:"branch,omitempty"`
}

// Branch is what vpc-bridge needs to wire a branch-ENI pod: the VLAN link's
// tag and MAC, the trunk's link (found by its MAC) and the subnet's router.
type Branch struct {
	ENIID string `json:"eniID"`
	// MAC is the branch ENI's: the VLAN link carries it, since EC2 delivers
	// the branch's frames to that MAC.
	MAC    string `json:"mac"`
	VLANID int    `json:"vlanID"`
	// SubnetGateway is the subnet's router (its first address), the next
	// hop of everything the pod sends.
	SubnetGateway string `json:"subnetGateway"`
	TrunkENIID    string `json:"trunkENIID,omitempty"`
	TrunkMAC      string `json:"trunkMAC"`
}

// Validate checks the values vpc-bridge acts on.
func (b *Branch) Validate() error {
	if b == nil {
		return nil
	}
	var errs []string
	if !strings.HasPrefix(b.ENIID, "eni-") {
		errs = append(errs, fmt.Sprintf("eniID %q is not an ENI ID", b.ENIID))
	}
	if _, err := net.ParseMAC(b.MAC); err != nil {
		errs = append(errs, fmt.Sprintf("mac %q: %v", b.MAC, err))
	}
	if _, err := net.ParseMAC(b.TrunkMAC); err != nil {
		errs = append(errs, fmt.Sprintf("trunkMAC %q: %v", b.TrunkMAC, err))
	}
	if b.VLANID < 1 || b.VLANID > 4094 {
		errs = append(errs, fmt.Sprintf("vlanID %d is out of range 1..4094", b.VLANID))
	}
	if gw := net.ParseIP(b.SubnetGateway); gw == nil || gw.To4() == nil {
		errs = append(errs, fmt.Sprintf("subnetGateway %q is not an IPv4 address", b.SubnetGateway))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s.branch: %s", Key, strings.Join(errs, "; "))
	}
	return nil
}

// Table returns the effective route table: the main table when the
// extension is nil or RouteTable is 0.
func (e *Ext) Table() int {
	if e == nil || e.RouteTable == tableUnspec {
		return routing.MainTable
	}
	return e.RouteTable
}

// UsesMainTable reports whether the pod's traffic uses the main table, i.e.
// no from-pod rule is needed.
func (e *Ext) UsesMainTable() bool { return e.Table() == routing.MainTable }

// Validate checks the extension's values; a nil extension is valid.
func (e *Ext) Validate() error {
	if e == nil {
		return nil
	}
	switch t := e.RouteTable; {
	case t < 0 || int64(t) > 0xffffffff:
		return fmt.Errorf("%s.routeTable %d is out of range: allowed 0 (main), 254 (main) or another table 1..4294967295", Key, t)
	case t == routing.DefaultTable || t == routing.LocalTable:
		return fmt.Errorf("%s.routeTable %d is a reserved kernel table (253 default, 255 local): use 254/0 for main or an ENI table", Key, t)
	}
	if e.ENIID != "" && !strings.HasPrefix(e.ENIID, "eni-") {
		return fmt.Errorf("%s.eniID %q is not an ENI ID: it must start with \"eni-\"", Key, e.ENIID)
	}
	if e.DeviceNumber < 0 {
		return fmt.Errorf("%s.deviceNumber %d is negative", Key, e.DeviceNumber)
	}
	return e.Branch.Validate()
}

// Parse decodes the raw stdout of an IPAM plugin: the standard result of any
// CNI version (converted to types/100) and the optional extension (nil when
// the key is absent or null).
func Parse(raw []byte) (*types100.Result, *Ext, error) {
	generic, err := create.CreateFromBytes(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot decode IPAM result: %w", err)
	}
	result, err := types100.NewResultFromResult(generic)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot convert IPAM result (cniVersion %s) to %s: %w", generic.Version(), types100.ImplementedSpecVersion, err)
	}
	var wrapper struct {
		Ext *Ext `json:"vpcchain"`
	}
	if err := json.Unmarshal(raw, &wrapper); err != nil {
		return nil, nil, fmt.Errorf("cannot decode %q extension of IPAM result: %w", Key, err)
	}
	if err := wrapper.Ext.Validate(); err != nil {
		return nil, nil, fmt.Errorf("invalid IPAM result: %w", err)
	}
	return result, wrapper.Ext, nil
}

// Marshal encodes result (any CNI result version; convert it first with
// GetAsVersion to the version of the network configuration) with ext added
// under Key. With a nil ext it is the plain result.
func Marshal(result types.Result, ext *Ext) ([]byte, error) {
	if result == nil {
		return nil, fmt.Errorf("cniext.Marshal: nil result")
	}
	if err := ext.Validate(); err != nil {
		return nil, err
	}
	plain, err := json.Marshal(result)
	if err != nil {
		return nil, err
	}
	if ext == nil {
		return plain, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(plain, &obj); err != nil {
		return nil, err
	}
	extJSON, err := json.Marshal(ext)
	if err != nil {
		return nil, err
	}
	obj[Key] = extJSON
	return json.Marshal(obj)
}

// PrintResult is the IPAM side's replacement for types.PrintResult: it
// converts result to cniVersion and writes it with ext to stdout.
func PrintResult(result types.Result, ext *Ext, cniVersion string) error {
	return WriteResult(os.Stdout, result, ext, cniVersion)
}

// WriteResult is PrintResult to any writer.
func WriteResult(w io.Writer, result types.Result, ext *Ext, cniVersion string) error {
	converted, err := result.GetAsVersion(cniVersion)
	if err != nil {
		return err
	}
	data, err := Marshal(converted, ext)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}
