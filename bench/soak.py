#!/usr/bin/env python3
"""Soak: one job lineage dumped and restored N consecutive times (issue 8).

A ``samples/train_mlp.py`` job (device ballast touched every step and folded
into its checksum, a sleep per step so that it is mid-run at every dump) is
started with ``cedana exec --gpu``; then, N times: wait until the current
generation has printed a few steps of its own, ``cedana dump job`` it (the
dump kills it), ``cedana restore job`` the checkpoint as the next generation.
After the last cycle the job runs to its end, and the lines every generation
printed, put end to end, must be exactly those of an uninterrupted run of the
same job on the fake driver (every step once, in order, the same checksum);
the store must list one checkpoint per dumped generation, each of those
generations ``checkpointed`` and the last ``exited (0)``, and no segment may
be left.

Reported: cycles run, failures (a dump or restore that failed, a final
mismatch, a store or leftover that is wrong; goal zero, each with what it
was) and the distribution of dump and restore times per cycle (median, p95,
max: the CLI's whole run as the caller waits for it, and the ``total`` the
command reports for its own phases). A soak has no baseline and no bar: the
times are plain numbers. Results: docs/benchmarks.md.

A failed dump leaves the job running: the next cycle dumps it again. A failed
restore is retried once from the same checkpoint under another id; when the
retry fails too the lineage is lost and the soak stops there.

Needs root (CRIU). Only the newest two checkpoints are kept on disk (each is
tens of MB; ``--keep-checkpoints`` keeps all); the store still lists every one.

    .venv/bin/python bench/soak.py                  # 100 cycles, about 4 min on 2 cores
    .venv/bin/python bench/soak.py --cycles 1000     # on a quiet machine
    .venv/bin/python bench/soak.py --cycles 3        # smoke run
    .venv/bin/python bench/soak.py --json            # machine-readable
    .venv/bin/python bench/soak.py --save soak.json  # summary, and JSON to a file
    .venv/bin/python bench/soak.py --compression none,lz4,tar --stream 2   # rotate per cycle
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from checkpoint import cli_env, loadavg, machine  # bench/checkpoint.py: the same CLI and machine

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
TRAIN_MLP = REPO / "samples" / "train_mlp.py"

STEP_LINE = re.compile(r"^step \d+ loss")
SLEEP_PER_STEP = 0.05
STEPS_PER_CYCLE = 15
"""Steps the job is given per cycle (``--steps-per-cycle``): the steps each
generation is made to print (``--steps-between``) plus those it runs while the
dump's CLI starts up (a few hundred ms: several steps), with a margin. The
margin adds up over the cycles, so a few slow ones are absorbed; the last
generation runs what is left."""
TAIL_STEPS = 40
"""Steps left for the last generation to run after the last cycle."""
CLI_TIMEOUT = 600.0  # a hung command fails its cycle instead of blocking the soak
WAIT = 120.0  # bound on a generation printing its steps


class SoakError(RuntimeError):
    """The soak cannot go on (printed as one line, exit status 1)."""


# ---- the CLI ----------------------------------------------------------------------------


@dataclass
class Ran:
    ok: bool
    wall: float
    out: Any
    """The command's JSON answer (None when it failed)."""
    error: str


def cedana(state: Path, *args: str, timeout: float = CLI_TIMEOUT, answers: bool = True) -> Ran:
    """``cedana ARGS --output json``: whether it succeeded, its wall time, its answer.

    ``answers=False``: a command without JSON output (``exec``, whose options
    end at the job's command line); its answer is then its plain output."""
    t0 = time.perf_counter()
    argv = [*args, "--output", "json"] if answers else list(args)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cedana_gpu", *argv],
            env=cli_env(state),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Ran(False, time.perf_counter() - t0, None, f"no answer within {timeout:g} s")
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return Ran(False, wall, None, lines[-1])
    if not answers:
        return Ran(True, wall, proc.stdout, "")
    try:
        return Ran(True, wall, json.loads(proc.stdout), "")
    except ValueError:
        return Ran(False, wall, None, f"not JSON: {proc.stdout[:200]!r}")


