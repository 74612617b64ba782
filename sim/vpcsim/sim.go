package vpcsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim/dataplane"
	"github.com/vpcchain/vpcchain/sim/vpcsim/imds"
)

// Addresses the simulator serves inside every node namespace, as EC2 does.
var (
	IMDSAddr = netip.MustParseAddrPort("169.254.169.254:80")
	// EC2Addr stands for the regional endpoint as a node reaches it.
	EC2Addr = netip.MustParseAddrPort("169.254.169.10:80")
)

// NodeRole is the IAM role of every simulated instance's instance profile:
// software on a node gets temporary credentials from IMDS, as on EC2, with
// no keys configured.
const NodeRole = "vpcsim-node-role"

// Options configure a simulator.
type Options struct {
	Region string // default us-west-2
	// DataPlane builds network namespaces (needs root); without it only the
	// control plane runs, and IMDS is served per node on loopback.
	DataPlane bool
	// RunID is a short unique token naming every namespace of the run;
	// empty picks a random one.
	RunID string
	// IMDSLag delays what IMDS shows after a change (eventual consistency).
	IMDSLag time.Duration
	// SecurityGroupsPerInterface is the account's Amazon VPC quota of
	// security groups per network interface: 0 is EC2's default (5); an
	// account can have it raised to 16.
	SecurityGroupsPerInterface int
	// RulesPerSecurityGroup is the account's quota of inbound rules per
	// security group (IPv4 and IPv6 counted apart): 0 is EC2's default
	// (60); times SecurityGroupsPerInterface it stays within 1,000.
	RulesPerSecurityGroup int
	// Listen is the root-namespace address of the EC2 and control API
	// (default 127.0.0.1:0).
	Listen string
	Logf   func(format string, args ...any)
}

// Sim is a running simulator.
type Sim struct {
	Cloud  *Cloud
	Faults *Faults
	IMDS   *imds.Server
	Fabric *dataplane.Fabric // nil without a data plane
	ec2    *EC2Handler

	// EC2URL is the EC2 endpoint in the root namespace (loopback).
	EC2URL string

	mu        sync.Mutex
	listeners []net.Listener
	servers   []*http.Server
	nodes     map[string]Node
	closed    bool
}

// Node is a launched instance and where its endpoints are.
type Node struct {
	Name       string
	InstanceID string
	NetNS      string // namespace name ("" without data plane)
	NetNSPath  string
	// UTSNSPath is the node's UTS namespace ("" without data plane): in
	// it (nsenter --uts), the hostname is the node's name.
	UTSNSPath    string
	IMDSEndpoint string // as seen from where the node's software runs
	EC2Endpoint  string
}

