// Package cloud is the warm-pool daemon's client of EC2 and the instance
// metadata service (IMDS), built on aws-sdk-go-v2. It shapes the calls the
// daemon makes (a client-side token bucket per call class in front of the
// SDK's retryer), makes ENI creation leak-proof (idempotent create, rollback
// on a failed attach, recovery of lost responses), sweeps leaked ENIs and
// counts every call for metrics.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go/middleware"

	"github.com/vpcchain/vpcchain/internal/instancelimits"
)

// Tag keys on the ENIs the daemon creates. The first three are the AWS VPC
// CNI's, so IAM policies and tooling written for it keep working.
const (
	TagInstanceID  = "node.k8s.amazonaws.com/instance_id"
	TagCreatedAt   = "node.k8s.amazonaws.com/createdAt"
	TagClusterName = "cluster.k8s.amazonaws.com/name"
	// TagCreateToken carries the ClientToken of the CreateNetworkInterface
	// call, so an ENI whose create response was lost can be found again;
	// it also marks the ENI as made by vpcchain for the leak sweep.
	TagCreateToken = "vpcchain.io/create-token"
	// TagNoManage=true on an ENI tells the daemon to leave it alone (the
	// AWS VPC CNI's tag).
	TagNoManage = "node.k8s.amazonaws.com/no_manage"
)

// Defaults of Options.
const (
	DefaultHTTPTimeout   = 10 * time.Second
	DefaultMutatingQPS   = 5
	DefaultMutatingBurst = 10
	DefaultDescribeQPS   = 10
	DefaultDescribeBurst = 20
	DefaultMaxAttempts   = 10
	DefaultMaxBackoff    = 10 * time.Second
	// TransientMaxBackoff caps one backoff after an error that is not
	// throttling (5xx, a timeout, a dropped connection): nothing asks the
	// client to slow down, and a daemon starting waits on its describes.
	TransientMaxBackoff  = time.Second
	DefaultDetachTimeout = time.Minute
)

// Options configure a Client. Zero values take the defaults above.
type Options struct {
	// EC2Endpoint is the base endpoint URL; "" uses the SDK's endpoint for
	// Region.
	EC2Endpoint string
	// IMDSEndpoint is the metadata service; "" uses the SDK default
	// (http://169.254.169.254).
	IMDSEndpoint string
	// Region is the EC2 region; "" reads it from IMDS.
	Region string
	// Credentials sign EC2 calls; nil uses the SDK's default chain
	// (environment, web identity/IRSA, shared files, instance role).
	Credentials aws.CredentialsProvider
	// HTTPTimeout bounds one HTTP attempt.
	HTTPTimeout time.Duration

	// Client-side token buckets, one for mutating calls and one for
	// Describe* calls (EC2 throttles the two classes separately). Every
	// attempt, retries included, takes a token. A negative QPS disables the
	// bucket.
	MutatingQPS   float64
	MutatingBurst int
	DescribeQPS   float64
	DescribeBurst int

	// MaxAttempts is the SDK retryer's attempt limit per call (exponential
	// backoff with jitter on throttling, 5xx and connection errors, and a
	// sending rate that adapts to throttling); MaxBackoff caps one backoff
	// delay.
	MaxAttempts int
	MaxBackoff  time.Duration
	// DetachTimeout bounds the wait for a detached ENI to become available
	// before it is deleted.
	DetachTimeout time.Duration

	// ClusterName is tagged on created ENIs and scopes the leak sweep.
	ClusterName string
	Logf        func(string, ...any)
	// ObserveCall, if set, is told of every EC2 call once it is over
	// (retries and client-side rate-limit waits included): the action, how
	// long the caller waited and the final error (nil on success). It feeds
	// the latency and error metrics; it must not block.
	ObserveCall func(action string, took time.Duration, err error)
}

