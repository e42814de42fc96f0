"""Print the include directory with the newest CUDA driver API headers.

Candidates are the directories given as arguments (a CUDA toolkit's include
directory: $CUDA_HOME/include, /usr/local/cuda/include) and the include
directories of the nvidia-cuda-runtime wheels installed for this Python. Each
must hold cuda.h and cudaTypedefs.h; the one whose cuda.h says the highest
CUDA_VERSION wins (the first named on a tie, toolkits before wheels), so the
driver API table, and the version the fake driver reports, are the newest
API available to the build. Exits 1 when no candidate has both headers.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

VERSION_RE = re.compile(r"^#define\s+CUDA_VERSION\s+(\d+)", re.M)


def wheel_dirs() -> list[Path]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[Path] = []
    for root in spec.submodule_search_locations:
        found += [hit.parent for hit in sorted(Path(root).glob("*/include/cudaTypedefs.h"))]
    return found


def cuda_version(inc: Path) -> int | None:
    """CUDA_VERSION of inc/cuda.h, or None when inc lacks either header."""
    try:
        if not (inc / "cudaTypedefs.h").is_file():
            return None
        m = VERSION_RE.search((inc / "cuda.h").read_text(errors="replace"))
    except OSError:
        return None
    return int(m.group(1)) if m else None


def main(argv: list[str]) -> int:
    best: tuple[int, Path] | None = None
    for inc in [Path(a) for a in argv if a] + wheel_dirs():
        v = cuda_version(inc)
        if v is not None and (best is None or v > best[0]):
            best = (v, inc)
    if best is None:
        return 1
    print(best[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
