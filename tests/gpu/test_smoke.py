"""Smoke tests on NVIDIA's driver: it reports devices, and a sample runs on it
directly and as a job through the interposer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import system_driver

from cedana_gpu import paths

REPO = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 300  # a hang fails the test instead of blocking the run


def env_on_nvidia(state: Path | None = None) -> dict[str, str]:
    """This environment with NVIDIA's driver first on the search path and none
    of the fake driver's settings."""
    env = {
        k: v
        for k, v in system_driver.search_env().items()
        if not k.startswith(("FAKE_CUDA_", "CEDANA_GPU_SHM", "CEDANA_GPU_DRIVER"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if state is not None:
        env["CEDANA_STATE_DIR"] = str(state)
    return env


def cedana(*args: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *args],
        env=env_on_nvidia(state),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def vector_add() -> list[str]:
    """The C sample; its GPU images must have been built (nvcc)."""
    kernels = paths.kernels_dir()
    if not any((kernels / f"vector_add{s}").is_file() for s in (".ptx", ".fatbin")):
        pytest.skip(f"no GPU image of the samples in {kernels}: build where nvcc works")
    return [str(paths.bin_dir() / "vector_add")]


def test_system_driver_reports_devices(nvidia: system_driver.SystemDriver) -> None:
    assert nvidia.devices >= 1
    assert nvidia.version >= 12000
    out = cedana("gpu", "info", "--driver", "system", "--output", "json")
    assert out.returncode == 0, out.stderr
    devices = json.loads(out.stdout)["devices"]
    # NVML lists every GPU, CUDA only the visible ones (CUDA_VISIBLE_DEVICES).
    assert len(devices) >= nvidia.devices, out.stdout
    assert all(d["uuid"].startswith("GPU-") and d["total_memory_bytes"] > 0 for d in devices)


def test_gpu_libdir_is_the_drivers(nvidia: system_driver.SystemDriver) -> None:
    out = cedana("gpu", "libdir", "--driver", "system")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == nvidia.libdir.resolve()


def test_vector_add_on_the_system_driver(nvidia: system_driver.SystemDriver) -> None:
    r = subprocess.run(
        vector_add(), env=env_on_nvidia(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[-1] == "result: ok", r.stdout
    assert not any(line.endswith(".fake.so") for line in lines if line.startswith("module:"))


def test_vector_add_through_the_interposer(
    nvidia: system_driver.SystemDriver, state_dir: Path
) -> None:
    """The job's calls go through the interposer to a controller on NVIDIA's driver."""
    jid = f"gpu{uuid.uuid4().hex[:12]}"
    out = cedana(
        "exec", "--gpu", "--gpu-driver", "system", "--jid", jid, "--attach", "--", *vector_add(),
        state=state_dir,
    )  # fmt: skip
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert out.stdout.splitlines()[-1] == "result: ok", out.stdout
