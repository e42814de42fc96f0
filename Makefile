# The README's two commands: `make demo` and `make test`. Each does the whole
# idempotent set-up first: a virtual environment in the repo, the native
# build (through pip and scikit-build-core), and CRIU in a private prefix.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
JOBS ?= $(shell nproc)

NATIVE_SOURCES := $(shell find CMakeLists.txt cmake gpu tools tests/fake_cuda samples bench \
	-type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cmake' \
	-o -name 'CMakeLists.txt' -o -name 'gen_*.py' -o -name '*.def' -o -name '*.inc' \) 2>/dev/null)

.PHONY: setup demo test test-gpu lint criu clean check-native

setup: $(VENV)/.built criu

# Every dependency is named once, in pyproject.toml. The build requirements
# are installed first because the editable install below builds without
# isolation (so native rebuilds reuse build/); pip then installs the project's
# own dependencies and the test extra from the same file.
$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c 'import subprocess, sys, tomllib; \
		reqs = tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]; \
		subprocess.check_call([sys.executable, "-m", "pip", "install", \
			"--disable-pip-version-check", "-q", *reqs])'
	touch $@

# Editable install: Python edits take effect at once; native changes rebuild
# incrementally in build/ when this rule runs again.
$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES) pyproject.toml
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install --no-build-isolation -e '.[test]'
	touch $@

criu:
	@if [ "$$(id -u)" = 0 ]; then scripts/setup-criu.sh; \
	else echo "criu: not root, skipping CRIU set-up (dump and restore need root)"; fi

PY_DIRS := $(wildcard cedana_gpu tests samples bench gpu cmake tools)

lint: $(VENV)/.built
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/mypy cedana_gpu

# Everything on the fake driver, then the driver conformance suite again
# through the interposer (each worker's calls forwarded to a controller that
# runs the fake driver): tests/conftest.py, CEDANA_TEST_CUDA_PATH.
test: setup lint
	$(VENV)/bin/pytest -n $(JOBS) -q -rs
	CEDANA_TEST_CUDA_PATH=interposer $(VENV)/bin/pytest -n $(JOBS) -q -rs tests/fake_cuda

# On a machine with NVIDIA's driver and a GPU: the real-GPU tests, then the
# driver conformance suite on NVIDIA's driver, directly and through the
# interposer. Without one, every test skips with the reason.
test-gpu: setup
	$(VENV)/bin/pytest -q -rs tests/gpu
	CEDANA_TEST_CUDA_PATH=system $(VENV)/bin/pytest -n $(JOBS) -q -rs tests/fake_cuda
	CEDANA_TEST_CUDA_PATH=system-interposer $(VENV)/bin/pytest -n $(JOBS) -q -rs tests/fake_cuda

# The native code under AddressSanitizer + UndefinedBehaviorSanitizer and
# ThreadSanitizer, driven by the conformance and dispatcher tests
# (scripts/check-native.sh); .ci/run runs it after `make test`.
check-native: setup
	JOBS=$(JOBS) PY=$(PY) scripts/check-native.sh

demo: setup
	$(PY) -m cedana_gpu.demo

clean:
	rm -rf build $(VENV)/.built
