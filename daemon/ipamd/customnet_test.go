package ipamd

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type recordedEvents struct {
	mu  sync.Mutex
	got []string
}

func (r *recordedEvents) Event(typ, reason, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, typ+" "+reason+": "+msg)
}

func (r *recordedEvents) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

// Custom networking as the AWS VPC CNI documents it: secondary ENIs in the
// ENIConfig's subnet with its security groups, none on the primary ENI;
// an ENIConfig that cannot be used creates nothing and says why; a changed
// one applies to new ENIs only; max pods is the calculator's.
func TestCustomNetworking(t *testing.T) {
	f := newFixture(t, map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n", "WARM_IP_TARGET": "1"})
	f.now = time.Now() // ENI ages come from EC2's clock
	c := f.sim.Cloud
	vpc := c.Subnets()[0].VPCID
	if err := c.AddVPCCIDR(vpc, "100.64.0.0/16"); err != nil {
		t.Fatal(err)
	}
	podsA, _ := c.AddSubnet(vpc, "100.64.0.0/19", "us-west-2a", nil)
	podsA2, _ := c.AddSubnet(vpc, "100.64.64.0/19", "us-west-2a", nil)
	podsB, _ := c.AddSubnet(vpc, "100.64.32.0/19", "us-west-2b", nil)
	sg, _ := c.AddSecurityGroup(vpc)
	otherVPC, _ := c.AddVPC("172.16.0.0/16")
	foreignSG, _ := c.AddSecurityGroup(otherVPC)
	ev := &recordedEvents{}
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock, Logf: t.Logf, Events: ev})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	enisInEC2 := func() int {
		n := 0
		for _, e := range c.ENIs() {
			if e.InstanceID == f.node.InstanceID || e.Status == "available" {
				n++
			}
		}
		return n
	}
	refused := func(when, want string) {
		t.Helper()
		settle(t, d)
		if ready, reason, _ := d.Ready(); ready || !strings.Contains(reason, want) {
			t.Errorf("%s: ready %v, %q; want not ready, naming %q", when, ready, reason, want)
		}
		var none *ErrNoAddress
		if _, err := d.Add(key("early"), "default", "early", ""); !errors.As(err, &none) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: ADD: %v; want no address, naming %q", when, err, want)
		}
		if n := enisInEC2(); n != 1 {
			t.Errorf("%s: %d ENIs in EC2, want the primary only (nothing half-created)", when, n)
		}
		if p := d.Introspect().GetCustomNetworking().GetProblem(); !strings.Contains(p, want) {
			t.Errorf("%s: status says %q, want %q", when, p, want)
		}
	}

	refused("before the ENIConfig is known", "waiting for the node's ENIConfig")
	d.SetENIConfig(ctx, ENIConfig{Name: "us-west-2a", From: `label "topology.kubernetes.io/zone"`})
	refused("missing ENIConfig", `ENIConfig "us-west-2a" (label "topology.kubernetes.io/zone") does not exist`)
	if !strings.Contains(ev.last(), "Warning ENIConfigNotUsable") {
		t.Errorf("no Warning event on the node: %q", ev.last())
	}
	for _, bad := range []struct {
		name string
		cfg  ENIConfig
		want string
	}{
		{"subnet of another AZ", ENIConfig{Found: true, Subnet: podsB}, "is in availability zone us-west-2b, the node in us-west-2a"},
		{"no such subnet", ENIConfig{Found: true, Subnet: "subnet-0123456789abcdef0"}, "subnet subnet-0123456789abcdef0 does not exist"},
		{"group of another VPC", ENIConfig{Found: true, Subnet: podsA, SecurityGroups: []string{foreignSG}}, "security group " + foreignSG + " is in " + otherVPC},
		{"no such group", ENIConfig{Found: true, Subnet: podsA, SecurityGroups: []string{"sg-0123456789abcdef0"}}, "sg-0123456789abcdef0"},
		{"malformed, as the kube side reports it", ENIConfig{Found: true, Problem: `spec.subnet "10.0.0.0/24" is not a subnet ID`}, "is not a subnet ID"},
	} {
		bad.cfg.Name, bad.cfg.From = "us-west-2a", "label"
		d.SetENIConfig(ctx, bad.cfg)
		refused(bad.name, bad.want)
	}

	// A usable ENIConfig: the node recovers by itself.
	d.SetENIConfig(ctx, ENIConfig{Name: "us-west-2a", From: "label", Found: true, Subnet: podsA, SecurityGroups: []string{sg}})
	settle(t, d)
	if ready, reason, _ := d.Ready(); !ready {
		t.Fatalf("not ready with a usable ENIConfig: %s", reason)
	}
	if !strings.Contains(ev.last(), "Normal ENIConfigInUse") {
		t.Errorf("no Normal event on recovery: %q", ev.last())
	}
	inA := netip.MustParsePrefix("100.64.0.0/19")
	a, err := d.Add(key("p0"), "default", "p0", "")
	if err != nil || !inA.Contains(a.IP) {
		t.Fatalf("first pod: %v, %v; want an address in the ENIConfig's subnet %s", a.IP, err, inA)
	}
	for _, e := range c.ENIs() {
		switch {
		case e.InstanceID != f.node.InstanceID:
		case e.DeviceIndex == 0 && len(e.Secondary) > 0:
			t.Errorf("the primary ENI holds %d secondary addresses; custom networking gives it none", len(e.Secondary))
		case e.DeviceIndex > 0 && (e.SubnetID != podsA || len(e.Groups) != 1 || e.Groups[0] != sg):
			t.Errorf("ENI %s in %s with groups %v; want %s with [%s]", e.ID, e.SubnetID, e.Groups, podsA, sg)
		}
	}

	// A changed ENIConfig applies to new ENIs only.
	d.SetENIConfig(ctx, ENIConfig{Name: "us-west-2a", From: "label", Found: true, Subnet: podsA2})
	n := 1 + fillNode(t, d, 1, 40)
	bySubnet := map[string][]string{}
	primaryGroups := ""
	for _, e := range c.ENIs() {
		switch {
		case e.InstanceID != f.node.InstanceID:
		case e.DeviceIndex == 0:
			primaryGroups = strings.Join(e.Groups, ",")
		default:
			bySubnet[e.SubnetID] = append(bySubnet[e.SubnetID], strings.Join(e.Groups, ","))
		}
	}
	// No groups in the ENIConfig: the primary ENI's, as the AWS VPC CNI.
	if len(bySubnet[podsA]) != 1 || bySubnet[podsA][0] != sg || len(bySubnet[podsA2]) != 1 || bySubnet[podsA2][0] != primaryGroups {
		t.Errorf("ENIs by subnet (groups) %v: want the first unchanged in %s with %s, the next in %s with the primary's %s",
			bySubnet, podsA, sg, podsA2, primaryGroups)
	}
	// EC2's table and the max-pods calculator: an m5.large has 3 ENIs of
	// 10 addresses; with custom networking 2 x 9 = 18 pod addresses, max
	// pods 20.
	if n != 18 {
		t.Errorf("served %d pods, want 18 (2 secondary ENIs x 9)", n)
	}
	if mp := d.Introspect().GetMaxPods(); mp != 20 {
		t.Errorf("max pods %d, want 20 (the calculator's m5.large with custom networking)", mp)
	}
}

