# The README's two commands: `make demo` and `make test`. Each does the whole
# idempotent set-up first: a virtual environment in the repo, the native
# build (through pip and scikit-build-core), and CRIU in a private prefix.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
JOBS ?= $(shell nproc)

NATIVE_SOURCES := $(shell find CMakeLists.txt cmake gpu tests/fake_cuda samples bench \
	-type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cmake' \
	-o -name 'CMakeLists.txt' -o -name 'gen_*.py' \) 2>/dev/null)

.PHONY: setup demo test lint criu clean

setup: $(VENV)/.built criu

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "scikit-build-core>=0.10" "nvidia-cuda-runtime>=13"
	$(PIP) install "cuda-bindings>=13,<14" "lz4>=4" "numpy>=1.26" "nvidia-ml-py>=12" \
		"pytest>=8" "pytest-xdist>=3.5" "hypothesis>=6.100" "ruff>=0.5" "mypy>=1.10"
	touch $@

# Editable install: Python edits take effect at once; native changes rebuild
# incrementally in build/ when this rule runs again.
$(VENV)/.built: $(VENV)/.deps $(NATIVE_SOURCES) pyproject.toml
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(PIP) install --no-build-isolation --no-deps -e '.[test]'
	touch $@

criu:
	@if [ "$$(id -u)" = 0 ]; then scripts/setup-criu.sh; \
	else echo "criu: not root, skipping CRIU set-up (dump and restore need root)"; fi

PY_DIRS := $(wildcard cedana_gpu tests samples bench gpu cmake)

lint: $(VENV)/.deps
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/mypy cedana_gpu

# Everything on the fake driver, then the driver conformance suite again
# through the interposer (each worker's calls forwarded to a controller that
# runs the fake driver): tests/conftest.py, CEDANA_TEST_CUDA_PATH.
test: setup lint
	$(VENV)/bin/pytest -n $(JOBS) -q
	CEDANA_TEST_CUDA_PATH=interposer $(VENV)/bin/pytest -n $(JOBS) -q tests/fake_cuda

demo: setup
	$(PY) -m cedana_gpu.demo

clean:
	rm -rf build $(VENV)/.built
