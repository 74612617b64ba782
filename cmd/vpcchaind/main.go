// Command vpcchaind is the warm-pool daemon behind the vpc-ipam plugin. It is
// configured by environment variables (the AWS VPC CNI's names where we have
// the feature; see daemon/config), refuses to start on an invalid value,
// discovers the node, then serves the IPAM API on a root-only unix socket and
// Prometheus metrics on VPCCHAIN_METRICS_ADDR. It logs with log/slog to
// VPCCHAIN_LOG_FILE (stderr by default; never stdout) at VPCCHAIN_LOG_LEVEL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vpcchain/vpcchain/daemon/cloud"
	"github.com/vpcchain/vpcchain/daemon/config"
	"github.com/vpcchain/vpcchain/daemon/eniconfig"
	"github.com/vpcchain/vpcchain/daemon/hostnet"
	"github.com/vpcchain/vpcchain/daemon/ipamd"
	"github.com/vpcchain/vpcchain/daemon/liveness"
	"github.com/vpcchain/vpcchain/daemon/metrics"
	"github.com/vpcchain/vpcchain/daemon/podeni"
	"github.com/vpcchain/vpcchain/internal/ipamclient"
)

func main() {
	// Until the configuration is read: text to stderr.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	setupNode := flag.Bool("setup-node", false, "set the node's sysctls the daemon needs (forwarding, loose rp_filter on the ENIs' links and for links created later) and exit; run from a privileged init container, so the daemon runs unprivileged")
	flag.Parse()
	if *setupNode {
		if err := runSetupNode(); err != nil {
			fmt.Fprintf(os.Stderr, "vpcchaind --setup-node: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		slog.Error(err.Error())
		if logsToFile {
			// Whoever started the daemon sees why it stopped, too.
			fmt.Fprintf(os.Stderr, "vpcchaind: %v\n", err)
		}
		os.Exit(1)
	}
}

// runSetupNode finds the node's ENIs from IMDS and sets the node's sysctls
// (hostnet.SetupNodeSysctls), on the links of the ENIs attached already too.
func runSetupNode() error {
	cfg, err := config.FromEnv()
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cloud.New(ctx, cloud.Options{EC2Endpoint: cfg.EC2Endpoint, IMDSEndpoint: cfg.IMDSEndpoint,
		Region: os.Getenv("AWS_REGION")})
	if err != nil {
		return fmt.Errorf("IMDS client: %w", err)
	}
	md, err := c.MetadataNode(ctx)
	if err != nil {
		return fmt.Errorf("discover the node from IMDS: %w", err)
	}
	mac, err := net.ParseMAC(md.PrimaryMAC)
	if err != nil {
		return fmt.Errorf("primary ENI MAC %q: %w", md.PrimaryMAC, err)
	}
	// The ENIs of the card the daemon uses (it leaves other cards' alone):
	// after a reboot those it attached before are up already, strict.
	var enis []net.HardwareAddr
	for _, e := range md.ENIs {
		if e.NetworkCard != 0 {
			continue
		}
		m, err := net.ParseMAC(e.MAC)
		if err != nil {
			return fmt.Errorf("ENI %s MAC %q: %w", e.ID, e.MAC, err)
		}
		enis = append(enis, m)
	}
	links, err := hostnet.SetupNodeSysctls(mac, enis, cfg.IPv6)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vpcchaind --setup-node: forwarding on, loose rp_filter on the ENI links %v (primary %s) and for new links\n",
		links, md.PrimaryMAC)
	return nil
}

// logsToFile is set once the logs go to VPCCHAIN_LOG_FILE.
var logsToFile bool

func run() error {
	cfg, err := config.FromEnv()
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	// The log file stays open until the process exits: main logs run's error.
	logger, err := newLogger(cfg)
	if err != nil {
		return fmt.Errorf("refusing to start: %w", err)
	}
	// Also routes the standard library's log package (gRPC, net/http) here.
	slog.SetDefault(logger)
	cfg.WarnIgnored(logger)
	logf := logfFor(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	m := metrics.New()
	c, err := cloud.New(ctx, cloud.Options{EC2Endpoint: cfg.EC2Endpoint, IMDSEndpoint: cfg.IMDSEndpoint,
		Region: os.Getenv("AWS_REGION"), MutatingQPS: cfg.EC2QPS, MutatingBurst: cfg.EC2Burst,
		ClusterName: cfg.ClusterName, Logf: logf, ObserveCall: m.ObserveEC2Call})
	if err != nil {
		return fmt.Errorf("EC2/IMDS client: %w", err)
	}
	if err := m.RegisterEC2(c); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	// The orphan check asks the container runtime which pod sandboxes
	// exist; without a CRI socket configured it releases nothing.
	var live liveness.Source
	if cfg.CRISocket != "" {
		cri, err := liveness.NewCRI(cfg.CRISocket)
		if err != nil {
			return err
		}
		defer cri.Close()
		live = cri
		if cfg.PodName == "" {
			// Tests and the demo run the daemon outside a pod.
			logger.Info("orphan check: MY_POD_NAME unset (not run as a pod): the runtime is trusted without checking that it lists this daemon's pod", "cri", cri.String())
		}
	} else {
		logger.Info("orphan check off (VPCCHAIN_CRI_SOCKET=none): an address whose DEL never arrives is released only by the runtime's CNI GC")
	}
	// Custom networking: the node's ENIConfig comes from the Kubernetes
	// API. The watcher starts once the daemon exists; until its first
	// answer the daemon creates no ENI and says it is waiting.
	var d *ipamd.Daemon
	var watcher *eniconfig.Watcher
	var events ipamd.Events
	if cfg.CustomNetworking {
		if watcher, err = newENIConfigWatcher(cfg, func(sel eniconfig.Selection) { d.SetENIConfig(ctx, toENIConfig(sel)) }, logf); err != nil {
			return fmt.Errorf("refusing to start: custom networking: %w", err)
		}
		events = watcher
	}
	// Security groups for pods: the pods' branch ENIs and the node's
	// CNINode come from the Kubernetes API.
	var podENI *podeni.Client
	var ipamPodENI ipamd.PodENI
	if cfg.EnablePodENI {
		rc, err := kubeRESTConfig(cfg)
		if err != nil {
			return fmt.Errorf("refusing to start: ENABLE_POD_ENI: %w", err)
		}
		if podENI, err = podeni.New(rc, cfg.NodeName); err != nil {
			return fmt.Errorf("refusing to start: ENABLE_POD_ENI: %w", err)
		}
		ipamPodENI = podENI
	}
	d, err = ipamd.New(ctx, ipamd.Options{Config: cfg, Cloud: c, Host: hostnet.Host{}, Logf: logf,
		ObserveAdd: m.ObserveAllocation, Liveness: live, Events: events, PodENI: ipamPodENI})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer d.Close()
	if podENI != nil {
		go podeni.DeclareLoop(ctx, podENI, podENIDeclareInterval, d.TrunkRoom, logf)
	}
	if watcher != nil {
		go func() {
			if err := watcher.Run(ctx); err != nil && ctx.Err() == nil {
				logger.Error("custom networking: watching the node's ENIConfig stopped", "err", err)
			}
		}()
	}
	if err := m.RegisterPool(d); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	// "primary:<port>" is the node's address, known now that d found the node.
	metricsAddr, err := config.MetricsListenAddr(cfg.MetricsAddr, d.NodeAddress())
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	ln, err := ipamclient.Listen(cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Socket, err)
	}
	srv, err := ipamd.NewServer(d)
	if err != nil {
		ln.Close()
		return fmt.Errorf("start: %w", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	metricsDone := make(chan struct{})
	go func() { defer close(metricsDone); serveMetrics(ctx, logger, metricsAddr, m.Handler()) }()
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	logger.Info("serving the IPAM API", "socket", cfg.Socket)
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		stop() // end the loops and the metrics server before returning
		<-done
		<-metricsDone
		return fmt.Errorf("serve: %w", err)
	}
	<-done
	<-metricsDone
	logger.Info("stopped")
	return nil
}

// newLogger builds the daemon's logger: text records at cfg.LogLevel to
// stderr or to the file cfg.LogFile (appended, made with its directory if
// missing). Config refuses stdout, which stays free of logs.
func newLogger(cfg config.Config) (*slog.Logger, error) {
	var w io.Writer = os.Stderr
	if cfg.LogFile != config.LogToStderr {
		if err := os.MkdirAll(filepath.Dir(cfg.LogFile), 0o755); err != nil {
			return nil, fmt.Errorf("VPCCHAIN_LOG_FILE=%q: %w", cfg.LogFile, err)
		}
		f, err := os.OpenFile(cfg.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("VPCCHAIN_LOG_FILE=%q: %w", cfg.LogFile, err)
		}
		w = f
		logsToFile = true
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: cfg.LogLevel})
	return slog.New(h), nil
}

// logfFor adapts the daemon packages' Logf to slog: a line that carries an
// error (any argument that is an error) is a warning, the others are info.
func logfFor(l *slog.Logger) func(string, ...any) {
	return func(format string, args ...any) {
		level := slog.LevelInfo
		for _, a := range args {
			if _, ok := a.(error); ok {
				level = slog.LevelWarn
				break
			}
		}
		if !l.Enabled(context.Background(), level) {
			return
		}
		l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

// Backoff between attempts to listen on the metrics address, as the
// reference restarts its metrics server: the IPAM API keeps serving
// meanwhile, metrics are not worth failing pod networking for.
const (
	metricsRetryMin = time.Second
	metricsRetryMax = time.Minute
)

// serveMetrics serves h at /metrics on addr until ctx ends ("" disables),
// retrying with backoff when it cannot listen, and shuts down gracefully.
func serveMetrics(ctx context.Context, logger *slog.Logger, addr string, h http.Handler) {
	if addr == "" {
		logger.Info("metrics disabled (VPCCHAIN_METRICS_ADDR is empty)")
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	backoff := metricsRetryMin
	for ctx.Err() == nil {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
		if err != nil {
			logger.Error("metrics: cannot listen; retrying", "addr", addr, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, metricsRetryMax)
			continue
		}
		logger.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(ln) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := srv.Shutdown(sctx); err != nil {
				logger.Warn("metrics: shutdown", "err", err)
			}
			cancel()
			<-errc
			return
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) {
				return
			}
			logger.Error("metrics: server failed; restarting", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, metricsRetryMax)
		}
	}
}

// podENIDeclareInterval is how often the CNINode's feature is checked:
// the controller makes the CNINode when it first sees the Node.
const podENIDeclareInterval = 5 * time.Second

// kubeRESTConfig reaches the Kubernetes API: KUBECONFIG if set, else the
// pod's service account.
func kubeRESTConfig(cfg config.Config) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("Kubernetes API client: %w", err)
	}
	rc.UserAgent = "vpcchaind"
	return rc, nil
}

// newENIConfigWatcher watches this node's ENIConfig through the Kubernetes
// API.
func newENIConfigWatcher(cfg config.Config, onChange func(eniconfig.Selection), logf func(string, ...any)) (*eniconfig.Watcher, error) {
	rc, err := kubeRESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	return eniconfig.New(rc, eniconfig.Options{NodeName: cfg.NodeName, LabelDef: cfg.ENIConfigLabelDef,
		AnnotationDef: cfg.ENIConfigAnnotationDef}, onChange, logf)
}

// toENIConfig is the daemon's view of a selection.
func toENIConfig(sel eniconfig.Selection) ipamd.ENIConfig {
	c := ipamd.ENIConfig{Name: sel.Name, From: sel.From, Found: sel.Spec != nil, Problem: sel.Err}
	if sel.Spec != nil {
		c.Subnet, c.SecurityGroups = sel.Spec.Subnet, sel.Spec.SecurityGroups
	}
	return c
}
