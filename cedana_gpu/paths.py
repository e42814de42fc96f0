"""Where the native parts of cedana-gpu live.

CMake installs them under ``cedana_gpu/_native`` in the wheel: the
interposer, the controller's dispatcher, the fake driver and fake NVML, the
sample kernels and programs, and the tools to build modules for the fake
driver. In an editable install the Python sources stay in the checkout while
the native files land in site-packages; the installed distribution's record
says where, so both kinds of install are found without anything copied into
the checkout.

Test and benchmark programs are not in the wheel: a checkout's CMake build
tree holds them (``build_dir``).
"""

from __future__ import annotations

import os
import sys
import sysconfig
from functools import cache
from pathlib import Path

import cedana_gpu
from cedana_gpu.errors import SetupError

DISTRIBUTION = "cedana-gpu"
NATIVE = "_native"
# A file every build installs: its presence tells a native directory.
_MARKER = Path("fake") / "libcuda.so.1"


class NativeNotBuilt(SetupError):
    """The native libraries are missing: the package was not built."""


def _from_distribution() -> Path | None:
    """The native directory the installed distribution's record lists
    (site-packages/cedana_gpu/_native, also for an editable install)."""
    import importlib.metadata  # only here: every CLI start imports this module

    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    marker = (Path("cedana_gpu") / NATIVE / _MARKER).as_posix()
    for f in dist.files or ():
        if f.as_posix() == marker:
            return Path(str(dist.locate_file(f))).parent.parent
    return None


@cache
def native_dir() -> Path:
    override = os.environ.get("CEDANA_GPU_NATIVE_DIR")
    if override:
        return Path(override)
    # Next to the modules (a wheel), then where the distribution's record says
    # (an editable install), then this interpreter's site-packages.
    candidates = [Path(p) / NATIVE for p in cedana_gpu.__path__]
    recorded = _from_distribution()
    if recorded is not None:
        candidates.append(recorded)
    candidates.append(Path(sysconfig.get_paths()["platlib"]) / "cedana_gpu" / NATIVE)
    for c in candidates:
        if (c / _MARKER).is_file():
            return c
    raise NativeNotBuilt(
        "cedana-gpu's native libraries are not built: run 'make setup' "
        "(or 'pip install -e .') in the checkout, or set CEDANA_GPU_NATIVE_DIR"
    )


def fake_libdir() -> Path:
    """Directory holding the fake libcuda.so.1 and libnvidia-ml.so.1."""
    return native_dir() / "fake"


def kernels_dir() -> Path:
    """Compiled sample kernels: <set>.fake.so for the fake driver, <set>.ptx for GPUs."""
    return native_dir() / "kernels"


def bin_dir() -> Path:
    return native_dir() / "bin"


def include_dir() -> Path:
    return native_dir() / "include"


def api_table_path() -> Path:
    return native_dir() / "cuda_api_table.json"


def _cache_entry(cache_file: Path, key: str) -> str | None:
    prefix = key + ":"
    with cache_file.open(errors="replace") as f:
        for line in f:
            if line.startswith(prefix):
                return line.split("=", 1)[1].strip() if "=" in line else None
    return None


@cache
def build_dir() -> Path | None:
    """The CMake build tree of the checkout this package runs from, or None
    (an installed wheel has none).

    It holds what the wheel leaves out, in the same sub-directories as the
    native directory: the tests' and benchmarks' programs (``bin/``) and
    kernels (``kernels/``). ``CEDANA_GPU_BUILD_DIR`` overrides; otherwise,
    among the build directories ``build/*`` of this checkout, the one pip made
    (scikit-build-core's ``build/<wheel tag>``, pyproject.toml) for this
    interpreter; other builds there (sanitizer builds, say) only when there is
    no such one; the most recently configured one breaks a tie.
    """
    override = os.environ.get("CEDANA_GPU_BUILD_DIR")
    if override:
        return Path(override)
    checkout = Path(cedana_gpu.__file__).resolve().parent.parent
    found: list[tuple[bool, bool, float, Path]] = []
    for cache_file in (checkout / "build").glob("*/CMakeCache.txt"):
        home = _cache_entry(cache_file, "CMAKE_HOME_DIRECTORY")
        if home is None or Path(home).resolve() != checkout:
            continue
        by_pip = _cache_entry(cache_file, "SKBUILD") is not None
        python = _cache_entry(cache_file, "Python_EXECUTABLE")
        # Unresolved: a venv's python is a link to the system's.
        ours = python is not None and os.path.abspath(python) == os.path.abspath(sys.executable)
        found.append((by_pip, ours, cache_file.stat().st_mtime, cache_file.parent))
    return max(found)[3] if found else None
