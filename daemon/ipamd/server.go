package ipamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	ipamv1 "github.com/vpcchain/vpcchain/api/ipam/v1"
	"github.com/vpcchain/vpcchain/daemon/pool"
	"github.com/vpcchain/vpcchain/daemon/store"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

// Server is the daemon's front end on its socket: the IPAM API
// (api/ipam/v1) over ttrpc for the plugin, and the standard gRPC health
// service for probes and the installer. Both clients speak first, so the
// connection's first bytes tell them apart (an HTTP/2 preface is gRPC).
type Server struct {
	d      *Daemon
	ttrpc  *ttrpc.Server
	grpc   *grpc.Server
	health *health.Server

	mu      sync.Mutex
	ln      net.Listener
	stopped bool
}

// matchTimeout bounds how long a connection may stay silent before its
// protocol is known.
const matchTimeout = 10 * time.Second

// NewServer wraps d. Health answers SERVING only once d is ready.
func NewServer(d *Daemon) (*Server, error) {
	s := &Server{d: d, grpc: grpc.NewServer(), health: health.NewServer()}
	t, err := ipamclient.NewServer(s)
	if err != nil {
		return nil, err
	}
	s.ttrpc = t
	healthpb.RegisterHealthServer(s.grpc, s.health)
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok, _, _ := d.Ready(); ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ipamServiceName, st)
	return s, nil
}

// ipamServiceName is the IPAM service's protobuf name, for health checks
// of that service alone.
const ipamServiceName = "vpcchain.ipam.v1.IPAM"

// Serve answers on ln until Stop.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	m := cmux.New(ln)
	m.SetReadTimeout(matchTimeout)
	grpcL := m.Match(cmux.HTTP2())
	ttrpcL := m.Match(ttrpcFrame)
	go func() { _ = s.grpc.Serve(grpcL) }()
	go func() { _ = s.ttrpc.Serve(context.Background(), ttrpcL) }()
	err := m.Serve()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	return err
}

// ttrpcFrame matches a ttrpc client's first frame: it starts with the
// message length, big-endian, and ttrpc refuses messages of 4 MiB and more,
// so its first byte is 0. Anything else (silence included) is closed.
func ttrpcFrame(r io.Reader) bool {
	var b [1]byte
	n, err := io.ReadFull(r, b[:])
	return n == 1 && err == nil && b[0] == 0
}

// Stop ends every RPC in flight and closes the listeners.
func (s *Server) Stop() {
	s.health.Shutdown()
	s.mu.Lock()
	s.stopped = true
	if s.ln != nil {
		s.ln.Close() // cmux's Close leaves its listener open
	}
	s.mu.Unlock()
	s.grpc.Stop()
	_ = s.ttrpc.Close()
}

// keyOf validates a request's key (InvalidArgument naming the field): a key
// the daemon stores must be one a CNI runtime can send (ipamclient.ValidateKey),
// never NUL bytes, control characters or megabytes.
func keyOf(k *ipamv1.Key) (store.Key, error) {
	if k == nil {
		return store.Key{}, status.Error(codes.InvalidArgument,
			"key needs network name, container ID and interface name")
	}
	if err := ipamclient.ValidateKey(k.Network, k.ContainerId, k.Ifname); err != nil {
		return store.Key{}, status.Error(codes.InvalidArgument, "key: "+err.Error())
	}
	return store.Key{Network: k.Network, ContainerID: k.ContainerId, IfName: k.Ifname}, nil
}

func toProto(a Allocation) *ipamv1.Allocation {
	out := &ipamv1.Allocation{Ip: a.IP.String(), EniId: a.ENIID, DeviceNumber: int32(a.DeviceNumber),
		RouteTable: int32(a.RouteTable)}
	if a.Subnet.IsValid() {
		out.SubnetCidr = a.Subnet.String()
	}
	if a.SubnetGateway.IsValid() {
		out.SubnetGateway = a.SubnetGateway.String()
	}
	for _, c := range a.VPCCIDRs {
		out.VpcCidrs = append(out.VpcCidrs, c.String())
	}
	return out
}

