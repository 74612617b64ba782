// Command vpcctl is the vpcchain operator CLI:
//
//	vpcctl max-pods --instance-type m5.large [--prefix-delegation] [--custom-networking] [--max-eni N] [--cni-cap]
//	vpcctl max-pods --all [...]
//	vpcctl status [--socket /var/run/vpcchain/ipamd.sock] [--timeout 5s]
//
// Errors go to stderr with exit code 1; usage errors exit with 2.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
