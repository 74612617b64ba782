// Package veth holds what vpcchain's interface plugins share about their
// veths: the rule that names vpc-bridge's host end (name.go) and the alias
// that records which attachment owns it (owner.go).
package veth
