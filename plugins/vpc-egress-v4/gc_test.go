package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"

	"github.com/vpcchain/vpcchain/internal/netlinkutil"
)

// fakeIPAM answers ADD with the address in the file named after the
// container, and everything else with success.
const fakeIPAM = `#!/bin/sh
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"1.1.0","ips":[{"address":"%s"}]}' "$(cat "$0.$CNI_CONTAINERID")" ;;
esac
`

// quiet runs f with stdout discarded (ADD prints its result there).
func quiet(t *testing.T, f func() error) error {
	t.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	stdout := os.Stdout
	os.Stdout = null
	defer func() { os.Stdout = stdout }()
	return f()
}

func newNS(t *testing.T) ns.NetNS {
	t.Helper()
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close(); _ = testutils.UnmountNS(n) })
	return n
}

// GC removes the nat and filter chains, and the jumps to them, of every
// attachment whose pod is gone (its netns deleted without a DEL takes the
// veth pair with it, leaving the chains) or that the runtime no longer
// lists; it keeps those of a listed pod that still has its veth.
func TestGCRemovesChainsOfGonePods(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	tests := []struct {
		id       string
		podGone  bool // the pod's netns deleted without DEL
		listed   bool // in cni.dev/valid-attachments
		wantKept bool
	}{
		{id: "live-listed", listed: true, wantKept: true},
		{id: "live-unlisted"},
		{id: "gone-listed", podGone: true, listed: true},
		{id: "gone-unlisted", podGone: true},
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "fakeipam"), []byte(fakeIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", bin)
	host := newNS(t)
	conf := func(extra map[string]any) []byte {
		c := map[string]any{"cniVersion": "1.1.0", "name": "egress", "type": "vpc-egress-v4", "ipam": map[string]any{"type": "fakeipam"}}
		for k, v := range extra {
			c[k] = v
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	addConf := conf(map[string]any{"prevResult": map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "fd00::5/128"}}}})
	var valid []any
	for i, tt := range tests {
		addr := fmt.Sprintf("169.254.172.%d/22", 10+i)
		if err := os.WriteFile(filepath.Join(bin, "fakeipam."+tt.id), []byte(addr), 0o644); err != nil {
			t.Fatal(err)
		}
		pod := newNS(t)
		t.Setenv("CNI_CONTAINERID", tt.id)
		if err := host.Do(func(ns.NetNS) error {
			return quiet(t, func() error {
				return cmdAdd(&skel.CmdArgs{ContainerID: tt.id, Netns: pod.Path(), IfName: "eth0", StdinData: addConf})
			})
		}); err != nil {
			t.Fatalf("ADD %s: %v", tt.id, err)
		}
		if tt.listed {
			valid = append(valid, map[string]any{"containerID": tt.id, "ifname": "eth0"})
		}
		if tt.podGone {
			_ = pod.Close()
			if err := testutils.UnmountNS(pod); err != nil {
				t.Fatal(err)
			}
		}
	}
	hostVeth := func(id string) bool {
		found := false
		_ = host.Do(func(ns.NetNS) error {
			_, err := netlinkutil.LinkByName(attachment{containerID: id, ifName: "eth0"}.hostVeth())
			found = err == nil
			return nil
		})
		return found
	}
	// The kernel destroys a netns, and the veth pair with it, in the
	// background.
	for _, tt := range tests {
		for deadline := time.Now().Add(10 * time.Second); tt.podGone && hostVeth(tt.id); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: host veth still there after its netns was deleted", tt.id)
			}
		}
	}

	// Someone else's chain that merely starts like ours.
	const foreign = "VPCE4-MANUAL"
	if err := host.Do(func(ns.NetNS) error {
		b, err := natTable()
		if err != nil {
			return err
		}
		return b.ipt.NewChain("nat", foreign)
	}); err != nil {
		t.Fatal(err)
	}

	if err := host.Do(func(ns.NetNS) error {
		return cmdGC(&skel.CmdArgs{StdinData: conf(map[string]any{"cni.dev/valid-attachments": valid})})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}

	// Each table's chains, and the rules of the built-in chain that jumps
	// to ours.
	chains, jumpRules := map[string][]string{}, map[string][]string{}
	builtin := map[string]string{"nat": "POSTROUTING", "filter": "FORWARD"}
	if err := host.Do(func(ns.NetNS) error {
		b, err := natTable()
		if err != nil {
			return err
		}
		for table, from := range builtin {
			if chains[table], err = b.ipt.ListChains(table); err != nil {
				return err
			}
			if jumpRules[table], err = b.ipt.List(table, from); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(chains["nat"], foreign) {
		t.Errorf("GC removed %s, which is not of this plugin's making", foreign)
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			chain := attachment{containerID: tt.id, ifName: "eth0"}.chain()
			// nat: one jump (the pod's address); filter: two (the veth
			// either way).
			for table, wantJumps := range map[string]int{"nat": 1, "filter": 2} {
				hasChain, jumps := slices.Contains(chains[table], chain), 0
				for _, r := range jumpRules[table] {
					if strings.HasSuffix(r, "-j "+chain) {
						jumps++
					}
				}
				if want := map[bool]int{true: wantJumps}[tt.wantKept]; hasChain != tt.wantKept || jumps != want {
					t.Errorf("after GC: %s chain %s present %v, %d %s jumps to it; want present %v, %d jumps",
						table, chain, hasChain, jumps, builtin[table], tt.wantKept, want)
				}
			}
			if veth := hostVeth(tt.id); veth != tt.wantKept {
				t.Errorf("after GC: host veth present %v, want %v", veth, tt.wantKept)
			}
		})
	}
}
