# zinfer: a thin wrapper. `make demo` and `make test` do all set-up on a fresh
# Debian 12 machine (packages, configure, build), then run.
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60
CTEST_ARGS ?=

.PHONY: all deps build demo test test-unit test-asan fuzz clean format bench bench-deps

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

# Engine benchmark against ONNX Runtime (npm onnxruntime-node) and Debian's
# PyTorch; not part of `make test`. A missing peer shows as "unavailable".
BENCH_ARGS ?=
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
bench-deps:
	@dpkg-query -W -f='$${Status}' python3-torch 2>/dev/null | grep -q "install ok installed" \
	    || $(SUDO) apt-get install -y -qq python3-torch nodejs npm
	cd tools/bench && npm ci --ignore-scripts --no-audit --no-fund

bench: build
	@bash tools/bench/bench-engine.sh $(BUILD) $(BENCH_ARGS)

format:
	clang-format -i lib/*.c lib/*.h broker/*.c stages/*/*.c tools/zinfer/*.c tests/*.c

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
