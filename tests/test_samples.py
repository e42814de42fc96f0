"""The samples on the fake driver, directly and through the interposer.

Each sample is deterministic: two runs with the same arguments print the same
checksum, another --seed prints another one. Through ``cedana exec --gpu`` a
sample must print exactly what it prints directly on the fake driver, with
one thread and with several.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cr_helpers import clean_env, exec_gpu_args

from cedana_gpu import paths

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 300  # a hang fails the test instead of blocking the run


def sample_cmd(name: str, *args: str) -> list[str]:
    if name == "vector_add":
        return [str(paths.bin_dir() / "vector_add"), *args]
    return [sys.executable, str(REPO / "samples" / f"{name}.py"), *args]


def run_direct(cmd: list[str]) -> str:
    proc = subprocess.run(
        cmd,
        env=clean_env(LD_LIBRARY_PATH=str(paths.fake_libdir())),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return proc.stdout


def run_through_interposer(cmd: list[str], state: Path) -> str:
    jid = f"s{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *exec_gpu_args(jid, *cmd)],
        env=clean_env(state),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (cmd, proc.stdout, proc.stderr)
    return proc.stdout


def checksum(stdout: str) -> str:
    last = stdout.strip().splitlines()[-1]
    assert last.startswith(("checksum: ", "result: ok")), stdout
    return last


SEEDED = {
    "train_mlp": ["--steps", "30"],
    "jit_kernels": ["--steps", "6"],
    "streams_events": [],
}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_sample_is_deterministic_and_seeded(name: str, tmp_path: Path) -> None:
    extra = SEEDED[name]
    if name == "jit_kernels":
        # A cold cache, then the warm one: hits must not change the result.
        extra = [*extra, "--cache-dir", str(tmp_path / "cache")]
    first = checksum(run_direct(sample_cmd(name, *extra, "--seed", "1")))
    second = checksum(run_direct(sample_cmd(name, *extra, "--seed", "1")))
    other = checksum(run_direct(sample_cmd(name, *extra, "--seed", "2")))
    assert first == second
    assert other != first


def test_vector_add_runs_on_the_fake_driver() -> None:
    assert checksum(run_direct(sample_cmd("vector_add"))) == "result: ok"


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("vector_add", []),
        ("train_mlp", ["--steps", "20"]),
        ("train_mlp", ["--steps", "20", "--threads", "3"]),
        ("jit_kernels", ["--steps", "6"]),
        ("streams_events", []),
    ],
    ids=["vector_add", "train_mlp", "train_mlp-3-threads", "jit_kernels", "streams_events"],
)
def test_sample_through_the_interposer_prints_what_it_prints_directly(
    name: str, args: list[str], tmp_path: Path
) -> None:
    direct_args = forwarded_args = args
    if name == "jit_kernels":
        # Each run with its own cold cache, so both compile the same kernels.
        direct_args = [*args, "--cache-dir", str(tmp_path / "cache-direct")]
        forwarded_args = [*args, "--cache-dir", str(tmp_path / "cache-forwarded")]
    direct = run_direct(sample_cmd(name, *direct_args))
    forwarded = run_through_interposer(sample_cmd(name, *forwarded_args), tmp_path / "state")
    expected = [ln for ln in direct.splitlines() if "ms" not in ln and "module:" not in ln]
    got = [ln for ln in forwarded.splitlines() if ln in set(expected)]
    assert got == expected
    assert checksum(forwarded) == checksum(direct)
