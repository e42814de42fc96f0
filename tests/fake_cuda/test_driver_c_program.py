"""The C conformance program (c/conformance.c), a program linked with -lcuda,
in its two builds: legacy default stream, and per-thread default streams
(CUDA_API_PER_THREAD_DEFAULT_STREAM, calling the _ptds/_ptsz exports)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import native_build
import pytest


@pytest.mark.parametrize("build", ["legacy", "ptds"])
def test_c_conformance_program(driver_path: Any, kernels_path: Path, build: str) -> None:
    """driver_path: tests/conftest.py's DriverPath of this run."""
    program = native_build.program(f"fake_cuda_conformance_{build}")
    r = subprocess.run(
        [str(program), str(kernels_path)],
        env=driver_path.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert re.fullmatch(r"\d+ passed, 0 failed", last), (
        f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr}"
    )
    assert r.returncode == 0, r.stderr
