"""Eight GPU jobs dumped at once, then restored at once (issue 8).

Eight ``train_mlp`` jobs run under ``cedana exec --gpu``; eight ``cedana dump
job`` processes are started together, with options mixed across them (kill or
``--leave-running``, every compression, one or two streams, some into one
shared ``--dir``, the rest into their default directories); then eight
``cedana restore job`` processes are started together. Every job must finish
with the result of an uninterrupted run, and the store must tell the truth
afterwards: each checkpoint listed once under its job, each job's state right,
no ``.partial`` left in any checkpoint directory, no scratch directory, no
segment.

Everything runs in one state directory, so the eight dumps and eight restores
share one job store (SQLite), one ``checkpoints/`` and ``restore/`` tree and
the machine-wide /dev/shm. Waits are bounded only so that a hang fails the
test; nothing here measures time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cr_helpers import (
    CLI_TIMEOUT,
    REPO,
    Cedana,
    alive,
    checksum_line,
    needs_root,
    run_direct,
    segment_leftovers,
    unique_jid,
    without_notes,
)

pytestmark = [needs_root, pytest.mark.usefixtures("native_parts")]

# 300 steps of at least 50 ms: a job started first is still far from its end
# when the last of the eight has printed its first steps, on a loaded 2-core
# machine too, so every dump finds its job running.
STEPS = 300
TRAIN = ("samples/train_mlp.py", "--steps", str(STEPS), "--print-every", "1")
SLEEP = ("--sleep-per-step", "0.05")
STEP_LINE = r"^step \d+ loss"


@dataclass(frozen=True)
class Variant:
    compression: str
    streams: int
    leave_running: bool
    shared_dir: bool
    """Into the one ``--dir`` that four dumps write at once, else the job's default."""


VARIANTS = (
    Variant("none", 1, False, False),
    Variant("lz4", 2, False, True),
    Variant("tar", 1, False, True),
    Variant("zlib", 2, False, False),
    Variant("none", 2, True, True),
    Variant("lz4", 1, True, False),
    Variant("tar", 2, True, False),
    Variant("gzip", 1, True, True),
)


def all_at_once(c: Cedana, argvs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start one ``cedana`` per argv together, then wait for all of them."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cedana_gpu", *argv],
            env=c.env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    done: list[subprocess.CompletedProcess[str]] = []
    try:
        for argv, p in zip(argvs, procs, strict=True):
            # Outputs are a few hundred bytes: no pipe fills while another is waited for.
            out, err = p.communicate(timeout=CLI_TIMEOUT)
            done.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


def json_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    assert proc.stderr == "", (proc.args, proc.stderr)
    return dict(json.loads(proc.stdout))


def test_eight_jobs_dumped_at_once_then_restored_at_once(cedana: Cedana, tmp_path: Path) -> None:
    expected = list(run_direct(*TRAIN))
    shared = tmp_path / "shared"
    jids = [unique_jid(f"cc{i}") for i in range(len(VARIANTS))]
    news = [unique_jid(f"cc{i}r") for i in range(len(VARIANTS))]
    exec_args = [sys.executable, *TRAIN, *SLEEP]

    # ---- eight jobs, started together too ----
    started = all_at_once(
        cedana,
        [["exec", "--gpu", "--gpu-driver", "fake", "--jid", j, "--", *exec_args] for j in jids],
    )
    for proc in started:
        assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    for jid in jids:
        cedana.wait_log(jid, STEP_LINE, 3)

    # ---- eight dumps at once ----
    dump_args = []
    for jid, v in zip(jids, VARIANTS, strict=True):
        argv = ["dump", "job", jid, "--compression", v.compression, "--stream", str(v.streams)]
        if v.leave_running:
            argv.append("--leave-running")
        if v.shared_dir:
            argv += ["--dir", str(shared)]
        dump_args.append([*argv, "--output", "json"])
    dumped = [json_of(p) for p in all_at_once(cedana, dump_args)]

    for jid, v, d in zip(jids, VARIANTS, dumped, strict=True):
        assert d["job"] == jid
        assert (d["compression"], d["streams"], d["leave_running"]) == (
            v.compression,
            v.streams,
            v.leave_running,
        )
        path = Path(d["path"])
        assert path.exists() and path.is_dir() == (v.compression == "none"), d
        assert path.parent == (
            shared.resolve() if v.shared_dir else cedana.state / "checkpoints" / jid
        )
        if not v.leave_running:
            assert d["job_state"] == "checkpointed", d
    assert len({d["checkpoint"] for d in dumped}) == len(VARIANTS)

    # ---- eight restores at once ----
    restore_args = [
        ["restore", "job", jid, "--jid", new, "--output", "json"]
        for jid, new in zip(jids, news, strict=True)
    ]
    restored = [json_of(p) for p in all_at_once(cedana, restore_args)]
    for new, d, r in zip(news, dumped, restored, strict=True):
        assert r["job"] == new and r["generation"] == 2, r
        assert r["checkpoint"] == d["checkpoint"], r

    # ---- every job finishes with an uninterrupted run's result ----
    for jid, new, v in zip(jids, news, VARIANTS, strict=True):
        final = cedana.wait_final(new)
        assert final["status"] == "exited (0)", (v, final, cedana.log(new)[-2000:])
        after = without_notes(cedana.log(new))
        before = without_notes(cedana.log(jid))
        if v.leave_running:
            # Both copies finish right: the original all of it, the copy the rest.
            original = cedana.wait_final(jid)
            assert original["status"] == "exited (0)", (v, original, cedana.log(jid)[-2000:])
            assert before == expected, v
            assert after and after == expected[-len(after) :], v
        else:
            assert before + after == expected, v
        assert checksum_line(after) == checksum_line(expected), v

    # ---- the store tells the truth ----
    jobs = cedana.ps()
    assert set(jobs) == set(jids) | set(news)
    for jid, new, v, d in zip(jids, news, VARIANTS, dumped, strict=True):
        assert jobs[jid]["status"] == ("exited (0)" if v.leave_running else "checkpointed"), v
        assert jobs[jid]["generation"] == 1
        row = jobs[new]
        assert (row["status"], row["generation"]) == ("exited (0)", 2), row
        assert row["restored_from"] == d["checkpoint"] and row["gpu"] is True, row
        for j in (jid, new):
            assert not alive(jobs[j]["controller_pid"]), cedana.controller_log(j)
            assert not alive(jobs[j]["pid"])
        listed = cedana.json("job", "checkpoints", jid)
        assert [c["id"] for c in listed] == [d["checkpoint"]], listed
        assert listed[0]["path"] == d["path"] and listed[0]["leave_running"] is v.leave_running
        assert (listed[0]["compression"], listed[0]["streams"]) == (v.compression, v.streams)
        assert cedana.json("job", "checkpoints", new) == []

    # Every checkpoint directory holds exactly the checkpoints listed, nothing half-written.
    from cedana_gpu.jobs.store import JobStore

    with JobStore(cedana.state / "jobs.db") as store:
        everything = store.checkpoints()
    assert sorted(c.id for c in everything) == sorted(d["checkpoint"] for d in dumped)
    dirs = {Path(d["path"]).parent for d in dumped}
    on_disk = sorted(str(p) for base in dirs for p in base.iterdir())
    assert on_disk == sorted(d["path"] for d in dumped)
    assert not [p for p in (cedana.state / "checkpoints").rglob("*") if ".partial" in p.name]
    assert list((cedana.state / "restore").iterdir()) == []
    assert segment_leftovers(*jids, *news) == []
