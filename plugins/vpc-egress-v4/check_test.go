package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"
)

// CHECK names each missing piece of the isolation: a FORWARD jump either
// way and the filter chain's DROP rules.
func TestCheckNamesMissingIsolation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "fakeipam"), []byte(fakeIPAM), 0o755); err != nil {
		t.Fatal(err)
	}
	const id = "check-isolation"
	if err := os.WriteFile(filepath.Join(bin, "fakeipam."+id), []byte("169.254.172.20/22"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CNI_PATH", bin)
	t.Setenv("CNI_CONTAINERID", id)
	stdin, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "egress", "type": "vpc-egress-v4",
		"ipam":       map[string]any{"type": "fakeipam"},
		"prevResult": map[string]any{"cniVersion": "1.1.0", "ips": []any{map[string]any{"address": "fd00::5/128"}}}})
	if err != nil {
		t.Fatal(err)
	}
	host, pod := newNS(t), newNS(t)
	args := &skel.CmdArgs{ContainerID: id, Netns: pod.Path(), IfName: "eth0", StdinData: stdin}
	att := attachment{containerID: id, ifName: "eth0"}
	if err := host.Do(func(ns.NetNS) error { return quiet(t, func() error { return cmdAdd(args) }) }); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := host.Do(func(ns.NetNS) error { return cmdCheck(args) }); err != nil {
		t.Fatalf("CHECK right after ADD: %v", err)
	}
	veth, chain, comment := att.hostVeth(), att.chain(), att.comment()
	for _, tc := range []struct {
		name    string
		rule    []string // deleted from table filter
		mention string
	}{
		{"jump from the pod", []string{"FORWARD", "-i", veth, "-m", "comment", "--comment", comment, "-j", chain}, "-i " + veth},
		{"jump to the pod", []string{"FORWARD", "-o", veth, "-m", "comment", "--comment", comment, "-j", chain}, "-o " + veth},
		{"drop to the range", []string{chain, "-i", veth, "-d", "169.254.172.0/22", "-m", "comment", "--comment", comment, "-j", "DROP"}, "egress range"},
		{"drop what is not a reply", []string{chain, "-o", veth, "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED",
			"-m", "comment", "--comment", comment, "-j", "DROP"}, "not a reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := natTable()
			if err != nil {
				t.Fatal(err)
			}
			if err := host.Do(func(ns.NetNS) error { return b.ipt.Delete("filter", tc.rule[0], tc.rule[1:]...) }); err != nil {
				t.Fatalf("delete the rule: %v", err)
			}
			defer func() {
				if err := host.Do(func(ns.NetNS) error { return b.ipt.Insert("filter", tc.rule[0], 1, tc.rule[1:]...) }); err != nil {
					t.Fatalf("put the rule back: %v", err)
				}
			}()
			err = host.Do(func(ns.NetNS) error { return cmdCheck(args) })
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("CHECK without the rule: %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
	if err := host.Do(func(ns.NetNS) error { return cmdDel(args) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}
