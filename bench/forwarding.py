#!/usr/bin/env python3
"""Forwarding benchmarks (issue 3): the interposer against the driver it forwards to.

Runs the C benchmark (``forwarding_bench``, bench/forwarding_bench.c) directly
on the fake driver (``LD_LIBRARY_PATH=$(cedana gpu libdir --driver fake)``)
and through the interposer (``cedana exec --gpu --gpu-driver fake --attach --
forwarding_bench``), in alternating rounds, and times ``samples/train_mlp.py``
the same two ways. Prints a table: metric, direct, interposer, ratio
(interposer / direct), bar, met. The bars are DESIGN.md's ("Bars"); these
are benchmarks, not tests: a missed bar is reported, and the exit status is
0 all the same. It is 1 only when a run itself fails.

    .venv/bin/python bench/forwarding.py            # about 80 s
    .venv/bin/python bench/forwarding.py --json     # machine-readable
    .venv/bin/python bench/forwarding.py --quick    # smoke run: one small round
    .venv/bin/python bench/forwarding.py --save results.json   # table, and JSON to a file
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRAIN_MLP = REPO / "samples" / "train_mlp.py"
WALL_MARK = "forwarding-bench-wall-s:"
TIMED_CHILD = "--timed-child"

# Training loops of about 2.5-5 s each on the 2-core reference machine. On
# the fake driver the device is one CPU thread per stream that runs the
# kernels, and it is what bounds all three:
# - big layers: few, long kernels (13 launches a step, 1000 steps);
# - small layers: many short kernels (13 a step, 8000 steps), queued with no
#   wait until the end, as a loop that never reads its loss;
# - loss every step: small layers, and the loss read back after every step
#   (a synchronous copy and a stream synchronize), as many loops do: each
#   step waits for the device and then restarts it, so every wake-up on the
#   path between the job, the controller and the device is paid per step.
NO_PRINT = ["--print-every", "1000000000"]
TRAIN_CONFIGS: dict[str, list[str]] = {
    "big layers": ["--steps", "1000", "--hidden", "256", "--batch", "256", *NO_PRINT],
    "small layers": ["--steps", "8000", *NO_PRINT],
    "loss every step": ["--steps", "6000", "--print-every", "1"],
}
QUICK_TRAIN_CONFIGS: dict[str, list[str]] = {"quick": ["--steps", "50", "--print-every", "1"]}
BENCH_ARGS: list[str] = []
QUICK_BENCH_ARGS = ["--batches", "5", "--launches", "20000", "--queries", "2000", "--copy-mib", "8"]


class BenchError(RuntimeError):
    """A run failed: printed as one line, exit status 1."""


# ---- running things ------------------------------------------------------------------


def cedana(*args: str) -> list[str]:
    """The ``cedana`` command, from this interpreter's installation."""
    return [sys.executable, "-m", "cedana_gpu", *args]