// RandomRunID returns a 6-character run token.
func RandomRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start builds and serves a simulator. Close it to remove everything.
func Start(opts Options) (*Sim, error) {
	if opts.Region == "" {
		opts.Region = "us-west-2"
	}
	if opts.RunID == "" {
		opts.RunID = RandomRunID()
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Sim{Cloud: NewCloud(opts.Region), Faults: newFaults(), IMDS: imds.New(imds.Options{Lag: opts.IMDSLag}),
		nodes: map[string]Node{}}
	if opts.RulesPerSecurityGroup != 0 {
		if err := s.Cloud.SetRulesPerSecurityGroup(opts.RulesPerSecurityGroup); err != nil {
			return nil, err
		}
	}
	if opts.SecurityGroupsPerInterface != 0 {
		if err := s.Cloud.SetSecurityGroupsPerInterface(opts.SecurityGroupsPerInterface); err != nil {
			return nil, err
		}
	}
	s.ec2 = NewEC2Handler(s.Cloud, s.Faults)
	s.ec2.logf = opts.Logf
	s.Cloud.OnInstanceChange(func(n InstanceNetwork) { s.IMDS.Publish(n.InstanceID, toMetadata(n)) })
	if opts.DataPlane {
		f, err := dataplane.New(dataplane.Options{RunID: opts.RunID})
		if err != nil {
			return nil, fmt.Errorf("data plane: %w", err)
		}
		s.Fabric = f
		s.Cloud.SetDataPlane(&fabricAdapter{f: f, unwired: map[string]bool{}})
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/sim/", s.controlHandler())
	mux.Handle("/", s.ec2)
	s.serve(ln, mux)
	s.EC2URL = "http://" + ln.Addr().String()
	return s, nil
}

func (s *Sim) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.listeners = append(s.listeners, ln)
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// EC2Handler is the EC2 Query API handler (for tests that mount it).
func (s *Sim) EC2Handler() http.Handler { return s.ec2 }

// LaunchNode starts an instance and, with a data plane, its node namespace
// with IMDS and the EC2 endpoint reachable inside it.
func (s *Sim) LaunchNode(spec LaunchSpec) (Node, error) {
	id, err := s.Cloud.LaunchInstance(spec)
	if err != nil {
		return Node{}, err
	}
	name := spec.Name
	if name == "" {
		name = id
	}
	n := Node{Name: name, InstanceID: id}
	if s.Fabric != nil {
		n.NetNS, n.NetNSPath, n.UTSNSPath = s.Fabric.NodeNetNSName(name), s.Fabric.NodeNetNSPath(name), s.Fabric.NodeUTSNSPath(name)
		iln, err := s.Fabric.ListenTCP(name, IMDSAddr)
		if err != nil {
			_ = s.Cloud.TerminateInstance(id)
			return Node{}, fmt.Errorf("IMDS listener in node %s: %w", name, err)
		}
		s.serve(iln, s.IMDS.HandlerFor(id))
		eln, err := s.Fabric.ListenTCP(name, EC2Addr)
		if err != nil {
			_ = s.Cloud.TerminateInstance(id)
			return Node{}, fmt.Errorf("EC2 listener in node %s: %w", name, err)
		}
		s.serve(eln, s.ec2.forNode(name))
		n.IMDSEndpoint = "http://" + IMDSAddr.String()
		n.EC2Endpoint = "http://" + EC2Addr.String()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			_ = s.Cloud.TerminateInstance(id)
			return Node{}, err
		}
		s.serve(ln, s.IMDS.HandlerFor(id))
		n.IMDSEndpoint = "http://" + ln.Addr().String()
		n.EC2Endpoint = s.EC2URL
	}
	s.mu.Lock()
	s.nodes[name] = n
	s.mu.Unlock()
	return n, nil
}

// Nodes returns the launched nodes by name.
func (s *Sim) Nodes() map[string]Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Node{}
	for k, v := range s.nodes {
		out[k] = v
	}
	return out
}

// Close stops every server and removes every namespace of the run.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	servers := s.servers
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	var errs []error
	if s.Fabric != nil {
		errs = append(errs, s.Fabric.Close())
	}
	return errors.Join(errs...)
}

func toMetadata(n InstanceNetwork) imds.Metadata {
	md := imds.Metadata{InstanceID: n.InstanceID, InstanceType: n.InstanceType, Region: n.Region, AZ: n.AZ,
		AccountID: n.Account, ImageID: n.ImageID, LocalIPv4: n.PrimaryIP.String(), MAC: n.PrimaryMAC, VPCID: n.VPCID,
		PendingTime: n.Launched, InstanceProfile: NodeRole}
	for _, c := range n.VPCCIDRs {
		md.VPCCIDRs = append(md.VPCCIDRs, c.String())
	}
	if n.VPCIPv6CIDR.IsValid() {
		md.VPCIPv6CIDRs = []string{n.VPCIPv6CIDR.String()}
	}
	for _, e := range n.ENIs {
		em := imds.ENIMetadata{MAC: e.MAC, InterfaceID: e.ID, DeviceNumber: e.DeviceIndex, NetworkCard: e.NetworkCard, SubnetID: e.SubnetID,
			SubnetCIDR: e.SubnetCIDR.String(), VPCID: e.VPCID, SecurityGroupIDs: e.Groups,
			LocalIPv4s: []string{e.PrimaryIP.String()}}
		for _, a := range e.Secondary {
			em.LocalIPv4s = append(em.LocalIPv4s, a.String())
		}
		for _, p := range e.Prefixes {
			em.IPv4Prefixes = append(em.IPv4Prefixes, p.String())
		}
		for _, a := range e.IPv6s {
			em.IPv6s = append(em.IPv6s, a.String())
		}
		for _, p := range e.IPv6Prefixes {
			em.IPv6Prefixes = append(em.IPv6Prefixes, p.String())
		}
		if e.SubnetIPv6.IsValid() {
			em.SubnetIPv6CIDR = e.SubnetIPv6.String()
		}
		md.ENIs = append(md.ENIs, em)
	}
	return md
}

