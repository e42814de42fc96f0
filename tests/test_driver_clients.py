"""Public driver-API clients, run as a user runs them: once directly on the
fake driver, once through ``cedana exec --gpu --gpu-driver fake``; they must
print the same lines. cuda.core and numba-cuda hold handles as pointer-sized
integers: handles with bit 63 set made both fail through the interposer at
their first context lookup (an OverflowError in cuda.core's Context.handle).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cr_helpers import Cedana, clean_env, exec_gpu_args, native_ready, unique_jid

JOBS = Path(__file__).parent / "jobs"
TIMEOUT = 300  # a hang fails the test instead of blocking the run


@pytest.fixture(scope="module")
def native() -> Path:
    return native_ready()


@pytest.mark.parametrize(
    ("program", "last_line"),
    [("cuda_core_client.py", "cuda.core ok"), ("numba_client.py", "numba-cuda ok")],
)
def test_client_through_cedana_matches_direct(
    tmp_path: Path, native: Path, program: str, last_line: str
) -> None:
    args = [sys.executable, str(JOBS / program)]
    direct = subprocess.run(
        args,
        env=clean_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(native / "fake")),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert direct.returncode == 0, direct.stderr
    expected = direct.stdout.splitlines()
    assert expected[-1] == last_line and "False" not in direct.stdout, direct.stdout

    cedana = Cedana(tmp_path / "state")
    jid = unique_jid("cl")
    out = cedana(*exec_gpu_args(jid, *args))
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert [ln for ln in out.stdout.splitlines() if ln in set(expected)] == expected, out.stdout
    # Nothing the client called was refused as unsupported.
    assert "not supported" not in out.stderr, out.stderr


def test_nvml_inside_a_job_sees_the_drivers_devices(tmp_path: Path, native: Path) -> None:
    """A job on the fake driver finds libnvidia-ml.so.1 as it finds libcuda.so.1
    (pynvml loads it by name) and sees through it the devices the driver has,
    configured once for the controller's fake driver; it never maps the fake
    libcuda.so.1 itself, only the interposer."""
    cedana = Cedana(tmp_path / "state")
    jid = unique_jid("nv")
    out = cedana(
        *exec_gpu_args(jid, sys.executable, str(JOBS / "nvml_devices.py")),
        FAKE_CUDA_DEVICE_COUNT="2",
        FAKE_CUDA_DEVICE_MEMORY_MIB="4096",
        FAKE_CUDA_DEVICE_NAME="Agreeing GPU",
    )
    assert out.returncode == 0, (out.stdout, out.stderr)
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["nvml_count"] == len(doc["rows"]) == 2
    for row in doc["rows"]:
        assert row["cuda"] == row["nvml"]
        assert row["nvml"][0] == "Agreeing GPU" and row["nvml"][2] == 4096 << 20
    assert doc["cuda_version"] == doc["nvml_cuda_version"]
    assert doc["libs"] == [
        str(native / "fake" / "nvml" / "libnvidia-ml.so.1"),
        str(native / "intercept" / "libcedana-gpu.so"),
    ]


def test_forked_siblings_mint_distinct_handles(tmp_path: Path, native: Path) -> None:
    """Two children forked from a parent that never initialised CUDA share one
    address space layout and one controller: their handles (addresses of their
    own records) must still differ, and both must work."""
    cedana = Cedana(tmp_path / "state")
    jid = unique_jid("fk")
    out = cedana(*exec_gpu_args(jid, sys.executable, str(JOBS / "forked_siblings.py")))
    assert out.returncode == 0, (out.stdout, out.stderr)
    lines = out.stdout.splitlines()
    assert lines[-1] == "siblings ok", lines
    minted = [
        {k: int(v, 16) for k, v in (w.split("=") for w in ln.split())}
        for ln in lines
        if ln.startswith("ctx=")
    ]
    assert len(minted) == 2, lines
    first, second = (set(m.values()) for m in minted)
    assert not first & second, minted
    assert all(0 < v < 1 << 47 for v in first | second), minted


@pytest.mark.slow
def test_a_process_takes_another_handle_region_when_one_is_full(
    tmp_path: Path, native: Path
) -> None:
    """Handles are never reused, so a long loop that makes and destroys events
    fills a 256 MiB region of records (about 1.46 million); the process then
    claims the next one and goes on."""
    cedana = Cedana(tmp_path / "state")
    jid = unique_jid("mh")
    out = cedana(*exec_gpu_args(jid, sys.executable, str(JOBS / "many_handles.py"), "1500000"))
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    lines = out.stdout.splitlines()
    assert lines[-1] == "many ok", lines[-5:]
    minted = {k: int(v, 16) for k, v in (w.split("=") for w in lines[-2].split())}
    assert minted["last"] - minted["first"] > 256 << 20, minted
    assert all(0 < v < 1 << 47 for v in minted.values()), minted
