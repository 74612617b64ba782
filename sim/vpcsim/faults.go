package vpcsim

import (
	"strings"
	"sync"
	"time"
)

// Faults are the behaviour controls of the EC2 endpoint: latency, an
// account-wide token-bucket rate limit, injected errors, lost responses and
// denied actions. The zero value injects nothing.
type Faults struct {
	mu      sync.Mutex
	latency map[string]time.Duration
	buckets map[string]*bucket // "mutating", "describe"
	inject  map[string][]injection
	lose    map[string]int
	deny    map[string]bool
	calls   map[string]int64
	errors  map[string]int64
	// throttled counts RequestLimitExceeded answers by action.
	throttled map[string]int64
	// byNode holds the same two counts per node whose endpoint a request
	// came through (the accounting of one system among several).
	byNode map[string]*nodeCounts
	now    func() time.Time
	sleep  func(time.Duration)
}

type nodeCounts struct{ calls, throttled map[string]int64 }

type injection struct {
	code  string
	count int
}

type bucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens += now.Sub(b.last).Seconds() * b.rate
		if b.tokens > b.burst {
			b.tokens = b.burst
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

func newFaults() *Faults {
	return &Faults{latency: map[string]time.Duration{}, buckets: map[string]*bucket{},
		inject: map[string][]injection{}, lose: map[string]int{}, deny: map[string]bool{},
		calls: map[string]int64{}, errors: map[string]int64{}, throttled: map[string]int64{}, byNode: map[string]*nodeCounts{},
		now: time.Now, sleep: time.Sleep}
}

// IsMutating reports whether an action changes state (EC2 throttles
// mutating and describe calls in separate buckets).
func IsMutating(action string) bool {
	return !strings.HasPrefix(action, "Describe") && !strings.HasPrefix(action, "Get")
}

// SetLatency delays every call of action ("*" for all) by d.
func (f *Faults) SetLatency(action string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d <= 0 {
		delete(f.latency, action)
		return
	}
	f.latency[action] = d
}

// SetRateLimit configures the bucket of a class ("mutating" or "describe"):
// rate requests per second with the given burst; rate <= 0 removes it.
func (f *Faults) SetRateLimit(class string, rate float64, burst int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rate <= 0 {
		delete(f.buckets, class)
		return
	}
	f.buckets[class] = &bucket{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// Inject makes the next count calls of action ("*" for any) fail with code.
func (f *Faults) Inject(action, code string, count int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inject[action] = append(f.inject[action], injection{code: code, count: count})
}

// LoseResponses makes the next count calls of action succeed in the region
// but drop the connection before the response is written.
func (f *Faults) LoseResponses(action string, count int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lose[action] += count
}

// Deny answers UnauthorizedOperation for action (as a missing IAM
// permission would); allow=false lifts it.
func (f *Faults) Deny(action string, deny bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if deny {
		f.deny[action] = true
	} else {
		delete(f.deny, action)
	}
}

// Reset clears every fault (counters stay).
func (f *Faults) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = map[string]time.Duration{}
	f.buckets = map[string]*bucket{}
	f.inject = map[string][]injection{}
	f.lose = map[string]int{}
	f.deny = map[string]bool{}
}

// Calls returns how many requests of each action arrived (including
// refused ones); key "" sums all.
func (f *Faults) Calls() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return withTotal(f.calls)
}

// withTotal copies counts by action and adds their sum under "".
func withTotal(counts map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range counts {
		out[k] = v
		out[""] += v
	}
	return out
}

// CallsFrom is Calls for the requests that came through node's endpoint.
func (f *Faults) CallsFrom(node string) map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.byNode[node]; c != nil {
		return withTotal(c.calls)
	}
	return withTotal(nil)
}

// ThrottledFrom is Throttled for the requests that came through node's
// endpoint.
func (f *Faults) ThrottledFrom(node string) map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.byNode[node]; c != nil {
		return withTotal(c.throttled)
	}
	return withTotal(nil)
}

// Throttled returns how many requests of each action the rate limit
// refused; key "" sums all.
func (f *Faults) Throttled() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return withTotal(f.throttled)
}

// Errors returns how many responses carried each error code.
func (f *Faults) Errors() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int64{}
	for k, v := range f.errors {
		out[k] = v
	}
	return out
}

func (f *Faults) countError(code string) {
	f.mu.Lock()
	f.errors[code]++
	f.mu.Unlock()
}

// admit runs the pre-call faults for one request: latency, throttling,
// denial and injected errors. lose says the response must be dropped after
// the call is applied.
func (f *Faults) admit(node, action string) (aerr *APIError, lose bool) {
	f.mu.Lock()
	f.calls[action]++
	var nc *nodeCounts
	if node != "" {
		if nc = f.byNode[node]; nc == nil {
			nc = &nodeCounts{calls: map[string]int64{}, throttled: map[string]int64{}}
			f.byNode[node] = nc
		}
		nc.calls[action]++
	}
	d, ok := f.latency[action]
	if !ok {
		d = f.latency["*"]
	}
	f.mu.Unlock()
	if d > 0 {
		f.sleep(d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	class := "describe"
	if IsMutating(action) {
		class = "mutating"
	}
	if b := f.buckets[class]; b != nil && !b.take(f.now()) {
		f.throttled[action]++
		if nc != nil {
			nc.throttled[action]++
		}
		return apiErr("RequestLimitExceeded", "Request limit exceeded."), false
	}
	if f.deny[action] || f.deny["*"] {
		return apiErr("UnauthorizedOperation", "You are not authorized to perform this operation. (%s)", action), false
	}
	for _, key := range []string{action, "*"} {
		if q := f.inject[key]; len(q) > 0 {
			code := q[0].code
			if q[0].count--; q[0].count <= 0 {
				f.inject[key] = q[1:]
			}
			return apiErr(code, "injected fault for %s", action), false
		}
	}
	for _, key := range []string{action, "*"} {
		if f.lose[key] > 0 {
			f.lose[key]--
			return nil, true
		}
	}
	return nil, false
}
