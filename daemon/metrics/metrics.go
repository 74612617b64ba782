// Package metrics holds the warm-pool daemon's Prometheus collectors, on a
// registry of their own (never the global default one):
//
//   - pool gauges and the daemon's event counters, read from the daemon at
//     scrape time (so they always agree with introspection);
//   - EC2 request counters, read from the cloud client's counters at scrape
//     time;
//   - EC2 call latency and errors by action (and error code), fed by the
//     cloud client's middleware through ObserveEC2Call;
//   - allocation latency, fed by Daemon.Add through ObserveAllocation.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vpcchain/vpcchain/daemon/pool"
)

// Namespace prefixes every metric name.
const Namespace = "vpcchain"

// PoolSource is what the pool collector reads at scrape time (*ipamd.Daemon).
type PoolSource interface {
	// Stats is the pool as introspection reports it.
	Stats() pool.Stats
	// Counters are the daemon's event counters since start (add, del,
	// add_no_address, pool_<action>, reconcile_*...).
	Counters() map[string]int64
}

// EC2Source is what the EC2 collector reads at scrape time (*cloud.Client):
// a counter per EC2 action (HTTP attempts, retries included) plus the
// special keys below.
type EC2Source interface {
	Stats() map[string]int64
}

// Special (non-action) keys of EC2Source.Stats.
const (
	ec2Throttles       = "throttles"
	ec2Errors          = "errors"
	ec2RateLimited     = "ratelimited"
	ec2RateLimitWaitMS = "ratelimit_wait_ms"
)

// Metrics is the daemon's registry and the collectors fed by events.
type Metrics struct {
	reg         *prometheus.Registry
	ec2Duration *prometheus.HistogramVec
	ec2Errors   *prometheus.CounterVec
	allocation  prometheus.Histogram
}

// New makes a registry holding the standard Go runtime and process
// collectors (go_*, process_*) and the event-fed vpcchain collectors. The
// scrape-time collectors of the pool and of EC2 are added with RegisterPool
// and RegisterEC2 once their sources exist.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ec2Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "ec2_request_duration_seconds",
			Help: "Duration of EC2 calls by action, as the daemon waited for them: retries and client-side rate-limit waits included, failed calls included.",
			// 5ms .. ~41s: simulator calls are milliseconds, a throttled
			// call with backoffs tens of seconds.
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"action"}),
		ec2Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "ec2_errors_total",
			Help: "EC2 calls that failed after retries, by action and EC2 error code (or Timeout, Canceled, RequestSendError, Unknown when EC2 gave no code).",
		}, []string{"action", "code"}),
		allocation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "allocation_duration_seconds",
			Help: "Time the daemon took to hand an address to a pod (successful IPAM ADDs: lock wait and the durable write included).",
			// 50µs .. ~1.6s
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), // go_* and process_*, unprefixed as usual
		m.ec2Duration, m.ec2Errors, m.allocation,
	)
	return m
}

// Registry is the registry to serve (or gather in tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

// RegisterPool adds the collector reading pool gauges and event counters
// from src at scrape time.
func (m *Metrics) RegisterPool(src PoolSource) error { return m.reg.Register(NewPoolCollector(src)) }

// RegisterEC2 adds the collector reading the EC2 client's counters at scrape
// time.
func (m *Metrics) RegisterEC2(src EC2Source) error { return m.reg.Register(NewEC2Collector(src)) }

// ObserveEC2Call records one finished EC2 call (cloud.Options.ObserveCall).
func (m *Metrics) ObserveEC2Call(action string, took time.Duration, err error) {
	m.ec2Duration.WithLabelValues(action).Observe(took.Seconds())
	if err != nil {
		m.ec2Errors.WithLabelValues(action, ErrorCode(err)).Inc()
	}
}

// ObserveAllocation records one successful allocation
// (ipamd.Options.ObserveAdd).
func (m *Metrics) ObserveAllocation(took time.Duration) {
	m.allocation.Observe(took.Seconds())
}

