#!/usr/bin/env bash
# Prepare what scripts/gpu-check.sh needs on a GPU machine that has no network:
# the CRIU prefix (scripts/setup-criu.sh) and wheels of the Python packages
# that such a machine may lack, for its Python (default 3.12, the version of
# the H200 machines' image, which already holds PyTorch, Triton, cuda-bindings,
# numpy, grpcio, protobuf, pytest and xdist).
#
# Usage: scripts/gpu-bundle.sh [PYTHON_VERSION]        (run here, with network)
# Result: .criu/ and .gpu-bundle/wheels/*.whl (both ignored by git). Carry
# both to the GPU machine with the checkout, then run scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
OUT=.gpu-bundle/wheels

[ -x .criu/bin/criu ] || scripts/setup-criu.sh
rm -rf "$OUT"
mkdir -p "$OUT"
# Runtime dependencies of cedana-gpu that the image lacks or may hold in too old
# a version, with the requirements pyproject.toml gives them (the others,
# cuda-bindings, numpy, nvidia-ml-py, come with PyTorch's image).
mapfile -t PACKAGES < <(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for d in deps:
    if re.match(r"(lz4|grpcio|protobuf)\b", d):
        print(d)
PY
)
PLATFORMS=()
for n in 17 27 28 34; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "${PACKAGES[@]}"
du -sh .criu "$OUT"
echo "gpu-bundle: carry .criu and .gpu-bundle with the checkout, then run scripts/gpu-check.sh"
