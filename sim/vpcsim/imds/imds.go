// Package imds is the VPC simulator's EC2 Instance Metadata Service (IMDSv2).
//
// One Server holds the metadata of many instances. The simulator opens one
// listener per node (169.254.169.254:80 inside the node's network namespace)
// and serves HandlerFor(instanceID) on it, so the caller is identified by the
// listener its request arrived on, as on EC2.
//
// The service behaves like IMDSv2 with tokens required: a session token is
// obtained with PUT /latest/api/token and must accompany every GET. Network
// state changes become visible only after a configurable lag: the simulator
// calls Publish after every change, and requests are answered from the newest
// snapshot published at or before now-Lag.
package imds

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Header names and limits of the IMDSv2 session-token protocol.
const (
	TokenPath      = "/latest/api/token"
	TokenHeader    = "X-aws-ec2-metadata-token"
	TokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	MaxTokenTTL    = 21600 * time.Second

	// IdentityDocumentVersion is the "version" of the instance identity document.
	IdentityDocumentVersion = "2017-09-30"
	// DefaultArchitecture is reported when Metadata.Architecture is empty.
	DefaultArchitecture = "x86_64"
)

// Metadata is the metadata of one instance as IMDS shows it.
type Metadata struct {
	InstanceID   string
	InstanceType string
	Region       string
	AZ           string
	AccountID    string
	ImageID      string
	// LocalIPv4 is the primary private IPv4 address. When empty, the first
	// address of the primary ENI (device 0) is used.
	LocalIPv4 string
	// MAC is the MAC of the primary ENI. When empty, the MAC of the ENI with
	// device number 0 is used.
	MAC string
	// VPCID is the instance's VPC. When empty, the primary ENI's is used.
	VPCID string
	// VPCCIDRs are the VPC's IPv4 CIDR blocks, primary first;
	// VPCIPv6CIDRs its IPv6 blocks (none: the paths are absent).
	VPCCIDRs     []string
	VPCIPv6CIDRs []string
	// ENIs are the attached network interfaces, in any order (IMDS lists
	// them by device number).
	ENIs []ENIMetadata

	// InstanceProfile is the IAM role of the instance profile, whose
	// temporary credentials IMDS hands out under
	// iam/security-credentials/; none when empty.
	InstanceProfile string

	// Architecture for the identity document; DefaultArchitecture if empty.
	Architecture string
	// PendingTime for the identity document; when zero, the time of the
	// instance's first Publish (UTC, whole seconds) is used.
	PendingTime time.Time
}

// ENIMetadata is one attached network interface.
type ENIMetadata struct {
	MAC          string
	InterfaceID  string
	DeviceNumber int
	NetworkCard  int
	SubnetID     string
	SubnetCIDR   string
	// VPCID of the ENI; Metadata.VPCID when empty.
	VPCID            string
	SecurityGroupIDs []string
	// LocalIPv4s lists the primary private IPv4 address first, then the
	// secondaries.
	LocalIPv4s []string
	// IPv4Prefixes are the delegated /28 prefixes (ipv4-prefix 404s when
	// there are none).
	IPv4Prefixes []string
	// IPv6s, IPv6Prefixes (/80s) and the subnet's IPv6 block: their paths
	// (ipv6s, ipv6-prefix, subnet-ipv6-cidr-blocks) 404 when empty.
	IPv6s          []string
	IPv6Prefixes   []string
	SubnetIPv6CIDR string
}

// Clone returns a deep copy of m.
func (m Metadata) Clone() Metadata {
	c := m
	c.VPCCIDRs = slices.Clone(m.VPCCIDRs)
	c.VPCIPv6CIDRs = slices.Clone(m.VPCIPv6CIDRs)
	if m.ENIs != nil {
		c.ENIs = make([]ENIMetadata, len(m.ENIs))
		for i, e := range m.ENIs {
			c.ENIs[i] = e.Clone()
		}
	}
	return c
}

// Clone returns a deep copy of e.
func (e ENIMetadata) Clone() ENIMetadata {
	c := e
	c.SecurityGroupIDs = slices.Clone(e.SecurityGroupIDs)
	c.LocalIPv4s = slices.Clone(e.LocalIPv4s)
	c.IPv4Prefixes = slices.Clone(e.IPv4Prefixes)
	c.IPv6s = slices.Clone(e.IPv6s)
	c.IPv6Prefixes = slices.Clone(e.IPv6Prefixes)
	return c
}

// Options configure a Server.
type Options struct {
	// Lag is how long a published change takes to become visible.
	Lag time.Duration
	// Now is the clock (time.Now when nil). It stamps published snapshots,
	// decides which snapshot is visible and when tokens expire.
	Now func() time.Time
}

// Server serves the instance metadata of many instances.
type Server struct {
	now func() time.Time
	lag atomic.Int64 // time.Duration

	mu        sync.RWMutex
	instances map[string]*instance
}

type instance struct {
	requests atomic.Int64

	mu       sync.Mutex
	snaps    []snapshot // oldest first; snaps[0] is the one visible at the last prune
	pending  time.Time  // default PendingTime: first Publish
	tokens   map[string]time.Time
	sweepAt  int
	everSeen bool
}

type snapshot struct {
	at   time.Time
	md   *Metadata // normalized private copy, never mutated
	root *node     // rendered tree, never mutated
}

