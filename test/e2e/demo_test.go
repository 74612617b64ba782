package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs `make demo`'s script on the built binaries and checks what
// it shows: every check ok, SNAT seen from the internet, nothing left.
func TestDemo(t *testing.T) {
	requireRoot(t)
	bin := binDir(t)
	if _, err := os.Stat(filepath.Join(bin, "tools", "cnitool")); err != nil {
		t.Fatalf("cnitool missing in %s/tools: run make tools", bin)
	}
	cmd := exec.Command("bash", "../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "BIN="+bin)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, text)
	}
	if strings.Contains(text, "FAIL") {
		t.Errorf("demo reported a failure:\n%s", text)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`default/web-10 +node a +10\.0\.\d+\.\d+ +host veth eni[0-9a-f]{11} \(= eni \+ sha1`),
		regexp.MustCompile(`web-10: 10\.0\.\d+\.\d+ on eni-[0-9a-f]+ \(node a, device [12]\)`),
		regexp.MustCompile(`ok +web-10 \(10\.0\.\d+\.\d+\) -> db-2`),
		regexp.MustCompile(`ok +web-10 \(secondary ENI\) -> http://198\.51\.100\.10.*the internet sees 10\.0\.0\.4:\d+ \(node a's primary IP, SNAT\)`),
		regexp.MustCompile(`host veths left on node a: 0`),
		regexp.MustCompile(`pod rules left on node a: +0`),
		regexp.MustCompile(`namespaces of this run left: 0`),
	} {
		if !want.MatchString(text) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}
