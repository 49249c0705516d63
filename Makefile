# Petrel build. `make` builds every binary into bin/; `make check` is the
# full test run CI uses; `make demo` builds everything and boots a
# unikernel through petreld.

# Go from PATH, else Debian's usual /usr/local/go, so a fresh shell works.
GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOBIN    ?= $(shell $(GO) env GOPATH)/bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION) -X github.com/petrel-vmm/petrel/core/daemon.Version=$(VERSION)
# Petrel's own plugins come from one list, plugins/catalog/plugins.txt
# (name, kind, default, buildmode a line; its lines that list a plugin
# start with the plugin's name, in lower case), which the Go code reads too.
PLUGIN_LIST := plugins/catalog/plugins.txt
PLUGINS  := $(shell awk '$$1 ~ /^[a-z0-9]/ { print $$1 }' $(PLUGIN_LIST))
PLUGIN_BINARIES := $(addprefix petrel-plugin-,$(PLUGINS))
# What one host runs (and the demo builds); the fleet's node agent,
# which pulls in Kubernetes' client libraries, comes on top.
HOST_BINARIES := petrel petreld petrel-endpoint petrel-shim $(PLUGIN_BINARIES)
BINARIES := $(HOST_BINARIES) petrel-kubelet
PROTOS   := $(wildcard sdk/proto/plugin/v1/*.proto sdk/proto/daemon/v1/*.proto)
export PATH := $(dir $(GO)):$(GOBIN):$(PATH)

.PHONY: kube all build host examples deb deb-test docs config-reference chaos test lint proto proto-check bench guests linux-guest deps check demo fuzz clean $(BINARIES)

all: build

build: $(BINARIES)

host: $(HOST_BINARIES)

petrel petreld petrel-endpoint petrel-shim petrel-kubelet:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/$@ ./cmd/$@

# Each plugin with the -buildmode its line in the list gives (pie for the
# spt plugin, which is also the built-in spt tender).
$(PLUGIN_BINARIES):
	$(GO) build -trimpath -buildmode=$(shell awk '$$1 == "$(@:petrel-plugin-%=%)" { print $$4 }' $(PLUGIN_LIST)) \
	  -ldflags '$(LDFLAGS)' -o bin/$@ ./plugins/$(@:petrel-plugin-%=%)

# The example third-party plugins: a metrics sink
# (contrib/metrics-plugin-example) and a hypervisor backend
# (contrib/hypervisor-plugin-example).
examples:
	$(GO) build -trimpath -o bin/petrel-plugin-jsonl ./contrib/metrics-plugin-example
	$(GO) build -trimpath -o bin/petrel-plugin-command ./contrib/hypervisor-plugin-example

# Petrel's own Solo5 test unikernels (freestanding C), each for hvt and spt:
# bin/guests/NAME.hvt and bin/guests/NAME.spt.
guests:
	$(MAKE) -C contrib/guests OUT=$(CURDIR)/bin/guests

# The Linux guest of the README's QEMU example, from Debian's cloud kernel
# (linux-image-cloud-amd64) and busybox-static: bin/guests/vmlinuz and
# bin/guests/initrd.cpio.
linux-guest:
	$(GO) run ./contrib/linuxguest bin/guests

# The Kubernetes control plane the fleet test runs against (bin/kube/):
# kube-apiserver, kube-controller-manager and kube-scheduler from the
# pinned module in contrib/kube. Long the first time, seconds after.
kube:
	GO=$(GO) contrib/scripts/kube-build.sh

# Unit and integration tests, with the race detector.
test: build guests examples kube
	$(MAKE) fuzz FUZZTIME=20000x
	PETREL_BIN=$(CURDIR)/bin PETREL_GUESTS=$(CURDIR)/bin/guests $(GO) test -race -count=1 -timeout 20m ./...

lint:
	$(GO) vet ./...
	GOOS=freebsd $(GO) vet ./...
	staticcheck ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Regenerate the committed gRPC code from the .proto files.
proto:
	protoc -I sdk/proto --go_out=. --go_opt=module=github.com/petrel-vmm/petrel \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/petrel-vmm/petrel $(PROTOS)

# Fail when the committed generated code is not what `make proto` makes.
proto-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	protoc -I sdk/proto --go_out=$$tmp --go_opt=module=github.com/petrel-vmm/petrel \
	  --go-grpc_out=$$tmp --go-grpc_opt=module=github.com/petrel-vmm/petrel $(PROTOS); \
	for f in $$(cd $$tmp && find . -name '*.go'); do \
	  cmp -s $$tmp/$$f $$f || { echo "generated code is stale: $$f (run make proto)"; exit 1; }; \
	done; echo "generated code is current"

# Benchmarks, reported as ratios against a baseline measured in the same
# run (the bare tender) where there is one.
bench: build guests
	contrib/scripts/bench.sh

FUZZTIME ?= 60s
FUZZ_TARGETS := sdk/solo5:FuzzRead sdk/solo5:FuzzParseTenderArgs core/name:FuzzParse \
                core/pki:FuzzUnmarshalPolicy core/pki:FuzzUnmarshalCommand \
                plugins/hvt/tender:FuzzHypercall plugins/hvt/tender:FuzzLoadELF \
                core/internal/supervisor:FuzzCreateParams core/authz:FuzzDecodeChain core/policy:FuzzAdmission \
                sdk/shim:FuzzDecodeResponse

# Every fuzz target for FUZZTIME each: a duration, or a count such as
# 20000x (make test runs that count: a count never hits the fuzzing
# engine's deadline, which a short duration can, failing a sound target).
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn in ./$$pkg ($(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg/; done

# Hundreds of chaos iterations (new seed each run, printed) and 10 000
# churn cycles.
chaos: build
	PETREL_BIN=$(CURDIR)/bin PETREL_CHAOS_ITERATIONS=$${PETREL_CHAOS_ITERATIONS:-500} \
	PETREL_CHAOS_SEED=$${PETREL_CHAOS_SEED:-$$(date +%s)} PETREL_CHURN_CYCLES=$${PETREL_CHURN_CYCLES:-10000} \
	  $(GO) test -count=1 -timeout 60m -run '^(TestChaos.*|TestChurn)$$' -v ./core/integration/

# Install what building and testing need (idempotent).
deps:
	contrib/scripts/deps.sh

# What CI runs: dependencies, lint, generated-code check, tests.
check: deps
	$(MAKE) lint proto-check test

# Check the host, install what the demo needs, build everything, start
# petreld with its defaults and boot the hello unikernel with a built-in
# tender (hvt on KVM, spt without), showing its console.
demo:
	contrib/scripts/demo.sh

# Debian packages (nfpm): petrel, everything a host runs, with units,
# example config and the test unikernels as example guests; and
# petrel-kubelet, the Kubernetes node agent, with its unit disabled.
deb: build guests
	contrib/packaging/build-deb.sh bin bin
	contrib/packaging/build-deb.sh bin bin petrel-kubelet

# Build the packages, install them on a clean Debian 12 root (debootstrap,
# cached in /var/cache/petrel/debootstrap), check that petrel-kubelet
# installs disabled and purges cleanly, run the README's deploy there and
# purge petrel.
deb-test: build guests
	contrib/packaging/install-test.sh bin

# Man pages and shell completions, generated from the CLI into bin/docs.
docs: petrel
	bin/petrel gen-docs bin/docs

# Regenerate contrib/docs/configuration.md from the config schema.
config-reference:
	$(GO) run ./contrib/gendocs

clean:
	rm -rf bin
