// Package e2e runs the built binaries and the VPC simulator inside network
// namespaces the tests create; nothing in the root namespace is changed.
package e2e

import (
	"os"
	"testing"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("end-to-end tests need root: they create network namespaces")
	}
}
