# zinfer: a thin wrapper. `make demo` and `make test` do all set-up on a fresh
# Debian 12 machine (packages, configure, build), then run.
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60
CTEST_ARGS ?=

.PHONY: all deps build demo test test-unit test-asan fuzz clean format bench bench-deps bench-engine

all: build

deps:
	@bash tools/install-deps

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The tests: unit + process + conformance (ctest), then the fuzzers, bounded.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)
	$(MAKE) --no-print-directory fuzz

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

# The same suite built with AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DZINFER_SANITIZE=ON
	cmake --build $(BUILD_ASAN) -j $(JOBS)
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) -E '^(run_conformance|run_install)$$' $(CTEST_ARGS)

# libFuzzer harnesses, each run for FUZZ_SECONDS on a copy of its seed corpus.
fuzz: deps
	CC=clang-14 cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DZINFER_FUZZ=ON -DZINFER_TESTS=OFF > /dev/null
	cmake --build $(BUILD_FUZZ) -j $(JOBS)
	@bash tests/fuzz/run-fuzzers.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

demo: build
	@bash examples/demo.sh $(BUILD)

# Benchmark suite (tools/bench/README.md): the single-process engine, the
# pipeline with 1-3 segments, ONNX Runtime (npm onnxruntime-node), Debian's
# PyTorch in one process and as a 2-rank gloo pipeline, the broker
# micro-benchmark; tables, tools/bench/results/{suite.csv,bench.png}.
# Not part of `make test`. A missing peer shows as "unavailable".
#   make bench BENCH_ARGS="--quick"          (smoke test, ~1 min)
#   make bench-engine BENCH_ARGS="--models mlp --seconds 2"
BENCH_ARGS ?=
BENCH_DEBS := python3-torch python3-torchvision python3-numpy python3-matplotlib
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# nodejs and npm only when there is no node / npm at all (a NodeSource nodejs
# ships its own npm and conflicts with Debian's).
bench-deps:
	@missing=""; for p in $(BENCH_DEBS); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node > /dev/null || missing="$$missing nodejs"; \
	command -v npm > /dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then echo "bench-deps: installing$$missing"; \
	    $(SUDO) apt-get install -y -qq $$missing; fi
	@[ -f tools/bench/node_modules/onnxruntime-node/package.json ] \
	    || (cd tools/bench && npm ci --ignore-scripts --no-audit --no-fund)

bench: build bench-deps
	@bash tools/bench/bench-suite.sh $(BUILD) $(BENCH_ARGS)

bench-engine: build
	@bash tools/bench/bench-engine.sh $(BUILD) $(BENCH_ARGS)

format:
	clang-format -i lib/*.c lib/*.h broker/*.c stages/*/*.c tools/zinfer/*.c tests/*.c

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
