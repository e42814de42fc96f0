"""Where the native parts of cedana-gpu live.

CMake installs them under ``cedana_gpu/_native`` in the wheel. In an editable
install the Python sources stay in the checkout while the native files land
in site-packages, so both places are searched.
"""

from __future__ import annotations

import os
import sysconfig
from functools import cache
from pathlib import Path

import cedana_gpu


class NativeNotBuilt(RuntimeError):
    """The native libraries are missing: the package was not built."""


@cache
def native_dir() -> Path:
    override = os.environ.get("CEDANA_GPU_NATIVE_DIR")
    if override:
        return Path(override)
    candidates = [Path(p) / "_native" for p in cedana_gpu.__path__]
    candidates.append(Path(sysconfig.get_paths()["platlib"]) / "cedana_gpu" / "_native")
    for c in candidates:
        if (c / "fake").is_dir():
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
