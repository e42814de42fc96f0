#!/usr/bin/env bash
# The real-GPU check, on a bare machine with NVIDIA's driver, a GPU, Python
# with PyTorch and Triton installed, root, and no network (issue 9, part 3):
#
#   1. set-up from what was brought along (scripts/gpu-bundle.sh): a venv
#      that sees the system's packages, the bundled wheels, cedana-gpu built
#      in place (nvcc, where present, builds the samples' PTX), the carried
#      CRIU prefix;
#   2. tests/gpu: both engines saved, killed and restored mid-run (PyTorch,
#      Triton with its cache in a persistent mount, the `auto` hand-off, the
#      interposer with train_mlp's PTX, --gpu-map where two GPUs exist);
#   3. the fake driver's conformance suite held to NVIDIA's driver, directly
#      and through the interposer;
#   4. bench/gpu_engines.py: dump/restore GB/s of both engines against the
#      copy bandwidth, and PyTorch's step-time overhead.
#
# Usage: scripts/gpu-check.sh [OUTDIR]       (default: gpu-check-results)
# Everything it prints goes to OUTDIR/log.txt too; JUnit XML and the
# benchmark's JSON land beside it; OUTDIR/summary.txt says what passed.
# Each step has its own time limit (together 470 s), so the whole stays
# under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUTDIR=$(realpath -m "${1:-gpu-check-results}")
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/log.txt") 2>&1
SECONDS=0
summary() { echo "$*" | tee -a "$OUTDIR/summary.txt"; }
: >"$OUTDIR/summary.txt"

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at ${SECONDS}s)"
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then summary "$name: ok"; else summary "$name: FAILED (exit $rc)"; fi
    return 0
}

# ---- 1. set-up ------------------------------------------------------------
nvidia-smi -L || { summary "no NVIDIA GPU visible (nvidia-smi failed)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUTDIR/gpus.csv"
PY=${PYTHON:-python3}
$PY -m venv --system-site-packages .venv-gpu
VPY=$REPO/.venv-gpu/bin/python
if compgen -G ".gpu-bundle/wheels/*.whl" >/dev/null; then
    $VPY -m pip install -q --no-index --no-deps .gpu-bundle/wheels/*.whl
fi
step "build" 120 env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    $VPY -m pip install -q --no-index --no-deps --no-build-isolation -e .
if [ -d .criu/root ]; then
    # A prefix made before its wrapper found its own location: write that wrapper.
    cat >.criu/bin/criu <<'EOF'
#!/bin/sh
p=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
exec "$p/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$p/root/usr/lib/x86_64-linux-gnu" "$p/root/usr/sbin/criu" "$@"
EOF
    chmod 755 .criu/bin/criu
fi
step "criu check" 15 "$VPY" -c 'from cedana_gpu.cr.criu import criu_path; import subprocess, sys; sys.exit(subprocess.run([str(criu_path()), "check"]).returncode)'
$VPY -m cedana_gpu gpu info --driver system | tee "$OUTDIR/gpu-info.txt"

# ---- 2. the real-GPU tests ---------------------------------------------------
step "tests/gpu" 170 "$VPY" -m pytest -p no:cacheprovider -n 4 tests/gpu -v -rs \
    --junitxml "$OUTDIR/tests-gpu.xml"

# ---- 3. conformance on NVIDIA's driver ---------------------------------------
step "conformance (system driver)" 40 env CEDANA_TEST_CUDA_PATH=system \
    "$VPY" -m pytest -p no:cacheprovider -n 8 -q -rs tests/fake_cuda --junitxml "$OUTDIR/conf-system.xml"
step "conformance (interposer on the system driver)" 40 env CEDANA_TEST_CUDA_PATH=system-interposer \
    "$VPY" -m pytest -p no:cacheprovider -n 8 -q -rs tests/fake_cuda --junitxml "$OUTDIR/conf-interposer.xml"

# ---- 4. benchmarks -------------------------------------------------------------
step "bench/gpu_engines.py" 85 "$VPY" bench/gpu_engines.py --gib "${GPU_CHECK_GIB:-4}" \
    --json "$OUTDIR/bench-gpu-engines.json"

summary "total: ${SECONDS}s"
