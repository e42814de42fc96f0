"""The daemon's warm controller pool (``gpu.pool_size``), through the gRPC API.

A standby controller is recognised by its socket in the daemon's pool
directory and the process that serves it; a job runs on an adopted one when
its controller's pid is the standby's, which existed before the job was
asked for. Nothing here measures time.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cr_helpers import alive, needs_root, unique_jid, wait_for
from daemon_helpers import Daemon, kill_jobs, run_req, running

from cedana_gpu.daemon.proto import daemon_pb2 as pb

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

TRAIN = [sys.executable, "samples/train_mlp.py", "--steps", "100000", "--print-every", "1"]


def pooled(tmp_path: Path, size: int = 1) -> Daemon:
    return Daemon(tmp_path, CEDANA_GPU_POOL_SIZE=str(size), CEDANA_GPU_DRIVER="fake")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running(pooled(tmp_path)) as d:
        yield d


def standbys(d: Daemon) -> dict[int, Path]:
    """pid -> socket of every standby controller that is ready (its socket bound)."""
    pool = d.state / "pool"
    found: dict[int, Path] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--standby" not in argv:
            continue
        sock = Path(os.fsdecode(argv[argv.index(b"--standby") + 1]))
        if sock.parent == pool and sock.exists():
            found[int(entry.name)] = sock
    return found


def ready_standbys(
    d: Daemon, n: int = 1, besides: frozenset[int] | set[int] = frozenset()
) -> set[int]:
    """Wait until ``n`` standbys other than ``besides`` are ready; their pids."""

    def enough() -> set[int] | None:
        pids = set(standbys(d)) - set(besides)
        return pids if len(pids) >= n else None

    return set(wait_for(enough, f"{n} ready standby controller(s)"))


def reserved_range(d: Daemon, jid: str, pid: int) -> str:
    """The device range (``0xBASE+0xSIZE``) the standby ``pid`` that job ``jid``
    adopted had reserved, as the daemon logged it."""
    said = re.search(
        rf"job {jid}: adopted standby fake controller {pid} "
        r"\(device range (0x[0-9a-f]+\+0x[0-9a-f]+) reserved\)",
        d.output(),
    )
    assert said, d.output()
    return said[1]


def gpu_run(jid: str, **fields: object) -> object:
    return run_req(jid, *TRAIN, "--sleep-per-step", "0.02", gpu=True, gpu_driver="fake", **fields)


@pytest.mark.parametrize("engine", ["intercept", "driver"])
def test_exec_and_restore_run_on_adopted_controllers(daemon: Daemon, engine: str) -> None:
    jid, back = unique_jid("dpa"), unique_jid("dpb")
    cli = daemon.cli()
    with daemon.client() as stub:
        (first,) = ready_standbys(daemon)
        job = stub.Run(gpu_run(jid, gpu_engine=engine)).job
        # The job's controller is the standby that was there before the exec.
        assert job.controller_pid == first
        assert job.engine == engine
        held = reserved_range(daemon, jid, first)
        cli.wait_log(jid, r"^step \d+ loss", 3)
        assert "driver fake" in cli.controller_log(jid)
        # The standby's device range serves the job (the driver engine's job
        # runs on its own driver, and the range was given back).
        took = f"device range {held}, reserved on standby"
        assert (took in cli.controller_log(jid)) is (engine == "intercept")
        # The pool refills with a new standby.
        (second,) = ready_standbys(daemon, besides={first})

        dumped = stub.Dump(pb.DumpReq(jid=jid))
        assert dumped.job_state == "checkpointed" and dumped.gpu_bytes > 0
        restored = stub.Restore(pb.RestoreReq(jid=jid, new_jid=back))
        assert restored.state == "running"
        assert restored.controller_pid == second
        # A fresh controller's first range is where the standby's is: the
        # checkpoint's range is the second standby's, taken as it is.
        assert reserved_range(daemon, back, second) == held
        assert (took in cli.controller_log(back)) is (engine == "intercept")
        steps = cli.log(back).count("step ")
        cli.wait_log(back, r"^step \d+ loss", steps + 3)
        # The restored job continues where the dump left it.
        last = [ln for ln in cli.log(jid).splitlines() if ln.startswith("step ")][-1]
        resumed = next(ln for ln in cli.log(back).splitlines() if ln.startswith("step "))
        assert int(resumed.split()[1]) == int(last.split()[1]) + 1
        ready_standbys(daemon, besides={first, second})


def test_a_killed_standby_is_replaced_and_never_handed_out(daemon: Daemon) -> None:
    jid = unique_jid("dpk")
    (victim,) = ready_standbys(daemon)
    os.kill(victim, signal.SIGKILL)
    (replacement,) = ready_standbys(daemon, besides={victim})
    wait_for(lambda: f"controller {victim} died" in daemon.output(), "the pool to notice")
    with daemon.client() as stub:
        job = stub.Run(gpu_run(jid)).job
    assert job.controller_pid == replacement != victim
    daemon.cli().wait_log(jid, r"^step \d+ loss", 2)


def test_a_job_whose_driver_settings_differ_gets_a_fresh_controller(daemon: Daemon) -> None:
    jid = unique_jid("dpf")
    ready = ready_standbys(daemon)
    with daemon.client() as stub:
        req = gpu_run(jid)
        req.env.append("FAKE_CUDA_DEVICE_MEMORY_MIB=2048")  # type: ignore[attr-defined]
        job = stub.Run(req).job
    assert job.controller_pid not in ready
    assert alive(next(iter(ready)))  # still on standby, for a job that fits
    assert (
        f"job {jid}: a fresh controller: the job's environment differs from the pool's in "
        "FAKE_CUDA_DEVICE_MEMORY_MIB"
    ) in daemon.output()
    daemon.cli().wait_log(jid, r"^step \d+ loss", 2)


def test_health_counts_the_pool_and_a_stopped_daemon_leaves_no_standby(tmp_path: Path) -> None:
    d = pooled(tmp_path, 2).start()
    jid = unique_jid("dps")
    try:
        pids = ready_standbys(d, 2)
        with d.client() as stub:
            health = stub.HealthCheck(pb.HealthCheckReq(full=True))
            lines = {r.name: (r.status, r.detail) for r in health.results}
            assert lines["controller pool"] == ("OK", "2/2 warm (fake)")
            job = stub.Run(gpu_run(jid)).job
        assert job.controller_pid in pids
        d.cli().wait_log(jid, r"^step \d+ loss", 2)
        standing = set(standbys(d)) | (pids - {job.controller_pid})
        d.stop()
        for pid in standing:
            wait_for(lambda pid=pid: not alive(pid), f"standby {pid} to end")
        assert not list((d.state / "pool").glob("*.sock"))
        # The adopted controller is the job's: it outlives the daemon.
        assert alive(job.controller_pid)
        assert d.cli().ps()[jid]["state"] == "running"
    finally:
        kill_jobs(d)
        d.stop()
