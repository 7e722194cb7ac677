# QuantLab front door.
#   make demo   install what is missing, build, run the default experiment on Fashion-MNIST
#   make test   install what is missing, build, run the whole test suite
#   make test-asan  the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer
# Other targets: deps, build, bench, fuzz, gpu-bundle, install PREFIX=..., clean.

BUILD_DIR ?= build
BUILD_TYPE ?= Release
PREFIX ?= /usr/local
JOBS ?= $(shell nproc)

# Debian 12 packages the project needs (README.md, "Dependencies", says why each).
PACKAGES := cmake ninja-build g++ make pkg-config ccache python3-venv patchelf \
            libboost-dev libboost-program-options-dev libboost-filesystem-dev \
            libtomlplusplus-dev libfmt-dev zlib1g-dev libicu-dev libjpeg62-turbo-dev libgtest-dev \
            dataset-fashion-mnist \
            libhdf5-dev libprotobuf-dev protobuf-compiler libplplot-dev plplot-driver-cairo libgloo-dev \
            hdf5-tools python3-protobuf python3-h5py nlohmann-json3-dev libssl-dev
# Only `make fuzz` needs these: clang, libFuzzer and clang's sanitizer runtimes.
FUZZ_PACKAGES := clang libclang-rt-14-dev
# LibTorch and the Python tools: pinned wheels in a project-local virtual environment.
VENV ?= .venv
PYTHON_REQUIREMENTS := tools/requirements.txt

SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

ASAN_BUILD_DIR ?= build-asan
# The sanitizer runs: leaks, undefined behaviour and bad memory access all fail the test; the
# suppressions file lists third-party leaks only, each with its reason. A failing test gets one
# more try: LeakSanitizer's exit-time tracer itself crashed once here ("Tracer caught signal
# 11") in a 2-rank run on a loaded machine, and passed on every rerun.
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_init_order=1:detect_stack_use_after_return=0:verify_asan_link_order=0 \
                 LSAN_OPTIONS=suppressions=$(CURDIR)/tools/sanitizers/lsan.supp:print_suppressions=0 \
                 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/tools/sanitizers/ubsan.supp
# Paths in debug info relative to the checkout, so that a clean clone reuses the compiler cache.
CCACHE_ENV := CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=1

FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := experiment_toml plugin_file idx jpeg checkpoint metrics_h5 problem_files weights codec

.PHONY: deps build demo test test-asan fuzz bench install clean gpu-bundle gpu-check

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
	$(MAKE) $(VENV)/installed

# Remade when the pins change; pip keeps its downloads in ~/.cache/pip.
$(VENV)/installed: $(PYTHON_REQUIREMENTS)
	[ -x $(VENV)/bin/python ] || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -r $(PYTHON_REQUIREMENTS)
	$(VENV)/bin/python -c "import torch; print('deps: torch', torch.__version__, 'CUDA', torch.version.cuda)"
	touch $@

$(BUILD_DIR)/build.ninja:
	$(CCACHE_ENV) cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: $(BUILD_DIR)/build.ninja
	$(CCACHE_ENV) cmake --build $(BUILD_DIR) -j $(JOBS)

# The demo builds only what it runs: the host, the Fashion-MNIST problem, the MLP and the
# uniform quantiser (the tests and the other plugins come with `make build` or `make test`).
DEMO_TARGETS := qlhost ql_plugin_mnist ql_plugin_mlp ql_plugin_uniform
demo: deps
	$(MAKE) $(BUILD_DIR)/build.ninja
	$(CCACHE_ENV) cmake --build $(BUILD_DIR) -j $(JOBS) --target $(DEMO_TARGETS)
	$(BUILD_DIR)/bin/qlhost run examples/fashion_mnist_mlp.toml

test: deps
	$(MAKE) build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# The sanitized suite: core and the batch loader's prefetch thread, the host end to end, the
# MNIST reader, faults, data-parallel training, the ONNX export of every topology and
# algorithm, the weights readers, the gradient codecs, JPEG decoding and resampling, GPFQ, and
# the conformance checks of every bundled plugin, regression end to end (a full sanitized build takes ~50 min on 2 cores; ASAN_TARGETS=all builds it all and
# ASAN_TESTS=. runs every test).
ASAN_TARGETS ?= qlhost ql_plugin_mnist ql_plugin_mlp ql_plugin_uniform ql_plugin_nuqsgd \
                ql_plugin_fixture_good ql_plugin_fixture_abi_major ql_plugin_fixture_abi_minor \
                ql_plugin_fixture_fingerprint ql_plugin_fixture_old_torch ql_plugin_fixture_static_abort ql_plugin_fixture_throwing \
                fixture_no_entry results_test data_parallel_test experiment_config_test plugin_loader_test \
                trainer_test mnist_test qlhost_cli_test qlhost_faults_test qlhost_distributed_test docs_test \
                onnx_export_test ql_plugin_convnet ql_plugin_resnet ql_plugin_vgg ql_plugin_alexnet \
                ql_plugin_transformer ql_plugin_greedy ql_plugin_ana ql_plugin_cifar10 weights_test \
                ql_plugin_ilsvrc12 ql_plugin_language_names ql_plugin_fixture_flawed \
                nuqsgd_test ilsvrc12_test greedy_test conformance_test ql_plugin_linear_map qlhost_regression_test
