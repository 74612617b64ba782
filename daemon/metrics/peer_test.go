package metrics

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vpcchain/vpcchain/test/awscnipeer"
)

// The README's table of the AWS VPC CNI's metrics has a row for every
// awscni_* metric its source defines (found there, not listed here), and
// every vpcchain_* metric it names is one the daemon serves.
func TestREADMEMapsPeerMetrics(t *testing.T) {
	dir, err := awscnipeer.ModuleDir(awscnipeer.Module)
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`Name:\s*"(awscni_[a-z0-9_]+)"`)
	peer := map[string]bool{}
	for _, sub := range []string{"pkg", "utils"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			for _, m := range name.FindAllSubmatch(b, -1) {
				peer[string(m[1])] = true
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// v1.23 defines 29; a handful means the source moved.
	if len(peer) < 20 {
		t.Fatalf("found %d awscni_* metrics in the AWS VPC CNI's source: %v", len(peer), peer)
	}

	// What the daemon serves, every family present.
	m := New()
	if err := m.RegisterPool(&fakePool{counters: map[string]int64{"add": 1}}); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterEC2(fakeEC2{"DescribeNetworkInterfaces": 1}); err != nil {
		t.Fatal(err)
	}
	m.ObserveEC2Call("DescribeNetworkInterfaces", time.Millisecond, errors.New("boom"))
	m.ObserveAllocation(time.Millisecond)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, f := range fams {
		ours[f.GetName()] = true
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(awscni_[a-z0-9_]+)` \\| (.*) \\|$")
	ourName := regexp.MustCompile(`vpcchain_[a-z0-9_]+`)
	mapped := map[string]bool{}
	for _, r := range row.FindAllStringSubmatch(string(readme), -1) {
		if !peer[r[1]] {
			t.Errorf("README maps %s, which the AWS VPC CNI does not define", r[1])
		}
		mapped[r[1]] = true
		ourCell := strings.TrimSpace(strings.Split(r[2], "|")[0])
		if ourCell == "none" {
			continue
		}
		names := ourName.FindAllString(ourCell, -1)
		if len(names) == 0 {
			t.Errorf("README row %s: %q is neither none nor one of our metrics", r[1], ourCell)
		}
		for _, n := range names {
			if !ours[n] {
				t.Errorf("README row %s names %s, which the daemon does not serve", r[1], n)
			}
		}
	}
	for n := range peer {
		if !mapped[n] {
			t.Errorf("the AWS VPC CNI defines %s, and the README's metrics table has no row for it", n)
		}
	}
}