def ps(state: Path) -> dict[str, dict[str, Any]]:
    ran = cedana(state, "ps", timeout=60)
    if not ran.ok:
        raise SoakError(f"cedana ps failed: {ran.error}")
    return {j["jid"]: j for j in ran.out}


def log_lines(state: Path, jid: str) -> list[str]:
    """The job's log, minus cedana's own notes."""
    path = state / "jobs" / jid / "job.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [ln for ln in text.splitlines() if not ln.startswith(("cedana:", "cedana-gpu:"))]


def steps_in(lines: Sequence[str]) -> int:
    return sum(1 for ln in lines if STEP_LINE.search(ln))


def wait_steps(state: Path, jid: str, count: int) -> str:
    """Wait until ``jid`` has printed ``count`` steps; '' or why it did not."""
    deadline = time.monotonic() + WAIT
    polls = 0
    while steps_in(log_lines(state, jid)) < count:
        polls += 1
        if polls % 25 == 0:  # about every 0.5 s: is it still running?
            job = ps(state).get(jid, {})
            if job.get("state") not in ("starting", "running"):
                return f"job {jid} ended ({job.get('status')}) before printing {count} steps"
        if time.monotonic() > deadline:
            return f"job {jid} printed fewer than {count} steps in {WAIT:g} s"
        time.sleep(0.02)
    return ""


def wait_end(state: Path, jid: str, timeout: float) -> dict[str, Any]:
    from cedana_gpu.jobs.processes import process_alive

    deadline = time.monotonic() + timeout
    while True:
        job = ps(state)[jid]
        if job["state"] not in ("starting", "running") and not process_alive(job["controller_pid"]):
            return job
        if time.monotonic() > deadline:
            raise SoakError(f"job {jid} did not end within {timeout:g} s")
        time.sleep(0.2)


def leftovers(jids: Sequence[str]) -> list[Path]:
    sys.path.insert(0, str(TESTS))
    try:
        from cr_helpers import segment_leftovers
    finally:
        sys.path.remove(str(TESTS))
    return list(segment_leftovers(*jids))


