"""The `auto` GPU engine's hand-off (gpu/intercept/handoff.c).

A job that asks for NVIDIA's runtime export tables (cuGetExportTable) before
it holds device state is handed to the driver the controller loaded, inside
its own process: its later calls run there, not through the controller, and
the driver engine can checkpoint it with the driver's own API. One that
already holds device state gets one line naming ``--gpu-engine driver``.
The job is c/handoff_probe.c.

Most tests start jobs with ``cedana exec --gpu --gpu-driver fake`` whatever
driver path the conformance suite runs on, so they run once, on the fake
path. One runs the probe on the interposer paths themselves (a dispatcher of
the test's own, the sanitizer runs included), handing off to the driver that
dispatcher runs: NVIDIA's on the system-interposer path.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from types import ModuleType
from typing import Any

import native_build
import pytest
from cr_helpers import Cedana, unique_jid

# The CLI tests: once, on the fake path, and not under scripts/check-native.sh,
# whose sanitizer runtime does not reach the CLI's controllers and jobs.
ONCE = pytest.mark.only_paths(
    "fake", reason="starts its own jobs with `cedana exec --gpu-driver fake`"
)
NOT_SANITIZED = pytest.mark.skipif(
    bool(os.environ.get("CEDANA_TEST_PRELOAD")),
    reason="the sanitizer runtime does not reach the CLI's controllers and jobs",
)

AUTO = {"CEDANA_GPU_ENGINE": "auto"}


def start(cedana: Cedana, mode: str, **env: str) -> str:
    jid = unique_jid("ho")
    probe = native_build.program("fake_cuda_handoff_probe")
    kernels = native_build.kernels("conformance.fake.so")
    cedana.exec_gpu(jid, str(probe), str(kernels), mode, "--hold", **env)
    cedana.wait_log(jid, r"^holding$")
    return jid


def finish(cedana: Cedana, jid: str) -> str:
    os.kill(int(cedana.job(jid)["pid"]), signal.SIGUSR1)
    job = cedana.wait_final(jid)
    log = cedana.log(jid)
    assert job["state"] == "exited" and job["exit_code"] == 0, (job, log)
    assert re.search(r"^done$", log, re.M), log
    return log


def mapped(log: str) -> set[str]:
    return {
        Path(p).name + ("(fake)" if "/fake/" in p else "")
        for p in re.findall(r"^mapped: (.*)$", log, re.M)
    }


def dispatcher(cedana: Cedana, jid: str) -> dict[str, Any]:
    return cedana.inspect(jid)["live"]["dispatcher"]


@pytest.mark.parametrize("mode", ["first", "after-init"])
@ONCE
@NOT_SANITIZED
def test_handed_off_before_device_state(cedana: Cedana, cu: ModuleType, mode: str) -> None:
    """cuGetExportTable first (or right after cuInit): the job runs on the
    fake driver in its own process from then on, and the driver's checkpoint
    API serves it."""
    jid = start(cedana, mode, **AUTO)
    d = dispatcher(cedana, jid)
    assert d["handed_off"] is True
    # Nothing of the job's work reached the controller.
    assert not {"MEM_ALLOC", "MODULE_LOAD", "LAUNCH"} & set(d["ops"]), d["ops"]
    log = cedana.log(jid)
    assert "work ok" in log, log
    assert mapped(log) == {"libcuda.so.1(fake)", "libcedana-gpu.so"}, log
    assert "--gpu-engine" not in log
    # The job answers the driver's checkpoint API: the driver engine's way in.
    pid = int(cedana.job(jid)["pid"])
    E, S = cu.CUresult, cu.CUprocessState
    assert cu.cuCheckpointProcessGetState(pid) == (E.CUDA_SUCCESS, S.CU_PROCESS_STATE_RUNNING)
    for call in (
        cu.cuCheckpointProcessLock,
        cu.cuCheckpointProcessCheckpoint,
        cu.cuCheckpointProcessRestore,
        cu.cuCheckpointProcessUnlock,
    ):
        assert call(pid, None) == (E.CUDA_SUCCESS,)
    finish(cedana, jid)


@ONCE
@NOT_SANITIZED
def test_device_state_first_names_the_driver_engine(cedana: Cedana) -> None:
    """A job that holds device state before it asks gets one line naming
    --gpu-engine driver and an error, and stays on the interposer."""
    jid = start(cedana, "late", **AUTO)
    d = dispatcher(cedana, jid)
    assert d["handed_off"] is False
    log = finish(cedana, jid)
    said = [ln for ln in log.splitlines() if ln.startswith("cedana-gpu:")]
    assert len(said) == 1 and "--gpu-engine driver" in said[0], log
    assert "export table: 801" in log  # CUDA_ERROR_NOT_SUPPORTED
    assert mapped(log) == {"libcedana-gpu.so"}, log


@ONCE
@NOT_SANITIZED
def test_no_hand_off_unless_auto(cedana: Cedana) -> None:
    """Without CEDANA_GPU_ENGINE=auto the interposer keeps the job, as before."""
    jid = start(cedana, "first")
    d = dispatcher(cedana, jid)
    assert d["handed_off"] is False
    assert d["ops"].get("LAUNCH", 0) >= 1 and d["ops"].get("MEM_ALLOC", 0) >= 1, d["ops"]
    log = finish(cedana, jid)
    assert "cuGetExportTable is not supported" in log, log
    assert "--gpu-engine" not in log
    assert mapped(log) == {"libcedana-gpu.so"}, log


@pytest.mark.only_paths(
    "interposer",
    "system-interposer",
    reason="the probe's libcuda.so.1 must be the interposer, in front of a dispatcher",
)
@pytest.mark.parametrize("mode", ["first", "late"])
def test_hand_off_on_the_interposer_path(driver_path: Any, kernels_path: Path, mode: str) -> None:
    """The probe on this run's interposer path, handed to the driver its
    dispatcher runs (the fake one, or NVIDIA's on system-interposer)."""
    import subprocess

    if driver_path.real_gpu:
        import system_driver

        driver = system_driver.require().libdir / "libcuda.so.1"
    else:
        from cedana_gpu import paths

        driver = paths.fake_libdir() / "libcuda.so.1"
    env = {**AUTO, "CEDANA_GPU_HANDOFF_DRIVER": str(driver.resolve())}
    probe = native_build.program("fake_cuda_handoff_probe")
    with driver_path.child(env) as child_env:
        r = subprocess.run(
            [str(probe), str(kernels_path), mode],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    said = [ln for ln in r.stderr.splitlines() if ln.startswith("cedana-gpu:")]
    loaded = set(re.findall(r"^mapped: (.*)$", r.stdout, re.M))
    if mode == "first":
        assert "work ok" in r.stdout, out
        assert str(driver.resolve()) in {str(Path(p).resolve()) for p in loaded}, out
        assert said == [], out
    else:
        assert len(said) == 1 and "--gpu-engine driver" in said[0], out
        assert all(Path(p).name == "libcedana-gpu.so" for p in loaded), out
