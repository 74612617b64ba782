package awscnipeer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleDir(t *testing.T) {
	d, err := ModuleDir(Module)
	if err != nil {
		t.Fatal(err)
	}
	// The directory is the pinned version's, with the peer's own files.
	if !strings.HasSuffix(d, Module+"@v1.23.2") {
		t.Errorf("ModuleDir(%s) = %s, want the v1.23.2 that test/tools/awscni/go.mod pins", Module, d)
	}
	if _, err := os.Stat(filepath.Join(d, "pkg", "ipamd", "ipamd.go")); err != nil {
		t.Errorf("not the peer's source: %v", err)
	}
	if _, err := ModuleDir("example.com/not-required"); err == nil || !strings.Contains(err.Error(), "does not require") {
		t.Errorf("a module the tools module does not require: %v", err)
	}
}
