// Package e2e runs the built binaries and the VPC simulator inside network
// namespaces the tests create; nothing in the root namespace is changed.
package e2e

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("end-to-end tests need root: they create network namespaces")
	}
}

// Interrupt cleanup: t.Cleanup does not run when the test binary is killed
// by SIGINT/SIGTERM, so everything a run creates (daemons, simulators,
// namespaces) also registers here, and TestMain tears it down on a signal.
var (
	interruptMu   sync.Mutex
	interruptNext int
	interruptFns  = map[int]func(){}
)

// signalsHandled is set while a test handles SIGINT/SIGTERM itself.
var signalsHandled atomic.Bool

// onInterrupt registers f to run if the run is interrupted; the returned
// func unregisters it (call it from the normal cleanup).
func onInterrupt(f func()) func() {
	interruptMu.Lock()
	defer interruptMu.Unlock()
	id := interruptNext
	interruptNext++
	interruptFns[id] = f
	return func() {
		interruptMu.Lock()
		delete(interruptFns, id)
		interruptMu.Unlock()
	}
}

func TestMain(m *testing.M) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		var s os.Signal
		for s = range sigs {
			// A test that stops on a signal by design (make cluster's
			// TestClusterUp) tears down in order itself.
			if !signalsHandled.Load() {
				break
			}
		}
		fmt.Fprintf(os.Stderr, "e2e: %v: removing everything this run created\n", s)
		interruptMu.Lock()
		// Newest first: daemons and pods before the simulator under them.
		for id := interruptNext - 1; id >= 0; id-- {
			if f, ok := interruptFns[id]; ok {
				f()
			}
		}
		os.Exit(1)
	}()
	os.Exit(m.Run())
}
