# The two commands of the README:
#   make demo   set everything up, then run the main job
#   make test   set everything up, then run every test (ruff, C++ tests, Python tests)
# Both bootstrap .venv on a fresh machine and install every package from the checkout (editable),
# and skip what is up to date: a step reruns only when the files it depends on changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMPS := $(VENV)/.stamps
BUILD  := build
JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=

export PATH := $(abspath $(VENV))/bin:$(PATH)

MEMBERS := delira-data delira-io delira-models delira-training
AUGMENT_SOURCES := $(shell find packages/delira-augment/csrc -type f) \
	packages/delira-augment/CMakeLists.txt packages/delira-augment/pyproject.toml
CPP_SOURCES := $(AUGMENT_SOURCES) CMakeLists.txt $(shell find tests -name '*.cpp' -o -name '*.h')

.PHONY: demo bench test setup lint test-cpp test-sanitize test-fuzz-sanitize test-python clean

# The main job: `delira run` on the built-in default (3-fold cross-validation of a small 3D UNet on
# synthetic phantoms with the canonical augmentation), written to runs/.
demo: setup
	$(VENV)/bin/delira run

# The canonical augmentation benchmark (Delira against batchgenerators and batchgeneratorsv2).
bench: setup
	$(VENV)/bin/delira-augment-bench --json bench-results/augment.json

test: setup lint test-cpp test-sanitize test-fuzz-sanitize test-python

setup: $(STAMPS)/augment $(STAMPS)/members

$(STAMPS)/venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: requirements/dev.txt $(STAMPS)/venv
	$(PIP) install --quiet -r requirements/dev.txt
	@touch $@

# The compiled package: rebuilt (incrementally, in packages/delira-augment/build) when a kernel source,
# its CMakeLists.txt or its pyproject.toml changed. Python sources are live through the editable install.
$(STAMPS)/augment: $(AUGMENT_SOURCES) $(STAMPS)/deps
	$(PIP) install --quiet --no-build-isolation --no-deps -e packages/delira-augment
	@touch $@

$(STAMPS)/members: $(foreach m,$(MEMBERS),packages/$(m)/pyproject.toml) pyproject.toml hatch_build.py $(STAMPS)/deps
	$(PIP) install --quiet --no-build-isolation --no-deps $(foreach m,$(MEMBERS),-e packages/$(m)) -e .
	@touch $@

lint: $(STAMPS)/deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# C++ kernel tests without Python (host code; the CUDA sources are compiled by the package build).
$(BUILD)/cpp/CMakeCache.txt: $(STAMPS)/deps
	cmake -S . -B $(BUILD)/cpp -DCMAKE_BUILD_TYPE=Release -DDELIRA_AUGMENT_CUDA=OFF

test-cpp: $(BUILD)/cpp/CMakeCache.txt $(CPP_SOURCES)
	cmake --build $(BUILD)/cpp -j $(JOBS)
	ctest --test-dir $(BUILD)/cpp --output-on-failure

# The same tests under AddressSanitizer + UBSan (host code; CUDA off).
$(BUILD)/asan/CMakeCache.txt: $(STAMPS)/deps
	cmake -S . -B $(BUILD)/asan -DDELIRA_SANITIZE=ON -DDELIRA_AUGMENT_CUDA=OFF

test-sanitize: $(BUILD)/asan/CMakeCache.txt $(CPP_SOURCES)
	cmake --build $(BUILD)/asan -j $(JOBS)
	ctest --test-dir $(BUILD)/asan --output-on-failure

# The Python extension built with AddressSanitizer + UBSan, driven by the hypothesis fuzz tests.
$(BUILD)/asan-py/CMakeCache.txt: $(STAMPS)/deps
	cmake -S . -B $(BUILD)/asan-py -DDELIRA_SANITIZE=ON -DDELIRA_AUGMENT_CUDA=OFF -DDELIRA_AUGMENT_PYTHON=ON \
		-DDELIRA_BUILD_TESTS=OFF -DPython_EXECUTABLE=$(abspath $(PY)) -Dpybind11_DIR=$$($(PY) -m pybind11 --cmakedir)

test-fuzz-sanitize: $(BUILD)/asan-py/CMakeCache.txt $(CPP_SOURCES) setup
	cmake --build $(BUILD)/asan-py -j $(JOBS)
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		DELIRA_AUGMENT_EXTENSION=$$(ls $(abspath $(BUILD))/asan-py/packages/delira-augment/_C*.so) DELIRA_FUZZ_EXAMPLES=300 \
		$(PY) -m pytest -q -p no:cacheprovider tests/augment/test_fuzz.py tests/augment/test_affine_resample.py

test-python: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD) packages/delira-augment/build
