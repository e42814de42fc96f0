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
#      copy bandwidth, and PyTorch's step-time overhead; bench/pool.py: the
#      warm controller pool's start-to-first-kernel and restore.
#
# Usage: scripts/gpu-check.sh [OUTDIR]       (default: gpu-check-results)
# Everything it prints goes to OUTDIR/log.txt too; JUnit XML, the benchmark's
# JSON and logs.tgz (the jobs' and CRIU's logs of tests/gpu) land beside it,
# eight files in all; OUTDIR/summary.txt says what passed. The steps run in
# the order of what matters most (the tests, then the benchmark, then the
# conformance runs), each with its own time limit (together 585 s; a run
# on a machine lent for minutes names fewer steps in GPU_CHECK_STEPS).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUTDIR=$(realpath -m "${1:-gpu-check-results}")
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/log.txt") 2>&1
SECONDS=0
summary() { echo "$*" | tee -a "$OUTDIR/summary.txt"; }
: >"$OUTDIR/summary.txt"

# GPU_CHECK_STEPS: which of the steps after the set-up run (a second run on
# a machine lent for minutes repeats only what changed).
STEPS=" ${GPU_CHECK_STEPS:-tests bench pool conformance} "
wanted() { [[ $STEPS == *" $1 "* ]]; }

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at ${SECONDS}s)"
    timeout --signal=INT --kill-after=20 "$limit" "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then summary "$name: ok"; else summary "$name: FAILED (exit $rc)"; fi
    return 0
}

# A step cut off at its limit can leave jobs and their controllers (own
# sessions) holding the GPU: end them before the next step. This kills every
# cedana controller and sample job on the machine: run the check on a machine
# lent for it, not beside jobs that matter.
leftovers() {
    pkill -KILL -f 'cedana_gpu.controller|cedana-gpu-controller|samples/(torch_train|triton_job|train_mlp)' 2>/dev/null
    sleep 1
}

# ---- 1. set-up ------------------------------------------------------------
nvidia-smi -L || { summary "no NVIDIA GPU visible (nvidia-smi failed)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
echo "kernel $(uname -r); $(nvcc --version 2>/dev/null | tail -1)"
PY=${PYTHON:-python3}
$PY -c 'import sys; print(sys.version, sys.prefix)'
# The image's python may itself be a venv (/opt/torch/.venv): a venv made
# from it with --system-site-packages would see the base interpreter's
# packages, not PyTorch's. So the new venv names the packages of the
# interpreter it was made from in a .pth file; its own site-packages (the
# bundled wheels, cedana-gpu) come first on sys.path.
rm -rf .venv-gpu
VPY=$REPO/.venv-gpu/bin/python
# A venv with pip of its own where ensurepip exists; else the image's pip
# installs into it (--python).
if $PY -m venv .venv-gpu 2>/dev/null && $VPY -m pip --version >/dev/null 2>&1; then
    PIP=("$VPY" -m pip)
else
    rm -rf .venv-gpu
    $PY -m venv --without-pip .venv-gpu
    PIP=("$PY" -m pip --python "$VPY")
fi
$PY -c 'import site; print("\n".join(site.getsitepackages()))' \
    >"$($VPY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz-parent.pth"
$VPY -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' ||
    echo "PyTorch or Triton is not importable: their tests will be skipped"
if compgen -G ".gpu-bundle/wheels/*.whl" >/dev/null; then
    "${PIP[@]}" install -q --no-index --no-deps .gpu-bundle/wheels/*.whl
fi
step "build" 60 env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "${PIP[@]}" install -q --no-index --no-deps --no-build-isolation -e .
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
$VPY -m cedana_gpu gpu info --driver system

# ---- 2. the real-GPU tests ---------------------------------------------------
BASETEMP=/tmp/cedana-gpu-check
rm -rf "$BASETEMP"
wanted tests && step "tests/gpu" 170 "$VPY" -m pytest -p no:cacheprovider -n 4 tests/gpu -v -rs \
    --basetemp "$BASETEMP" --junitxml "$OUTDIR/tests-gpu.xml"
leftovers
# The jobs' and CRIU's logs, for whatever failed (small files only).
find "$BASETEMP" -type f \( -name '*.log' -o -name 'manifest.json' \) -size -4M -print0 2>/dev/null |
    tar czf "$OUTDIR/logs.tgz" --null -T - 2>/dev/null

# ---- 3. benchmarks -------------------------------------------------------------
wanted bench && step "bench/gpu_engines.py" 140 "$VPY" bench/gpu_engines.py --gib "${GPU_CHECK_GIB:-2}" \
    --rounds 2 --json "$OUTDIR/bench-gpu-engines.json"
leftovers

# The warm controller pool against fresh controllers, where creating a context
# is NVIDIA's cost (issue 10 §5).
wanted pool && step "bench/pool.py" 120 bash -c \
    '"$0" bench/pool.py --driver system --rounds "${GPU_CHECK_POOL_ROUNDS:-4}" --json >"$1"' \
    "$VPY" "$OUTDIR/bench-pool.json"
leftovers

# ---- 4. conformance on NVIDIA's driver ---------------------------------------
wanted conformance && step "conformance (system driver)" 40 env CEDANA_TEST_CUDA_PATH=system \
    "$VPY" -m pytest -p no:cacheprovider -n 8 -q -rs tests/fake_cuda --junitxml "$OUTDIR/conf-system.xml"
wanted conformance && step "conformance (interposer on the system driver)" 40 env CEDANA_TEST_CUDA_PATH=system-interposer \
    "$VPY" -m pytest -p no:cacheprovider -n 8 -q -rs tests/fake_cuda --junitxml "$OUTDIR/conf-interposer.xml"

summary "total: ${SECONDS}s"