// Add implements IPAM.Add.
func (s *Server) Add(ctx context.Context, r *ipamv1.AddRequest) (*ipamv1.AddReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	k, err := keyOf(r.GetKey())
	if err != nil {
		return nil, err
	}
	if err := ipamclient.ValidatePodInfo(r.GetPodNamespace(), r.GetPodName(), r.GetNetns()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	// A pod with a branch ENI takes no pool address.
	branch, requested, err := s.d.branchReply(ctx, r.GetPodNamespace(), r.GetPodName())
	if requested {
		return branch, err
	}
	a, err := s.d.Add(k, r.GetPodNamespace(), r.GetPodName(), r.GetNetns())
	var none *ErrNoAddress
	switch {
	case errors.As(err, &none):
		return nil, ipamclient.NoAddressStatus(none.Error())
	case err != nil:
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &ipamv1.AddReply{Allocation: toProto(a)}, nil
}

// Del implements IPAM.Del.
func (s *Server) Del(_ context.Context, r *ipamv1.DelRequest) (*ipamv1.DelReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	k, err := keyOf(r.GetKey())
	if err != nil {
		return nil, err
	}
	a, ok, err := s.d.Del(k)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if !ok {
		return &ipamv1.DelReply{}, nil
	}
	return &ipamv1.DelReply{Released: true, Allocation: toProto(a)}, nil
}

// Check implements IPAM.Check.
func (s *Server) Check(_ context.Context, r *ipamv1.CheckRequest) (*ipamv1.CheckReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	k, err := keyOf(r.GetKey())
	if err != nil {
		return nil, err
	}
	a, ok := s.d.Get(k)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s holds no address", k)
	}
	if r.GetIp() != "" {
		want, err := netip.ParseAddr(r.GetIp())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ip %q: %v", r.GetIp(), err)
		}
		if want != a.IP {
			return nil, status.Errorf(codes.NotFound, "%s holds %s, not %s", k, a.IP, want)
		}
	}
	return &ipamv1.CheckReply{Allocation: toProto(a)}, nil
}

// Status implements IPAM.Status.
func (s *Server) Status(_ context.Context, r *ipamv1.StatusRequest) (*ipamv1.StatusReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	// Ready means "can serve an ADD at all", not "has a free address now":
	// see Daemon.Ready.
	s.d.noteRPC("status")
	ready, reason, avail := s.d.Ready()
	return &ipamv1.StatusReply{Ready: ready, Reason: reason, Available: int32(avail)}, nil
}

// GC implements IPAM.GC.
func (s *Server) GC(_ context.Context, r *ipamv1.GCRequest) (*ipamv1.GCReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	if r.GetNetwork() == "" {
		return nil, status.Error(codes.InvalidArgument, "GC needs the network name")
	}
	s.d.noteRPC("gc")
	// Valid entries need no validation: one that is not a storable key
	// matches no allocation, which is what GC should do with it.
	valid := map[store.Key]bool{}
	for _, k := range r.GetValid() {
		valid[store.Key{Network: r.GetNetwork(), ContainerID: k.GetContainerId(), IfName: k.GetIfname()}] = true
	}
	released, err := s.d.GC(r.GetNetwork(), valid)
	out := &ipamv1.GCReply{}
	for _, k := range released {
		out.Released = append(out.Released, &ipamv1.Key{Network: k.Network, ContainerId: k.ContainerID, Ifname: k.IfName})
	}
	if err != nil {
		return out, status.Error(codes.Internal, fmt.Sprintf("GC: %v", err))
	}
	return out, nil
}

// Introspect implements IPAM.Introspect.
func (s *Server) Introspect(ctx context.Context, r *ipamv1.IntrospectRequest) (*ipamv1.IntrospectReply, error) {
	if err := ipamclient.CheckVersion(r.GetApiVersion()); err != nil {
		return nil, err
	}
	out := s.d.Introspect()
	pctx, cancel := context.WithTimeout(ctx, branchLookupTimeout)
	out.PodEni = s.d.introspectPodENI(pctx)
	cancel()
	return out, nil
}

