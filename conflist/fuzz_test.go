package conflist

import (
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// FuzzOptionsFromEnv: any value of any variable is refused with a message
// naming the variable, or gives options that Render turns into a conflist
// libcni loads; never a panic.
func FuzzOptionsFromEnv(f *testing.F) {
	for _, kv := range [][2]string{
		{EnvVethPrefix, "eni"}, {EnvVethPrefix, "eth"}, {EnvVethPrefix, "a/b"}, {EnvMTU, "9001"}, {EnvMTU, "100000"},
		{EnvPodMTU, "-1"}, {EnvSocket, "/run/x.sock"}, {EnvSocket, "../../x.sock"}, {EnvStateDir, "/"},
		{EnvStateDir, "rel"}, {EnvStateDir, "///"}, {EnvBandwidth, "maybe"}, {EnvPolicyHook, "true"},
		{EnvIPAMTimout, "0s"}, {EnvIPAMTimout, "10h"}, {EnvCNIVersion, "0.4.0"}, {EnvCNIVersion, "1.0.0"},
		{EnvSocket, "/run/\"x\n.sock"}, {EnvStateDir, "/run/\x00"},
	} {
		f.Add(kv[0], kv[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		o, err := OptionsFromEnv(func(k string) (string, bool) {
			if k == name {
				return value, true
			}
			return "", false
		})
		if err != nil {
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("refusal %q does not name %s", err, name)
			}
			return
		}
		b, err := Render(o)
		if err != nil {
			// Render validates more than OptionsFromEnv (e.g. socket
			// length); its refusal must still say what is wrong.
			if err.Error() == "" {
				t.Fatalf("empty refusal for %s=%q", name, value)
			}
			return
		}
		l, err := libcni.ConfListFromBytes(b)
		if err != nil {
			t.Fatalf("%s=%q rendered a conflist libcni refuses: %v\n%s", name, value, err, b)
		}
		if l.Name != o.Name || len(l.Plugins) == 0 || l.Plugins[0].Network.Type != "vpc-bridge" {
			t.Fatalf("%s=%q rendered %s", name, value, b)
		}
	})
}
