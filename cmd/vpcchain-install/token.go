package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vpcchain/vpcchain/conflist"
)

// tokenLifetime is what the installer asks for policy-hook's token. It is
// not bound to the pod: the hook keeps working on the node through a rolling
// update of the DaemonSet (the new pod renews it), and the token dies with
// our ServiceAccount when the install is deleted.
const tokenLifetime = 24 * time.Hour

// serviceAccountToken asks the API server for a token of ServiceAccount
// ns/name (TokenRequest, the serviceaccounts/token subresource) and returns
// it with its expiry as the server set it.
func (c *apiClient) serviceAccountToken(ctx context.Context, ns, name string, lifetime time.Duration) (string, time.Time, error) {
	secs := int64(lifetime / time.Second)
	body, err := json.Marshal(authv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		Spec:     authv1.TokenRequestSpec{ExpirationSeconds: &secs},
	})
	if err != nil {
		return "", time.Time{}, err
	}
	what := fmt.Sprintf("token for ServiceAccount %s/%s", ns, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		c.host+"/api/v1/namespaces/"+ns+"/serviceaccounts/"+name+"/token", bytes.NewReader(body))
	if err != nil {
		return "", time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", time.Time{}, fmt.Errorf("%s: HTTP %s: %s", what, resp.Status, bytes.TrimSpace(msg))
	}
	var tr authv1.TokenRequest
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return "", time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	if tr.Status.Token == "" || tr.Status.ExpirationTimestamp.IsZero() {
		return "", time.Time{}, fmt.Errorf("%s: the answer holds no token or no expiry", what)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// policyCredentials keeps policy-hook's kubeconfig current: a token of the
// pod's ServiceAccount, renewed once a third of its lifetime has passed.
type policyCredentials struct {
	c       *apiClient
	ns, sa  string
	now     func() time.Time
	current []byte
	renewAt time.Time
	expires time.Time
}

// kubeconfig returns the current kubeconfig, minting a new token when due.
// A failed renewal keeps the current file while its token is valid (the
// next tick retries); with none valid it is an error.
func (p *policyCredentials) kubeconfig(ctx context.Context) ([]byte, error) {
	now := p.now()
	if p.current != nil && now.Before(p.renewAt) {
		return p.current, nil
	}
	tok, exp, err := p.c.serviceAccountToken(ctx, p.ns, p.sa, tokenLifetime)
	if err == nil {
		var kc []byte
		if kc, err = conflist.Kubeconfig(p.c.host, p.c.caPEM, tok); err == nil {
			p.current, p.expires = kc, exp
			p.renewAt = now.Add(exp.Sub(now) / 3)
			return kc, nil
		}
	}
	if p.current != nil && now.Before(p.expires) {
		log.Printf("renewing policy-hook's token (keeping the current one, valid until %s): %v", p.expires.Format(time.RFC3339), err)
		return p.current, nil
	}
	return nil, fmt.Errorf("policy-hook kubeconfig: %w", err)
}

// newPolicyCredentials works in the pod: in-cluster API access and the
// ServiceAccount's name from POD_SERVICE_ACCOUNT (the manifest's fieldRef
// spec.serviceAccountName).
func newPolicyCredentials() (*policyCredentials, error) {
	sa := os.Getenv("POD_SERVICE_ACCOUNT")
	if sa == "" {
		return nil, fmt.Errorf("%s=true needs POD_SERVICE_ACCOUNT (the pod's ServiceAccount, which policy-hook acts as): set it from spec.serviceAccountName", conflist.EnvPolicyHook)
	}
	c, ns, err := inClusterClient()
	if err != nil {
		return nil, fmt.Errorf("policy-hook kubeconfig: %w", err)
	}
	return &policyCredentials{c: c, ns: ns, sa: sa, now: time.Now}, nil
}
