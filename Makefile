# bongsu: the two commands people type are `make run` and `make test`.
# Every target installs the build's missing system prerequisites first (see `deps`).

CARGO ?= cargo
# A target directory outside the checkout, so that fresh clones (and CI) reuse the RocksDB build.
CARGO_TARGET_DIR ?= $(HOME)/.cache/bongsu-target
export CARGO_TARGET_DIR
# One profile for tests, benchmarks and binaries: RocksDB is compiled once.
PROFILE := --release
BENCH_DIR ?= data/bench-store
BENCH_SECONDS ?= 5
BENCH_NODE_DIR ?= data/bench-node
BENCH_NODE_GROUPS ?= 1000
BENCH_NODE_SECONDS ?= 10
CHAOS_OUT ?= data/chaos
CHAOS_MODE ?= auto
DURATION ?= 120
SEED ?=
CHAOS_BIN = $(CARGO_TARGET_DIR)/release/bongsu-chaos
# The release a rolling upgrade starts from: the last commit before versioned records. The
# rolling-upgrade test (node/tests/cluster/upgrade.rs) runs its `bongsu-node`, which
# `previous-release` builds from this clone's history into $(PREVIOUS_NODE).
PREVIOUS_RELEASE ?= 20f6f10a2ab8c07a62c09bf326124c27a59848b8
PREVIOUS_SRC = $(CARGO_TARGET_DIR)/previous/src-$(PREVIOUS_RELEASE)
PREVIOUS_NODE = $(CARGO_TARGET_DIR)/previous/bongsu-node-$(PREVIOUS_RELEASE)
export BONGSU_PREVIOUS_NODE = $(PREVIOUS_NODE)

.PHONY: all deps browser-deps build run test previous-release chaos-ci chaos chaos-build chaos-deps bench-store bench-node bench-gateway clean

all: build

# librocksdb-sys needs libclang for bindgen and a C++ compiler. Install them when missing
# (apt-get as root); otherwise say exactly what is missing.
deps:
	@if ! command -v $(CARGO) >/dev/null 2>&1; then \
		echo "deps: cargo not found; install Rust (https://rustup.rs) first" >&2; exit 1; fi
	@if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' || ! command -v c++ >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "deps: installing libclang-dev and g++ with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev g++ >/dev/null; \
		else \
			echo "deps: libclang and a C++ compiler are needed; run: sudo apt-get install libclang-dev g++" >&2; exit 1; \
		fi; \
	fi

# The web client's browser test drives Debian's Chromium through chromedriver, and its
# screenshots show Korean text and emoji, which need fonts (fonts-noto-cjk,
# fonts-noto-color-emoji). Install what is missing (apt-get as root). Without them the browser
# test fails and says how to get them.
BROWSER_PACKAGES = chromium chromium-driver fonts-noto-cjk fonts-noto-color-emoji
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! fc-list 2>/dev/null | grep -qi 'noto.*cjk' || ! fc-list 2>/dev/null | grep -qi 'color emoji'; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "deps: installing $(BROWSER_PACKAGES) with apt-get (the web client's browser test)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
		else \
			echo "deps: the browser test needs /usr/bin/chromium, /usr/bin/chromedriver and CJK and emoji fonts; run: sudo apt-get install $(BROWSER_PACKAGES)" >&2; \
		fi; \
	fi

# A local three-datacenter cluster (127.0.1.x, 127.0.2.x, 127.0.3.x) with a gateway and the
# web client in each datacenter (http://127.0.d.1:8080/), data under data/local.
# Everything is built in one invocation, as `make test` builds it, so RocksDB is compiled once.
# It runs the plain `bongsu-node`, whose failpoints and fault rules cannot be switched on (the
# tests run `bongsu-node-chaos`, the same code with them armed).
run: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets
	$(CARGO_TARGET_DIR)/release/bongsu run --dir data/local

build: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets

# Every test in the workspace. Every binary is built first (tests start the node, gateway and
# `bongsu` binaries), with the same features the test build resolves. cargo-nextest runs each
# test in its own process; plain `cargo test` is the fallback where nextest is not installed.
# The chaos scenarios of `chaos-ci` run after them.
test: deps browser-deps previous-release
	$(CARGO) build $(PROFILE) --workspace --all-targets
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "+ $(CARGO) nextest run $(PROFILE) --workspace --no-fail-fast"; \
		$(CARGO) nextest run $(PROFILE) --workspace --no-fail-fast; \
	else \
		echo "+ $(CARGO) test $(PROFILE) --workspace --no-fail-fast"; \
		$(CARGO) test $(PROFILE) --workspace --no-fail-fast; \
	fi
	$(MAKE) chaos-ci

