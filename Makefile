# QuantLab front door.
#   make demo   install what is missing, build, run the default experiment on Fashion-MNIST
#   make test   install what is missing, build, run the whole test suite
# Other targets: deps, build, bench, install PREFIX=..., clean.

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
            libhdf5-dev libprotobuf-dev protobuf-compiler libplplot-dev plplot-driver-cairo \
            hdf5-tools python3-protobuf python3-h5py
# Only `make bench` needs these: the Python baseline of bench/forward_backward.py.
BENCH_PACKAGES := python3-torch python3-torchvision python3-pil

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: deps build demo test bench install clean

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

bench: deps
	$(call install_missing,$(BENCH_PACKAGES))
	$(MAKE) build
	bench/run_bench.sh $(BUILD_DIR)

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR)
