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

.PHONY: all deps build run test bench-store bench-node clean

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

# A local three-datacenter cluster (127.0.1.x, 127.0.2.x, 127.0.3.x), data under data/local.
run: deps
	$(CARGO) build $(PROFILE) -p bongsu-node --bin bongsu-node -p bongsu --bin bongsu
	$(CARGO_TARGET_DIR)/release/bongsu run --dir data/local

build: deps
	$(CARGO) build $(PROFILE) --workspace --all-targets

# Every test in the workspace. cargo-nextest runs each test in its own process; plain
# `cargo test` is the fallback where nextest is not installed.
test: deps
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "+ $(CARGO) nextest run $(PROFILE) --workspace --no-fail-fast"; \
		$(CARGO) nextest run $(PROFILE) --workspace --no-fail-fast; \
	else \
		echo "+ $(CARGO) test $(PROFILE) --workspace --no-fail-fast"; \
		$(CARGO) test $(PROFILE) --workspace --no-fail-fast; \
	fi

# Raw fdatasync rate of the data directory's disk against the store's durable appends.
bench-store: deps
	$(CARGO) run $(PROFILE) -p bongsu-raft-store --example bench-store -- --dir $(BENCH_DIR) --seconds $(BENCH_SECONDS)

# CPU and memory of one node process hosting 1,000 idle groups (three nodes, one per datacenter).
# The example starts the node binary, so it is built first.
bench-node: deps
	$(CARGO) build $(PROFILE) -p bongsu-node --bin bongsu-node
	$(CARGO) run $(PROFILE) -p bongsu-node --example bench-node -- --dir $(BENCH_NODE_DIR) --groups $(BENCH_NODE_GROUPS) --seconds $(BENCH_NODE_SECONDS)

clean:
	rm -rf data