# EveryExampleLoads needs every plugin, which the sanitized subset does not build.
ASAN_SKIP ?= EveryExampleLoads
ASAN_TESTS ?= ^(ResultsTest|DataParallel|WorldSettings|ShardOrder|ExperimentConfigTest|PluginLoaderTest|TrainerTest|BatchLoaderTest|IdxFileTest|MnistPluginTest|QlhostCliTest|QlhostFaultsTest|Hooks/ThrowingPlugin|QlhostDistributedTest|Signals/DeadOrHungRank|DocsTest|OnnxExportTest|WeightsTest|NuqsgdTest|Ilsvrc12Test|ResampleTest|GpfqTest|GreedyPluginTest|ConformanceTest|QlhostRegressionTest)\.

test-asan: deps
	$(CCACHE_ENV) cmake -S . -B $(ASAN_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=None \
	  -DCMAKE_C_FLAGS="-O1 -g1" -DCMAKE_CXX_FLAGS="-O1 -g1" -DQL_SANITIZE=address,undefined -DQL_BUILD_BENCH=OFF
	$(CCACHE_ENV) cmake --build $(ASAN_BUILD_DIR) -j $(JOBS) --target $(ASAN_TARGETS)
	$(SANITIZER_ENV) ctest --test-dir $(ASAN_BUILD_DIR) --output-on-failure -j $(JOBS) -R '$(ASAN_TESTS)' -E '$(ASAN_SKIP)' \
	  --repeat until-pass:2

# Each fuzz target for FUZZ_SECONDS, starting from the seeds in fuzz/corpus (new inputs go to
# the build folder's corpus, crashes to its findings/). Installs clang first (FUZZ_PACKAGES).
fuzz: deps
	$(call install_missing,$(FUZZ_PACKAGES))
	$(CCACHE_ENV) CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=None \
	  -DCMAKE_C_FLAGS="-O1 -g1" -DCMAKE_CXX_FLAGS="-O1 -g1" -DQL_FUZZ=ON -DQL_BUILD_TESTS=OFF -DQL_BUILD_BENCH=OFF
	$(CCACHE_ENV) cmake --build $(FUZZ_BUILD_DIR) -j $(JOBS) --target fuzz_all
	@mkdir -p $(FUZZ_BUILD_DIR)/findings
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD_DIR)/corpus/$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(SANITIZER_ENV) $(FUZZ_BUILD_DIR)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 \
	    -artifact_prefix=$(FUZZ_BUILD_DIR)/findings/$$t- -print_final_stats=1 \
	    $(FUZZ_BUILD_DIR)/corpus/$$t fuzz/corpus/$$t > $(FUZZ_BUILD_DIR)/fuzz_$$t.log 2>&1; code=$$?; \
	  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' $(FUZZ_BUILD_DIR)/fuzz_$$t.log; \
	  [ $$code -eq 0 ] || { tail -40 $(FUZZ_BUILD_DIR)/fuzz_$$t.log; exit 1; }; \
	done

bench: deps
	$(MAKE) build
	bench/run_bench.sh $(BUILD_DIR)

# One folder that runs on a machine with only PyTorch 2.11 and its CUDA libraries (README, "On a
# GPU machine"); checked here with nothing but itself and the venv's torch on the library path.
GPU_BUNDLE_DIR ?= $(BUILD_DIR)/gpu-bundle
gpu-bundle: deps
	$(MAKE) build
	tools/bundle/make_gpu_bundle.sh $(BUILD_DIR) $(GPU_BUNDLE_DIR)

# What bench/gpu/check.sh runs on a lent GPU machine: the bundle, the CUDA test programs and the
# benchmark programs (carry build/gpu-check there).
gpu-check: deps
	$(MAKE) build
	tools/bundle/make_gpu_check.sh $(BUILD_DIR) $(BUILD_DIR)/gpu-check

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD_DIR)