// ErrorCode is the label for a failed EC2 call: EC2's error code, else a
// small fixed set of classes so the label's values stay bounded.
func ErrorCode(err error) string {
	var ae smithy.APIError
	switch {
	case errors.As(err, &ae) && ae.ErrorCode() != "":
		return ae.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded):
		return "Timeout"
	case errors.Is(err, context.Canceled):
		return "Canceled"
	}
	var se *smithyhttp.RequestSendError
	if errors.As(err, &se) {
		return "RequestSendError"
	}
	return "Unknown"
}

// poolCollector reports the pool at scrape time.
type poolCollector struct {
	src PoolSource

	total, assigned, cooling, available *prometheus.Desc
	enis, maxENIs, maxPods              *prometheus.Desc
	prefixes, freePrefixes              *prometheus.Desc
	events                              *prometheus.Desc
}

// NewPoolCollector reports src's pool gauges and event counters.
func NewPoolCollector(src PoolSource) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &poolCollector{
		src:          src,
		total:        d("pool_addresses", "Pod addresses the node holds (secondary IPs, or every address of its /28 prefixes in prefix mode)."),
		assigned:     d("pool_addresses_assigned", "Pod addresses assigned to pods."),
		cooling:      d("pool_addresses_cooling", "Released pod addresses still in their IP_COOLDOWN_PERIOD."),
		available:    d("pool_addresses_available", "Pod addresses a new pod can get now (total - assigned - cooling)."),
		enis:         d("enis", "ENIs the daemon manages on the node (the primary included)."),
		maxENIs:      d("enis_max", "ENIs the node may have (instance type limit, or MAX_ENI)."),
		maxPods:      d("max_pods", "Pods the node allows (MAX_PODS or the instance type's formula)."),
		prefixes:     d("pool_prefixes", "Delegated /28 prefixes the node holds (prefix mode)."),
		freePrefixes: d("pool_prefixes_free", "Delegated /28 prefixes with no assigned and no cooling address (prefix mode)."),
		events:       d("events_total", "Daemon events since start: add, del, add_no_address, pool_<action>, pool_errors, reconcile_*, ...", "event"),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.assigned, c.cooling, c.available, c.enis, c.maxENIs, c.maxPods,
		c.prefixes, c.freePrefixes, c.events} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	g := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	g(c.total, st.Total)
	g(c.assigned, st.Assigned)
	g(c.cooling, st.Cooling)
	g(c.available, st.Available)
	g(c.enis, st.ENIs)
	g(c.maxENIs, st.MaxENIs)
	g(c.maxPods, st.MaxPods)
	g(c.prefixes, st.Prefixes)
	g(c.freePrefixes, st.FreePrefixes)
	counters := c.src.Counters()
	for _, k := range sortedKeys(counters) {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(counters[k]), k)
	}
}

// ec2Collector reports the cloud client's counters at scrape time.
type ec2Collector struct {
	src                                  EC2Source
	requests, throttles, limited, waited *prometheus.Desc
}

// NewEC2Collector reports src's EC2 request counters.
func NewEC2Collector(src EC2Source) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &ec2Collector{
		src:       src,
		requests:  d("ec2_requests_total", "HTTP requests sent to EC2 by action (every attempt, retries included).", "action"),
		throttles: d("ec2_throttled_requests_total", "EC2 requests answered with a throttling error code (RequestLimitExceeded...)."),
		limited:   d("ec2_ratelimited_requests_total", "EC2 requests that waited for the daemon's client-side token bucket."),
		waited:    d("ec2_ratelimit_wait_seconds_total", "Total time EC2 requests waited for the client-side token bucket."),
	}
}

func (c *ec2Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.throttles, c.limited, c.waited} {
		ch <- d
	}
}

func (c *ec2Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	// The special counters are always reported, 0 until it happens.
	ch <- prometheus.MustNewConstMetric(c.throttles, prometheus.CounterValue, float64(st[ec2Throttles]))
	ch <- prometheus.MustNewConstMetric(c.limited, prometheus.CounterValue, float64(st[ec2RateLimited]))
	ch <- prometheus.MustNewConstMetric(c.waited, prometheus.CounterValue, float64(st[ec2RateLimitWaitMS])/1000)
	for _, k := range sortedKeys(st) {
		switch k {
		case ec2Throttles, ec2RateLimited, ec2RateLimitWaitMS:
		case ec2Errors: // by action and code in ec2_errors_total
		default:
			ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(st[k]), k)
		}
	}
}

func sortedKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
