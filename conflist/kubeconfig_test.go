package conflist

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/client-go/tools/clientcmd"
)

// testCA is a freshly made self-signed CA certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestKubeconfigLoads checks the file with client-go's own loader, the one
// policy-hook uses: it must give the server, the CA and the token back.
func TestKubeconfigLoads(t *testing.T) {
	ca := testCA(t)
	const server, token = "https://10.96.0.1:443", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"
	data, err := Kubeconfig(server, ca, token)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), KubeconfigName)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("client-go cannot load it: %v\n%s", err, data)
	}
	if cfg.Host != server || cfg.BearerToken != token || !bytes.Equal(cfg.TLSClientConfig.CAData, ca) || cfg.TLSClientConfig.Insecure {
		t.Errorf("loaded host %q token %q CA %d bytes insecure %v; want %q, %q, the CA", cfg.Host, cfg.BearerToken, len(cfg.TLSClientConfig.CAData), cfg.TLSClientConfig.Insecure, server, token)
	}
}

func TestKubeconfigRefusesBadParts(t *testing.T) {
	ca := testCA(t)
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
	for _, tc := range []struct {
		name, server string
		ca           []byte
		token, want  string
	}{
		{"plain http", "http://10.96.0.1", ca, "t", `API server "http://10.96.0.1" is invalid`},
		{"no host", "https://", ca, "t", "API server"},
		{"no CA", "https://a:443", nil, "t", "not a PEM CERTIFICATE"},
		{"a key for a CA", "https://a:443", key, "t", "not a PEM CERTIFICATE"},
		{"CA with trailing junk", "https://a:443", append(append([]byte{}, ca...), "junk"...), "t", "not a PEM CERTIFICATE"},
		{"empty token", "https://a:443", ca, "", "token is empty"},
		{"token with newline", "https://a:443", ca, "a\nb", "token is empty or contains whitespace"},
	} {
		if _, err := Kubeconfig(tc.server, tc.ca, tc.token); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestInstallWritesPolicyHookKubeconfig: with the hook on, the kubeconfig
// is required, lands 0600 before the conflist, is rewritten when the token
// changes and removed by Uninstall with the conflist.
func TestInstallWritesPolicyHookKubeconfig(t *testing.T) {
	d := startFakeDaemon(t, healthpb.HealthCheckResponse_SERVING)
	f := newFixture(t, TypeBridge, TypeIPAM, TypeSNAT, TypePolicyHook, TypePortmap, TypeBandwidth)
	o := f.opts(d.socket)
	o.Conf.PolicyHook = true
	kcPath := filepath.Join(f.conf, KubeconfigName)
	if _, err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no kubeconfig") {
		t.Fatalf("hook without kubeconfig: err = %v", err)
	}
	mustNotExist(t, f.confPath())
	mustNotExist(t, kcPath)

	ca := testCA(t)
	o.Kubeconfig, _ = Kubeconfig("https://10.96.0.1:443", ca, "first")
	r, err := Install(context.Background(), o)
	if err != nil || !r.KubeconfigWritten || !r.ConfWritten {
		t.Fatalf("install: %+v, %v", r, err)
	}
	fi, err := os.Stat(kcPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig %v mode %v, want 0600", err, fi)
	}
	if got, _ := os.ReadFile(kcPath); !bytes.Equal(got, o.Kubeconfig) {
		t.Errorf("kubeconfig content differs")
	}
	if r, err := Install(context.Background(), o); err != nil || r.KubeconfigWritten || r.ConfWritten {
		t.Errorf("second install wrote: %+v, %v", r, err)
	}
	o.Kubeconfig, _ = Kubeconfig("https://10.96.0.1:443", ca, "second")
	if r, err := Install(context.Background(), o); err != nil || !r.KubeconfigWritten || r.ConfWritten {
		t.Errorf("new token: %+v, %v; want only the kubeconfig rewritten", r, err)
	}
	if err := Uninstall(context.Background(), UninstallOptions{CNIConfDir: f.conf}); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, f.confPath())
	mustNotExist(t, kcPath)
}
