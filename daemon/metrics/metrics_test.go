package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vpcchain/vpcchain/daemon/pool"
)

// fakePool is a PoolSource whose values the test changes between scrapes.
type fakePool struct {
	mu       sync.Mutex
	stats    pool.Stats
	counters map[string]int64
}

func (f *fakePool) Stats() pool.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

func (f *fakePool) Counters() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int64{}
	for k, v := range f.counters {
		out[k] = v
	}
	return out
}

type fakeEC2 map[string]int64

func (f fakeEC2) Stats() map[string]int64 { return f }

func TestPoolCollector(t *testing.T) {
	src := &fakePool{
		stats:    pool.Stats{ENIs: 2, MaxENIs: 3, Total: 20, Assigned: 8, Cooling: 2, Available: 10, MaxPods: 29},
		counters: map[string]int64{"add": 9, "del": 1, "add_no_address": 3, "pool_assign_ips": 2},
	}
	c := NewPoolCollector(src)
	want := `
# HELP vpcchain_pool_addresses Pod addresses the node holds (secondary IPs, or every address of its /28 prefixes in prefix mode).
# TYPE vpcchain_pool_addresses gauge
vpcchain_pool_addresses 20
# HELP vpcchain_pool_addresses_assigned Pod addresses assigned to pods.
# TYPE vpcchain_pool_addresses_assigned gauge
vpcchain_pool_addresses_assigned 8
# HELP vpcchain_pool_addresses_available Pod addresses a new pod can get now (total - assigned - cooling).
# TYPE vpcchain_pool_addresses_available gauge
vpcchain_pool_addresses_available 10
# HELP vpcchain_pool_addresses_cooling Released pod addresses still in their IP_COOLDOWN_PERIOD.
# TYPE vpcchain_pool_addresses_cooling gauge
vpcchain_pool_addresses_cooling 2
# HELP vpcchain_enis ENIs the daemon manages on the node (the primary included).
# TYPE vpcchain_enis gauge
vpcchain_enis 2
# HELP vpcchain_enis_max ENIs the node may have (instance type limit, or MAX_ENI).
# TYPE vpcchain_enis_max gauge
vpcchain_enis_max 3
# HELP vpcchain_max_pods Pods the node allows (MAX_PODS or the instance type's formula).
# TYPE vpcchain_max_pods gauge
vpcchain_max_pods 29
# HELP vpcchain_events_total Daemon events since start: add, del, add_no_address, pool_<action>, pool_errors, reconcile_*, ...
# TYPE vpcchain_events_total counter
vpcchain_events_total{event="add"} 9
vpcchain_events_total{event="add_no_address"} 3
vpcchain_events_total{event="del"} 1
vpcchain_events_total{event="pool_assign_ips"} 2
`
	names := []string{"vpcchain_pool_addresses", "vpcchain_pool_addresses_assigned", "vpcchain_pool_addresses_available",
		"vpcchain_pool_addresses_cooling", "vpcchain_enis", "vpcchain_enis_max", "vpcchain_max_pods", "vpcchain_events_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// Values are read at scrape time: a change shows on the next scrape.
	src.mu.Lock()
	src.stats.Assigned, src.stats.Available = 9, 9
	src.counters["add"] = 10
	src.mu.Unlock()
	if err := testutil.CollectAndCompare(c, strings.NewReader(`
# HELP vpcchain_pool_addresses_assigned Pod addresses assigned to pods.
# TYPE vpcchain_pool_addresses_assigned gauge
vpcchain_pool_addresses_assigned 9
`), "vpcchain_pool_addresses_assigned"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c, "vpcchain_events_total"); n != 4 {
		t.Errorf("%d event series, want 4", n)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestEC2(t *testing.T) {
	m := New()
	if err := m.RegisterEC2(fakeEC2{"AssignPrivateIpAddresses": 4, "DescribeNetworkInterfaces": 7, "errors": 1,
		"throttles": 2, "ratelimited": 3, "ratelimit_wait_ms": 1500}); err != nil {
		t.Fatal(err)
	}
	m.ObserveEC2Call("AssignPrivateIpAddresses", 30*time.Millisecond, nil)
	m.ObserveEC2Call("AssignPrivateIpAddresses", 20*time.Millisecond, &smithy.GenericAPIError{Code: "RequestLimitExceeded"})
	m.ObserveEC2Call("CreateNetworkInterface", 2*time.Second, fmt.Errorf("wrapped: %w", &smithy.GenericAPIError{Code: "InsufficientFreeAddressesInSubnet"}))
	m.ObserveEC2Call("CreateNetworkInterface", time.Second, context.DeadlineExceeded)

	want := `
# HELP vpcchain_ec2_requests_total HTTP requests sent to EC2 by action (every attempt, retries included).
# TYPE vpcchain_ec2_requests_total counter
vpcchain_ec2_requests_total{action="AssignPrivateIpAddresses"} 4
vpcchain_ec2_requests_total{action="DescribeNetworkInterfaces"} 7
# HELP vpcchain_ec2_throttled_requests_total EC2 requests answered with a throttling error code (RequestLimitExceeded...).
# TYPE vpcchain_ec2_throttled_requests_total counter
vpcchain_ec2_throttled_requests_total 2
# HELP vpcchain_ec2_ratelimited_requests_total EC2 requests that waited for the daemon's client-side token bucket.
# TYPE vpcchain_ec2_ratelimited_requests_total counter
vpcchain_ec2_ratelimited_requests_total 3
# HELP vpcchain_ec2_ratelimit_wait_seconds_total Total time EC2 requests waited for the client-side token bucket.
# TYPE vpcchain_ec2_ratelimit_wait_seconds_total counter
vpcchain_ec2_ratelimit_wait_seconds_total 1.5
# HELP vpcchain_ec2_errors_total EC2 calls that failed after retries, by action and EC2 error code (or Timeout, Canceled, RequestSendError, Unknown when EC2 gave no code).
# TYPE vpcchain_ec2_errors_total counter
vpcchain_ec2_errors_total{action="AssignPrivateIpAddresses",code="RequestLimitExceeded"} 1
vpcchain_ec2_errors_total{action="CreateNetworkInterface",code="InsufficientFreeAddressesInSubnet"} 1
vpcchain_ec2_errors_total{action="CreateNetworkInterface",code="Timeout"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"vpcchain_ec2_requests_total", "vpcchain_ec2_throttled_requests_total", "vpcchain_ec2_ratelimited_requests_total",
		"vpcchain_ec2_ratelimit_wait_seconds_total", "vpcchain_ec2_errors_total"); err != nil {
		t.Fatal(err)
	}

	// The latency histogram: one series per action, every call observed.
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "vpcchain_ec2_request_duration_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			got[mm.GetLabel()[0].GetValue()] = mm.GetHistogram().GetSampleCount()
			if mm.GetLabel()[0].GetValue() == "CreateNetworkInterface" && mm.GetHistogram().GetSampleSum() != 3 {
				t.Errorf("CreateNetworkInterface duration sum %v, want 3", mm.GetHistogram().GetSampleSum())
			}
		}
	}
	if got["AssignPrivateIpAddresses"] != 2 || got["CreateNetworkInterface"] != 2 || len(got) != 2 {
		t.Errorf("duration sample counts %v", got)
	}
}

func TestAllocationAndServe(t *testing.T) {
	m := New()
	src := &fakePool{stats: pool.Stats{Total: 5, Assigned: 1, Available: 4}, counters: map[string]int64{"add": 1}}
	if err := m.RegisterPool(src); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterEC2(fakeEC2{}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{100 * time.Microsecond, 2 * time.Millisecond, 3 * time.Millisecond} {
		m.ObserveAllocation(d)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	body := string(b)
	for _, want := range []string{
		"vpcchain_allocation_duration_seconds_count 3",
		`vpcchain_allocation_duration_seconds_bucket{le="0.0001"} 1`,
		"vpcchain_pool_addresses 5",
		"vpcchain_pool_addresses_available 4",
		`vpcchain_events_total{event="add"} 1`,
		"vpcchain_ec2_throttled_requests_total 0",
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// A source registered twice is refused, not served twice.
	if err := m.RegisterPool(src); err == nil {
		t.Error("second RegisterPool accepted")
	}
}

func TestErrorCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&smithy.GenericAPIError{Code: "InvalidParameterValue"}, "InvalidParameterValue"},
		{fmt.Errorf("op: %w", context.Canceled), "Canceled"},
		{context.DeadlineExceeded, "Timeout"},
		{errors.New("boom"), "Unknown"},
	} {
		if got := ErrorCode(tt.err); got != tt.want {
			t.Errorf("ErrorCode(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
