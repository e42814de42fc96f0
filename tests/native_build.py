"""Test-only native files: the conformance programs and kernels, the layout
dumper. The wheel does not carry them (CMake installs them only in the
``tests`` component, which pyproject.toml leaves out), so tests take them
from the checkout's CMake build tree (``cedana_gpu.paths.build_dir``), or from
a native directory where a full ``cmake --install`` put every component
(``CEDANA_GPU_NATIVE_DIR``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest


def _candidates(sub: str, name: str) -> list[Path]:
    from cedana_gpu import paths

    found: list[Path] = []
    with contextlib.suppress(paths.NativeNotBuilt):
        found.append(paths.native_dir() / sub / name)
    build = paths.build_dir()
    if build is not None:
        found.append(build / sub / name)
    return found


def _find(sub: str, name: str) -> Path:
    candidates = _candidates(sub, name)
    for path in candidates:
        if path.is_file():
            return path
    where = ", ".join(str(p.parent) for p in candidates) or "no native directory, no build tree"
    pytest.fail(f"{name} is not built (looked in {where}): run 'make setup'")


def program(name: str) -> Path:
    """A test program (``bin/<name>``)."""
    return _find("bin", name)


def kernels(name: str) -> Path:
    """A test module or GPU image (``kernels/<name>``)."""
    return _find("kernels", name)


def kernels_if_built(name: str) -> Path | None:
    """Like ``kernels``, or None where it was not built (GPU images need nvcc)."""
    for path in _candidates("kernels", name):
        if path.is_file():
            return path
    return None
