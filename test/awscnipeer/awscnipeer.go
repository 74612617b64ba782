// Package awscnipeer locates the AWS VPC CNI's source, the peer vpcchain
// replaces, in the Go module cache, at the version the tools module
// test/tools/awscni pins. Only tests use it: they read the peer's own files
// (its README, conflist, CRDs) as the reference, rather than copies of them.
package awscnipeer

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Module is the peer's module path.
const Module = "github.com/aws/amazon-vpc-cni-k8s"

// toolsGoMod is the tools module that pins the peer, from the repository
// root; ControllerGoMod the one that pins AWS's VPC resource controller.
const (
	toolsGoMod      = "test/tools/awscni/go.mod"
	ControllerGoMod = "test/tools/vpcrc/go.mod"
	// Controller is the VPC resource controller's module path.
	Controller = "github.com/aws/amazon-vpc-resource-controller-k8s"
)

// ModuleDir is the directory of module path (the peer, or one of its
// dependencies) in the module cache, at the version test/tools/awscni/go.mod
// requires. It looks for that go.mod from the working directory upwards, so
// it works from any package's test. The error says what to run when the
// module is not in the cache.
func ModuleDir(path string) (string, error) { return ModuleDirIn(toolsGoMod, path) }

// ModuleDirIn is ModuleDir at the version the tools module of go.mod
// toolsGoMod (from the repository root) requires.
func ModuleDirIn(toolsGoMod, path string) (string, error) {
	gomod, err := findUp(toolsGoMod)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("read the peer's tools module: %w", err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(path) + ` (v\S+)`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s does not require %s", toolsGoMod, path)
	}
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	d := filepath.Join(strings.TrimSpace(string(out)), path+"@"+string(m[1]))
	if _, err := os.Stat(d); err != nil {
		return "", fmt.Errorf("%s@%s is not in the module cache: run `make peer-tools`: %w", path, m[1], err)
	}
	return d, nil
}

// findUp finds rel in the working directory or the nearest parent that has it.
func findUp(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(rel + " not found in the working directory or above it: run the test from inside the repository")
		}
		dir = parent
	}
}
