package podeni

import (
	"context"
	"time"
)

// DeclareLoop declares the feature until ctx ends, every interval: the
// CNINode may not exist yet, or be made again (a Node deleted and
// registered anew). room says whether the node can take a trunk ENI now
// (and why not): the AWS VPC CNI declares the feature only then, so the
// controller never fails to attach one for lack of a slot. Each change of
// outcome is logged once.
func DeclareLoop(ctx context.Context, c *Client, interval time.Duration, room func() (bool, string), logf func(string, ...any)) {
	last := ""
	for {
		say := "declared " + FeatureSGP + " on CNINode " + c.node
		if ok, why := room(); !ok {
			say = "not declaring " + FeatureSGP + ": " + why
		} else if err := c.Declare(ctx); err != nil {
			say = "declaring " + FeatureSGP + " (retried every " + interval.String() + "): " + err.Error()
		}
		if say != last && ctx.Err() == nil {
			logf("security groups for pods: %s", say)
			last = say
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