// Introspect dumps the pool: ENIs, their addresses, allocations, stats.
func (d *Daemon) Introspect() *ipamv1.IntrospectReply {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := pool.ComputeStats(d.pcfg, d.snapshotLocked())
	out := &ipamv1.IntrospectReply{Mode: st.Mode.String(), Total: int32(st.Total), Assigned: int32(st.Assigned),
		Cooling: int32(st.Cooling), Available: int32(st.Available), MaxPods: int32(st.MaxPods),
		LastDecision: d.lastDecision.Reason}
	if d.cfg.IPv6 {
		// The /80 is the pool: what kubelet may run is what is left.
		_, _, avail := d.ipv6ReadyLocked()
		out.Mode, out.Total, out.Assigned, out.Cooling = "ipv6-prefix", int32(d.pcfg.MaxPods), int32(len(d.ledger.byKey)), 0
		out.Available, out.MaxPods, out.LastDecision = int32(avail), int32(d.pcfg.MaxPods), ""
	}
	for _, e := range d.ledger.enis {
		ie := &ipamv1.IntrospectENI{Id: e.id, DeviceNumber: int32(e.dev), Primary: e.primary,
			PrimaryIp: e.primaryIP.String(), RouteTable: int32(e.table()), SubnetCidr: e.subnet.String(),
			Origin: eniOrigin(e)}
		for ip := range e.ips {
			ie.Ips = append(ie.Ips, ip.String())
		}
		for p := range e.prefixes {
			ie.Prefixes = append(ie.Prefixes, p.String())
		}
		for p := range e.prefixes6 {
			ie.Prefixes = append(ie.Prefixes, p.String())
		}
		sort.Strings(ie.Ips)
		sort.Strings(ie.Prefixes)
		out.Enis = append(out.Enis, ie)
	}
	sort.Slice(out.Enis, func(i, j int) bool { return out.Enis[i].DeviceNumber < out.Enis[j].DeviceNumber })
	for k, a := range d.ledger.byKey {
		out.Allocations = append(out.Allocations, &ipamv1.IntrospectAllocation{
			Key: &ipamv1.Key{Network: k.Network, ContainerId: k.ContainerID, Ifname: k.IfName},
			Ip:  a.IP.String(), EniId: a.ENIID, PodNamespace: a.PodNamespace, PodName: a.PodName,
			AssignedUnix: a.AssignedAt.Unix()})
	}
	sort.Slice(out.Allocations, func(i, j int) bool {
		return netip.MustParseAddr(out.Allocations[i].Ip).Less(netip.MustParseAddr(out.Allocations[j].Ip))
	})
	if d.cfg.CustomNetworking {
		out.CustomNetworking = &ipamv1.IntrospectCustomNetworking{Eniconfig: d.custom.cfg.Name, ChosenBy: d.custom.cfg.From,
			Subnet: d.custom.subnetID, SecurityGroups: d.custom.groups, Problem: d.customNetworkReasonLocked()}
	}
	for _, p := range d.ledger.pendingReleases() {
		out.PendingReleases = append(out.PendingReleases, &ipamv1.IntrospectPendingRelease{EniId: p.eni, Items: p.items,
			Attempts: int32(p.attempts), LastError: p.lastErr, NextRetryUnix: p.next.Unix()})
	}
	for p := range d.ledger.lost {
		out.LostPrefixes = append(out.LostPrefixes, p.String())
	}
	sort.Strings(out.LostPrefixes)
	for _, f := range d.foreign {
		out.Unmanaged = append(out.Unmanaged, &ipamv1.IntrospectUnmanagedENI{Id: f.id, DeviceNumber: int32(f.dev),
			NetworkCard: int32(f.card), Reason: f.reason})
	}
	sort.Slice(out.Unmanaged, func(i, j int) bool {
		a, b := out.Unmanaged[i], out.Unmanaged[j]
		return a.NetworkCard < b.NetworkCard || a.NetworkCard == b.NetworkCard && a.DeviceNumber < b.DeviceNumber
	})
	return out
}
