package vpcsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The control API lets tests and the demo shape the region and inject
// faults from another process: JSON over HTTP under /sim/ on the root
// namespace endpoint (never reachable from node namespaces).

// VPCRequest creates a VPC.
type VPCRequest struct {
	CIDRs []string `json:"cidrs"`
}

// SubnetRequest creates a subnet.
type SubnetRequest struct {
	VPCID string            `json:"vpcId"`
	CIDR  string            `json:"cidr"`
	AZ    string            `json:"az"`
	Tags  map[string]string `json:"tags,omitempty"`
}

// FaultRequest changes the EC2 endpoint's behaviour; zero fields are left
// alone.
type FaultRequest struct {
	Reset     bool   `json:"reset,omitempty"`
	Action    string `json:"action,omitempty"` // "*" for all
	LatencyMS *int   `json:"latencyMs,omitempty"`
	Inject    *struct {
		Code  string `json:"code"`
		Count int    `json:"count"`
	} `json:"inject,omitempty"`
	Lose      int   `json:"lose,omitempty"`
	Deny      *bool `json:"deny,omitempty"`
	RateLimit *struct {
		Class string  `json:"class"` // mutating | describe
		Rate  float64 `json:"rate"`
		Burst int     `json:"burst"`
	} `json:"rateLimit,omitempty"`
	IMDSLagMS *int `json:"imdsLagMs,omitempty"`
	// DescribeLagMS makes DescribeNetworkInterfaces answer with the state
	// of that many milliseconds ago (0: current).
	DescribeLagMS *int `json:"describeLagMs,omitempty"`
}

// Apply applies a fault request.
func (s *Sim) Apply(r FaultRequest) error {
	if r.Reset {
		s.Faults.Reset()
	}
	action := r.Action
	if action == "" {
		action = "*"
	}
	if r.LatencyMS != nil {
		s.Faults.SetLatency(action, time.Duration(*r.LatencyMS)*time.Millisecond)
	}
	if r.Inject != nil {
		if r.Inject.Code == "" || r.Inject.Count <= 0 {
			return errors.New("inject needs a code and a positive count")
		}
		s.Faults.Inject(action, r.Inject.Code, r.Inject.Count)
	}
	if r.Lose > 0 {
		s.Faults.LoseResponses(action, r.Lose)
	}
	if r.Deny != nil {
		s.Faults.Deny(action, *r.Deny)
	}
	if r.RateLimit != nil {
		if r.RateLimit.Class != "mutating" && r.RateLimit.Class != "describe" {
			return fmt.Errorf("rateLimit.class %q: want mutating or describe", r.RateLimit.Class)
		}
		s.Faults.SetRateLimit(r.RateLimit.Class, r.RateLimit.Rate, r.RateLimit.Burst)
	}
	if r.IMDSLagMS != nil {
		s.IMDS.SetLag(time.Duration(*r.IMDSLagMS) * time.Millisecond)
	}
	if r.DescribeLagMS != nil {
		s.Cloud.SetDescribeLag(time.Duration(*r.DescribeLagMS) * time.Millisecond)
	}
	return nil
}

// State is a JSON snapshot of the region.
type State struct {
	Subnets   []SubnetView     `json:"subnets"`
	Instances []InstanceView   `json:"instances"`
	ENIs      []ENIView        `json:"enis"`
	Calls     map[string]int64 `json:"calls"`
	Errors    map[string]int64 `json:"errors"`
	Nodes     map[string]Node  `json:"nodes"`

	// Trunks are the trunk ENIs with their branches (VLAN ID or GRE key,
	// the branch ENI).
	Trunks []TrunkView `json:"trunks,omitempty"`
}

// Snapshot returns the region's state.
func (s *Sim) Snapshot() State {
	return State{Subnets: s.Cloud.Subnets(), Instances: s.Cloud.Instances(), ENIs: s.Cloud.ENIs(), Trunks: s.Cloud.Trunks(),
		Calls: s.Faults.Calls(), Errors: s.Faults.Errors(), Nodes: s.Nodes()}
}

func (s *Sim) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sim/vpc", func(w http.ResponseWriter, r *http.Request) {
		var req VPCRequest
		if !decode(w, r, &req) {
			return
		}
		id, err := s.Cloud.AddVPC(req.CIDRs...)
		reply(w, map[string]string{"vpcId": id}, err)
	})
	mux.HandleFunc("POST /sim/vpc/{id}/cidr", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			CIDR string `json:"cidr"`
		}
		if !decode(w, r, &req) {
			return
		}
		reply(w, map[string]string{}, s.Cloud.AddVPCCIDR(r.PathValue("id"), req.CIDR))
	})
	mux.HandleFunc("POST /sim/subnet", func(w http.ResponseWriter, r *http.Request) {
		var req SubnetRequest
		if !decode(w, r, &req) {
			return
		}
		id, err := s.Cloud.AddSubnet(req.VPCID, req.CIDR, req.AZ, req.Tags)
		reply(w, map[string]string{"subnetId": id}, err)
	})
	mux.HandleFunc("POST /sim/node", func(w http.ResponseWriter, r *http.Request) {
		var req LaunchSpec
		if !decode(w, r, &req) {
			return
		}
		n, err := s.LaunchNode(req)
		reply(w, n, err)
	})
	mux.HandleFunc("DELETE /sim/node/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]string{}, s.Cloud.TerminateInstance(r.PathValue("id")))
	})
	mux.HandleFunc("POST /sim/faults", func(w http.ResponseWriter, r *http.Request) {
		var req FaultRequest
		if !decode(w, r, &req) {
			return
		}
		reply(w, map[string]string{}, s.Apply(req))
	})
	mux.HandleFunc("GET /sim/state", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Snapshot(), nil)
	})
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, "bad request body: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusBadRequest
		var aerr *APIError
		if errors.As(err, &aerr) {
			status = aerr.Status
		} else if strings.Contains(err.Error(), "data plane") {
			status = http.StatusInternalServerError
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}