def fake_libdir() -> str:
    out = subprocess.run(
        cedana("gpu", "libdir", "--driver", "fake"), capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise BenchError(f"cedana gpu libdir --driver fake failed: {out.stderr.strip()}")
    return out.stdout.strip()


def bench_binary() -> Path:
    """forwarding_bench from the checkout's build tree (the wheel does not
    carry benchmarks), or from a native directory that a full
    ``cmake --install`` staged. Its kernels sit in ../kernels next to it."""
    from cedana_gpu.paths import NativeNotBuilt, bin_dir, build_dir

    candidates = []
    build = build_dir()
    if build is not None:
        candidates.append(build / "bin" / "forwarding_bench")
    with contextlib.suppress(NativeNotBuilt):
        candidates.append(bin_dir() / "forwarding_bench")
    for path in candidates:
        if path.is_file():
            return path
    raise BenchError(
        "forwarding_bench is not built: run 'make setup' in the checkout "
        "(looked in: " + (", ".join(map(str, candidates)) or "no build tree") + ")"
    )


@dataclass
class Runner:
    """Runs a command directly on the fake driver or as a job through the interposer."""

    libdir: str
    state_dir: str

    def env(self, mode: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CEDANA_GPU_SHM", None)
        if mode == "direct":
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                filter(None, [self.libdir, env.get("LD_LIBRARY_PATH")])
            )
        else:
            env["CEDANA_STATE_DIR"] = self.state_dir
        return env

    def argv(self, mode: str, cmd: Sequence[str]) -> list[str]:
        if mode == "direct":
            return list(cmd)
        return cedana("exec", "--gpu", "--gpu-driver", "fake", "--attach", "--", *cmd)

    def run(self, mode: str, cmd: Sequence[str]) -> tuple[str, float]:
        """(output, wall seconds of the whole command)."""
        t0 = time.perf_counter()
        out = subprocess.run(
            self.argv(mode, cmd),
            env=self.env(mode),
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).strip().splitlines()[-5:]
            raise BenchError(
                f"{Path(cmd[0]).name} ({mode}) failed with status {out.returncode}: "
                + " | ".join(tail)
            )
        return out.stdout + out.stderr, wall


def last_json(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise BenchError(f"forwarding_bench printed no result: {output.strip()[-300:]}")


@dataclass
class TrainRun:
    job_s: float  # the training process's own wall time, timed around it
    total_s: float  # the whole command, controller start-up and teardown included
    checksum: str


def parse_train(output: str, total: float) -> TrainRun:
    job_s, checksum = None, ""
    for line in output.splitlines():
        if line.startswith(WALL_MARK):
            job_s = float(line.split(":", 1)[1])
        elif line.startswith("checksum: "):
            checksum = line.split(": ", 1)[1].strip()
    if job_s is None or not checksum:
        raise BenchError(f"train_mlp printed no checksum or time: {output.strip()[-300:]}")
    return TrainRun(job_s, total, checksum)


def timed_child(argv: list[str]) -> int:
    """Run argv, print its wall time (the job's own, without any controller)."""
    t0 = time.perf_counter()
    rc = subprocess.call(argv)
    print(f"{WALL_MARK} {time.perf_counter() - t0:.6f}", flush=True)
    return rc


# ---- results ---------------------------------------------------------------------------


@dataclass
class Metric:
    name: str
    unit: str
    direct: float
    interposer: float
    bar: str  # what is asked, in words
    met: bool | None  # None: reported, no bar
    note: str = ""
    paired_ratio: float | None = None  # median of per-round ratios, where rounds pair up

    @property
    def ratio(self) -> float:
        if self.paired_ratio is not None:
            return self.paired_ratio
        return self.interposer / self.direct if self.direct else float("nan")


# Through the interposer, a graph launch of 8 kernels against the same 8
# launches one by one (the row below it), in the same runs.
GRAPH_BAR = 1.25
GRAPH_BAR_TEXT = "≤ 1.25× sequence"


def median_of(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for r in runs:
        v: Any = r
        for k in keys:
            v = v[k]
        values.append(float(v))
    return statistics.median(values)


def c_metrics(direct: list[dict[str, Any]], inter: list[dict[str, Any]]) -> list[Metric]:
    def both(*keys: str) -> tuple[float, float]:
        return median_of(direct, *keys), median_of(inter, *keys)

    out = []
    d, i = both("launch_us", "median")
    out.append(Metric("async launch, empty kernel", "µs", d, i, "≤ 1.5 µs", i <= 1.5))
    d, i = both("launch_args_us", "median")
    out.append(Metric("async launch, 3 parameters", "µs", d, i, "", None))
    d, i = both("launch_rate", "per_s")
    out.append(Metric("forwarded launches per second", "1/s", d, i, "≥ 300,000", i >= 300_000))
    # A graph through the interposer is the forwarded launches of its nodes
    # (gpu/api/graph_impl.h): no cheaper than the plain sequence there, but a
    # graph must not cost the job more than launching its nodes itself. The
    # bar compares the two through the interposer, measured in the same runs.
    dg, ig = both("graph_us", "graph")
    ds, is_ = both("graph_us", "sequence")
    out.append(
        Metric(
            "graph launch, 8 kernels",
            "µs",
            dg,
            ig,
            GRAPH_BAR_TEXT,
            ig <= GRAPH_BAR * is_,
        )
    )
    out.append(Metric("plain launch sequence, 8 kernels", "µs", ds, is_, "", None))
    d, i = both("query_us", "p50")
    out.append(Metric("round trip cuStreamQuery p50", "µs", d, i, "≤ 15 µs", i <= 15.0))
    d, i = both("query_us", "p99")
    out.append(Metric("round trip cuStreamQuery p99", "µs", d, i, "reported", None))
    for key, label in (
        ("htod_pageable", "memcpy HtoD pageable"),
        ("dtoh_pageable", "memcpy DtoH pageable"),
        ("htod_pinned", "memcpy HtoD pinned"),
        ("dtoh_pinned", "memcpy DtoH pinned"),
    ):
        d, i = both("memcpy_gbps", key)
        out.append(Metric(label, "GB/s", d, i, "ratio", None))
    return out


def train_metrics(name: str, direct: list[TrainRun], inter: list[TrainRun]) -> list[Metric]:
    d = statistics.median(r.job_s for r in direct)
    i = statistics.median(r.job_s for r in inter)
    same = {r.checksum for r in direct} == {r.checksum for r in inter} and len(
        {r.checksum for r in direct + inter}
    ) == 1
    note = "" if same else "CHECKSUMS DIFFER between direct and interposer runs"
    # The machine's speed drifts (shared cores): each round's interposer run
    # is compared with the direct run next to it, and the bar applies to the
    # median of those ratios.
    ratio = statistics.median(b.job_s / a.job_s for a, b in zip(direct, inter, strict=True))
    out = [
        Metric(
            f"train_mlp {name}, job wall",
            "s",
            d,
            i,
            "≤ 1.05× direct",
            ratio <= 1.05,
            note,
            paired_ratio=ratio,
        )
    ]
    d = statistics.median(r.total_s for r in direct)
    i = statistics.median(r.total_s for r in inter)
    ratio = statistics.median(b.total_s / a.total_s for a, b in zip(direct, inter, strict=True))
    out.append(Metric(f"train_mlp {name}, whole command", "s", d, i, "", None, paired_ratio=ratio))
    return out


def fmt(v: float, unit: str) -> str:
    if unit == "1/s":
        return f"{v:,.0f}"
    if unit == "GB/s":
        return f"{v:.2f}"
    if unit == "s":
        return f"{v:.3f}"
    return f"{v:.3f}"


def table(metrics: list[Metric]) -> str:
    head = ["metric", "unit", "direct", "interposer", "ratio", "bar", "met?"]
    rows = [head]
    for m in metrics:
        met = "—" if m.met is None else ("yes" if m.met else "MISSED")
        rows.append(
            [
                m.name,
                m.unit,
                fmt(m.direct, m.unit),
                fmt(m.interposer, m.unit),
                f"{m.ratio:.2f}",
                m.bar or "—",
                met,
            ]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in pairs]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*"))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nvidia_devices": gpus,
        "driver": "fake (CPU)",
        "loadavg_start": loadavg(),
    }


def loadavg() -> float:
    """The 1-minute load average: other work on the machine skews every number here."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


# ---- the whole run -----------------------------------------------------------------------


@dataclass
class Results:
    rounds: int
    bench_args: list[str]
    train_configs: dict[str, list[str]]
    started: str = ""
    seconds: float = 0.0
    machine: dict[str, Any] = field(default_factory=dict)
    bench_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    train_runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)


def run_all(
    rounds: int,
    bench_args: list[str],
    train_configs: dict[str, list[str]],
    progress: Callable[[str], None],
) -> Results:
    res = Results(rounds, bench_args, train_configs)
    res.started = datetime.now(UTC).isoformat(timespec="seconds")
    res.machine = machine()
    t_start = time.perf_counter()
    binary = str(bench_binary())
    with tempfile.TemporaryDirectory(prefix="cedana-bench-") as state:
        runner = Runner(fake_libdir(), state)
        bench: dict[str, list[dict[str, Any]]] = {"direct": [], "interposer": []}
        for k in range(rounds):
            # Alternate which goes first, so a drift in the machine's speed
            # does not favour one side.
            order = ("direct", "interposer") if k % 2 == 0 else ("interposer", "direct")
            for mode in order:
                progress(f"forwarding_bench round {k + 1}/{rounds}: {mode}")
                out, _ = runner.run(mode, [binary, *bench_args])
                bench[mode].append(last_json(out))
        res.bench_runs = bench
        res.metrics = c_metrics(bench["direct"], bench["interposer"])

        timed = [sys.executable, str(Path(__file__).resolve()), TIMED_CHILD, "--"]
        for name, args in train_configs.items():
            runs: dict[str, list[TrainRun]] = {"direct": [], "interposer": []}
            cmd = [*timed, sys.executable, str(TRAIN_MLP), *args]
            for k in range(rounds):
                order = ("direct", "interposer") if k % 2 == 0 else ("interposer", "direct")
                for mode in order:
                    progress(f"train_mlp {name} round {k + 1}/{rounds}: {mode}")
                    out, total = runner.run(mode, cmd)
                    runs[mode].append(parse_train(out, total))
            res.train_runs[name] = {m: [asdict(r) for r in v] for m, v in runs.items()}
            res.metrics += train_metrics(name, runs["direct"], runs["interposer"])
    res.seconds = time.perf_counter() - t_start
    res.machine["loadavg_end"] = loadavg()
    return res


def to_json(res: Results) -> dict[str, Any]:
    out = asdict(res)
    out["metrics"] = [{**asdict(m), "ratio": m.ratio} for m in res.metrics]
    return out


def report(res: Results) -> str:
    m = res.machine
    lines = [
        f"forwarding benchmarks, {res.started}, {res.rounds} alternating rounds, "
        f"{res.seconds:.0f} s",
        f"machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), kernel {m['kernel']}, "
        f"driver: {m['driver']}; NVIDIA devices: {', '.join(m['nvidia_devices']) or 'none'}",
        f"load average (1 min) {m['loadavg_start']:.2f} at the start, "
        f"{m['loadavg_end']:.2f} at the end",
        "values: medians over rounds; ratio = interposer / direct "
        "(train_mlp: median of the per-round ratios)",
        "",
        table(res.metrics),
        "",
    ]
    missed = [x for x in res.metrics if x.met is False]
    notes = [x for x in res.metrics if x.note]
    if missed:
        lines.append(f"MISSED {len(missed)} bar(s):")
        for x in missed:
            lines.append(
                f"  {x.name}: {fmt(x.interposer, x.unit)} {x.unit} through the interposer, "
                f"bar {x.bar} (direct {fmt(x.direct, x.unit)} {x.unit})"
            )
    else:
        lines.append("all bars met")
    for x in notes:
        lines.append(f"NOTE {x.name}: {x.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [TIMED_CHILD]:
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return timed_child(rest)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--quick", action="store_true", help="one small round: checks it all runs")
    ap.add_argument("--no-train", action="store_true", help="skip the train_mlp timings")
    ap.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON results here")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    rounds = 1 if args.quick else args.rounds
    bench_args = QUICK_BENCH_ARGS if args.quick else BENCH_ARGS
    configs = {} if args.no_train else (QUICK_TRAIN_CONFIGS if args.quick else TRAIN_CONFIGS)

    def progress(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    try:
        res = run_all(rounds, list(bench_args), configs, progress)
    except BenchError as e:
        print(f"forwarding: {e}", file=sys.stderr)
        return 1
    doc = json.dumps(to_json(res), indent=2, ensure_ascii=False)
    if args.save:
        try:
            args.save.write_text(doc + "\n")
        except OSError as e:
            print(f"forwarding: cannot write {args.save}: {e.strerror}", file=sys.stderr)
            return 1
    if args.json:
        print(doc)
    else:
        print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
