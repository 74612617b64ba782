package cloud

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

// After throttling the delay grows to the configured maximum; after a 5xx
// or another transient error it never passes TransientMaxBackoff.
func TestBackoffLongOnlyForThrottling(t *testing.T) {
	b := newBackoff(10 * time.Second)
	for _, tc := range []struct {
		name      string
		err       error
		longestOK time.Duration
		wantLong  bool // some delay at a high attempt exceeds TransientMaxBackoff
	}{
		{"RequestLimitExceeded", &smithy.GenericAPIError{Code: "RequestLimitExceeded"}, 10 * time.Second, true},
		{"Throttling", &smithy.GenericAPIError{Code: "Throttling"}, 10 * time.Second, true},
		{"InternalError", &smithy.GenericAPIError{Code: "InternalError"}, TransientMaxBackoff, false},
		{"Unavailable", &smithy.GenericAPIError{Code: "Unavailable"}, TransientMaxBackoff, false},
		{"connection reset", errors.New("read: connection reset by peer"), TransientMaxBackoff, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			long := false
			for i := 0; i < 200; i++ {
				d, err := b.BackoffDelay(8, tc.err)
				if err != nil {
					t.Fatal(err)
				}
				if d > tc.longestOK {
					t.Fatalf("attempt 8 after %v: %v, want at most %v", tc.err, d, tc.longestOK)
				}
				if d > TransientMaxBackoff {
					long = true
				}
			}
			if long != tc.wantLong {
				t.Errorf("after %v: a delay above %v in 200 draws = %v, want %v", tc.err, TransientMaxBackoff, long, tc.wantLong)
			}
		})
	}
}
