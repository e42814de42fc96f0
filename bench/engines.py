#!/usr/bin/env python3
"""GPU engines side by side (issue 9): the driver engine against the intercept engine.

The same job (``samples/gpu_loop.py`` with ``--device-mib`` of device state,
on the fake driver) is started under each engine, dumped mid-run (killed),
restored and run to its end, which must print the uninterrupted run's
checksum. Measured in the same run, in rounds whose engine order alternates:
the dump's and the restore's own totals (``cedana dump|restore --output
json``: ``phases.total``) and the checkpoint's size, for each variant of
options (none ``--stream 1``; lz4 ``--stream 2``). Reported as medians and as
the median of the per-round ratios driver / intercept, against the bar
(DESIGN.md): "a dump/restore of the same job within 1.5x of the intercept
engine's time on the fake driver".

Under the intercept engine the device memory is written by the controller
into the shards and CRIU saves the job's host memory. The driver engine runs
twice: ``driver-host`` (``--gpu-storage host``): the driver's checkpoint
stages the device memory in the job's host memory, CRIU saves it all, and the
page images go through the same shard writer; ``driver-custom``
(``--gpu-storage custom``, the driver's custom storage): the controller copies
the device memory straight into the shards. Both are reported against the
intercept engine, and custom against host (bar: custom storage no slower than
host staging, 1.0x, within 10%).

Needs root (CRIU). A benchmark, not a test: a missed bar is reported and the
exit status is 0; it is 1 only when a run fails.

    sudo .venv/bin/python bench/engines.py             # 256 MiB, 3 rounds
    sudo .venv/bin/python bench/engines.py --quick     # 32 MiB, 1 round: that it all runs
    sudo .venv/bin/python bench/engines.py --mib 1024 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from checkpoint import (  # bench/checkpoint.py: the CLI helpers
    REPO,
    BenchError,
    _checksum,
    _job,
    _log,
    _wait,
    cli_env,
    loadavg,
    run_cli,
)

LOOP = REPO / "samples" / "gpu_loop.py"
ENGINES = ("intercept", "driver-host", "driver-custom")
"""Engine, and the driver engine's ``--gpu-storage``."""
VARIANTS = (("none", 1), ("lz4", 2))
BAR = 1.5
CUSTOM_BAR = 1.1
"""driver-custom / driver-host: no slower (10% for noise)."""
DUMP_AT = 1
"""The step after which the job is dumped (its state is all filled by then)."""


@dataclass
class Run:
    engine: str
    compression: str
    streams: int
    dump_s: float
    restore_s: float
    size: int
    checksum_ok: bool


@dataclass
class Results:
    mib: int
    rounds: int
    runs: list[Run] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)


def loop_args(mib: int) -> list[str]:
    return [sys.executable, str(LOOP), "--steps", "4", "--device-mib", str(mib)]


