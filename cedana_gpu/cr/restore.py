"""Restoring a job: the CLI's side (``cedana restore job``).

1. Find the checkpoint: the job's latest, or ``--path`` (a directory or an
   archive, e.g. copied from another machine).
2. Check it before anything starts (``checkpoint.check_checkpoint``): an
   archive is unpacked into a scratch directory under the state directory;
   the manifest (format version), every file's size and checksum and every
   shard's size are verified. A corrupt, truncated, incomplete or newer
   checkpoint is refused here, in one line.
3. Start a new controller in restore mode (``--restore <dir>``) under a new
   job id: it re-creates the segment and pinned files, imports the GPU state,
   writes every region back verifying its checksum, runs ``criu restore``
   itself (the restored job becomes its child) and serves the job.
4. Wait until the job runs (or the restore failed: the controller then
   leaves nothing behind); remove the scratch directory.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cedana_gpu.cr.dump import progress_poller, require_root
from cedana_gpu.errors import RestoreError
from cedana_gpu.jobs import lifecycle, statedir
from cedana_gpu.jobs.store import Job, JobStore


@dataclass
class RestoreResult:
    job: Job
    started: lifecycle.StartedJob
    source: str
    checkpoint_id: str | None
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.jid,
            "pid": self.job.pid,
            "state": self.job.state,
            "generation": self.job.generation,
            "checkpoint": self.checkpoint_id,
            "path": self.source,
            "controller_pid": self.job.controller_pid,
            "phases": self.phases,
        }


def resolve_source(store: JobStore, jid: str | None, path: Path | None) -> tuple[Path, str | None]:
    """(checkpoint path, checkpoint id if known) for ``restore job ID`` / ``--path``."""
    if path is not None:
        return path.absolute(), None
    if jid is None:
        raise RestoreError("name a job (restore job ID) or a checkpoint (--path P)")
    store.require(jid)
    ckpt = store.latest_checkpoint(jid)
    if ckpt is None:
        raise RestoreError(f"job {jid} has no checkpoints: dump it first, or give --path")
    return Path(ckpt.path), ckpt.id


def restore_job(
    store: JobStore,
    state: Path,
    *,
    jid: str | None,
    path: Path | None = None,
    new_jid: str | None = None,
    driver: str | None = None,
    progress: bool | None = None,
) -> RestoreResult:
    """Restore a checkpoint as a new job and return once it runs."""
    from cedana_gpu.checkpoint import CHECKSUM_ALGORITHM, CheckpointError, Progress
    from cedana_gpu.checkpoint.verify import check_checkpoint
    from cedana_gpu.controller import native

    require_root()
    source, cid = resolve_source(store, jid, path)
    show = sys.stderr.isatty() if progress is None else progress
    phases: dict[str, float] = {}
    scratch_root = statedir.restore_tmp_dir(state)
    statedir.ensure_private_dir(scratch_root)
    scratch = scratch_root / secrets.token_hex(6)
    try:
        t0 = time.monotonic()
        try:
            total = _size(source)
            with Progress("check", total, enabled=show) as bar:
                directory, manifest = check_checkpoint(
                    source, scratch, native.checksum, bar, algorithm=CHECKSUM_ALGORITHM
                )
        except CheckpointError as e:
            raise RestoreError(f"cannot restore {source}: {e}") from None
        phases["check"] = time.monotonic() - t0
        job = manifest.job
        gpu = bool(job.extra.get("gpu", bool(job.segment_name)))
        if cid is None:
            found = job.extra.get("checkpoint_id")
            cid = found if isinstance(found, str) else None
        driver = (driver or job.driver or "system") if gpu else "none"
        t1 = time.monotonic()
        new_jid = new_jid or lifecycle.new_job_id()
        try:
            statedir.check_job_id(new_jid)
        except ValueError as e:
            raise RestoreError(str(e)) from None
        socket = statedir.job_dir(state, new_jid) / statedir.CONTROL_SOCKET
        try:
            with progress_poller(socket, show):
                started = lifecycle.start_job(
                    job.cmd,
                    gpu=gpu,
                    driver=driver,
                    jid=new_jid,
                    state=state,
                    persistent_mounts=job.persistent_mounts,
                    restore=directory.absolute(),
                    cwd=job.cwd,
                    generation=job.generation + 1,
                    restored_from=cid or str(source),
                )
        except lifecycle.JobError as e:
            raise RestoreError(f"cannot restore {source}: {e}") from None
        phases["start"] = time.monotonic() - t1
        jdir = statedir.job_dir(state, started.job.jid)
        with contextlib.suppress(OSError, ValueError):
            phases.update(json.loads((jdir / "restore-phases.json").read_text()))
        phases["total"] = time.monotonic() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RestoreResult(
        job=started.job, started=started, source=str(source), checkpoint_id=cid, phases=phases
    )


def _size(path: Path) -> int:
    from cedana_gpu.checkpoint import path_size

    try:
        return path_size(path)
    except OSError:
        return 0
