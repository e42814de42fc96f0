"""Tests that need NVIDIA's driver and a GPU.

Every test here is marked ``gpu`` (tests/conftest.py adds the mark to this
folder's tests) and skipped, with the reason, where no usable NVIDIA driver
is found (tests/system_driver.py). On a machine with a GPU:

    .venv/bin/pytest tests/gpu
    CEDANA_TEST_CUDA_PATH=system .venv/bin/pytest tests/fake_cuda
    CEDANA_TEST_CUDA_PATH=system-interposer .venv/bin/pytest tests/fake_cuda

The first runs these; the others hold the fake driver's conformance tests to
NVIDIA's driver, directly and through the interposer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import system_driver


@pytest.fixture(scope="session")
def nvidia() -> system_driver.SystemDriver:
    """NVIDIA's driver (the tests here are skipped before they get this far
    where there is none)."""
    return system_driver.require()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A job store of the test's own."""
    d = tmp_path / "state"
    d.mkdir()
    return d
