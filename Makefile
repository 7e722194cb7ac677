# QuantLab front door.
#   make demo   install what is missing, build, run the default experiment on Fashion-MNIST
#   make test   install what is missing, build, run the whole test suite
#   make test-asan  the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
# Other targets: deps, build, bench, fuzz, install PREFIX=..., clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)

# Debian 12 packages the project needs (README.md, "Dependencies", says why each).
PACKAGES := cmake ninja-build g++ make pkg-config ccache \
            libtorch-dev libopenblas0-openmp \
            libboost-dev libboost-program-options-dev libboost-filesystem-dev \
            libtomlplusplus-dev libfmt-dev zlib1g-dev libicu-dev libjpeg62-turbo-dev libgtest-dev \
            dataset-fashion-mnist \
            libhdf5-dev libprotobuf-dev protobuf-compiler libplplot-dev plplot-driver-cairo libgloo-dev \
            hdf5-tools python3-protobuf python3-h5py
# Only `make bench` needs these: the Python baseline of bench/forward_backward.py.
BENCH_PACKAGES := python3-torch python3-torchvision python3-pil

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

ASAN_BUILD_DIR ?= build-asan
# The sanitizer runs: leaks, undefined behaviour and bad memory access all fail the test; the
# suppressions file lists third-party leaks only, each with its reason.
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_init_order=1:detect_stack_use_after_return=0 \
                 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/sanitizers/lsan.supp:print_suppressions=0 \
                 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tools/sanitizers/ubsan.supp
# Paths in debug info relative to the checkout, so that a clean clone reuses the compiler cache.
CCACHE_ENV := CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=1

.PHONY: deps build demo test test-asan bench install clean

# Installs the packages of $(1) that are missing; quick when all are there.
define install_missing
	@missing=""; \
	for p in $(1); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "deps: all $(words $(1)) packages installed"; \
	fi
endef

deps:
	$(call install_missing,$(PACKAGES))

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: deps
	$(MAKE) build
	$(BUILD_DIR)/bin/qlhost run examples/fashion_mnist_mlp.toml

test: deps
	$(MAKE) build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

test-asan: deps
	$(CCACHE_ENV) cmake -S . -B $(ASAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQL_SANITIZE=address,undefined -DQL_BUILD_BENCH=OFF
	$(CCACHE_ENV) cmake --build $(ASAN_BUILD_DIR) -j $(JOBS)
	$(SANITIZER_ENV) ctest --test-dir $(ASAN_BUILD_DIR) --output-on-failure -j $(JOBS) $(ASAN_CTEST_ARGS)

bench: deps
	$(call install_missing,$(BENCH_PACKAGES))
	$(MAKE) build
	bench/run_bench.sh $(BUILD_DIR)

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR)
