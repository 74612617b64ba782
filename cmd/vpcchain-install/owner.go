package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"

	"k8s.io/client-go/rest"
)

// saNamespaceFile is where a pod's service-account volume holds its namespace.
const saNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// apiClient reads one DaemonSet with the pod's in-cluster credentials. It
// uses client-go's REST configuration and transport only: the installer is
// also the probes' binary, exec'd every few seconds, and a typed clientset
// would make it five times larger.
type apiClient struct {
	host  string
	http  *http.Client
	caPEM []byte // the cluster CA, for the kubeconfig written for policy-hook
}

// inClusterClient is the pod's own API client and its namespace
// (POD_NAMESPACE, else the service account's).
func inClusterClient() (*apiClient, string, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, "", fmt.Errorf("in-cluster API config: %w", err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, "", err
	}
	ca := cfg.TLSClientConfig.CAData
	if len(ca) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, "", fmt.Errorf("cluster CA: %w", err)
		}
	}
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		b, err := os.ReadFile(saNamespaceFile)
		if err != nil {
			return nil, "", fmt.Errorf("pod namespace: POD_NAMESPACE unset and %w", err)
		}
		ns = strings.TrimSpace(string(b))
	}
	return &apiClient{host: strings.TrimRight(cfg.Host, "/"), http: hc, caPEM: ca}, ns, nil
}

// daemonSetGone reports whether the DaemonSet ns/name is deleted or being
// deleted (or the pod's ServiceAccount is, which the same manifest holds),
// or no longer places its pods on node (its nodeSelector or required node
// affinity does not select the node's labels now; node "" skips this):
// then the pod stops because the install is being removed from the node
// (kubectl delete of our manifest, or a node switched back to another CNI
// by its label, README "Migrating from the AWS VPC CNI"), not because of a
// rolling update (the DaemonSet stays and still selects the node) or a node
// going away.
func (c *apiClient) daemonSetGone(ctx context.Context, ns, name, node string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		c.host+"/apis/apps/v1/namespaces/"+ns+"/daemonsets/"+name, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return false, fmt.Errorf("get DaemonSet %s/%s: %w", ns, name, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return true, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		// Our ServiceAccount is gone (its tokens are refused once it is
		// deleted), or our Role's grant to read our own DaemonSet is:
		// only removing our install deletes them, and kubectl and helm
		// delete them while the DaemonSet's pods are still stopping
		// (helm deletes the RoleBinding before the ServiceAccount).
		return true, nil
	case http.StatusOK:
	default:
		return false, fmt.Errorf("get DaemonSet %s/%s: HTTP %s", ns, name, resp.Status)
	}
	var ds struct {
		Metadata struct {
			DeletionTimestamp *string `json:"deletionTimestamp"`
		} `json:"metadata"`
		Spec struct {
			Template struct {
				Spec podPlacement `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		return false, fmt.Errorf("get DaemonSet %s/%s: %w", ns, name, err)
	}
	if ds.Metadata.DeletionTimestamp != nil || node == "" {
		return ds.Metadata.DeletionTimestamp != nil, nil
	}
	labels, err := c.nodeLabels(ctx, node)
	if err != nil {
		return false, err
	}
	return !ds.Spec.Template.Spec.selects(node, labels), nil
}
