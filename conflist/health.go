package conflist

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// checkRPCTimeout bounds one health RPC.
const checkRPCTimeout = 3 * time.Second

// ErrNotServing: the daemon answered the health check, but not SERVING (it
// is still starting: IMDS, EC2, warm pool).
var ErrNotServing = errors.New("daemon not serving yet")

// CheckHealth asks the daemon on socket for its overall health (the standard
// grpc.health.v1 service, service ""). It returns the status the daemon
// answered, and an error unless that is SERVING: ErrNotServing (wrapped)
// when the daemon answered something else, or the cause when it could not
// be asked at all (no socket, nobody listening, timeout).
func CheckHealth(ctx context.Context, socket string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	unknown := healthpb.HealthCheckResponse_UNKNOWN
	fi, err := os.Stat(socket)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return unknown, fmt.Errorf("daemon socket %s: no such file (is the daemon running?)", socket)
	case err != nil:
		return unknown, fmt.Errorf("daemon socket %s: %w", socket, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return unknown, fmt.Errorf("daemon socket %s: not a socket (file mode %s)", socket, fi.Mode())
	}
	target := "unix:" + socket
	if filepath.IsAbs(socket) {
		target = "unix://" + socket
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return unknown, fmt.Errorf("daemon socket %s: %w", socket, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, checkRPCTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(rctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return unknown, fmt.Errorf("daemon socket %s: health check: %w", socket, err)
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return st, fmt.Errorf("daemon socket %s: health %s: %w", socket, st, ErrNotServing)
	}
	return healthpb.HealthCheckResponse_SERVING, nil
}

// WaitHealthy polls CheckHealth every interval until the daemon reports
// SERVING, ctx ends or timeout passes; the error then carries the last
// answer.
func WaitHealthy(ctx context.Context, socket string, timeout, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		_, err := CheckHealth(ctx, socket)
		if err == nil {
			return nil
		}
		// An attempt cut short by a deadline (ours, or the call's own on a
		// loaded machine) says nothing about the daemon: keep a real answer.
		if last == nil || (ctx.Err() == nil && status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded)) {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("daemon not healthy after %s: %w", timeout, last)
		case <-t.C:
		}
	}
}
