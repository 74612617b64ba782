// Command vpcchaind is the warm-pool daemon behind the vpc-ipam plugin. It is
// configured by environment variables (the AWS VPC CNI's names where we have
// the feature; see daemon/config), refuses to start on an invalid value,
// discovers the node, then serves the IPAM API on a root-only unix socket.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/ipamd"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("vpcchaind: ")
	if err := run(); err != nil {
		log.Printf("%v", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.FromEnv()
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c, err := cloud.New(ctx, cloud.Options{EC2Endpoint: cfg.EC2Endpoint, IMDSEndpoint: cfg.IMDSEndpoint,
		Region: os.Getenv("AWS_REGION"), MutatingQPS: cfg.EC2QPS, MutatingBurst: cfg.EC2Burst,
		ClusterName: cfg.ClusterName, Logf: log.Printf})
	if err != nil {
		return fmt.Errorf("EC2/IMDS client: %w", err)
	}
	d, err := ipamd.New(ctx, ipamd.Options{Config: cfg, Cloud: c, Host: ipamd.RealHost{}, Logf: log.Printf})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer d.Close()

	ln, err := ipamclient.Listen(cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	srv := ipamd.NewServer(d)
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	log.Printf("serving the IPAM API on %s", cfg.Socket)
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return fmt.Errorf("serve: %w", err)
	}
	<-done
	log.Printf("stopped")
	return nil
}
