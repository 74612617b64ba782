package cloud

import (
	"context"
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens per second up to burst. Waiters
// reserve a token (the balance may go negative) and sleep until it is
// theirs, so callers are served in arrival order. A nil bucket never waits.
// (golang.org/x/time/rate would do, but is not a dependency of the module.)
type bucket struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

// newBucket returns nil (no limit) for a negative rate.
func newBucket(rate float64, burst int) *bucket {
	if rate < 0 {
		return nil
	}
	return &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), now: time.Now}
}

// reserve takes a token and says how long to wait until it is due.
func (b *bucket) reserve() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// cancel gives back a reserved token that will not be used.
func (b *bucket) cancel() {
	b.mu.Lock()
	b.tokens = min(b.burst, b.tokens+1)
	b.mu.Unlock()
}

// wait blocks until a token is available and reports how long it waited.
func (b *bucket) wait(ctx context.Context) (time.Duration, error) {
	if b == nil {
		return 0, ctx.Err()
	}
	d := b.reserve()
	if d <= 0 {
		return 0, nil
	}
	if err := sleepCtx(ctx, d); err != nil {
		b.cancel()
		return 0, err
	}
	return d, nil
}
