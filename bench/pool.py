#!/usr/bin/env python3
"""The warm controller pool's effect (issue 10 §5): exec and restore, pool vs none.

Two daemons run side by side on one driver (``--driver``: the fake one, or
NVIDIA's, where creating a context is a real cost), one with ``gpu.pool_size = 1``
and one without (the baseline), each with its own state directory and socket.
Rounds alternate between them (the order rotates). Each round, through the
daemon's gRPC API (as a platform drives it):

- **start-to-first-kernel**: ``Run`` of a ``train_mlp`` job (``--gpu``), from
  the call until the job's log shows its first step, which launched the
  step's kernels and read the loss back;
- **restore**: ``Restore`` of one checkpoint of that job made beforehand by
  the same daemon, from the call until it returns with the job running.

Before each round (of either mode) the pool is given time to refill (a ready
standby: its socket in ``<state>/pool``), as it would be between jobs that do
not come all at once, so that its refill takes no CPU from a measured round.
Jobs are killed after their round. Medians; ratio = pool / none. Bar: the
pool should cut the controller's start-up, start-to-first-kernel at most
0.7x of without (docs/benchmarks.md).

    .venv/bin/python bench/pool.py              # 5 rounds; about a minute on 2 cores
    .venv/bin/python bench/pool.py --rounds 9 --json
    python bench/pool.py --driver system     # on a GPU (scripts/gpu-check.sh); needs nvcc's PTX

Needs root (CRIU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from cedana_gpu.daemon.proto import daemon_pb2 as pb  # noqa: E402
from cedana_gpu.daemon.proto import daemon_pb2_grpc as pb_grpc  # noqa: E402

MODES = ("pool", "none")
TRAIN = [sys.executable, str(REPO / "samples" / "train_mlp.py"), "--steps", "1000000",
         "--print-every", "1", "--sleep-per-step", "0.01"]  # fmt: skip


class BenchError(RuntimeError):
    pass


def wait(pred: Callable[[], Any], what: str, timeout: float = 120, poll: float = 0.002) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(poll)


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FAKE_CUDA_", "CEDANA_")) and k not in ("LD_PRELOAD",)
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Daemon:
    def __init__(self, base: Path, mode: str, driver: str) -> None:
        self.dir = base / mode
        self.dir.mkdir(parents=True)
        self.state, self.socket = self.dir / "state", self.dir / "d.sock"
        self.env = dict(
            base_env(),
            CEDANA_STATE_DIR=str(self.state),
            CEDANA_ADDRESS=str(self.socket),
            CEDANA_GPU_DRIVER=driver,
            CEDANA_GPU_POOL_SIZE="1" if mode == "pool" else "0",
        )
        self.pool = mode == "pool"
        self.driver = driver
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Any]:
        with open(self.dir / "daemon.out", "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
                env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        stub = pb_grpc.DaemonStub(self.channel)
        try:
            wait(lambda: self._answers(stub), "the daemon", poll=0.05)
            yield stub
        finally:
            self.channel.close()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)

    @staticmethod
    def _answers(stub: Any) -> bool:
        try:
            stub.HealthCheck(pb.HealthCheckReq(), timeout=2)
            return True
        except grpc.RpcError:
            return False

    def warm(self) -> None:
        """Wait until the pool is refilled (its standby ready), and a moment for the
        standby's start-up to be over."""
        if self.pool:
            wait(lambda: list((self.state / "pool").glob("*.sock")), "a ready standby", poll=0.05)
            time.sleep(0.2)

    def run_req(self, jid: str) -> Any:
        env = dict(base_env())
        return pb.RunReq(cmd=TRAIN, jid=jid, env=[f"{k}={v}" for k, v in env.items()],
                         cwd=str(REPO), gpu=True, gpu_driver=self.driver)  # fmt: skip

    def job_log(self, jid: str) -> Path:
        return self.state / "jobs" / jid / "job.log"

    def took_range(self, jid: str) -> bool:
        """Whether job ``jid``'s dispatcher serves in its standby's reserved range."""
        log = self.state / "jobs" / jid / "controller.log"
        return "reserved on standby" in log.read_text(errors="replace")


