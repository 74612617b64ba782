//go:build !vpcbridge_faultinject

package main

// injectFault is a no-op in production builds. Tests build the plugin with
// -tags vpcbridge_faultinject to make a named step of ADD fail (faults_on.go)
// and prove that the rollback leaves nothing behind.
func injectFault(string) error { return nil }
