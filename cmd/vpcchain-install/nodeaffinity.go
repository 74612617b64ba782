package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
)

// podPlacement is the part of a DaemonSet's pod template that decides which
// nodes run it: spec.nodeSelector and the required node affinity. Plain
// structs rather than k8s.io/api's types: the installer is also the probes'
// binary and stays small.
type podPlacement struct {
	NodeSelector map[string]string `json:"nodeSelector"`
	Affinity     *struct {
		NodeAffinity *struct {
			Required *struct {
				Terms []nodeSelectorTerm `json:"nodeSelectorTerms"`
			} `json:"requiredDuringSchedulingIgnoredDuringExecution"`
		} `json:"nodeAffinity"`
	} `json:"affinity"`
}

type nodeSelectorTerm struct {
	MatchExpressions []selectorRequirement `json:"matchExpressions"`
	MatchFields      []selectorRequirement `json:"matchFields"`
}

type selectorRequirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values"`
}

// selects reports whether a pod placed by p may run on the node with the
// name and labels given, as the DaemonSet controller decides it (the
// scheduler's nodeSelector and required node affinity: every nodeSelector
// label, and one of the terms, each term all of its requirements).
func (p podPlacement) selects(name string, labels map[string]string) bool {
	for k, v := range p.NodeSelector {
		if l, ok := labels[k]; !ok || l != v {
			return false
		}
	}
	if p.Affinity == nil || p.Affinity.NodeAffinity == nil || p.Affinity.NodeAffinity.Required == nil {
		return true
	}
	return slices.ContainsFunc(p.Affinity.NodeAffinity.Required.Terms, func(t nodeSelectorTerm) bool {
		if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
			return false // an empty term selects no node
		}
		for _, r := range t.MatchExpressions {
			if !r.matches(labels) {
				return false
			}
		}
		for _, r := range t.MatchFields {
			if r.Key != "metadata.name" || !r.matches(map[string]string{"metadata.name": name}) {
				return false
			}
		}
		return true
	})
}

func (r selectorRequirement) matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Operator {
	case "In":
		return ok && slices.Contains(r.Values, v)
	case "NotIn":
		return !ok || !slices.Contains(r.Values, v)
	case "Exists":
		return ok
	case "DoesNotExist":
		return !ok
	case "Gt", "Lt":
		if !ok || len(r.Values) != 1 {
			return false
		}
		have, err1 := strconv.ParseInt(v, 10, 64)
		want, err2 := strconv.ParseInt(r.Values[0], 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return r.Operator == "Gt" && have > want || r.Operator == "Lt" && have < want
	}
	// An operator this code does not know: count it as met, so the install
	// is never removed on a guess.
	return true
}

// nodeLabels reads the labels of node name.
func (c *apiClient) nodeLabels(ctx context.Context, name string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.host+"/api/v1/nodes/"+name, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read node %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("read node %s: HTTP %s: %s", name, resp.Status, bytes.TrimSpace(msg))
	}
	var n struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		return nil, fmt.Errorf("read node %s: %w", name, err)
	}
	return n.Metadata.Labels, nil
}