def reference(args: Sequence[str]) -> list[str]:
    """The uninterrupted run's lines, directly on the fake driver (the sleep changes no line)."""
    from cedana_gpu.paths import fake_libdir

    out = subprocess.run(
        [sys.executable, *args],
        env=cli_env(Path("/nonexistent"), LD_LIBRARY_PATH=str(fake_libdir())),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    if out.returncode != 0:
        raise SoakError(f"the uninterrupted run failed: {out.stderr.strip()[-300:]}")
    return out.stdout.splitlines()


# ---- the soak ---------------------------------------------------------------------------


@dataclass
class Cycle:
    cycle: int
    jid: str
    """The generation that was dumped."""
    compression: str
    dump_wall: float = math.nan
    dump_total: float = math.nan
    restore_wall: float = math.nan
    restore_total: float = math.nan
    size: int = 0
    checkpoint: str = ""
    restored_as: str = ""


@dataclass
class Failure:
    cycle: int | None
    what: str
    """``dump``, ``restore``, ``final``, ``store`` or ``leftovers``."""
    error: str


@dataclass
class Plan:
    cycles: int
    steps_between: int
    steps_per_cycle: int
    compressions: list[str]
    streams: int
    device_mib: int
    keep_checkpoints: bool

    @property
    def steps(self) -> int:
        return self.cycles * self.steps_per_cycle + TAIL_STEPS


@dataclass
class Results:
    started: str = ""
    commit: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    cycles_run: int = 0
    cycles_ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    final_match: bool = False
    checksum: str = ""
    expected_checksum: str = ""
    generations: int = 0
    steps_per_generation: dict[str, float] = field(default_factory=dict)
    """Steps printed by each generation that was dumped."""
    last_generation_steps: int = 0
    times: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0
    per_cycle: list[Cycle] = field(default_factory=list)


def soak(plan: Plan, workdir: Path, res: Results, progress: Callable[[str], None]) -> None:
    state = workdir / "state"
    args = [
        str(TRAIN_MLP),
        "--steps",
        str(plan.steps),
        "--print-every",
        "1",
        "--device-mib",
        str(plan.device_mib),
    ]
    job_cmd = [sys.executable, *args, "--sleep-per-step", str(SLEEP_PER_STEP)]
    res.command = job_cmd
    progress(f"uninterrupted reference run of train_mlp, {plan.steps} steps, no sleep")
    expected = reference(args)
    base = f"soak{uuid.uuid4().hex[:8]}"
    lineage = [f"{base}-g1"]
    ran = cedana(
        state, "exec", "--gpu", "--gpu-driver", "fake", "--jid", lineage[0], "--", *job_cmd,
        answers=False,
    )  # fmt: skip
    if not ran.ok:
        raise SoakError(f"cedana exec failed: {ran.error}")
    kept: list[str] = []
    tried: list[str] = list(lineage)
    try:
        for i in range(1, plan.cycles + 1):
            jid = lineage[-1]
            compression = plan.compressions[(i - 1) % len(plan.compressions)]
            res.cycles_run = i
            seen = steps_in(log_lines(state, jid))
            why = wait_steps(state, jid, seen + plan.steps_between)
            if why:
                res.failures.append(Failure(i, "dump", why))
                progress(f"cycle {i}: {why}; the soak stops")
                break
            cyc = Cycle(i, jid, compression)
            res.per_cycle.append(cyc)
            dumped = cedana(
                state, "dump", "job", jid, "--compression", compression,
                "--stream", str(plan.streams),
            )  # fmt: skip
            cyc.dump_wall = dumped.wall
            if not dumped.ok:
                res.failures.append(Failure(i, "dump", dumped.error))
                progress(f"cycle {i}: dump failed: {dumped.error}")
                continue  # a failed dump leaves the job running: dump it again
            cyc.dump_total = float(dumped.out["phases"]["total"])
            cyc.size, cyc.checkpoint = int(dumped.out["size"]), str(dumped.out["checkpoint"])
            new = ""
            for attempt in ("", "-retry"):
                candidate = f"{base}-g{len(lineage) + 1}{attempt}"
                tried.append(candidate)
                restored = cedana(state, "restore", "job", jid, "--jid", candidate)
                cyc.restore_wall = restored.wall
                if restored.ok:
                    cyc.restore_total = float(restored.out["phases"]["total"])
                    new = candidate
                    break
                res.failures.append(Failure(i, "restore", restored.error))
                progress(f"cycle {i}: restore{attempt or ''} failed: {restored.error}")
            if not new:
                progress(f"cycle {i}: the lineage is lost; the soak stops")
                break
            cyc.restored_as = new
            lineage.append(new)
            res.cycles_ok += 1
            kept.append(str(dumped.out["path"]))
            if not plan.keep_checkpoints and len(kept) > 2:
                # Restored and dumped again since: only disk space, the store still lists it.
                old = Path(kept.pop(0))
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
            progress(
                f"cycle {i}/{plan.cycles} {compression}: dump {cyc.dump_wall:.2f} s "
                f"(own {cyc.dump_total:.2f}), restore {cyc.restore_wall:.2f} s "
                f"(own {cyc.restore_total:.2f}), {cyc.size / 2**20:.0f} MiB"
            )
        last = lineage[-1]
        left = max(plan.steps - sum(steps_in(log_lines(state, j)) for j in lineage), 0)
        progress(f"letting {last} run its last {left} steps")
        final = wait_end(state, last, left * SLEEP_PER_STEP * 4 + WAIT)
        check_final(state, lineage, final, expected, res)
        check_store(state, lineage, res)
        found = leftovers(tried)
        if found:
            res.failures.append(Failure(None, "leftovers", ", ".join(map(str, found))))
    finally:
        with contextlib.suppress(Exception):
            for j, job in ps(state).items():
                if job["state"] in ("starting", "running"):
                    cedana(state, "job", "kill", j, timeout=60, answers=False)
    res.generations = len(lineage)
    steps = [steps_in(log_lines(state, j)) for j in lineage]
    res.steps_per_generation = distribution([float(s) for s in steps[:-1]])
    res.last_generation_steps = steps[-1]


def check_final(
    state: Path, lineage: list[str], final: dict[str, Any], expected: list[str], res: Results
) -> None:
    combined = [ln for j in lineage for ln in log_lines(state, j)]
    res.expected_checksum = last_checksum(expected)
    res.checksum = last_checksum(combined)
    res.final_match = final["status"] == "exited (0)" and combined == expected
    if res.final_match:
        return
    if final["status"] != "exited (0)":
        why = f"the last generation {final['jid']} ended {final['status']}: {final.get('error')}"
    elif res.checksum != res.expected_checksum:
        why = f"checksum {res.checksum or '(none)'}, uninterrupted {res.expected_checksum}"
    else:
        first = next(
            (k for k, (a, b) in enumerate(zip(combined, expected, strict=False)) if a != b),
            min(len(combined), len(expected)),
        )
        why = (
            f"same checksum, but the lines differ from line {first} "
            f"({len(combined)} lines, uninterrupted {len(expected)})"
        )
    res.failures.append(Failure(None, "final", why))


def check_store(state: Path, lineage: list[str], res: Results) -> None:
    """One checkpoint listed per dumped generation; every state right."""
    from cedana_gpu.jobs.store import JobStore

    jobs = ps(state)
    with JobStore(state / "jobs.db") as store:
        listed = store.checkpoints()
    per_job: dict[str, int] = {}
    for c in listed:
        per_job[c.jid] = per_job.get(c.jid, 0) + 1
    dumped = {c.jid for c in res.per_cycle if c.checkpoint}
    wrong: list[str] = []
    for j in lineage[:-1]:
        if jobs[j]["status"] != "checkpointed":
            wrong.append(f"{j} is {jobs[j]['status']}, not checkpointed")
    for j in dumped:
        if per_job.get(j) != 1:
            wrong.append(f"{j} has {per_job.get(j, 0)} checkpoints listed, not 1")
    if len(listed) != len(dumped):
        wrong.append(f"{len(listed)} checkpoints listed for {len(dumped)} good dumps")
    if any(".partial" in p.name for p in (state / "checkpoints").rglob("*")):
        wrong.append("a .partial checkpoint is left")
    if wrong:
        res.failures.append(Failure(None, "store", "; ".join(wrong)))


def last_checksum(lines: Sequence[str]) -> str:
    found = [ln for ln in lines if ln.startswith("checksum: ")]
    return found[-1].split(": ", 1)[1].strip() if found else ""


def distribution(values: Sequence[float]) -> dict[str, float]:
    """n, median, p95 (nearest rank), min, max of the finite values."""
    v = sorted(x for x in values if math.isfinite(x))
    if not v:
        return {"n": 0}
    return {
        "n": len(v),
        "median": statistics.median(v),
        "p95": v[max(math.ceil(0.95 * len(v)) - 1, 0)],
        "min": v[0],
        "max": v[-1],
    }


# ---- the report -------------------------------------------------------------------------


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def summarise(res: Results) -> None:
    cyc = res.per_cycle
    res.times = {
        "dump_wall": distribution([c.dump_wall for c in cyc]),
        "dump_total": distribution([c.dump_total for c in cyc]),
        "restore_wall": distribution([c.restore_wall for c in cyc]),
        "restore_total": distribution([c.restore_total for c in cyc]),
        "size_mib": distribution([c.size / 2**20 for c in cyc if c.checkpoint]),
    }


def report(res: Results) -> str:
    m, p = res.machine, res.plan
    lines = [
        f"soak, {res.started}, commit {res.commit}, {res.seconds:.0f} s",
        f"machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown CPU'}), kernel {m['kernel']}, "
        f"driver {m['driver']}; load average (1 min) {m['loadavg_start']:.2f} at the start, "
        f"{m['loadavg_end']:.2f} at the end",
        f"job: train_mlp --steps {p['steps']} --device-mib {p['device_mib']} "
        f"--sleep-per-step {SLEEP_PER_STEP}; dumped after {p['steps_between']} steps of its own "
        f"per generation; --compression {','.join(p['compressions'])} --stream {p['streams']}",
        "",
        f"cycles run:  {res.cycles_run} of {p['cycles']} ({res.cycles_ok} dumped and restored)",
        f"generations: {res.generations}; steps each dumped one printed: "
        + _fmt(res.steps_per_generation, "", 0)
        + f"; the last {res.last_generation_steps}",
        f"final:       {'matches' if res.final_match else 'DOES NOT MATCH'} the uninterrupted run "
        f"(checksum {res.checksum[:16] or '(none)'}…, uninterrupted {res.expected_checksum[:16]}…)",
        f"failures:    {len(res.failures)}",
        *[
            f"  cycle {f.cycle if f.cycle is not None else '-'} {f.what}: {f.error}"
            for f in res.failures
        ],
        "",
        "per cycle (s)          median     p95     min     max",
    ]
    names = {
        "dump_wall": "dump, whole command",
        "dump_total": "dump, its own total",
        "restore_wall": "restore, whole command",
        "restore_total": "restore, its own total",
        "size_mib": "checkpoint size (MiB)",
    }
    for key, label in names.items():
        d = res.times.get(key, {})
        if not d.get("n"):
            lines.append(f"{label:<22} (none)")
            continue
        lines.append(
            f"{label:<22} {d['median']:>6.2f} {d['p95']:>7.2f} {d['min']:>7.2f} {d['max']:>7.2f}"
        )
    return "\n".join(lines)


def _fmt(d: dict[str, float], unit: str, digits: int) -> str:
    if not d.get("n"):
        return "(none)"
    return (
        f"median {d['median']:.{digits}f}{unit}, min {d['min']:.{digits}f}{unit}, "
        f"max {d['max']:.{digits}f}{unit}"
    )


def to_json(res: Results) -> dict[str, Any]:
    return asdict(res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=100, help="dump/restore cycles (default 100)")
    ap.add_argument(
        "--steps-between",
        type=int,
        default=3,
        metavar="N",
        help="steps each generation prints before it is dumped (default 3)",
    )
    ap.add_argument(
        "--steps-per-cycle",
        type=int,
        default=STEPS_PER_CYCLE,
        metavar="N",
        help=f"steps the job is given per cycle (default {STEPS_PER_CYCLE}; raise it when "
        "dumps start slowly and the job ends before the last cycle)",
    )
    ap.add_argument(
        "--compression",
        default="none",
        help="compression of the dumps; a comma-separated list rotates per cycle (default none)",
    )
    ap.add_argument("--stream", type=int, default=1, help="streams of the GPU dump (default 1)")
    ap.add_argument(
        "--device-mib", type=int, default=16, help="device ballast of the job (default 16)"
    )
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep every checkpoint")
    ap.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the state directory and checkpoints go (default: the temp dir)",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON results here")
    args = ap.parse_args(argv)
    if args.cycles < 1 or args.steps_between < 1 or args.stream < 1:
        ap.error("--cycles, --steps-between and --stream must be at least 1")
    if args.device_mib < 0:
        ap.error("--device-mib cannot be negative")
    if args.steps_per_cycle < args.steps_between + 5:
        ap.error("--steps-per-cycle must be at least --steps-between + 5")
    if os.geteuid() != 0:
        print("soak: needs root (CRIU dumps and restores the job)", file=sys.stderr)
        return 1
    plan = Plan(
        args.cycles,
        args.steps_between,
        args.steps_per_cycle,
        [c for c in args.compression.split(",") if c],
        args.stream,
        args.device_mib,
        args.keep_checkpoints,
    )

    def progress(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    res = Results(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        commit=git_commit(),
        machine=machine(args.dir),
        plan=dict(asdict(plan), steps=plan.steps),
    )
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="cedana-soak-", dir=args.dir))
    except OSError as e:
        print(f"soak: cannot create a directory in {args.dir}: {e.strerror}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        soak(plan, workdir, res, progress)
    except SoakError as e:
        print(f"soak: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    res.seconds = time.perf_counter() - t0
    res.machine["loadavg_end"] = loadavg()
    summarise(res)
    doc = json.dumps(to_json(res), indent=2, ensure_ascii=False)
    if args.save:
        try:
            args.save.write_text(doc + "\n")
        except OSError as e:
            print(f"soak: cannot write {args.save}: {e.strerror}", file=sys.stderr)
            return 1
    print(doc if args.json else report(res))
    # A benchmark: failures are reported, and the exit status says whether there were any.
    return 0 if not res.failures else 2


if __name__ == "__main__":
    sys.exit(main())
