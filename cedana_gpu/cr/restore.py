"""Restoring a job: the CLI's side (``cedana restore job``).

A restore is a list of phases (``RESTORE_PHASES``) run by ``cr.pipeline``,
after the checkpoint was found (the job's latest, or ``--path``: a directory
or an archive, e.g. copied from another machine):

    phase        does                                          undo
    check        verify the checkpoint before anything starts  (the scratch directory
                 (``checkpoint.check_checkpoint``): an archive  goes in any case)
                 is unpacked into a scratch directory under
                 the state directory; the manifest (format
                 version), every file's size and checksum and
                 every shard's size are checked. A corrupt,
                 truncated, incomplete or newer checkpoint is
                 refused here, in one line
    restore_gpu  the engine brings the job back under a new    kill the restored job;
                                                               stop a controller still
                                                               restoring; clean up
                                                               after one that died
                 job id. ``InterceptEngine``: a new controller
                 in restore mode re-creates the segment and
                 pinned files, imports the GPU state, writes
                 every region back verifying its checksum, runs
                 ``criu restore`` itself (the restored job
                 becomes its child: ``Controller.run_restore``,
                 on the same runner) and serves the job; a
                 failed restore leaves nothing behind
    collect      the controller's own timings                  -

The scratch directory is removed whatever happens. A restore that fails or
is interrupted ends with one line that says so and that the checkpoint is
unchanged (a restore only reads it): nothing was restored, try again.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cedana_gpu.cr import recovery
from cedana_gpu.cr.dump import require_root
from cedana_gpu.cr.engine import GpuEngine, RestoreSpec, restore_engine
from cedana_gpu.cr.pipeline import Phase, Pipeline, fault_point
from cedana_gpu.errors import RestoreError
from cedana_gpu.jobs import lifecycle, processes, statedir
from cedana_gpu.jobs.store import FINAL_STATES, Job, JobStore

if TYPE_CHECKING:
    from cedana_gpu.checkpoint.signing import SigningKey

STOP_TIMEOUT = 60.0
"""How long an interrupted restore waits for its controller to stop."""


@dataclass
class RestoreResult:
    job: Job
    started: lifecycle.StartedJob
    source: str
    checkpoint_id: str | None
    phases: dict[str, float] = field(default_factory=dict)
    signature: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.jid,
            "pid": self.job.pid,
            "state": self.job.state,
            "generation": self.job.generation,
            "checkpoint": self.checkpoint_id,
            "path": self.source,
            "controller_pid": self.job.controller_pid,
            "signature": self.signature,
            "phases": self.phases,
        }


def resolve_source(store: JobStore, jid: str | None, path: Path | None) -> tuple[Path, str | None]:
    """(checkpoint path, checkpoint id if known) for ``restore job ID`` / ``--path``."""
    if path is not None:
        if path.name.endswith(".partial"):
            raise RestoreError(
                f"{path} is an unfinished checkpoint (its dump was interrupted, and the job "
                "ran on): it cannot be restored; restore a complete checkpoint or dump again"
            )
        return path.absolute(), None
    if jid is None:
        raise RestoreError("name a job (restore job ID) or a checkpoint (--path P)")
    store.require(jid)
    ckpt = store.latest_checkpoint(jid)
    if ckpt is None:
        raise RestoreError(f"job {jid} has no checkpoints: dump it first, or give --path")
    return Path(ckpt.path), ckpt.id


@dataclass
class RestoreContext:
    """What the restore phases share."""

    store: JobStore
    state: Path
    source: Path
    cid: str | None
    scratch: Path
    new_jid: str
    driver: str | None
    show: bool
    timings: dict[str, float]
    key: SigningKey | None = None
    allow_unsigned: bool = False
    signature: str = ""
    """What the signing check found, in words."""
    gpu_map: list[str] = field(default_factory=list)
    """``OLD=NEW`` GPU remappings (driver engine checkpoints)."""
    engine: GpuEngine | None = None
    directory: Path | None = None
    manifest: Any = None  # checkpoint.Manifest, imported with the phase
    started: lifecycle.StartedJob | None = None


def check(ctx: RestoreContext) -> None:
    from cedana_gpu.checkpoint import CHECKSUM_ALGORITHM, CheckpointError, Progress, signing
    from cedana_gpu.checkpoint.verify import check_checkpoint
    from cedana_gpu.controller import native

    try:
        with Progress("check", _size(ctx.source), enabled=ctx.show) as bar:
            ctx.directory, ctx.manifest = check_checkpoint(
                ctx.source, ctx.scratch, native.checksum, bar, algorithm=CHECKSUM_ALGORITHM
            )
        ctx.signature = signing.check(
            ctx.directory, ctx.manifest, ctx.key, allow_unsigned=ctx.allow_unsigned
        )
    except CheckpointError as e:
        raise RestoreError(f"cannot restore {ctx.source}: {e}") from None


def restore_gpu(ctx: RestoreContext) -> None:
    assert ctx.directory is not None and ctx.manifest is not None
    job = ctx.manifest.job
    gpu = bool(job.extra.get("gpu", bool(job.segment_name)))
    if ctx.cid is None:
        found = job.extra.get("checkpoint_id")
        ctx.cid = found if isinstance(found, str) else None
    try:
        statedir.check_job_id(ctx.new_jid)
    except ValueError as e:
        raise RestoreError(str(e)) from None
    ctx.engine = restore_engine(job)
    ctx.started = ctx.engine.restore_gpu(
        RestoreSpec(
            directory=ctx.directory,
            jid=ctx.new_jid,
            state=ctx.state,
            cmd=list(job.cmd),
            gpu=gpu,
            driver=(ctx.driver or job.driver or "system") if gpu else "none",
            cwd=job.cwd,
            generation=job.generation + 1,
            persistent_mounts=list(job.persistent_mounts),
            restored_from=ctx.cid or str(ctx.source),
            source=str(ctx.source),
            progress=ctx.show,
            gpu_map=list(ctx.gpu_map),
        )
    )


def kill_restored(ctx: RestoreContext) -> None:
    """Undo of restore_gpu: nothing of the restore may stay, whatever point it
    reached. A restored job is killed (its controller records it and exits); a
    controller still restoring is told to stop; one that died (SIGKILL)
    cleaned nothing up, so the processes CRIU restored for it and its segment
    are removed here. Returns once the controller is gone (or after
    ``STOP_TIMEOUT``)."""
    job = ctx.store.get(ctx.new_jid)
    if job is None:
        return  # the job was never created
    if job.state not in FINAL_STATES:
        if job.pid:
            processes.signal_job(job.pid, job.pid_namespace, signal.SIGKILL)
        else:
            lifecycle.signal_controller(job.controller_pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    _wait_gone([job.controller_pid, job.pid], deadline)
    if processes.process_alive(job.controller_pid):
        return  # still stopping: the one line says the job may still run
    # A controller killed after CRIU restored the job, before it recorded its pid.
    pidfile = statedir.job_dir(ctx.state, job.jid) / statedir.RESTORE_PIDFILE
    with contextlib.suppress(OSError, ValueError):
        pid = int(pidfile.read_text().strip())
        namespace = bool(ctx.manifest.job.extra.get("pid_namespace", True))
        if processes.process_alive(pid):
            processes.signal_job(pid, namespace, signal.SIGKILL)
            _wait_gone([pid], deadline)
    job = lifecycle.refresh(ctx.store, ctx.store.require(job.jid))
    lifecycle.remove_leftovers(job)


def _wait_gone(pids: list[int | None], deadline: float) -> None:
    while time.monotonic() < deadline and any(processes.process_alive(p) for p in pids):
        time.sleep(0.02)


def collect(ctx: RestoreContext) -> None:
    assert ctx.started is not None
    # A controller gone without recording its job's end died: the job cannot
    # run without it, so this restore did not bring it back. (Looked at in
    # that order: one that ended with its job records the end, then exits.
    # Not poll(): a dying controller's threads can keep it unreaped a while.)
    gone = not processes.process_alive(ctx.started.controller.pid)
    if gone and ctx.store.require(ctx.new_jid).state not in FINAL_STATES:
        raise RestoreError(f"the controller of job {ctx.new_jid} died as the restore finished")
    jdir = statedir.job_dir(ctx.state, ctx.started.job.jid)
    with contextlib.suppress(OSError, ValueError):
        fault_point()  # the timings are only reported: no reading them is no failure
        ctx.timings.update(json.loads((jdir / "restore-phases.json").read_text()))


RESTORE_PHASES: list[Phase[RestoreContext]] = [
    Phase("check", check, timing="check"),
    Phase("restore_gpu", restore_gpu, undo=kill_restored, timing="start"),
    Phase("collect", collect),
]


def restore_job(
    store: JobStore,
    state: Path,
    *,
    jid: str | None,
    path: Path | None = None,
    new_jid: str | None = None,
    driver: str | None = None,
    progress: bool | None = None,
    signing_key: Path | None = None,
    allow_unsigned: bool = False,
    gpu_map: list[str] | None = None,
    on_phase: Callable[[str], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Restore a checkpoint as a new job and return once it runs.

    ``on_phase`` is told each phase's name as it starts; ``report`` gets the
    restore's own notes, one line each (default: stderr)."""
    from cedana_gpu.checkpoint import CheckpointError, signing

    require_root()
    recovery.recover(store, state, None, report or _report)
    source, cid = resolve_source(store, jid, path)
    try:
        key = signing.configured_key(signing_key)
    except CheckpointError as e:
        raise RestoreError(str(e)) from None
    scratch_root = statedir.restore_tmp_dir(state)
    statedir.ensure_private_dir(scratch_root)
    pipeline = Pipeline(RESTORE_PHASES, name="restore", observer=on_phase)
    if report is not None:
        pipeline.report = report
    ctx = RestoreContext(
        store=store,
        state=state,
        source=source,
        cid=cid,
        scratch=scratch_root / recovery.scratch_name(secrets.token_hex(6)),
        new_jid=new_jid or lifecycle.new_job_id(),
        driver=driver,
        show=sys.stderr.isatty() if progress is None else progress,
        timings=pipeline.timings,
        key=key,
        allow_unsigned=allow_unsigned,
        gpu_map=list(gpu_map or []),
    )
    t0 = time.monotonic()
    try:
        phases = pipeline.run_telling(ctx, outcome, RestoreError)
        phases["total"] = time.monotonic() - t0
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    assert ctx.started is not None
    return RestoreResult(
        job=ctx.started.job,
        started=ctx.started,
        source=str(source),
        checkpoint_id=ctx.cid,
        phases=phases,
        signature=ctx.signature,
    )


def _report(line: str) -> None:
    print(f"cedana: {line}", file=sys.stderr)


def outcome(ctx: RestoreContext) -> str:
    """After a failed or interrupted restore, its undos done: what is left, in
    one clause (the end of the restore's one line)."""
    what = f"checkpoint {ctx.cid or ctx.source}"
    job = ctx.store.get(ctx.new_jid)
    if job is not None and (
        processes.process_alive(job.pid) or processes.process_alive(job.controller_pid)
    ):
        return f"job {job.jid} may still run (see 'cedana ps'); {what} is unchanged"
    return f"nothing was restored and {what} is unchanged: restore it again once that is fixed"


def _size(path: Path) -> int:
    from cedana_gpu.checkpoint import path_size

    try:
        return path_size(path)
    except OSError:
        return 0
