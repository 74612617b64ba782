//go:build vpcbridge_faultinject

package main

import (
	"fmt"
	"os"
)

func injectFault(step string) error {
	if os.Getenv(FaultEnv) == step {
		return fmt.Errorf("vpc-bridge: injected fault at step %q", step)
	}
	return nil
}
