"""Both GPU engines on NVIDIA's driver: jobs saved mid-run, killed, restored,
and finishing with the uninterrupted run's output.

- The driver engine (NVIDIA's ``cuCheckpointProcess*`` API) with the jobs the
  interposer cannot serve: a PyTorch training loop (runtime, cuBLAS, the
  caching allocator) and Triton kernels whose cache lives in a persistent
  mount; the ``auto`` engine handing a PyTorch job over to the driver engine;
  a migration onto another GPU with ``--gpu-map`` where there are two.
- The intercept engine on the same GPU with ``samples/train_mlp.py`` (its
  PTX images, built by nvcc).

Each test needs NVIDIA's driver and a GPU (tests/gpu/conftest.py), root (CRIU),
and the Python packages of its workload (PyTorch, Triton); without them it is
skipped with the reason. ``scripts/gpu-check.sh`` runs them on a bare GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import system_driver
from test_smoke import REPO, TIMEOUT, env_on_nvidia

from cedana_gpu import paths

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checkpoint/restore needs root (CRIU)")

TORCH = ("samples/torch_train.py", "--steps", "40", "--print-every", "1")
TRITON = ("samples/triton_job.py", "--steps", "40", "--print-every", "1")
MLP = ("samples/train_mlp.py", "--steps", "24", "--print-every", "1")
SLOW = ("--sleep-per-step", "0.1")
STEP = r"^step \d+ "


def needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in {sys.executable}")


def jid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Cedana:
    """``cedana`` on NVIDIA's driver with a state directory of the test's own."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cedana_gpu", *args],
            env={**env_on_nvidia(self.state), **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def ok(self, *args: str, **env: str) -> str:
        out = self.run(*args, **env)
        assert out.returncode == 0, (args, out.stdout, out.stderr[-3000:])
        return out.stdout

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--output", "json", **env))

    def job(self, j: str) -> dict[str, Any]:
        return {r["jid"]: r for r in self.json("ps")}[j]

    def exec(
        self, j: str, engine: str, *cmd: str, mounts: tuple[str, ...] = (), **env: str
    ) -> None:
        args = ["exec", "--gpu", "--gpu-driver", "system", "--gpu-engine", engine, "--jid", j]
        for m in mounts:
            args += ["--persistent-mount", m]
        self.ok(*args, "--", sys.executable, *cmd, **env)

    def log(self, j: str) -> list[str]:
        path = self.state / "jobs" / j / "job.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return [ln for ln in text.splitlines() if not ln.startswith(("cedana:", "cedana-gpu:"))]

    def wait_lines(self, j: str, count: int) -> None:
        import time

        deadline = time.monotonic() + TIMEOUT
        while len([ln for ln in self.log(j) if re.match(STEP, ln)]) < count:
            row = self.job(j)
            assert row["state"] in ("starting", "running"), (row, self.log(j)[-20:])
            assert time.monotonic() < deadline, f"job {j} printed fewer than {count} steps"
            time.sleep(0.1)

    def wait_exit(self, j: str) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + TIMEOUT
        while (row := self.job(j))["state"] in ("starting", "running"):
            assert time.monotonic() < deadline, f"job {j} did not end: {self.log(j)[-20:]}"
            time.sleep(0.2)
        assert row["status"] == "exited (0)", (row, self.log(j)[-20:])
        return row


@pytest.fixture
def cedana(tmp_path: Path, nvidia: system_driver.SystemDriver) -> Cedana:
    del nvidia  # skips without NVIDIA's driver
    state = tmp_path / "state"
    state.mkdir()
    return Cedana(state)


def direct(*args: str, **env: str) -> list[str]:
    """A sample's output lines run directly on NVIDIA's driver (the reference)."""
    out = subprocess.run(
        [sys.executable, *args],
        env={**env_on_nvidia(), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert out.returncode == 0, (args, out.stderr[-3000:])
    return out.stdout.splitlines()


def saved_and_resumed(
    c: Cedana, engine: str, sample: tuple[str, ...], tmp_path: Path, *dump: str,
    leave_running: bool = False, mounts: tuple[str, ...] = (), **env: str,
) -> tuple[list[str], list[str], dict[str, Any]]:  # fmt: skip
    """Run ``sample`` as a job, dump it after a few steps, restore it: the
    original's lines, the restored copy's lines, and what the dump said."""
    old, new = jid("g"), jid("gr")
    c.exec(old, engine, *sample, *SLOW, mounts=mounts, **env)
    c.wait_lines(old, 5)
    options = ["--dir", str(tmp_path / "ck"), *dump]
    if leave_running:
        options.append("--leave-running")
    dumped = c.json("dump", "job", old, *options)
    if leave_running:
        # The copy is restored once the original has finished: both cannot run
        # on one host at once, since the restored copy binds the same abstract
        # unix socket address as the original (CRIU: "Address already in use";
        # seen with PyTorch on the H200), which only a network namespace of
        # its own would allow.
        c.wait_exit(old)
    restored = c.json("restore", "job", old, "--jid", new)
    assert restored["job"] == new
    c.wait_exit(new)
    return c.log(old), c.log(new), dumped


# ---- the driver engine: PyTorch and Triton -----------------------------------------------


def test_the_driver_offers_the_checkpoint_api(cedana: Cedana) -> None:
    """Driver 580 (the H200 machines') has lock/checkpoint (r555) and GPU remapping (r580)."""
    info = cedana.json("gpu", "info", "--driver", "system")
    api = info["checkpoint_api"]
    assert api["checkpoint"] is True, info
    assert api["gpu_remap"] is True, info


@pytest.mark.parametrize(
    ("compression", "streams"), [("none", 1), ("lz4", 4)], ids=["plain", "lz4-4"]
)
def test_pytorch_training_saved_killed_restored(
    cedana: Cedana, tmp_path: Path, compression: str, streams: int
) -> None:
    needs("torch")
    expected = direct(*TORCH, "--device-mib", "256")
    before, after, dumped = saved_and_resumed(
        cedana, "driver", (*TORCH, "--device-mib", "256"), tmp_path,
        "--compression", compression, "--stream", str(streams),
    )  # fmt: skip
    assert dumped["engine"] == "driver"
    assert before + after == expected
    assert cedana.job(dumped["job"])["status"] == "checkpointed"


def test_pytorch_training_left_running(cedana: Cedana, tmp_path: Path) -> None:
    """--leave-running: the original goes on after the dump (restore + unlock)
    and both copies end with the uninterrupted run's checksum."""
    needs("torch")
    expected = direct(*TORCH)
    before, after, _ = saved_and_resumed(cedana, "driver", TORCH, tmp_path, leave_running=True)
    assert before == expected
    assert after and after == expected[-len(after) :]


def test_auto_engine_hands_pytorch_to_the_driver_engine(cedana: Cedana, tmp_path: Path) -> None:
    """PyTorch asks for NVIDIA's runtime export tables before it holds any
    device state: under ``auto`` the job is handed to the driver in-process
    and then checkpointed with the driver engine."""
    needs("torch")
    expected = direct(*TORCH)
    before, after, dumped = saved_and_resumed(cedana, "auto", TORCH, tmp_path)
    assert dumped["engine"] == "driver"
    assert before + after == expected


def test_triton_with_its_cache_in_a_persistent_mount(cedana: Cedana, tmp_path: Path) -> None:
    """Triton compiles a second specialisation after the restore: it finds its
    cache folder (a persistent mount, restored from the checkpoint) as it was
    and adds to it, ending with the uninterrupted run's cache and checksum."""
    needs("triton")
    reference = tmp_path / "reference-cache"
    expected = direct(*TRITON, TRITON_CACHE_DIR=str(reference))
    mount = tmp_path / "triton-cache"
    before, after, _ = saved_and_resumed(
        cedana, "driver", TRITON, tmp_path, "--compression", "lz4",
        mounts=(str(mount),), TRITON_CACHE_DIR=str(mount),
    )  # fmt: skip
    # The header names the cache folder, which differs between the two runs.
    assert before[1:] + after == expected[1:]
    assert [ln for ln in after if ln.startswith("cache: ")] == [
        ln for ln in expected if ln.startswith("cache: ")
    ]


# ---- the intercept engine on the same GPU ----------------------------------------------------


def test_intercept_engine_on_the_gpu(cedana: Cedana, tmp_path: Path) -> None:
    """samples/train_mlp.py through the interposer, its kernels from the PTX nvcc built."""
    kernels = paths.kernels_dir()
    if not (kernels / "mlp.ptx").is_file() and not (kernels / "mlp.fatbin").is_file():
        pytest.skip(f"no GPU image of samples/kernels/mlp.cu in {kernels}: build where nvcc works")
    expected = direct(*MLP, "--device-mib", "64")
    before, after, dumped = saved_and_resumed(
        cedana, "intercept", (*MLP, "--device-mib", "64"), tmp_path, "--stream", "2"
    )
    assert dumped.get("engine", "intercept") == "intercept"
    assert before + after == expected


# ---- migration onto another GPU ---------------------------------------------------------------


def gpu_uuids(c: Cedana) -> list[str]:
    info = c.json("gpu", "info", "--driver", "system")
    return [d["uuid"] for d in info["devices"]]


def test_migration_onto_another_gpu_with_gpu_map(cedana: Cedana, tmp_path: Path) -> None:
    needs("torch")
    uuids = gpu_uuids(cedana)
    if len(uuids) < 2:
        pytest.skip(f"migration with --gpu-map needs two GPUs; this machine has {len(uuids)}")
    expected = direct(*TORCH)
    old, new = jid("mg"), jid("mgr")
    # The job sees only the first GPU; the restored one is moved onto the second.
    cedana.exec(old, "driver", *TORCH, *SLOW, CUDA_VISIBLE_DEVICES=uuids[0])
    cedana.wait_lines(old, 5)
    cedana.json("dump", "job", old, "--dir", str(tmp_path / "ck"))
    cedana.json("restore", "job", old, "--jid", new, "--gpu-map", f"{uuids[0]}={uuids[1]}")
    cedana.wait_exit(new)
    assert cedana.log(old) + cedana.log(new) == expected
