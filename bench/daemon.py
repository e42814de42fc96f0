#!/usr/bin/env python3
"""What the daemon adds to a dump and a restore (issue 10), against ``--no-server``.

One ``train_mlp`` job on the fake driver holding ``--device-mib`` of device
memory runs while it is dumped with ``--leave-running`` again and again,
alternating ``cedana dump job`` through the daemon and ``cedana --no-server
dump job`` (in-process), in rounds whose order rotates; each checkpoint is
removed after its round. Then the last checkpoint is restored the same way,
each restored job killed after its round. Timed: the whole CLI command, as
a user waits for it (process start, the daemon's probe and RPC for the
routed one), and the pipeline's own ``total`` from the result (the work
itself, in the daemon's thread or in the CLI's process). A trivial verb
(``ps``) measures the fixed cost of each route. Values are medians; ratios
are daemon / in-process.

    .venv/bin/python bench/daemon.py                       # about a minute on 2 cores
    .venv/bin/python bench/daemon.py --rounds 3 --device-mib 16
    .venv/bin/python bench/daemon.py --json

Needs root (CRIU). No bar is set for the daemon; the numbers are reported
with the command that produced them (docs/benchmarks.md).
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
TRAIN = REPO / "samples" / "train_mlp.py"
MODES = ("daemon", "in-process")


class BenchError(RuntimeError):
    pass


def env_for(state: Path, socket: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FAKE_CUDA_", "CEDANA_")) and k not in ("LD_PRELOAD",)
    }
    env.update(
        CEDANA_STATE_DIR=str(state),
        CEDANA_ADDRESS=str(socket),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return env


def cli(env: dict[str, str], mode: str, *args: str) -> tuple[float, str]:
    """Run ``cedana`` by ``mode``; (wall seconds, stdout)."""
    flags = ["--no-server"] if mode == "in-process" else []
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *flags, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise BenchError(f"cedana {' '.join(args)} ({mode}): {out.stderr.strip()}")
    return wall, out.stdout


def wait(pred: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def daemon(env: dict[str, str], socket: Path, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cedana_gpu", "daemon", "start"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait(socket.exists, "the daemon's socket")
        wait(lambda: cli(env, "daemon", "daemon", "check")[0] > 0, "the daemon")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def rotate(k: int) -> list[str]:
    return list(MODES[k % 2 :] + MODES[: k % 2])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(rounds: int, device_mib: int, base: Path) -> dict[str, Any]:
    state, socket = base / "state", base / "d.sock"
    env = env_for(state, socket)
    ckdir = base / "ckpts"
    walls: dict[str, dict[str, list[float]]] = {
        op: {m: [] for m in MODES} for op in ("ps", "dump", "restore")
    }
    work: dict[str, dict[str, list[float]]] = {
        op: {m: [] for m in MODES} for op in ("dump", "restore")
    }
    with daemon(env, socket, base / "daemon.out"):
        jid = f"bd{uuid.uuid4().hex[:8]}"
        cli(env, "daemon", "exec", "--gpu", "--gpu-driver", "fake", "--jid", jid, "--",
            sys.executable, str(TRAIN), "--steps", "1000000", "--print-every", "50",
            "--sleep-per-step", "0.01", "--device-mib", str(device_mib))  # fmt: skip
        log = state / "jobs" / jid / "job.log"
        wait(lambda: log.exists() and "step" in log.read_text(errors="replace"), "the job's steps")
        last = ""
        for k in range(rounds):
            for mode in rotate(k):
                walls["ps"][mode].append(cli(env, mode, "ps")[0])
                wall, out = cli(env, mode, "dump", "job", jid, "--leave-running",
                                "--dir", str(ckdir), "-o", "json")  # fmt: skip
                doc = json.loads(out)
                walls["dump"][mode].append(wall)
                work["dump"][mode].append(doc["phases"]["total"])
                if last:
                    cli(env, "in-process", "checkpoint", "delete", last)
                last = doc["checkpoint"]
        path = json.loads(cli(env, "in-process", "checkpoint", "inspect", last)[1])["checkpoint"][
            "path"
        ]
        for k in range(rounds):
            for mode in rotate(k):
                new = f"br{uuid.uuid4().hex[:8]}"
                wall, out = cli(
                    env, mode, "restore", "job", "--path", path, "--jid", new, "-o", "json"
                )
                walls["restore"][mode].append(wall)
                work["restore"][mode].append(json.loads(out)["phases"]["total"])
                cli(env, "in-process", "job", "kill", new)
        cli(env, "in-process", "job", "kill", jid)
    result: dict[str, Any] = {"rounds": rounds, "device_mib": device_mib, "ops": {}}
    for op, by_mode in walls.items():
        row: dict[str, Any] = {f"{m}_wall_s": med(v) for m, v in by_mode.items()}
        row["wall_ratio"] = row["daemon_wall_s"] / row["in-process_wall_s"]
        row["added_ms"] = (row["daemon_wall_s"] - row["in-process_wall_s"]) * 1000
        if op in work:
            row.update({f"{m}_work_s": med(v) for m, v in work[op].items()})
            row["work_ratio"] = row["daemon_work_s"] / row["in-process_work_s"]
        result["ops"][op] = row
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"device memory {result['device_mib']} MiB, {result['rounds']} rounds (medians)",
        f"{'op':<8} {'daemon':>9} {'in-proc':>9} {'ratio':>6} {'added':>9}   "
        f"{'work d':>8} {'work ip':>8} {'ratio':>6}",
    ]
    for op, r in result["ops"].items():
        line = (
            f"{op:<8} {r['daemon_wall_s']:8.3f}s {r['in-process_wall_s']:8.3f}s "
            f"{r['wall_ratio']:5.2f}x {r['added_ms']:7.0f}ms"
        )
        if "work_ratio" in r:
            line += (
                f"   {r['daemon_work_s']:7.3f}s {r['in-process_work_s']:7.3f}s "
                f"{r['work_ratio']:5.2f}x"
            )
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device-mib", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/daemon.py needs root (CRIU)", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="cedana-bench-daemon."))
    try:
        result = run(args.rounds, args.device_mib, base)
    except BenchError as e:
        print(f"bench/daemon.py: {e} (daemon log: {base / 'daemon.out'})", file=sys.stderr)
        return 1
    shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
