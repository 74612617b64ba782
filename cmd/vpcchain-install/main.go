// Command vpcchain-install installs the vpcchain CNI chain on a node: it
// copies the plugin binaries into the CNI bin dir and, once the daemon
// reports SERVING on its gRPC health service, writes the chain's .conflist
// into the CNI conf dir (both atomically, and only when changed). The
// conflist's node-specific values come from the daemon's environment
// variables (AWS_VPC_K8S_CNI_VETHPREFIX, AWS_VPC_ENI_MTU, VPCCHAIN_SOCKET,
// VPCCHAIN_STATE_DIR, ENABLE_BANDWIDTH_PLUGIN ...).
//
// In the DaemonSet:
//
//	init container:  vpcchain-install --binaries-only --bin-src /app/cni --cni-bin-dir /host/opt/cni/bin
//	sidecar:         vpcchain-install --conflist-only --cni-conf-dir /host/etc/cni/net.d --cni-bin-dir /host/opt/cni/bin --keep-running 1m
//	sidecar preStop: vpcchain-install --uninstall-if-deleted vpcchain (kubectl delete of the manifest uninstalls)
//	probes:          vpcchain-install --check-health (readiness: SERVING) / --check-live (liveness: answers)
//
// With VPCCHAIN_ENABLE_POLICY_HOOK=true the sidecar also writes
// <cni-conf-dir>/vpcchain-kubeconfig (0600) for the policy-hook plugin: a
// token of the hook's ServiceAccount (POLICY_HOOK_SERVICE_ACCOUNT) bound to
// the node (MY_NODE_NAME) from the API server's TokenRequest, renewed while
// it keeps running.
//
// With VPCCHAIN_CNI_EXCLUSIVE (the default) the conflist-writing run renames
// competing network configurations that sort before ours to
// <name>.vpcchain-disabled (never a meta plugin's such as Multus's, nor a
// file that is no network configuration); uninstalling (--uninstall, or
// --uninstall-if-deleted once the DaemonSet is deleted) renames them back
// before removing ours.
//
// Exit status: 0 success, 1 failure, 2 bad usage or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vpcchain/vpcchain/conflist"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	log.SetFlags(log.Ldate | log.Ltime | log.Lmicroseconds)
	log.SetPrefix("vpcchain-install: ")
	fs := flag.NewFlagSet("vpcchain-install", flag.ContinueOnError)
	var (
		binSrc       = fs.String("bin-src", "", "directory holding the plugin binaries to install (vpc-bridge, vpc-ipam, vpc-snat; policy-hook, portmap, bandwidth, loopback when present)")
		binDir       = fs.String("cni-bin-dir", conflist.DefaultCNIBinDir, "CNI plugin directory")
		confDir      = fs.String("cni-conf-dir", conflist.DefaultCNIConfDir, "CNI network configuration directory")
		confName     = fs.String("conf-name", conflist.DefaultConfName, "file name of the conflist")
		socket       = fs.String("socket", "", "daemon's unix socket (default: VPCCHAIN_SOCKET, else <VPCCHAIN_STATE_DIR>/ipamd.sock)")
		timeout      = fs.Duration("timeout", conflist.DefaultWaitTimeout, "how long to wait for the daemon to report SERVING (with --check-*: for the one check)")
		interval     = fs.Duration("poll-interval", conflist.DefaultPollInterval, "spacing of health checks while waiting")
		binariesOnly = fs.Bool("binaries-only", false, "only copy the binaries (no wait, no conflist): the init container")
		conflistOnly = fs.Bool("conflist-only", false, "only wait for the daemon and write the conflist (binaries must be in --cni-bin-dir)")
		keepRunning  = fs.Duration("keep-running", 0, "after installing, stay up and re-assert the install every this long (0: exit)")
		uninstall    = fs.Bool("uninstall", false, "put back the network configurations the install set aside (*.vpcchain-disabled), remove our conflist and policy-hook's kubeconfig (nothing else), and exit")
		ifDeleted    = fs.String("uninstall-if-deleted", "", "uninstall as --uninstall only if this DaemonSet (in the pod's namespace) is deleted or being deleted, or no longer selects this node (MY_NODE_NAME), then exit: the sidecar's preStop, so kubectl delete of the manifest uninstalls and a rolling update does not")
		removeBins   = fs.Bool("remove-binaries", false, "with --uninstall: also remove our plugin binaries (never portmap/bandwidth/loopback)")
		checkHealth  = fs.Bool("check-health", false, "exit 0 if the daemon reports SERVING, 1 otherwise (readiness probe)")
		checkLive    = fs.Bool("check-live", false, "exit 0 if the daemon answers its health service at all, SERVING or not (liveness probe)")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		log.Printf("unexpected arguments %q", fs.Args())
		return 2
	}
	conf, err := conflist.OptionsFromEnv(os.LookupEnv)
	if err != nil {
		log.Print(err)
		return 2
	}
	if *socket != "" {
		conf.Socket = *socket
	}
	exclusive, err := conflist.ExclusiveFromEnv(os.LookupEnv)
	if err != nil {
		log.Print(err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	switch {
	case *checkHealth || *checkLive:
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		st, err := conflist.CheckHealth(cctx, conf.Socket)
		if err == nil || (*checkLive && errors.Is(err, conflist.ErrNotServing)) {
			fmt.Println(st)
			return 0
		}
		log.Print(err)
		return 1
	case *ifDeleted != "":
		c, ns, err := inClusterClient()
		if err != nil {
			log.Print(err)
			return 1
		}
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		gone, err := c.daemonSetGone(cctx, ns, *ifDeleted, os.Getenv(envNodeName))
		if err != nil {
			// Keep the node's network: an install we cannot prove removed stays.
			log.Printf("keeping %s/%s: %v", *confDir, *confName, err)
			return 1
		}
		if !gone {
			log.Printf("DaemonSet %s/%s stays (an update or a restart): keeping %s/%s", ns, *ifDeleted, *confDir, *confName)
			return 0
		}
		if err := conflist.Uninstall(ctx, conflist.UninstallOptions{CNIConfDir: *confDir, ConfName: *confName, Logf: log.Printf}); err != nil {
			log.Print(err)
			return 1
		}
		log.Printf("DaemonSet %s/%s deleted or no longer on this node: removed %s/%s", ns, *ifDeleted, *confDir, *confName)
		return 0
	case *uninstall:
		if err := conflist.Uninstall(ctx, conflist.UninstallOptions{
			CNIConfDir: *confDir, ConfName: *confName, CNIBinDir: *binDir, RemoveBinaries: *removeBins, Logf: log.Printf,
		}); err != nil {
			log.Print(err)
			return 1
		}
		log.Printf("removed %s/%s", *confDir, *confName)
		return 0
	case *binariesOnly && *conflistOnly:
		log.Print("--binaries-only and --conflist-only exclude each other")
		return 2
	}

	o := conflist.InstallOptions{
		BinSrc: *binSrc, CNIBinDir: *binDir, CNIConfDir: *confDir, ConfName: *confName,
		Conf: conf, WaitTimeout: *timeout, PollInterval: *interval,
		SkipBinaries: *conflistOnly, SkipConflist: *binariesOnly, Keep: !exclusive,
		Logf: log.Printf,
	}
	var creds *policyCredentials
	if conf.PolicyHook && !*binariesOnly {
		if creds, err = newPolicyCredentials(); err != nil {
			log.Print(err)
			return 1
		}
		if o.Kubeconfig, err = creds.kubeconfig(ctx); err != nil {
			log.Print(err)
			return 1
		}
	}
	if _, err := conflist.Install(ctx, o); err != nil {
		log.Print(err)
		return 1
	}
	if *keepRunning <= 0 {
		return 0
	}
	// Re-assert (e.g. the conflist was deleted, or a node image replaced a
	// binary); Install writes nothing when all is in place.
	quiet := o
	quiet.Logf = func(format string, args ...any) {}
	t := time.NewTicker(*keepRunning)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-t.C:
		}
		if creds != nil {
			kc, err := creds.kubeconfig(ctx)
			if err != nil {
				log.Print(err)
				continue
			}
			quiet.Kubeconfig = kc
		}
		r, err := conflist.Install(ctx, quiet)
		switch {
		case ctx.Err() != nil:
			return 0
		case err != nil:
			log.Print(err)
		case len(r.Installed) > 0 || r.ConfWritten:
			log.Printf("re-installed: binaries %v, conflist rewritten %v", r.Installed, r.ConfWritten)
		case r.KubeconfigWritten:
			log.Print("renewed policy-hook's kubeconfig")
		}
	}
}
