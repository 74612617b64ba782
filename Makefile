# vpcchain: a modular VPC-native CNI for Kubernetes on AWS.
GO        ?= go
BIN       := $(CURDIR)/bin
GOFLAGS   ?= -buildvcs=false
# Release-style binaries: static (a plugin copied onto any host must not
# depend on its libc) and stripped (plugins are exec'd for every pod; smaller
# static binaries start faster). grpcnotrace drops gRPC's x/net/trace (and
# with it html/template): nothing serves it, and vpc-ipam shrinks from 10.6
# to 7.9 MB and starts about 2 ms sooner on every ADD and DEL.
BUILDFLAGS ?= -trimpath -tags grpcnotrace -ldflags=-s\ -w
export CGO_ENABLED ?= 0
TESTFLAGS ?= -count=1 -timeout 40m

CMDS    := $(wildcard cmd/*)
PLUGINS := $(wildcard plugins/*)
# The test bed's commands (sim/cmd: vpcsim, which the demo and the e2e tests
# run): not part of the product, built into bin/ with it.
SIMCMDS := $(wildcard sim/cmd/*)

.PHONY: all build tools chart-test heavy-tools node-tools cluster-tools peer-tools peer-test kernel-tools kernel-test kernel-lock conformance-tools conformance cluster cluster-e2e cluster-down node-test test unit e2e bench bench-peer scale demo cross image image-lock lint clean deps proto fuzz

all: build

deps:
	@./scripts/install-deps.sh

# Every binary into bin/: commands, the CNI plugins and the simulator.
build:
	@mkdir -p $(BIN)
	@for d in $(CMDS) $(PLUGINS) $(SIMCMDS); do \
	  if ls $$d/*.go >/dev/null 2>&1; then \
	    echo "go build $$d"; $(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $(BIN)/$$(basename $$d) ./$$d || exit 1; \
	  fi; \
	done

# Test-only tools from their own module (test/tools): cnitool drives the
# chain in the demo the way a runtime does; the upstream plugins are chained
# with ours in the e2e tests and are the benchmarks' reference.
UPSTREAM := github.com/containernetworking/plugins/plugins
tools:
	@mkdir -p $(BIN)/tools
	cd test/tools && $(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $(BIN)/tools/ github.com/containernetworking/cni/cnitool \
	  $(UPSTREAM)/main/ptp $(UPSTREAM)/ipam/host-local $(UPSTREAM)/meta/portmap $(UPSTREAM)/meta/bandwidth $(UPSTREAM)/meta/tuning

# The real Calico Felix, kube-apiserver and kubectl that TestCalicoPolicy runs,
# and the kubelet that TestKubeletNode runs
# (each from its own module under test/tools/, so their heavy dependencies
# stay out of the product's go.mod). They take minutes to build, so a binary
# that exists and is newer than its module's go.mod is kept (delete it, or
# touch the go.mod, to rebuild). Each is linked to a temporary name and
# renamed, so an interrupted build never leaves a binary that looks current.
FELIX_ENV := GONOSUMDB=github.com/projectcalico GOFLAGS='-mod=mod $(GOFLAGS)' CGO_ENABLED=0
KUBE_VERSION := v1.33.13
CALICO_VERSION := v3.31.0
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=33 \
  -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
  -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=33
CTRD2 := $(BIN)/tools/containerd2
CTRD2_VERSION := v2.2.9
heavy-tools: $(BIN)/tools/calico-felix $(BIN)/tools/kube-apiserver $(BIN)/tools/kubectl
node-tools: heavy-tools $(BIN)/tools/kubelet $(BIN)/tools/loopback $(CTRD2)/containerd $(CTRD2)/containerd-shim-runc-v2 $(CTRD2)/ctr
# The rest of a control plane and kube-proxy, for the cluster tier, and
# Calico's calico-node (start-up, Felix, probes) for the image of Calico's
# policy-only manifest that the tier applies.
cluster-tools: node-tools $(BIN)/tools/kube-controller-manager $(BIN)/tools/kube-scheduler $(BIN)/tools/kube-proxy \
  $(BIN)/tools/calico-node $(BIN)/tools/helm

$(BIN)/tools/calico-felix: test/tools/felix/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/felix && $(FELIX_ENV) $(GO) build -trimpath -ldflags='-s -w' -o $@.tmp github.com/projectcalico/calico/felix/cmd/calico-felix
	mv $@.tmp $@

$(BIN)/tools/calico-node: test/tools/felix/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/felix && $(FELIX_ENV) $(GO) build -trimpath \
	  -ldflags='-s -w -X github.com/projectcalico/calico/pkg/buildinfo.Version=$(CALICO_VERSION)' \
	  -o $@.tmp github.com/projectcalico/calico/node/cmd/calico-node
	mv $@.tmp $@

$(BIN)/tools/kube-apiserver $(BIN)/tools/kubectl $(BIN)/tools/kubelet $(BIN)/tools/kube-controller-manager \
  $(BIN)/tools/kube-scheduler $(BIN)/tools/kube-proxy: $(BIN)/tools/%: test/tools/kube/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/kube && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath -ldflags='$(KUBE_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/cmd/$*
	mv $@.tmp $@

# Helm v4.3.2, for the cluster tier's TestClusterHelm (helm install, upgrade
# and uninstall of charts/vpcchain), from its own module (test/tools/helm),
# which also holds the chart's tests (chart-test: the chart rendered with
# Helm's SDK against our kustomize manifest). The version is stamped where
# `helm version` reads it.
HELM_VERSION := v4.3.2
$(BIN)/tools/helm: test/tools/helm/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/helm && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath \
	  -ldflags='-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)' -o $@.tmp helm.sh/helm/v4/cmd/helm
	mv $@.tmp $@

chart-test:
	cd test/tools/helm && $(GO) test $(GOFLAGS) $(TESTFLAGS) ./...

# containerd 2.x (which calls CNI STATUS from its CRI status) with its runc
# shim and ctr, from their own module (test/tools/containerd), static.
$(CTRD2)/containerd $(CTRD2)/containerd-shim-runc-v2 $(CTRD2)/ctr: $(CTRD2)/%: test/tools/containerd/go.mod
	@mkdir -p $(CTRD2)
	cd test/tools/containerd && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath -tags no_btrfs \
	  -ldflags='-s -w -X github.com/containerd/containerd/v2/version.Version=$(CTRD2_VERSION)' \
	  -o $@.tmp github.com/containerd/containerd/v2/cmd/$*
	mv $@.tmp $@

# The unmodified AWS VPC CNI v1.23.2 as a peer (TestAWSVPCCNIPeer): ipamd
# and its two plugins, named as its image installs them. Its own module
# (test/tools/awscni). The version is stamped where each binary reads it
# (ipamd: pkg/version; the plugins: main.version): ipamd refuses a plugin
# whose version differs from its own. The rest of its two images, for the
# cluster tier's migration test (TestClusterMigrateFromAWSVPCCNI): the
# aws-node container's entrypoint (aws-vpc-cni, which starts ipamd and
# writes the conflist) and grpc-health-probe (the entrypoint's wait and the
# DaemonSet's probes), and the init container's aws-vpc-cni-init.
AWSCNI_VERSION := v1.23.2
AWSCNI_PKG := github.com/aws/amazon-vpc-cni-k8s
AWSCNI_TOOLS := $(addprefix $(BIN)/tools/,aws-k8s-agent aws-cni egress-cni aws-vpc-cni aws-vpc-cni-init grpc-health-probe)
peer-tools: $(AWSCNI_TOOLS) $(BIN)/tools/vpc-resource-controller
$(BIN)/tools/aws-k8s-agent: CMD := aws-k8s-agent
$(BIN)/tools/aws-cni: CMD := routed-eni-cni-plugin
$(BIN)/tools/egress-cni: CMD := egress-cni-plugin
$(BIN)/tools/aws-vpc-cni: CMD := aws-vpc-cni
$(BIN)/tools/aws-vpc-cni-init: CMD := aws-vpc-cni-init
$(BIN)/tools/grpc-health-probe: CMD := grpc-health-probe
$(AWSCNI_TOOLS): test/tools/awscni/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/awscni && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath \
	  -ldflags='-s -w -X $(AWSCNI_PKG)/pkg/version.Version=$(AWSCNI_VERSION) -X main.version=$(AWSCNI_VERSION)' \
	  -o $@.tmp $(AWSCNI_PKG)/cmd/$(CMD)
	mv $@.tmp $@

# The unmodified amazon-vpc-resource-controller-k8s v1.8.2, the controller
# EKS runs for security groups for pods (TestPodENIController): its own
# module (test/tools/vpcrc), the version stamped where it logs it.
VPCRC_VERSION := v1.8.2
VPCRC_PKG := github.com/aws/amazon-vpc-resource-controller-k8s
$(BIN)/tools/vpc-resource-controller: test/tools/vpcrc/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/vpcrc && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath \
	  -ldflags='-s -w -X $(VPCRC_PKG)/pkg/version.GitVersion=$(VPCRC_VERSION)' \
	  -o $@.tmp $(VPCRC_PKG)
	mv $@.tmp $@

# containerd's CRI plugin always runs the upstream loopback plugin from its CNI
# bin dir (TestKubeletNode); it comes from the light tools module.
$(BIN)/tools/loopback: test/tools/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools && $(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $@.tmp $(UPSTREAM)/main/loopback
	mv $@.tmp $@

# A real node (kubelet v1.33.13, Debian containerd and runc) running our
# DaemonSet's binaries. It runs alone, after the other tests: a containerd
# starved of CPU while it restarts can give up on a pod's shim and recreate
# the sandbox, which the test would rightly report as a disturbed pod.
# The cluster tier (TestClusterInstall, TestClusterCalico,
# TestClusterMigrateFromAWSVPCCNI, TestClusterHelm) installs the image
# `make image` built, Calico's policy-only manifest and the AWS VPC CNI's
# (images from peer-tools), with kubectl, and charts/vpcchain with helm, on
# a control plane and its nodes.
KUBELET_TEST = VPCCHAIN_BIN=$(BIN) $(GO) test $(GOFLAGS) $(TESTFLAGS) -tags kubelet -v -run 'TestKubeletNode|TestCluster|TestClusterMigrateFromAWSVPCCNI|TestClusterHelm' ./test/e2e/
node-test: deps build tools cluster-tools peer-tools image $(BIN)/tools/agnhost $(BIN)/tools/coredns
	$(KUBELET_TEST)

# The unmodified AWS VPC CNI on the simulator (TestAWSVPCCNIPeer, build tag
# peer): its ipamd and plugins on two simulated nodes against a minimal
# control plane, measuring the simulator against a client written by others;
# TestChaosSideBySide: TestChaos's fault rounds against both CNIs at once;
# and TestPodENIController: AWS's VPC resource controller with our daemon
# (security groups for pods).
PEER_TEST = VPCCHAIN_BIN=$(BIN) $(GO) test $(GOFLAGS) $(TESTFLAGS) -tags peer -v -run 'TestAWSVPCCNIPeer|TestChaosSideBySide|TestPodENIController' ./test/e2e/
peer-test: deps build tools heavy-tools peer-tools
	$(PEER_TEST)

# The kernel tier: tests of kernel features the machine's kernel may lack
# (802.1Q VLAN links, WireGuard, ESP) run in a qemu VM on Debian 12's kernel
# (test/kernelvm), which mounts the host's root read-only and runs a test
# binary from it. kernel-tools builds the guest into bin/kernelvm (vmlinuz
# and an initramfs of busybox and only the modules test/kernelvm/guest/modules
# names) from the packages test/kernelvm/packages.lock pins, the .deb files
# kept in bin/kernelvm/debs; like the heavy tools it is kept while it is
# newer than its inputs. kernel-test compiles the e2e tests with the kernel
# and peer tags and runs TestKernelVM, which boots the guest with that binary
# running the TestGuest* tests (TestGuestPodENI runs a control plane, AWS's
# resource controller and our daemons in the guest: hence the peer and
# cluster tools); kernel-lock re-pins the packages.
KERNELVM := $(BIN)/kernelvm
kernel-tools: $(KERNELVM)/vmlinuz $(KERNELVM)/initramfs.cpio
$(KERNELVM)/vmlinuz $(KERNELVM)/initramfs.cpio &: test/kernelvm/packages.lock test/kernelvm/build.sh \
  test/kernelvm/guest/init test/kernelvm/guest/modules build/image/rootfs.sh
	sh test/kernelvm/build.sh $(KERNELVM)
KERNEL_TEST = $(GO) test $(GOFLAGS) -c -tags 'kernel peer' -o $(BIN)/e2e-kernel.test ./test/e2e/ && \
  cd test/e2e && VPCCHAIN_BIN=$(BIN) VPCCHAIN_KERNELVM_DIR=$(KERNELVM) \
  $(BIN)/e2e-kernel.test -test.run '^TestKernelVM$$' -test.v -test.count=1 -test.timeout 30m
kernel-test: deps build tools cluster-tools peer-tools kernel-tools
	$(KERNEL_TEST)
kernel-lock:
	sh test/kernelvm/lock.sh test/kernelvm/packages.lock

# Kubernetes' own e2e suite (the e2e.test binary of k8s.io/kubernetes
# v1.33.13) and its agnhost, for `make conformance`; cached like the others.
conformance-tools: cluster-tools $(BIN)/tools/k8s-e2e.test $(BIN)/tools/agnhost $(BIN)/tools/coredns
# CoreDNS, the cluster DNS of `make conformance` and `make cluster`.
$(BIN)/tools/coredns: test/tools/coredns/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/coredns && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath -ldflags='-s -w' -o $@.tmp github.com/coredns/coredns
	mv $@.tmp $@
$(BIN)/tools/agnhost: test/tools/kube/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/kube && CGO_ENABLED=0 $(GO) build $(GOFLAGS) -trimpath -ldflags='-s -w' -o $@.tmp k8s.io/kubernetes/test/images/agnhost
	mv $@.tmp $@
$(BIN)/tools/k8s-e2e.test: test/tools/kube/go.mod
	@mkdir -p $(BIN)/tools
	cd test/tools/kube && CGO_ENABLED=0 $(GO) test $(GOFLAGS) -c -trimpath -ldflags='$(KUBE_LDFLAGS)' -o $@.tmp k8s.io/kubernetes/test/e2e
	mv $@.tmp $@

# Kubernetes' sig-network Conformance tests (Granular Checks: Pods, Services)
# on the cluster tier's cluster with our DaemonSet, Calico and CoreDNS; the
# report and log land in bin/conformance. `make test` runs it last.
CONFORMANCE_TEST = VPCCHAIN_BIN=$(BIN) VPCCHAIN_CONFORMANCE=1 $(GO) test $(GOFLAGS) -count=1 -timeout 60m -tags kubelet -v -run '^TestConformance$$' ./test/e2e/
conformance: deps build tools conformance-tools image
	$(CONFORMANCE_TEST)

# A cluster to use (README "A cluster on the simulator"): the cluster tier's
# three nodes with our DaemonSet and Calico installed by kubectl, until Ctrl-C
# or `make cluster-down`. The test binary runs directly (not under go test),
# so the signal reaches it alone and it tears down in order.
CLUSTER_DIR := $(BIN)/cluster
cluster: deps build tools cluster-tools $(BIN)/tools/coredns $(BIN)/tools/agnhost image
	$(GO) test $(GOFLAGS) -c -tags kubelet -o $(BIN)/e2e-kubelet.test ./test/e2e/
	cd test/e2e && VPCCHAIN_BIN=$(BIN) VPCCHAIN_CLUSTER_DIR=$(CLUSTER_DIR) \
	  $(BIN)/e2e-kubelet.test -test.run '^TestClusterUp$$' -test.timeout 0 -test.v

# Any of Kubernetes' e2e tests against the cluster `make cluster` keeps up,
# from inside its control plane's network namespace (where the nodes' and
# pods' addresses are reachable, as from a machine in the VPC):
#   make cluster-e2e FOCUS='\[sig-network\] DNS' [SKIP='...']
# The JUnit report lands in bin/cluster/e2e.
FOCUS ?= \[sig-network\].*\[Conformance\]
SKIP ?=
cluster-e2e: $(BIN)/tools/k8s-e2e.test
	@if [ ! -f $(CLUSTER_DIR)/netns ]; then echo "no cluster running: start one with make cluster"; exit 1; fi
	@rm -rf $(CLUSTER_DIR)/e2e && mkdir -p $(CLUSTER_DIR)/e2e
	cd $(CLUSTER_DIR)/e2e && ip netns exec $$(cat $(CLUSTER_DIR)/netns) $(BIN)/tools/k8s-e2e.test \
	  --kubeconfig=$(CLUSTER_DIR)/kubeconfig-netns --provider=skeleton --kubectl-path=$(BIN)/tools/kubectl \
	  --report-dir=$(CLUSTER_DIR)/e2e --ginkgo.focus='$(FOCUS)' --ginkgo.skip='$(SKIP)' --ginkgo.no-color --ginkgo.v

cluster-down:
	@if [ ! -f $(CLUSTER_DIR)/pid ]; then echo "no cluster running"; exit 0; fi; \
	  pid=$$(cat $(CLUSTER_DIR)/pid); kill -TERM $$pid 2>/dev/null || exit 0; \
	  echo "stopping the cluster (pid $$pid)"; \
	  while kill -0 $$pid 2>/dev/null; do sleep 1; done; echo "stopped"

# All tests: unit + end-to-end (needs root; installs missing Debian packages).
test: deps lint build tools conformance-tools image peer-tools kernel-tools
	VPCCHAIN_BIN=$(BIN) $(GO) test $(GOFLAGS) $(TESTFLAGS) ./...
	cd test/tools && $(GO) test $(GOFLAGS) $(TESTFLAGS) ./...
	$(MAKE) chart-test
	$(PEER_TEST)
	$(KERNEL_TEST)
	$(KUBELET_TEST)
	$(CONFORMANCE_TEST)
	$(MAKE) fuzz FUZZTIME=5000x

# Each fuzz target for a bounded number of inputs (the seed corpora also run in `go test`).
FUZZTIME ?= 50000x
FUZZ := plugins/vpc-bridge:FuzzParseConfig internal/vpcipam:FuzzParseConfig internal/vpcipam:FuzzParsePodArgs \
	plugins/vpc-snat:FuzzParseConfig plugins/vpc-egress-v4:FuzzParseConfig plugins/policy-hook:FuzzParseConfig plugins/policy-hook:FuzzLoadPod \
	daemon/config:FuzzLoad daemon/ipamd:FuzzServerRequests conflist:FuzzOptionsFromEnv daemon/pool:FuzzChurn
fuzz:
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; for t in $(FUZZ); do \
	  echo "fuzz $${t%%:*} $${t##*:} for $(FUZZTIME)"; \
	  $(GO) test $(GOFLAGS) -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) ./$${t%%:*} >$$log 2>&1 || { cat $$log; exit 1; }; \
	done

unit: build
	$(GO) test $(GOFLAGS) $(TESTFLAGS) $$($(GO) list ./... | grep -v /test/e2e)

e2e: deps build tools heavy-tools
	VPCCHAIN_BIN=$(BIN) $(GO) test $(GOFLAGS) $(TESTFLAGS) -v ./test/e2e/...

# Every benchmark of docs/benchmarks.md, each with its reference in the same
# run, at the iteration counts the document's figures come from.
E2EBENCH = VPCCHAIN_BIN=$(BIN) $(GO) test $(GOFLAGS) -count=1 -timeout 60m -run '^$$'
bench: deps build
	$(E2EBENCH) -bench 'ChainAddDel$$' -benchtime 200x ./test/e2e/
	$(E2EBENCH) -bench ChainAddDelIPv6 -benchtime 50x ./test/e2e/
	$(E2EBENCH) -bench BurstFreshNode -benchtime 1x ./test/e2e/
	$(E2EBENCH) -bench Throughput -benchtime 5x ./test/e2e/
	$(E2EBENCH) -bench DaemonResources -benchtime 1x ./test/e2e/
	$(GO) test $(GOFLAGS) -count=1 -run '^$$' -bench ChurnSteady -benchtime 1x ./daemon/ipamd/

# Side by side with the unmodified AWS VPC CNI (docs/benchmarks.md, "Against
# the AWS VPC CNI"): both systems in each run, on the same simulator.
PEERBENCH = $(E2EBENCH) -tags peer
bench-peer: deps build tools heavy-tools peer-tools
	$(PEERBENCH) -bench PeerAddDel -benchtime 100x ./test/e2e/
	$(PEERBENCH) -bench PeerBurst -benchtime 3x ./test/e2e/
	$(PEERBENCH) -bench PeerChurn -benchtime 1x ./test/e2e/
	$(PEERBENCH) -bench PeerResources -benchtime 1x ./test/e2e/
	$(PEERBENCH) -bench PeerScaleOut -benchtime 1x ./test/e2e/
	$(PEERBENCH) -bench PeerThroughput -benchtime 5x ./test/e2e/

# 1,000 simulated nodes' daemons against one rate-limited simulator, then a
# rolling restart (docs/benchmarks.md; `go test ./test/scale/` runs 40 nodes).
SCALE_NODES ?= 1000
scale:
	VPCCHAIN_SCALE_NODES=$(SCALE_NODES) $(GO) test $(GOFLAGS) -count=1 -run TestScale -v -timeout 60m ./test/scale/

demo: deps build tools
	@./scripts/demo.sh

# The image's platforms (Graviton nodes are arm64). The host's binaries are
# make build's in bin/; every other platform's are cross-compiled (static,
# the same flags) into bin/linux_<arch>/ by make cross: the commands and
# plugins, and in its tools/ the upstream plugins the image carries. One go
# build per platform builds them in parallel; the build cache and go build's
# up-to-date check make an unchanged rebuild take seconds.
IMAGE_PLATFORMS := linux/amd64 linux/arm64
IMAGE_ARCHS := $(patsubst linux/%,%,$(IMAGE_PLATFORMS))
HOSTARCH := $(shell $(GO) env GOARCH)
CROSS_ARCHS := $(filter-out $(HOSTARCH),$(IMAGE_ARCHS))
PRODUCT_PKGS := $(addprefix ./,$(sort $(dir $(wildcard $(addsuffix /*.go,$(CMDS) $(PLUGINS))))))
IMAGE_TOOLS := $(UPSTREAM)/ipam/host-local $(UPSTREAM)/meta/portmap $(UPSTREAM)/meta/bandwidth $(UPSTREAM)/main/loopback
cross:
	@for a in $(CROSS_ARCHS); do \
	  echo "go build (linux/$$a) $(PRODUCT_PKGS) and the upstream plugins"; \
	  mkdir -p $(BIN)/linux_$$a/tools && \
	  GOOS=linux GOARCH=$$a $(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $(BIN)/linux_$$a/ $(PRODUCT_PKGS) && \
	  (cd test/tools && GOOS=linux GOARCH=$$a $(GO) build $(GOFLAGS) $(BUILDFLAGS) -o $(BIN)/linux_$$a/tools/ $(IMAGE_TOOLS)) || exit 1; \
	done

# The product's image, without a container engine and reproducibly (the same
# binaries and lock give the same digest): an OCI image layout archive in
# bin/image/ that `ctr images import` reads, one manifest per platform of
# IMAGE_PLATFORMS under an image index. The builder skips the work when its
# inputs are those of the archive already there. build/image/Dockerfile
# builds the same layout with a container builder.
IMAGE ?= vpcchain/vpcchain:dev
image: deps build tools $(BIN)/tools/loopback cross
	$(GO) run $(GOFLAGS) ./build/image -bin $(BIN) -platforms '$(IMAGE_PLATFORMS)' \
	  -out $(BIN)/image/vpcchain.oci.tar -ref $(IMAGE)

# Re-pin the image's Debian packages to the versions apt offers now.
image-lock:
	sh build/image/lock.sh build/image/debian-packages.lock

lint:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags kubelet ./test/e2e/
	$(GO) vet -tags peer ./test/e2e/
	$(GO) vet -tags 'kernel peer' ./test/e2e/

# Regenerate the checked-in protobuf and ttrpc code: protoc from Debian
# (3.21.12), the generators at the versions go.mod pins.
proto:
	command -v protoc >/dev/null || apt-get install -y protobuf-compiler
	$(GO) build -o $(BIN)/proto/ google.golang.org/protobuf/cmd/protoc-gen-go github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
	PATH=$(BIN)/proto:$$PATH protoc --go_out=. --go_opt=module=github.com/vpcchain/vpcchain \
	  --go-ttrpc_out=. --go-ttrpc_opt=module=github.com/vpcchain/vpcchain,prefix=TTRPC api/ipam/v1/ipam.proto

clean:
	rm -rf $(BIN)
