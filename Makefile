# roost: build, run and test. `make help` lists the targets.
#
# Everything here is plain `go` underneath; the variables below can be
# overridden on the command line, e.g. `make fuzz FUZZTIME=2m` or
# `make bench BENCHTIME=10s`.

GO          ?= go
BIN         ?= bin/roost

# `roost version` reports what the linker is told here (see cli/version.go).
VERSION_PKG ?= github.com/roostdb/roost/cli
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo devel)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS     ?= -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT)

# Packages tested with the race detector; every other package is tested
# without it. Both runs together aim at under 15 minutes on 2 cores: 13
# with a warm build cache in session 21, 16 from a fresh clone on a slow day,
# before node's long tests ran in parallel (session 22: its suite 6 minutes).
RACE_PKGS    ?= ./durable/... ./raftstore/... ./multiraft/... ./placement/... ./node/... ./config/...
# A package's bound, not its expected time: the node race suite takes about
# 6 minutes on 2 cores (session 25: 352-367 s; 478-497 s before a node's
# Close stopped waiting 2 s on its peers' streams, 10 minutes before its
# long tests ran in parallel), and a slow machine must not fail it by timing out.
TEST_TIMEOUT ?= 14m
# Evaluated only when used: every package of the module not in RACE_PKGS.
# They run with -count=1: the end-to-end tests build the binaries they run
# with go build, whose inputs go test's cache does not see, so a cached
# pass could be of older code.
OTHER_PKGS    = $(filter-out $(shell $(GO) list $(RACE_PKGS) 2>/dev/null),$(shell $(GO) list ./...))

BENCH_PKGS ?= ./raftstore/ ./node/
BENCHTIME  ?= 2s
BENCHCOUNT ?= 1

# Fuzz targets as package:FuzzFunc; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS ?= ./durable:FuzzParseID \
                ./durable:FuzzKVEntry \
                ./durable:FuzzKVCursor \
                ./durable:FuzzFrameEdges \
                ./config:FuzzParse \
                ./raftstore:FuzzDecodeEntry \
                ./raftstore:FuzzDecodeLog \
                ./raftstore:FuzzTransportDecode \
                ./raftstore:FuzzSnapshotStream \
                ./multiraft:FuzzDecodeFrame \
                ./placement:FuzzDecodeCommand \
                ./node:FuzzForwardHead
FUZZTIME     ?= 20s

.DEFAULT_GOAL := build
.PHONY: help build run test vet fmt-check lint bench fuzz clean bench-compare bench-failover bench-rebalance proto

help:
	@echo "make build    build $(BIN) (static, version $(VERSION))"
	@echo "make run      build, then start a single-node roost: app on 127.0.0.1:8787, admin on 127.0.0.1:8789"
	@echo "make test     go vet, gofmt check, race tests of $(RACE_PKGS), plain tests of the rest"
	@echo "make lint     gofmt, go vet and the import-direction test"
	@echo "make bench    benchmarks of $(BENCH_PKGS) (BENCHTIME=$(BENCHTIME))"
	@echo "make fuzz     each fuzz target for $(FUZZTIME)"
	@echo "make proto    regenerate the gRPC code in proto/ (needs protoc and the Go plugins)"
	@echo "make image    build the FROM scratch image roost:dev (deploy/Dockerfile)"
	@echo "make docker-test     the docker-compose fleet test (needs a Docker daemon)"
	@echo "make bench-compare   3-node roost vs 3-member etcd, same load (DURATION=10s ROUNDS=1 SHARDS=64)"
	@echo "make bench-failover  failover times, planned moves, idle CPU of a 3-node cluster"
	@echo "make bench-rebalance rebalance onto a 4th node under load: time, write gaps, no lost write"
	@echo "make clean    remove bin/ (the dev data directory .roost is left alone)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/roost

run: build
	./$(BIN) dev

vet:
	$(GO) vet ./...

fmt-check:
	@out="$$(gofmt -l .)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; echo "run: gofmt -w <files>"; exit 1; fi

test: vet fmt-check
	@if docker info >/dev/null 2>&1; then echo "Docker daemon found: internal/dockertest runs the compose fleet and fault tests"; \
	else echo "skipped: no Docker daemon: internal/dockertest skips the compose fleet tests"; fi
	CGO_ENABLED=1 $(GO) test -race -timeout $(TEST_TIMEOUT) $(RACE_PKGS)
	@others="$(OTHER_PKGS)"; \
	if [ -n "$$others" ]; then \
		echo "$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$others"; \
		$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $$others; \
	fi

lint: fmt-check vet
	$(GO) test -count=1 ./internal/lint/

bench:
	$(GO) test -run XXX -bench . -benchmem -benchtime $(BENCHTIME) -count $(BENCHCOUNT) -timeout 60m $(BENCH_PKGS)

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Regenerates the committed gRPC code (needs protoc, and protoc-gen-go and
# protoc-gen-go-grpc from `go install` in $(go env GOPATH)/bin).
proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc --go_out=. --go_opt=module=github.com/roostdb/roost \
		--go-grpc_out=. --go-grpc_opt=module=github.com/roostdb/roost proto/*.proto

clean:
	rm -rf bin/

# roost against etcd on this machine: 3-node clusters of each on 127.0.0.1,
# the same load, one table (see scripts/bench-compare.sh).
DURATION ?= 10s
ROUNDS ?= 1
SHARDS ?= 64

bench-compare: build
	DURATION=$(DURATION) ROUNDS=$(ROUNDS) SHARDS=$(SHARDS) ROOST_BIN=$(BIN) GO=$(GO) scripts/bench-compare.sh

# Failover time after SIGKILL, idle CPU and failed writes during planned
# leadership moves (SIGTERM) of a 3-node cluster of $(BIN) on 127.0.0.1
# (see internal/cmd/failover); e.g. make bench-failover FAILOVER_FLAGS='-rounds 5 -v'.
bench-failover: build
	$(GO) run ./internal/cmd/failover -bin $(BIN) $(FAILOVER_FLAGS)

# A fourth node joins a loaded 3-node cluster of $(BIN) holding 10,000 counter
# objects and `roost rebalance --wait` spreads the shards onto it: the time
# it takes, the longest a shard's writes waited, and that no acknowledged
# increment was lost (see internal/cmd/rebalance); e.g.
# make bench-rebalance REBALANCE_FLAGS='-max-concurrent 1 -v'.
bench-rebalance: build
	$(GO) run ./internal/cmd/rebalance -bin $(BIN) $(REBALANCE_FLAGS)

# The container image (deploy/Dockerfile, FROM scratch) around the static
# bin/roost and bin/healthcheck built here; docker-compose.yml runs it.
IMAGE ?= roost:dev
.PHONY: image docker-test

image: build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o bin/healthcheck ./internal/cmd/healthcheck
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# The Docker end-to-end test alone (internal/dockertest: its own image, a
# 3-node compose cluster as project roosttest; under a recorded counter load:
# network disconnect, kill, pause, a 4th node with rebalance, drain and remove,
# each checked for linearizability and lost writes and timed). `make test`
# runs it too; without a Docker daemon it is skipped.
docker-test:
	$(GO) test -v -count=1 -timeout 15m ./internal/dockertest/