def first_step(log: Path) -> bool:
    try:
        return b"step " in log.read_bytes()
    except FileNotFoundError:
        return False


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(rounds: int, base: Path, driver: str) -> dict[str, Any]:
    daemons = {m: Daemon(base, m, driver) for m in MODES}
    times: dict[str, dict[str, list[float]]] = {
        op: {m: [] for m in MODES} for op in ("first_kernel", "restore")
    }
    adopted = {m: 0 for m in MODES}
    took = {"exec": 0, "restore": 0}  # pool mode: dispatchers in their standby's range
    phases: dict[str, dict[str, list[float]]] = {m: {} for m in MODES}
    with contextlib.ExitStack() as stack:
        stubs = {m: stack.enter_context(d.running()) for m, d in daemons.items()}
        checkpoints: dict[str, str] = {}
        for m, d in daemons.items():
            jid = f"bs{uuid.uuid4().hex[:6]}"
            stubs[m].Run(d.run_req(jid))
            wait(lambda d=d, jid=jid: first_step(d.job_log(jid)), "the job to be dumped")
            checkpoints[m] = stubs[m].Dump(pb.DumpReq(jid=jid, dir=str(d.dir / "ck"))).path
        for k in range(rounds):
            for m in MODES[k % 2 :] + MODES[: k % 2]:
                d, stub = daemons[m], stubs[m]
                # The pool's refill must not take the CPU from either mode's round.
                daemons["pool"].warm()
                jid = f"bx{uuid.uuid4().hex[:6]}"
                t0 = time.monotonic()
                job = stub.Run(d.run_req(jid)).job
                wait(lambda d=d, jid=jid: first_step(d.job_log(jid)), "the first kernel")
                times["first_kernel"][m].append(time.monotonic() - t0)
                adopted[m] += f"adopted standby {driver} controller {job.controller_pid}" in (
                    (d.dir / "daemon.out").read_text(errors="replace")
                )
                took["exec"] += d.pool and d.took_range(jid)
                stub.Kill(pb.KillReq(jid=jid))
                daemons["pool"].warm()
                new = f"br{uuid.uuid4().hex[:6]}"
                t0 = time.monotonic()
                resp = stub.Restore(pb.RestoreReq(path=checkpoints[m], new_jid=new))
                times["restore"][m].append(time.monotonic() - t0)
                for ph in resp.phases:
                    phases[m].setdefault(ph.name, []).append(ph.seconds)
                took["restore"] += d.pool and d.took_range(new)
                stub.Kill(pb.KillReq(jid=new))
    result: dict[str, Any] = {
        "driver": driver, "rounds": rounds, "adopted": adopted, "took_range": took, "ops": {},
    }  # fmt: skip
    result["restore_phases"] = {
        m: {name: med(v) for name, v in by_name.items()} for m, by_name in phases.items()
    }
    for op, by_mode in times.items():
        row = {f"{m}_s": med(v) for m, v in by_mode.items()}
        row["ratio"] = row["pool_s"] / row["none_s"]
        result["ops"][op] = row
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['driver']} driver, {result['rounds']} rounds (medians); "
        "exec jobs on adopted controllers: "
        f"pool {result['adopted']['pool']}, none {result['adopted']['none']}; in the "
        f"standby's reserved range: exec {result['took_range']['exec']}, "
        f"restore {result['took_range']['restore']}",
        f"{'op':<14} {'pool':>9} {'none':>9} {'ratio':>6}",
    ]
    for op, r in result["ops"].items():
        lines.append(f"{op:<14} {r['pool_s']:8.3f}s {r['none_s']:8.3f}s {r['ratio']:5.2f}x")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--driver", choices=("fake", "system"), default="fake")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/pool.py needs root (CRIU)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="cedana-bench-pool."))
    try:
        result = run(args.rounds, base, args.driver)
    except (BenchError, grpc.RpcError) as e:
        print(f"bench/pool.py: {e} (daemon logs under {base})", file=sys.stderr)
        return 1
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
