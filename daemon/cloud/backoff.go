package cloud

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// backoff is the SDK's exponential backoff with jitter, capped at maxDelay after
// throttling (EC2 asks the account to slow down) and at
// TransientMaxBackoff after any other retryable error. A 10 s pause after a
// 5xx made a daemon restarted while EC2 answered 5xx now and then take
// 30 s and more to serve, the AWS VPC CNI (the SDK's 3 attempts, then its
// own loop) a few seconds (docs/benchmarks.md, "Faults, side by side").
type backoff struct {
	throttled, transient retry.BackoffDelayer
	isThrottle           retry.IsErrorThrottles
}

func newBackoff(maxDelay time.Duration) *backoff {
	return &backoff{
		throttled:  retry.NewExponentialJitterBackoff(maxDelay),
		transient:  retry.NewExponentialJitterBackoff(min(maxDelay, TransientMaxBackoff)),
		isThrottle: retry.IsErrorThrottles(retry.DefaultThrottles),
	}
}

func (b *backoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	if b.isThrottle.IsErrorThrottle(err).Bool() {
		return b.throttled.BackoffDelay(attempt, err)
	}
	return b.transient.BackoffDelay(attempt, err)
}
