package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pollInterval is how often waitForEndpoint looks at the status file.
const pollInterval = 50 * time.Millisecond

// kddEndpointID is the endpoint part of every Kubernetes-datastore workload
// endpoint's key: always "eth0", whatever CNI_IFNAME is (Calico's
// Kubernetes datastore names the endpoint so).
const kddEndpointID = "eth0"

// statusFile is Felix's endpoint-status file of a pod
// (libcalico-go names.WorkloadEndpointKeyToStatusFilename):
// "<dir>/k8s <ns>%2F<pod> eth0", each part url.PathEscape'd.
func statusFile(dir string, pod podRef) string {
	return filepath.Join(dir, url.PathEscape("k8s")+" "+url.PathEscape(pod.Namespace+"/"+pod.Name)+" "+url.PathEscape(kddEndpointID))
}

// endpointStatus is the file's JSON (libcalico-go epstatusfile.WorkloadEndpointStatus).
type endpointStatus struct {
	IfaceName string   `json:"ifaceName"`
	IPv4Nets  []string `json:"ipv4Nets"`
	IPv6Nets  []string `json:"ipv6Nets"`
}

// endpointReady reads the status file once: nil when it exists and names
// iface and one of addrs; otherwise an error saying what was found (Felix
// writes the file non-atomically, so partial JSON is just "not yet").
func endpointReady(path, iface string, addrs []netip.Addr) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%q does not exist", path)
	}
	if err != nil {
		return err
	}
	var st endpointStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%q is not (yet) valid JSON: %v", path, err)
	}
	if st.IfaceName != iface {
		return fmt.Errorf("%q names interface %q, not %q (a stale file of an earlier pod of the same name?)", path, st.IfaceName, iface)
	}
	nets := append(append([]string{}, st.IPv4Nets...), st.IPv6Nets...)
	for _, n := range nets {
		if holdsOneOf(n, addrs) {
			return nil
		}
	}
	return fmt.Errorf("%q lists addresses [%s], none of the pod's %v", path, strings.Join(nets, ", "), addrs)
}

// waitForEndpoint polls until endpointReady or the timeout; the error names
// the file, the timeout and the last thing seen.
func waitForEndpoint(ctx context.Context, path, iface string, addrs []netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		last := endpointReady(path, iface, addrs)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("Felix did not report endpoint %s with address %v ready within %s: %w", iface, addrs, timeout, last)
		case <-t.C:
		}
	}
}
