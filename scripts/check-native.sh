#!/usr/bin/env bash
# make check-native: the native code (interposer, dispatcher, ring, fake
# driver) built with sanitizers and driven by the tests that exercise it.
#
#   address,undefined  the driver conformance suite directly and through the
#                      interposer, the dispatcher's live and fuzz tests, the
#                      native checkpoint tests, the layout check, a
#                      standby's reserved range
#   thread             the ring and the dispatcher: the dispatcher's live tests,
#                      and the conformance suite through the interposer (many
#                      job threads posting to the ring, the dispatch loop,
#                      stream workers and callbacks in the controller)
#   headers            the native code built against the CUDA toolkit's own
#                      headers when they are older than the ones the build
#                      picks (the newest: the nvidia-cuda-runtime wheel's), as
#                      a machine whose only headers are its toolkit's builds it
#                      (the H200 machines have 13.0; a guard slipped once)
#
# Each sanitizer gets a CMake build of its own under build/sanitize-<name>
# (incremental on a second run), installed into a private native dir that the
# tests use through CEDANA_GPU_NATIVE_DIR. The runtime must be the first
# library of every process, Python included, so it is preloaded, and
# CEDANA_TEST_PRELOAD hands it to the child processes the tests start (they
# otherwise clear LD_PRELOAD). Any report fails the test that triggered it:
# the code is built with -fno-sanitize-recover and halt_on_error=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
JOBS=${JOBS:-$(nproc)}
only=${1:-all}

build() { # name sanitizers
  local dir=build/sanitize-$1
  cmake -S . -B "$dir" -DCEDANA_SANITIZE="$2" -DCMAKE_BUILD_TYPE=Debug \
    -DPython_EXECUTABLE="$PWD/$PY" -DCMAKE_INSTALL_PREFIX="$PWD/$dir/install" >/dev/null
  cmake --build "$dir" -j"$JOBS" >"$dir.log" 2>&1 || { tail -30 "$dir.log"; exit 1; }
  cmake --install "$dir" >/dev/null
  echo "$PWD/$dir/install/cedana_gpu/_native"
}

run() { # native-dir preload pytest-args...
  local native=$1 preload=$2
  shift 2
  CEDANA_GPU_NATIVE_DIR=$native CEDANA_TEST_PRELOAD=$preload LD_PRELOAD=$preload \
    "$PY" -m pytest -q -n "$JOBS" -p no:cacheprovider "$@"
}

if [[ $only == all || $only == address ]]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer"
  native=$(build address address,undefined)
  preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
  # detect_leaks=0: the interpreter itself is not leak-clean. handle_segv=0:
  # the fake driver turns a kernel's fault into CUDA_ERROR_ILLEGAL_ADDRESS
  # with its own SIGSEGV handler, and some tests expect a host-side fault to
  # kill the process with the real signal.
  export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:handle_segv=0:allow_user_segv_handler=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  run "$native" "$preload" tests/fake_cuda tests/test_dispatcher_live.py \
    tests/test_dispatcher_fuzz.py tests/test_native_checkpoint.py tests/test_shm_layout.py \
    tests/test_standby_reserve.py
  CEDANA_TEST_CUDA_PATH=interposer run "$native" "$preload" tests/fake_cuda
fi

if [[ $only == all || $only == thread ]]; then
  echo "== ThreadSanitizer"
  native=$(build thread thread)
  # scripts/tsan.supp: the fake driver's device memory may be raced on by a
  # job's streams, as on a GPU. handle_segv=0 as above.
  export TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0:handle_segv=0:suppressions=$PWD/scripts/tsan.supp"
  preload=$(gcc -print-file-name=libtsan.so)
  run "$native" "$preload" tests/test_dispatcher_live.py
  CEDANA_TEST_CUDA_PATH=interposer run "$native" "$preload" tests/fake_cuda
fi

if [[ $only == all || $only == headers ]]; then
  inc=${CUDA_HOME:-/usr/local/cuda}/include
  if [[ -f $inc/cuda.h && -f $inc/cudaTypedefs.h ]]; then
    version=$(sed -n 's/^#define CUDA_VERSION \([0-9]*\).*/\1/p' "$inc/cuda.h")
    echo "== Built against the toolkit's headers (CUDA_VERSION $version, $inc)"
    dir=build/headers-$version
    cmake -S . -B "$dir" -DCEDANA_CUDA_INCLUDE_DIR="$inc" -DPython_EXECUTABLE="$PWD/$PY" >/dev/null
    cmake --build "$dir" -j"$JOBS" >"$dir.log" 2>&1 || { tail -30 "$dir.log"; exit 1; }
  else
    echo "== No CUDA toolkit headers at $inc: the build against them is not checked"
  fi
fi