// gatedCloud fails or holds the security-group lookups, to order a
// recheck against a newer ENIConfig.
type gatedCloud struct {
	Cloud
	lookup func() error // called before each SecurityGroupVPCs
}

func (g *gatedCloud) SecurityGroupVPCs(ctx context.Context, ids []string) (map[string]string, error) {
	if err := g.lookup(); err != nil {
		return nil, err
	}
	return g.Cloud.SecurityGroupVPCs(ctx, ids)
}

// A recheck after a transient EC2 error that finishes after a newer
// ENIConfig arrived must not bring the old one back: new ENIs go where
// the newer one says.
func TestENIConfigRecheckDoesNotUndoANewerOne(t *testing.T) {
	f := newFixture(t, map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n", "WARM_IP_TARGET": "1"})
	f.now = time.Now()
	c := f.sim.Cloud
	vpc := c.Subnets()[0].VPCID
	if err := c.AddVPCCIDR(vpc, "100.64.0.0/16"); err != nil {
		t.Fatal(err)
	}
	older, _ := c.AddSubnet(vpc, "100.64.0.0/19", "us-west-2a", nil)
	newer, _ := c.AddSubnet(vpc, "100.64.64.0/19", "us-west-2a", nil)
	sg, _ := c.AddSecurityGroup(vpc)

	entered, release := make(chan struct{}), make(chan struct{})
	calls := 0
	gc := &gatedCloud{Cloud: f.cloud, lookup: func() error {
		calls++
		switch calls {
		case 1:
			return errors.New("RequestLimitExceeded") // transient: rechecked later
		case 2:
			close(entered)
			<-release
		}
		return nil
	}}
	d, err := New(context.Background(), Options{Config: f.cfg, Cloud: gc, Host: f.host, Now: f.clock, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()

	d.SetENIConfig(ctx, ENIConfig{Name: "pods", From: "label", Found: true, Subnet: older, SecurityGroups: []string{sg}})
	if p := d.Introspect().GetCustomNetworking().GetProblem(); !strings.Contains(p, "RequestLimitExceeded") {
		t.Fatalf("status says %q, want the transient EC2 error", p)
	}
	rechecked := make(chan struct{})
	go func() { defer close(rechecked); d.recheckENIConfig(ctx) }()
	<-entered
	// The newer ENIConfig names no groups: its check does not wait.
	d.SetENIConfig(ctx, ENIConfig{Name: "pods", From: "label", Found: true, Subnet: newer})
	close(release)
	<-rechecked

	if s := d.Introspect().GetCustomNetworking().GetSubnet(); s != newer {
		t.Errorf("status says new ENIs go to %s, want the newer ENIConfig's %s", s, newer)
	}
	settle(t, d)
	for _, e := range c.ENIs() {
		if e.InstanceID == f.node.InstanceID && e.DeviceIndex > 0 && e.SubnetID != newer {
			t.Errorf("ENI %s created in %s, want the newer ENIConfig's %s", e.ID, e.SubnetID, newer)
		}
	}
}

// An ENIConfig may name more than 5 security groups: Amazon VPC's quota of
// security groups per network interface is 5 by default and an account
// can have it raised to 16. Within the account's quota the ENIs carry
// them all; over it, EC2's refusal
// (SecurityGroupsPerInterfaceLimitExceeded) is what a pod is told.
func TestCustomNetworkingSecurityGroupQuota(t *testing.T) {
	tests := []struct {
		name  string
		quota int
		ok    bool
	}{
		{"quota raised to 16", 16, true},
		{"default quota of 5", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, map[string]string{"AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true", "MY_NODE_NAME": "n", "WARM_IP_TARGET": "1"})
			f.now = time.Now()
			c := f.sim.Cloud
			if err := c.SetSecurityGroupsPerInterface(tt.quota); err != nil {
				t.Fatal(err)
			}
			vpc := c.Subnets()[0].VPCID
			if err := c.AddVPCCIDR(vpc, "100.64.0.0/16"); err != nil {
				t.Fatal(err)
			}
			pods, _ := c.AddSubnet(vpc, "100.64.0.0/19", "us-west-2a", nil)
			var groups []string
			for range 6 {
				g, err := c.AddSecurityGroup(vpc)
				if err != nil {
					t.Fatal(err)
				}
				groups = append(groups, g)
			}
			d, err := New(context.Background(), Options{Config: f.cfg, Cloud: f.cloud, Host: f.host, Now: f.clock, Logf: t.Logf, Events: &recordedEvents{}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			d.SetENIConfig(context.Background(), ENIConfig{Name: "us-west-2a", From: "label", Found: true, Subnet: pods, SecurityGroups: groups})
			settle(t, d)
			_, err = d.Add(key("p0"), "default", "p0", "")
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "SecurityGroupsPerInterfaceLimitExceeded") {
					t.Errorf("ADD: %v; want EC2's SecurityGroupsPerInterfaceLimitExceeded", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range c.ENIs() {
				if e.InstanceID == f.node.InstanceID && e.DeviceIndex > 0 && !slices.Equal(e.Groups, groups) {
					t.Errorf("ENI %s has groups %v, want the ENIConfig's %v", e.ID, e.Groups, groups)
				}
			}
		})
	}
}