// fabricAdapter lets the control plane drive the namespace data plane.
type fabricAdapter struct {
	f *dataplane.Fabric
	// unwired are the branches associated on a kernel without 802.1Q: EC2's
	// answer does not depend on the machine the simulator runs on, so the
	// association stands (with a warning) and the branch carries no
	// traffic; tests that need its packets run in the kernel tier.
	mu      sync.Mutex
	unwired map[string]bool
}

func (a *fabricAdapter) AddSubnet(c netip.Prefix) error { return a.f.AddSubnet(c) }
func (a *fabricAdapter) AddNode(name string) error      { return a.f.AddNode(name) }
func (a *fabricAdapter) RemoveNode(name string) error   { return a.f.RemoveNode(name) }
func (a *fabricAdapter) AttachENI(node, id string, mac net.HardwareAddr, slot Slot, primary netip.Addr, subnet netip.Prefix) error {
	return a.f.AttachENI(node, dataplane.ENI{ID: id, MAC: mac, DeviceIndex: slot.Device, NetworkCard: slot.Card, PrimaryIP: primary, Subnet: subnet})
}
func (a *fabricAdapter) DetachENI(id string) error { return a.f.DetachENI(id) }
func (a *fabricAdapter) SetSecurityGroups(groups map[string][]Permission, eniGroups map[string][]string) error {
	out := make(map[string][]dataplane.Permission, len(groups))
	for g, ps := range groups {
		out[g] = []dataplane.Permission{}
		for _, p := range ps {
			out[g] = append(out[g], dataplane.Permission{Protocol: p.Protocol, FromPort: p.FromPort, ToPort: p.ToPort,
				CIDRs: p.CIDRs, Groups: p.Groups})
		}
	}
	return a.f.SetSecurityGroups(out, eniGroups)
}
func (a *fabricAdapter) SetENIAddresses(id string, sec []netip.Addr, pfx []netip.Prefix) error {
	if a.isUnwired(id) {
		return nil
	}
	return a.f.SetENIAddresses(id, sec, pfx)
}
func (a *fabricAdapter) AssociateBranch(trunkID, branchID string, mac net.HardwareAddr, vlan int, primary netip.Addr, subnet netip.Prefix) error {
	err := a.f.AssociateBranch(trunkID, dataplane.Branch{ID: branchID, MAC: mac, VLANID: vlan, PrimaryIP: primary, Subnet: subnet})
	if errors.Is(err, dataplane.ErrNoVLAN) {
		slog.Warn("vpcsim: branch associated without a data plane: it carries no traffic", "branch", branchID, "trunk", trunkID, "vlan", vlan, "err", err)
		a.mu.Lock()
		a.unwired[branchID] = true
		a.mu.Unlock()
		return nil
	}
	return err
}
func (a *fabricAdapter) DisassociateBranch(id string) error {
	a.mu.Lock()
	unwired := a.unwired[id]
	delete(a.unwired, id)
	a.mu.Unlock()
	if unwired {
		return nil
	}
	return a.f.DisassociateBranch(id)
}
func (a *fabricAdapter) isUnwired(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unwired[id]
}
func (a *fabricAdapter) SetENIIPv6(id string, addrs []netip.Addr, pfx []netip.Prefix) error {
	return a.f.SetENIIPv6(id, addrs, pfx)
}