# The previous release's node, for the rolling-upgrade test: its source from this clone's
# history (git archive; `tar -m` dates the files now, so cargo never takes another checkout's
# build of the same crates for it), built with the same target directory, so only its own
# crates compile; the binary is copied out, and the next build of this checkout links its own
# again.
previous-release: deps
	@if [ ! -x $(PREVIOUS_NODE) ]; then \
		if ! git cat-file -e $(PREVIOUS_RELEASE)^{commit} 2>/dev/null; then \
			echo "previous-release: commit $(PREVIOUS_RELEASE) is not in this clone's history (a shallow clone?); clone with full history" >&2; exit 1; \
		fi; \
		echo "previous-release: building bongsu-node of $(PREVIOUS_RELEASE)"; \
		rm -rf $(PREVIOUS_SRC) && mkdir -p $(PREVIOUS_SRC) && \
		git archive $(PREVIOUS_RELEASE) | tar -x -m -C $(PREVIOUS_SRC) && \
		(cd $(PREVIOUS_SRC) && $(CARGO) build $(PROFILE) --workspace --bins) && \
		cp $(CARGO_TARGET_DIR)/release/bongsu-node $(PREVIOUS_NODE).tmp && \
		mv $(PREVIOUS_NODE).tmp $(PREVIOUS_NODE); \
	fi

# Chaos scenarios against real node processes in three datacenters (chaos-tests/). As root,
# each datacenter is a network namespace on a bridge (netns mode, needs `ip` from iproute2);
# otherwise datacenters are loopback address groups and the nodes drop traffic themselves
# (portable mode). CHAOS_MODE=auto|netns|portable forces one.
# Each scenario first measures the cluster's capacity and then runs at half of it with messages
# up to 64 KiB; it prints `chaos: scenario=NAME acked=N lost=0 ... rto_ms_p99=...
# capacity_bytes_per_s=... rate_bytes_per_s=...` (and catch_up_ms=... for dc-return-backlog)
# and writes report.json and timeline.svg into $(CHAOS_OUT)/<scenario>/; the target fails on
# any violation.
chaos-ci: chaos-build
	$(CHAOS_BIN) --mode $(CHAOS_MODE) --out $(CHAOS_OUT) ci

# A randomized mix of every fault: make chaos DURATION=120 SEED=42 (the seed defaults to the
# time and is printed first, so a failing run can be repeated).
chaos: chaos-build
	$(CHAOS_BIN) --mode $(CHAOS_MODE) --out $(CHAOS_OUT) mix --duration $(DURATION) $(if $(SEED),--seed $(SEED))

# The chaos binary and `bongsu-node-chaos` (the node with failpoints and fault rules armed),
# built exactly as `make test` builds them.
chaos-build: deps chaos-deps
	$(CARGO) build $(PROFILE) --workspace --all-targets

# netns mode needs `ip`; install iproute2 when it is missing and we are root, otherwise the
# chaos binary falls back to portable mode and says so.
chaos-deps:
	@if [ "$$(id -u)" = 0 ] && ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: installing iproute2 with apt-get (chaos tests, netns mode)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null || \
			echo "deps: could not install iproute2; chaos tests will use portable mode" >&2; \
	fi

# Raw fdatasync rate of the data directory's disk against the store's durable appends.
# Every benchmark runs the example the workspace build made: `cargo run -p <crate>` would resolve
# that crate's features alone and compile RocksDB a second time.
bench-store: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets
	$(CARGO_TARGET_DIR)/release/examples/bench-store --dir $(BENCH_DIR) --seconds $(BENCH_SECONDS)

# CPU and memory of one node process hosting 1,000 idle groups (three nodes, one per datacenter).
# The example starts the node binary, so it is built first.
bench-node: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets
	$(CARGO_TARGET_DIR)/release/examples/bench-node --dir $(BENCH_NODE_DIR) --groups $(BENCH_NODE_GROUPS) --seconds $(BENCH_NODE_SECONDS)

# Sends through the gateways (gRPC and HTTP, sequential and pipelined) against the same sends
# straight to the nodes, and push latency across datacenters, in one run on one cluster.
BENCH_GATEWAY_DIR ?= data/bench-gateway
bench-gateway: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets
	$(CARGO_TARGET_DIR)/release/examples/bench-gateway --dir $(BENCH_GATEWAY_DIR) --seconds $(BENCH_SECONDS)

clean:
	rm -rf data
