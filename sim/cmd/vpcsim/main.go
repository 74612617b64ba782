// Command vpcsim runs the VPC simulator: an EC2 Query API and IMDSv2 that
// an unmodified AWS SDK talks to, and (with -dataplane, as root) a network
// namespace per node behind a VPC router. It prints one JSON line describing
// the region once it serves, and removes everything on SIGINT/SIGTERM.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vpcchain/vpcchain/sim/vpcsim"
)

type ready struct {
	EC2     string                 `json:"ec2"`
	RunID   string                 `json:"runId"`
	VPCID   string                 `json:"vpcId"`
	Subnets map[string]string      `json:"subnets"` // CIDR -> ID
	Nodes   map[string]vpcsim.Node `json:"nodes"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("vpcsim: ")
	listen := flag.String("listen", "127.0.0.1:0", "address of the EC2 and control API in this namespace")
	dp := flag.Bool("dataplane", false, "build network namespaces for nodes (needs root)")
	runID := flag.String("run-id", "", "unique token naming this run's namespaces (default random)")
	vpcCIDRs := flag.String("vpc-cidrs", "10.0.0.0/16", "comma-separated VPC CIDRs")
	subnets := flag.String("subnets", "10.0.0.0/20@us-west-2a", "comma-separated CIDR@AZ[#tag=value] subnets")
	nodes := flag.String("nodes", "", "comma-separated name:instance-type[:subnet-cidr] nodes to launch")
	lag := flag.Duration("imds-lag", 0, "how long IMDS lags EC2")
	verbose := flag.Bool("v", false, "log EC2 errors to stderr")
	sgPerENI := flag.Int("security-groups-per-interface", 0, "the account's quota of security groups per network interface (0: EC2's default, 5; at most 16)")
	echo := flag.String("internet-echo", "", "with -dataplane: an HTTP server on this outside (internet) address:port that answers with the source address it sees")
	flag.Parse()

	opts := vpcsim.Options{DataPlane: *dp, RunID: *runID, IMDSLag: *lag, Listen: *listen, SecurityGroupsPerInterface: *sgPerENI}
	if *verbose {
		opts.Logf = log.Printf
	}
	sim, err := vpcsim.Start(opts)
	if err != nil {
		log.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := run(sim, *vpcCIDRs, *subnets, *nodes, opts.RunID); err != nil {
		_ = sim.Close()
		log.Fatal(err)
	}
	if *echo != "" {
		if err := serveEcho(sim, *echo); err != nil {
			_ = sim.Close()
			log.Fatal(err)
		}
	}
	s := <-sigs
	log.Printf("%s: removing the region", s)
	if err := sim.Close(); err != nil {
		log.Fatal(err)
	}
}

func run(sim *vpcsim.Sim, vpcCIDRs, subnets, nodes, runID string) error {
	vpc, err := sim.Cloud.AddVPC(strings.Split(vpcCIDRs, ",")...)
	if err != nil {
		return err
	}
	out := ready{EC2: sim.EC2URL, VPCID: vpc, Subnets: map[string]string{}}
	if sim.Fabric != nil {
		out.RunID = sim.Fabric.RunID()
	}
	first := ""
	for _, spec := range strings.Split(subnets, ",") {
		spec, tagSpec, _ := strings.Cut(spec, "#")
		cidr, az, ok := strings.Cut(spec, "@")
		if !ok {
			return fmt.Errorf("subnet %q: want CIDR@AZ", spec)
		}
		tags := map[string]string{}
		for _, kv := range strings.Split(tagSpec, "+") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				tags[k] = v
			}
		}
		id, err := sim.Cloud.AddSubnet(vpc, cidr, az, tags)
		if err != nil {
			return fmt.Errorf("subnet %s: %w", cidr, err)
		}
		out.Subnets[cidr] = id
		if first == "" {
			first = id
		}
	}
	for _, spec := range strings.Split(nodes, ",") {
		if spec == "" {
			continue
		}
		parts := strings.Split(spec, ":")
		if len(parts) < 2 {
			return fmt.Errorf("node %q: want name:instance-type[:subnet-cidr]", spec)
		}
		sub := first
		if len(parts) > 2 {
			if sub = out.Subnets[parts[2]]; sub == "" {
				return fmt.Errorf("node %q: unknown subnet %s", spec, parts[2])
			}
		}
		if _, err := sim.LaunchNode(vpcsim.LaunchSpec{Name: parts[0], InstanceType: parts[1], SubnetID: sub}); err != nil {
			return fmt.Errorf("node %s: %w", parts[0], err)
		}
	}
	out.Nodes = sim.Nodes()
	return json.NewEncoder(os.Stdout).Encode(out)
}

// serveEcho stands for a web site on the internet that tells its clients
// which source address it sees: the way to watch SNAT happen.
func serveEcho(sim *vpcsim.Sim, addr string) error {
	if sim.Fabric == nil {
		return fmt.Errorf("-internet-echo needs -dataplane")
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("-internet-echo %q: %w", addr, err)
	}
	ln, err := sim.Fabric.ListenTCPOutside(ap)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", r.RemoteAddr)
	})}
	go func() { _ = srv.Serve(ln) }()
	return nil
}