// New returns a Server.
func New(opts Options) *Server {
	s := &Server{now: opts.Now, instances: make(map[string]*instance)}
	if s.now == nil {
		s.now = time.Now
	}
	s.SetLag(opts.Lag)
	return s
}

// SetLag changes the propagation lag at runtime (negative means 0). Snapshots
// already dropped under a shorter lag are not recovered when it grows: the
// oldest one kept is then shown until newer ones are old enough.
func (s *Server) SetLag(d time.Duration) {
	s.lag.Store(int64(max(d, 0)))
}

// Lag returns the current propagation lag.
func (s *Server) Lag() time.Duration { return time.Duration(s.lag.Load()) }

func (s *Server) cutoff() time.Time { return s.now().Add(-s.Lag()) }

// instance returns the state of id, creating it when create is set.
func (s *Server) instance(id string, create bool) *instance {
	s.mu.RLock()
	in := s.instances[id]
	s.mu.RUnlock()
	if in != nil || !create {
		return in
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if in = s.instances[id]; in == nil {
		in = &instance{tokens: make(map[string]time.Time)}
		s.instances[id] = in
	}
	return in
}

// Publish records the network state of instanceID as of now. IMDS shows it
// once it is Lag old (the first snapshot of an instance is shown at once).
// md is copied deeply; the caller may keep mutating its own value. An empty
// md.InstanceID is set to instanceID.
func (s *Server) Publish(instanceID string, md Metadata) {
	in := s.instance(instanceID, true)
	at := s.now()
	c := md.Clone()
	if c.InstanceID == "" {
		c.InstanceID = instanceID
	}

	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.everSeen {
		in.everSeen = true
		in.pending = at.UTC().Truncate(time.Second)
	}
	if n := len(in.snaps); n > 0 && at.Before(in.snaps[n-1].at) {
		at = in.snaps[n-1].at // keep history ordered if the clock steps back
	}
	normalize(&c, in.pending)
	in.snaps = append(in.snaps, snapshot{at: at, md: &c, root: buildTree(&c)})
	in.visibleLocked(s.cutoff())
}

// visibleLocked returns the snapshot visible at cutoff and drops the ones it
// supersedes. ok is false when nothing was ever published.
func (in *instance) visibleLocked(cutoff time.Time) (snapshot, bool) {
	if len(in.snaps) == 0 {
		return snapshot{}, false
	}
	k := 0
	for i := len(in.snaps) - 1; i > 0; i-- {
		if !in.snaps[i].at.After(cutoff) {
			k = i
			break
		}
	}
	if k > 0 {
		n := copy(in.snaps, in.snaps[k:])
		clear(in.snaps[n:])
		in.snaps = in.snaps[:n]
	}
	return in.snaps[0], true
}

func (s *Server) visible(in *instance) (snapshot, bool) {
	cutoff := s.cutoff()
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.visibleLocked(cutoff)
}

// Visible returns a deep copy of the metadata IMDS currently serves for
// instanceID (after normalization: ENIs sorted, defaults filled in).
func (s *Server) Visible(instanceID string) (Metadata, bool) {
	in := s.instance(instanceID, false)
	if in == nil {
		return Metadata{}, false
	}
	snap, ok := s.visible(in)
	if !ok {
		return Metadata{}, false
	}
	return snap.md.Clone(), true
}

// Requests returns how many HTTP requests (token PUTs included, refused ones
// too) arrived on instanceID's handler.
func (s *Server) Requests(instanceID string) int64 {
	if in := s.instance(instanceID, false); in != nil {
		return in.requests.Load()
	}
	return 0
}

// Remove forgets an instance (terminated): its snapshots, tokens and request
// count. Its handler then answers 404 (and 401 to old tokens).
func (s *Server) Remove(instanceID string) {
	s.mu.Lock()
	delete(s.instances, instanceID)
	s.mu.Unlock()
}

// history returns how many snapshots instanceID retains (for tests).
func (s *Server) history(instanceID string) int {
	in := s.instance(instanceID, false)
	if in == nil {
		return 0
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.snaps)
}

// normalize sorts ENIs by device number and fills derived fields.
func normalize(m *Metadata, pending time.Time) {
	slices.SortStableFunc(m.ENIs, func(a, b ENIMetadata) int {
		return cmp.Or(cmp.Compare(a.DeviceNumber, b.DeviceNumber), cmp.Compare(a.NetworkCard, b.NetworkCard))
	})
	var primary *ENIMetadata
	for i := range m.ENIs {
		e := &m.ENIs[i]
		if m.MAC != "" && e.MAC == m.MAC {
			primary = e
			break
		}
		if m.MAC == "" && e.DeviceNumber == 0 && e.NetworkCard == 0 {
			primary = e
			break
		}
	}
	if primary == nil && m.MAC == "" && len(m.ENIs) > 0 {
		primary = &m.ENIs[0]
	}
	if primary != nil {
		if m.MAC == "" {
			m.MAC = primary.MAC
		}
		if m.LocalIPv4 == "" && len(primary.LocalIPv4s) > 0 {
			m.LocalIPv4 = primary.LocalIPv4s[0]
		}
		if m.VPCID == "" {
			m.VPCID = primary.VPCID
		}
	}
	for i := range m.ENIs {
		if m.ENIs[i].VPCID == "" {
			m.ENIs[i].VPCID = m.VPCID
		}
	}
	if m.Architecture == "" {
		m.Architecture = DefaultArchitecture
	}
	if m.PendingTime.IsZero() {
		m.PendingTime = pending
	}
}