func (o Options) withDefaults() Options {
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = DefaultHTTPTimeout
	}
	if o.MutatingQPS == 0 {
		o.MutatingQPS = DefaultMutatingQPS
	}
	if o.MutatingBurst <= 0 {
		o.MutatingBurst = DefaultMutatingBurst
	}
	if o.DescribeQPS == 0 {
		o.DescribeQPS = DefaultDescribeQPS
	}
	if o.DescribeBurst <= 0 {
		o.DescribeBurst = DefaultDescribeBurst
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.DetachTimeout <= 0 {
		o.DetachTimeout = DefaultDetachTimeout
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// Client talks to EC2 and IMDS for one node. It is safe for concurrent use.
type Client struct {
	o        Options
	region   string
	ec2      ec2Ops
	imds     *imds.Client
	mutating *bucket
	describe *bucket
	now      func() time.Time
	logf     func(string, ...any)

	mu          sync.Mutex
	stats       map[string]int64
	subnetCIDRs map[string]netip.Prefix // subnet CIDRs never change
	limits      map[string]instancelimits.Limits
}

// New builds a Client. With no Region it asks IMDS for it.
func New(ctx context.Context, o Options) (*Client, error) {
	o = o.withDefaults()
	c := &Client{o: o, now: time.Now, logf: o.Logf, stats: map[string]int64{},
		subnetCIDRs: map[string]netip.Prefix{}, limits: map[string]instancelimits.Limits{},
		mutating: newBucket(o.MutatingQPS, o.MutatingBurst), describe: newBucket(o.DescribeQPS, o.DescribeBurst)}
	c.imds = imds.New(imds.Options{Endpoint: o.IMDSEndpoint})
	c.region = o.Region
	if c.region == "" {
		out, err := c.imds.GetRegion(ctx, &imds.GetRegionInput{})
		if err != nil {
			return nil, fmt.Errorf("read region from IMDS: %w", err)
		}
		c.region = out.Region
	}

	httpClient := awshttp.NewBuildableClient().WithTimeout(o.HTTPTimeout)
	retryer := func() aws.Retryer {
		// Adaptive: once EC2 answers with throttling, the client also slows
		// its own sending rate (a token bucket the SDK tunes from the
		// answers), so nodes that together overrun the account's budget back
		// off instead of each retrying at full speed.
		return retry.NewAdaptiveMode(func(ao *retry.AdaptiveModeOptions) {
			ao.StandardOptions = append(ao.StandardOptions, func(so *retry.StandardOptions) {
				so.MaxAttempts = o.MaxAttempts
				so.MaxBackoff = o.MaxBackoff
				so.Backoff = newBackoff(o.MaxBackoff)
			})
		})
	}
	var cfg aws.Config
	if o.Credentials != nil {
		cfg = aws.Config{Credentials: o.Credentials}
	} else {
		opts := []func(*config.LoadOptions) error{config.WithRegion(c.region)}
		if o.IMDSEndpoint != "" {
			// The instance-role credentials come from the same IMDS.
			opts = append(opts, config.WithEC2IMDSEndpoint(o.IMDSEndpoint))
		}
		var err error
		if cfg, err = config.LoadDefaultConfig(ctx, opts...); err != nil {
			return nil, fmt.Errorf("load AWS credentials: %w", err)
		}
	}
	cfg.Region = c.region
	cfg.HTTPClient = httpClient
	cfg.Retryer = retryer
	c.ec2 = opsOf(ec2.NewFromConfig(cfg, func(eo *ec2.Options) {
		if o.EC2Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.EC2Endpoint)
		}
		eo.APIOptions = append(eo.APIOptions, c.addMiddleware)
	}))
	return c, nil
}

// Region is the region the client talks to.
func (c *Client) Region() string { return c.region }

// Stats returns counters since the client was made: one per EC2 action
// (HTTP attempts sent, retries included), "throttles" (attempts EC2
// answered with a throttling code), "errors" (calls that failed after
// retries), "ratelimited" (attempts that waited for the client-side bucket)
// and "ratelimit_wait_ms" (total time waited).
func (c *Client) Stats() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.stats))
	for k, v := range c.stats {
		out[k] = v
	}
	return out
}

// Throttles is how many attempts EC2 answered with a throttling code so far,
// retried ones included: the daemon's sign that the account is over its
// budget even when the SDK's retries got the call through.
func (c *Client) Throttles() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats["throttles"]
}

func (c *Client) count(key string, n int64) {
	c.mu.Lock()
	c.stats[key] += n
	c.mu.Unlock()
}

// isMutating says which bucket an action draws from, as EC2 classifies it.
func isMutating(action string) bool {
	return !strings.HasPrefix(action, "Describe") && !strings.HasPrefix(action, "Get")
}

// addMiddleware installs, per attempt (after the retryer, before signing),
// the token bucket and the counters; and once per call the error counter and
// the ObserveCall hook.
func (c *Client) addMiddleware(stack *middleware.Stack) error {
	attempt := middleware.FinalizeMiddlewareFunc("vpcchainRateLimit", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		op := awsmiddleware.GetOperationName(ctx)
		b := c.describe
		if isMutating(op) {
			b = c.mutating
		}
		waited, err := b.wait(ctx)
		if waited > 0 {
			c.count("ratelimited", 1)
			c.count("ratelimit_wait_ms", waited.Milliseconds())
		}
		if err != nil {
			return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("wait for client-side EC2 rate limit: %w", err)
		}
		c.count(op, 1)
		out, md, err := next.HandleFinalize(ctx, in)
		if err != nil && IsThrottle(err) {
			c.count("throttles", 1)
		}
		return out, md, err
	})
	if err := stack.Finalize.Insert(attempt, "Retry", middleware.After); err != nil {
		if err := stack.Finalize.Add(attempt, middleware.After); err != nil {
			return err
		}
	}
	action := stack.ID() // the stack is named after the operation
	call := middleware.InitializeMiddlewareFunc("vpcchainErrors", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
		start := time.Now()
		out, md, err := next.HandleInitialize(ctx, in)
		if err != nil {
			c.count("errors", 1)
		}
		if c.o.ObserveCall != nil {
			op := action
			if name := middleware.GetOperationName(ctx); name != "" {
				op = name
			}
			c.o.ObserveCall(op, time.Since(start), err)
		}
		return out, md, err
	})
	return stack.Initialize.Add(call, middleware.Before)
}

// cleanupContext is for undoing a half-done change: it survives the
// caller's cancellation, because giving up half-way is how ENIs leak.
func (c *Client) cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.o.DetachTimeout+30*time.Second)
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var errNoENI = errors.New("EC2 returned no network interface")
