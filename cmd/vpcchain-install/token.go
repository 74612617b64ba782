package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/vpcchain/vpcchain/conflist"
)

// tokenLifetime is what the installer asks for policy-hook's token:
// renewed after a third of it, so a failed renewal leaves 40 minutes of
// retries (one a --keep-running tick) before pods on the node fail to start.
const tokenLifetime = time.Hour

// boundTo is the object a token is bound to (TokenRequest's
// boundObjectRef): the token is refused once the object is gone, and the
// API server puts the node's name into the token's user info
// (authentication.kubernetes.io/node-name), which the manifest's admission
// policy compares with the pod the hook patches.
type boundTo struct {
	kind, name, uid string
}

// serviceAccountToken asks the API server for a token of ServiceAccount
// ns/name (TokenRequest, the serviceaccounts/token subresource) bound to
// obj, and returns it with its expiry as the server set it.
func (c *apiClient) serviceAccountToken(ctx context.Context, ns, name string, lifetime time.Duration, obj boundTo) (string, time.Time, error) {
	secs := int64(lifetime / time.Second)
	body, err := json.Marshal(authv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: &secs, BoundObjectRef: &authv1.BoundObjectReference{
			Kind: obj.kind, APIVersion: "v1", Name: obj.name, UID: ktypes.UID(obj.uid)}},
	})
	if err != nil {
		return "", time.Time{}, err
	}
	what := fmt.Sprintf("token for ServiceAccount %s/%s bound to %s %s", ns, name, obj.kind, obj.name)
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
		return "", time.Time{}, &apiError{status: resp.StatusCode, msg: fmt.Sprintf("%s: HTTP %s: %s", what, resp.Status, bytes.TrimSpace(msg))}
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

// apiError is an answer of the API server other than success.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// policyCredentials keeps policy-hook's kubeconfig current: a token of the
// hook's own ServiceAccount (sa: it may read pods and patch pods/status,
// nothing else; it cannot mint tokens), bound to this node (or, where the
// API server cannot bind tokens to a Node, to this pod), renewed once a
// third of its lifetime has passed.
type policyCredentials struct {
	c       *apiClient
	ns, sa  string
	node    string // the node's name; its UID is read when a token is due
	pod     boundTo
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
	tok, exp, err := p.token(ctx)
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

// token mints a token bound to the node; an API server that refuses the
// binding itself (Kubernetes before 1.31, or its ServiceAccountTokenNodeBinding
// gate off: 400 or 422) gets the pod as the bound object instead, which
// also names the node but dies with this pod at a rolling update.
func (p *policyCredentials) token(ctx context.Context) (string, time.Time, error) {
	uid, err := p.c.nodeUID(ctx, p.node)
	if err != nil {
		return "", time.Time{}, err
	}
	tok, exp, err := p.c.serviceAccountToken(ctx, p.ns, p.sa, tokenLifetime, boundTo{kind: "Node", name: p.node, uid: uid})
	var ae *apiError
	if errors.As(err, &ae) && (ae.status == http.StatusBadRequest || ae.status == http.StatusUnprocessableEntity) && p.pod.name != "" {
		log.Printf("the API server does not bind tokens to nodes (%v): binding policy-hook's token to this pod", err)
		return p.c.serviceAccountToken(ctx, p.ns, p.sa, tokenLifetime, p.pod)
	}
	return tok, exp, err
}

// nodeUID reads the UID of node name (a bound token must name it).
func (c *apiClient) nodeUID(ctx context.Context, name string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.host+"/api/v1/nodes/"+name, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("read node %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("read node %s: HTTP %s: %s", name, resp.Status, bytes.TrimSpace(msg))
	}
	var m metav1.PartialObjectMetadata
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.UID == "" {
		return "", fmt.Errorf("read node %s: no UID in the answer (%v)", name, err)
	}
	return string(m.UID), nil
}

// policyHookEnv names the installer's environment for the hook's
// credentials, all set by the manifest (the downward API for the last four).
const (
	envPolicyHookSA = "POLICY_HOOK_SERVICE_ACCOUNT"
	envNodeName     = "MY_NODE_NAME"
	envPodName      = "MY_POD_NAME"
	envPodUID       = "MY_POD_UID"
)

// newPolicyCredentials works in the pod: in-cluster API access, the hook's
// ServiceAccount and the node and pod the token is bound to from the
// environment.
func newPolicyCredentials() (*policyCredentials, error) {
	sa, node := os.Getenv(envPolicyHookSA), os.Getenv(envNodeName)
	if sa == "" || node == "" {
		return nil, fmt.Errorf("%s=true needs %s (the ServiceAccount policy-hook acts as) and %s (spec.nodeName, the node its token is bound to)",
			conflist.EnvPolicyHook, envPolicyHookSA, envNodeName)
	}
	c, ns, err := inClusterClient()
	if err != nil {
		return nil, fmt.Errorf("policy-hook kubeconfig: %w", err)
	}
	return &policyCredentials{c: c, ns: ns, sa: sa, node: node, now: time.Now,
		pod: boundTo{kind: "Pod", name: os.Getenv(envPodName), uid: os.Getenv(envPodUID)}}, nil
}
