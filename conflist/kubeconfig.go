package conflist

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
)

// KubeconfigName is the file the installer writes next to the conflist for
// policy-hook (the conflist names it as DefaultPolicyHookKubeconfig). The
// name ends in none of .conf/.conflist/.json, so no runtime loads it as a
// network configuration.
const KubeconfigName = "vpcchain-kubeconfig"

// kubeconfigMode: the file holds a bearer token; only root (the runtime
// that executes the plugins) reads it.
const kubeconfigMode fs.FileMode = 0o600

// Kubeconfig renders the kubeconfig policy-hook uses on the host: the API
// server's address, the cluster CA (PEM) and a ServiceAccount token. It is
// JSON, which every kubeconfig loader reads. Invalid parts are refused,
// all named at once: a bad file would fail every pod's ADD on the node.
func Kubeconfig(server string, caPEM []byte, token string) ([]byte, error) {
	var errs []error
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("API server %q is invalid: want an https:// URL (the token must not travel in clear)", server))
	}
	if !holdsCertificate(caPEM) {
		errs = append(errs, errors.New("cluster CA is not a PEM CERTIFICATE"))
	}
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		errs = append(errs, errors.New("token is empty or contains whitespace"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("policy-hook kubeconfig: %w", errors.Join(errs...))
	}
	const name = "vpcchain"
	cfg := clientcmdv1.Config{
		Kind:       "Config",
		APIVersion: "v1",
		Clusters: []clientcmdv1.NamedCluster{{Name: name, Cluster: clientcmdv1.Cluster{
			Server: server, CertificateAuthorityData: caPEM,
		}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: name, AuthInfo: clientcmdv1.AuthInfo{Token: token}}},
		Contexts: []clientcmdv1.NamedContext{{Name: name, Context: clientcmdv1.Context{
			Cluster: name, AuthInfo: name,
		}}},
		CurrentContext: name,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("policy-hook kubeconfig: %w", err)
	}
	return buf.Bytes(), nil
}

// holdsCertificate reports whether data has at least one PEM CERTIFICATE
// block and nothing but such blocks and whitespace.
func holdsCertificate(data []byte) bool {
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return n > 0 && len(bytes.TrimSpace(data)) == 0
		}
		if b.Type != "CERTIFICATE" {
			return false
		}
		n++
	}
}
