"""Print the include directory of the nvidia-cuda-runtime wheel, if installed."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.find_spec("nvidia")
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
for root in spec.submodule_search_locations:
    hits = sorted(Path(root).glob("*/include/cudaTypedefs.h"))
    for hit in reversed(hits):  # the newest CUDA major first (cu13 before cu12)
        if (hit.parent / "cuda.h").exists():
            print(hit.parent)
            sys.exit(0)
sys.exit(1)
