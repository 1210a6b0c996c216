# fp8rl: the two commands (make demo, make test) and their building blocks.
# Every target installs what is missing first (scripts/bootstrap.sh), so a fresh Debian 12 machine
# needs nothing by hand.
SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
VENV := $(BUILD)/venv
CMAKE_FLAGS ?=

.PHONY: all deps build build-asan test demo gpu-bundle format clean

all: build

deps:
	@scripts/bootstrap.sh $(VENV)

build: deps
	@[ -f $(BUILD)/build.ninja ] || cmake -S . -B $(BUILD) -G Ninja -DFP8RL_VENV=$(abspath $(VENV)) $(CMAKE_FLAGS)
	@cmake --build $(BUILD)

# Core and quant tests under AddressSanitizer (the safetensors loader sees corrupt files there).
build-asan: deps
	@[ -f $(ASAN_BUILD)/build.ninja ] || cmake -S . -B $(ASAN_BUILD) -G Ninja -DFP8RL_CUDA=OFF \
	  -DFP8RL_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug -DFP8RL_VENV=$(abspath $(VENV))
	@cmake --build $(ASAN_BUILD) --target fp8rl_asan_tests

test: build build-asan
	@scripts/run_tests.sh

demo: build
	@scripts/demo.sh $(BUILD)/bin/fp8rl

# Bundles the built binaries with the shared libraries the GPU machine lacks (see tests/gpu/run.sh).
gpu-bundle: build
	@scripts/gpu_bundle.sh $(BUILD)

format:
	@git ls-files '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