def reference_checksum(mib: int) -> str:
    import subprocess

    from cedana_gpu import paths

    env = cli_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(paths.fake_libdir()))
    out = subprocess.run(loop_args(mib), env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise BenchError(f"gpu_loop failed: {out.stderr.strip()[-300:]}")
    return _checksum(out.stdout)


def one_run(
    state: Path, ckdir: Path, engine: str, compression: str, streams: int, mib: int, ref: str
) -> Run:
    jid = f"eng{uuid.uuid4().hex[:10]}"
    args = [*loop_args(mib), "--sleep-per-step", "0.5"]
    gpu_engine, _, storage = engine.partition("-")
    run_cli(state, "exec", "--gpu", "--gpu-driver", "fake", "--gpu-engine", gpu_engine,
            "--jid", jid, "--", *args)  # fmt: skip
    rx = re.compile(rf"^step {DUMP_AT} ", re.M)
    try:
        _wait(lambda: rx.search(_log(state, jid)), f"job {jid} to reach step {DUMP_AT}")
        d = json.loads(
            run_cli(
                state,
                "dump",
                "job",
                jid,
                "--dir",
                str(ckdir),
                "--compression",
                compression,
                "--stream",
                str(streams),
                *(["--gpu-storage", storage] if storage else []),
                "--output",
                "json",
            )
        )
    except BaseException:
        run_cli(state, "job", "kill", jid, timeout=60)
        raise
    r = json.loads(run_cli(state, "restore", "job", jid, "--output", "json"))
    new = r["job"]
    _wait(lambda: _job(state, new)["state"] not in ("starting", "running"), f"job {new} to end")
    combined = _log(state, jid) + _log(state, new)
    path = Path(d["path"])
    shutil.rmtree(path, ignore_errors=True)
    path.unlink(missing_ok=True)
    return Run(
        engine,
        compression,
        streams,
        float(d["phases"]["total"]),
        float(r["phases"]["total"]),
        int(d["size"]),
        _checksum(combined) == ref,
    )


def run_all(mib: int, rounds: int, work: Path, say: Any) -> Results:
    res = Results(mib, rounds)
    ref = reference_checksum(mib)
    l0 = loadavg()
    state = work / "state"
    for compression, streams in VARIANTS:
        # One untimed run per engine first: the page cache and the allocator warm.
        for engine in ENGINES:
            one_run(state, work / "ck", engine, compression, streams, mib, ref)
        for i in range(rounds):
            order = ENGINES[i % len(ENGINES) :] + ENGINES[: i % len(ENGINES)]
            for engine in order:
                run = one_run(state, work / "ck", engine, compression, streams, mib, ref)
                say(f"{engine} {compression}/{streams}: dump {run.dump_s:.2f} s, "
                    f"restore {run.restore_s:.2f} s, {run.size >> 20} MiB")  # fmt: skip
                if not run.checksum_ok:
                    raise BenchError(f"{engine} {compression}: the restored job's checksum differs")
                res.runs.append(run)
    res.load = (l0, loadavg())
    return res


RATIOS = (
    ("driver-host", "intercept"),
    ("driver-custom", "intercept"),
    ("driver-custom", "driver-host"),
)
"""Per-round ratios reported (numerator, denominator)."""


def summary(res: Results) -> list[dict[str, Any]]:
    rows = []
    for compression, streams in VARIANTS:
        by = {
            e: [
                r
                for r in res.runs
                if (r.engine, r.compression, r.streams) == (e, compression, streams)
            ]
            for e in ENGINES
        }
        row: dict[str, Any] = {"compression": compression, "streams": streams}
        for what in ("dump_s", "restore_s", "size"):
            for e in ENGINES:
                row[f"{e}_{what}"] = statistics.median(getattr(r, what) for r in by[e])
            for num, den in RATIOS:
                row[f"{num}/{den}_{what}"] = statistics.median(
                    getattr(n, what) / getattr(d, what)
                    for n, d in zip(by[num], by[den], strict=True)
                )
        rows.append(row)
    return rows


def report(res: Results) -> str:
    out = [
        f"engines: gpu_loop --device-mib {res.mib} on the fake driver, {res.rounds} rounds, "
        f"load {res.load[0]:.2f} -> {res.load[1]:.2f}",
        "",
        "| options | what | intercept | driver host | driver custom "
        "| host / intercept | custom / intercept | custom / host | bars |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def met(ratio: float, bar: float) -> str:
        return f"<= {bar}x " + ("met" if ratio <= bar else "MISSED")

    for row in summary(res):
        opts = f"{row['compression']} --stream {row['streams']}"
        for what, label, unit in (("dump_s", "dump", "s"), ("restore_s", "restore", "s"),
                                  ("size", "checkpoint size", "MiB")):  # fmt: skip
            scale = 1 / (1 << 20) if unit == "MiB" else 1.0
            values = " | ".join(f"{row[f'{e}_{what}'] * scale:.2f} {unit}" for e in ENGINES)
            ratios = [row[f"{n}/{d}_{what}"] for n, d in RATIOS]
            bars = ""
            if what != "size":
                bars = (
                    f"host {met(ratios[0], BAR)}, custom {met(ratios[1], BAR)}, "
                    f"custom/host {met(ratios[2], CUSTOM_BAR)}"
                )
            shown = " | ".join(f"{r:.2f}x" for r in ratios)
            out.append(f"| {opts} | {label} | {values} | {shown} | {bars} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="device state of the job")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="32 MiB, one round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("engines: needs root (CRIU)", file=sys.stderr)
        return 1
    mib, rounds = (32, 1) if args.quick else (args.mib, args.rounds)
    with tempfile.TemporaryDirectory(prefix="cedana-bench-engines-") as tmp:
        t0 = time.monotonic()
        try:
            res = run_all(mib, rounds, Path(tmp), lambda s: print(f"  {s}", file=sys.stderr))
        except BenchError as e:
            print(f"engines: {e}", file=sys.stderr)
            return 1
        took = time.monotonic() - t0
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in res.runs], "summary": summary(res),
                          "seconds": took}, indent=2))  # fmt: skip
    else:
        print(report(res))
        print(f"\n({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
