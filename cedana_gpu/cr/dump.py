"""Dumping a job: the CLI's side of a checkpoint (``cedana dump job|process``).

    freeze ─ dump_gpu ─ criu dump ─ manifest ─ archive ─ rename ─ record
    (controller)        (this process)

1. ``freeze`` (control socket; GPU jobs): the job's CUDA calls are parked at
   the call boundary, its streams drained.
2. ``dump_gpu``: the controller, which owns the CUDA context, writes the GPU
   state into ``<partial>/gpu`` (shards written in parallel).
3. ``criu dump`` of the job's PID namespace into ``<partial>/criu``, /dev/shm
   marked external (the job's segment is re-created by the restoring
   controller; persistent tmpfs mounts are saved in the images). Without
   ``--leave-running`` the job is left *stopped*, not killed, so that nothing
   is lost if a later step fails.
4. The manifest (files with their checksums, the regions the controller
   wrote), then the archive (``tar``/``lz4``/``gzip``/``zlib``), then the
   rename from ``.<name>.partial``: a half-written checkpoint is never listed.
5. With ``--leave-running`` the job was unfrozen right after CRIU; without,
   it is now killed and its controller records it as ``checkpointed``.

Any failure before the end: the job is continued and unfrozen, the partial
checkpoint removed, and the error (one line) says why. The whole sequence
holds one control connection: if this process dies mid-dump, the controller
unfreezes the job itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cedana_gpu.controller import control
from cedana_gpu.cr import criu
from cedana_gpu.errors import DumpError
from cedana_gpu.jobs import lifecycle, processes, statedir
from cedana_gpu.jobs.store import FINAL_STATES, RUNNING, Checkpoint, Job, JobStore

DEFAULT_FREEZE_TIMEOUT_MS = 30_000
FREEZE_TIMEOUT_ENV = "CEDANA_FREEZE_TIMEOUT_MS"
CRIU_TIMEOUT_ENV = "CEDANA_CRIU_TIMEOUT"
DEFAULT_CRIU_TIMEOUT = 600.0
END_TIMEOUT = 60.0
"""How long a dump waits for a killed job's end to be recorded."""

ROOT_ONLY = "checkpoint and restore need root (CRIU): run cedana dump/restore as root"


def require_root() -> None:
    if os.geteuid() != 0:
        raise DumpError(ROOT_ONLY)


@dataclass
class DumpOptions:
    directory: Path | None = None
    compression: str = "none"
    streams: int = 1
    leave_running: bool = False
    freeze_timeout_ms: int = 0
    progress: bool | None = None
    """Draw progress on stderr: None means when stderr is a terminal."""


@dataclass
class DumpResult:
    checkpoint: Checkpoint
    job: Job
    gpu_bytes: int = 0
    regions: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        c = self.checkpoint
        return {
            "checkpoint": c.id,
            "job": c.jid,
            "path": c.path,
            "size": c.size,
            "compression": c.compression,
            "streams": c.streams,
            "leave_running": c.leave_running,
            "generation": c.generation,
            "gpu_bytes": self.gpu_bytes,
            "regions": self.regions,
            "phases": self.phases,
            "job_state": self.job.state,
        }


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def find_job_by_pid(store: JobStore, pid: int) -> Job:
    """The running job whose root process (as the host sees it) is ``pid``."""
    for job in store.list():
        job = lifecycle.refresh(store, job)
        if job.active and job.pid == pid:
            return job
    raise DumpError(
        f"no running cedana job has pid {pid} (see 'cedana ps'; "
        "only jobs started with 'cedana exec' can be dumped)"
    )


def checkpoint_id(jid: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{jid}-{stamp}-{secrets.token_hex(2)}"


def job_is_mount_ns(job: Job) -> bool:
    return bool(job.shm_dir) and Path(job.shm_dir or "") == statedir.JOB_SHM_DIRS / job.jid


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (every thread's children)."""
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def log_file_keys(root: int, log_path: str | None) -> list[str]:
    """CRIU's ``file[mnt_id:inode]`` keys of the job's log as its processes have it open.

    The log is dumped as an external file and handed to the restored job
    (``--inherit-fd``) as the new job's log: the old one may be gone (a
    migration), and a file opened outside the job's mount namespace could not
    be dumped at all."""
    if not log_path:
        return []
    keys: list[str] = []
    for pid in tree_pids(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != log_path:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    fields = dict(
                        line.split(":", 1) for line in f.read().splitlines() if ":" in line
                    )
                mnt_id = int(fields["mnt_id"].strip())
                ino = int(fields["ino"].strip()) if "ino" in fields else os.stat(log_path).st_ino
            except (OSError, KeyError, ValueError):
                continue
            key = f"file[{mnt_id:x}:{ino:x}]"
            if key not in keys:
                keys.append(key)
    return keys


def continue_tree(root: int) -> None:
    """SIGCONT a job left stopped by ``criu dump --leave-stopped``."""
    for pid in tree_pids(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def progress_poller(client_path: Path, enabled: bool) -> Iterator[None]:
    """Draw the controller's progress (its ``progress`` op) on stderr while the body runs."""
    if not enabled:
        yield
        return
    from cedana_gpu.checkpoint.progress import Progress

    stop = threading.Event()
    bars: dict[str, Progress] = {}
    since = time.monotonic()

    def poll_once() -> None:
        nonlocal since
        try:
            snap = control.request(client_path, {"op": "progress"}, timeout=2)
        except control.ControlError:
            return
        phase = str(snap.get("phase") or "")
        if not phase:
            return
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[phase] = Progress(phase, int(snap.get("total") or 0), enabled=True)
            bar.start = since  # the phase began before it was first seen
        since = time.monotonic()
        delta = int(snap.get("done") or 0) - bar.done
        if delta > 0:
            bar.add(delta)

    def poll() -> None:
        while not stop.wait(0.2):
            poll_once()

    t = threading.Thread(target=poll, name="progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=5)
        poll_once()
        for bar in bars.values():
            bar.close()


def _timed(phases: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.monotonic()
    try:
        return fn()
    finally:
        phases[name] = time.monotonic() - t0


def dump_job(store: JobStore, state: Path, job: Job, options: DumpOptions) -> DumpResult:
    """Checkpoint ``job`` (running). Raises DumpError (one line); the job then runs on."""
    from cedana_gpu.checkpoint import (
        SHARD_DIR,
        CheckpointError,
        JobInfo,
        Manifest,
        RegionRecord,
        check_compression,
        file_records,
        is_archive,
        pack,
        partial_path,
        path_size,
        save_manifest,
        write_regions,
    )
    from cedana_gpu.controller import native

    require_root()
    try:
        check_compression(options.compression)
    except CheckpointError as e:
        raise DumpError(str(e)) from None
    if options.streams < 1:
        raise DumpError(f"--stream must be at least 1, not {options.streams}")
    job = lifecycle.refresh(store, job)
    if job.state != RUNNING or not job.pid:
        raise DumpError(f"job {job.jid} is not running ({lifecycle.describe(job)})")
    if not job.socket_path:
        raise DumpError(f"job {job.jid} has no controller to talk to")

    cid = checkpoint_id(job.jid)
    base = options.directory or statedir.checkpoints_dir(state, job.jid)
    try:
        if options.directory is None:
            statedir.ensure_private_dir(base.parent)
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (OSError, statedir.StateDirError) as e:
        raise DumpError(f"cannot create the checkpoint directory {base}: {e}") from None
    base = base.resolve()
    final = base / (cid + (".tar" if is_archive(options.compression) else ""))
    partial = partial_path(base / cid)
    freeze_ms = options.freeze_timeout_ms or int(
        _env_number(FREEZE_TIMEOUT_ENV, DEFAULT_FREEZE_TIMEOUT_MS)
    )
    show = sys.stderr.isatty() if options.progress is None else options.progress
    phases: dict[str, float] = {}
    mount_ns = job_is_mount_ns(job)
    criu_log = statedir.job_dir(state, job.jid) / "criu-dump.log"
    t_start = time.monotonic()

    try:
        client = control.ControlClient(Path(job.socket_path))
    except control.ControlError as e:
        raise DumpError(f"cannot reach the controller of job {job.jid}: {e}") from None
    frozen = False
    stopped = False
    gpu_answer: dict[str, Any] = {}
    try:
        try:
            partial.mkdir(mode=0o700)
            (partial / "criu").mkdir(mode=0o700)
        except OSError as e:
            raise DumpError(f"cannot create {partial}: {e.strerror}") from None
        # 1-2. GPU state, by the controller.
        if job.gpu:
            try:
                _timed(
                    phases,
                    "freeze",
                    lambda: client.call(
                        {"op": "freeze", "timeout_ms": freeze_ms},
                        timeout=freeze_ms / 1000 + 30,
                    ),
                )
                frozen = True
                with progress_poller(Path(job.socket_path), show):
                    gpu_answer = _timed(
                        phases,
                        "gpu_dump",
                        lambda: client.call(
                            {
                                "op": "dump_gpu",
                                "dir": str(partial),
                                "compression": options.compression,
                                "streams": options.streams,
                            },
                            timeout=None,
                        ),
                    )
            except control.ControlError as e:
                hint = ""
                if not frozen and "timed out" in str(e):
                    hint = f"; dump it when it is less busy, or raise {FREEZE_TIMEOUT_ENV}"
                raise DumpError(f"{e}{hint}") from None
        # 3. CPU state, by CRIU.
        args = ["dump", "-t", str(job.pid), "-D", str(partial / "criu")]
        args.append("--leave-running" if options.leave_running else "--leave-stopped")
        if mount_ns:
            args += ["--external", "mnt[/dev/shm]:shm"]
        log_keys = log_file_keys(job.pid, job.log_path)
        for key in log_keys:
            args += ["--external", key]
        try:
            stopped = not options.leave_running
            _timed(
                phases,
                "criu_dump",
                lambda: criu.run_criu(
                    args,
                    log_file=criu_log,
                    timeout=_env_number(CRIU_TIMEOUT_ENV, DEFAULT_CRIU_TIMEOUT),
                ),
            )
        except (criu.CriuError, criu.CriuNotFound) as e:
            raise DumpError(f"CRIU could not dump job {job.jid}: {e}") from None
        with contextlib.suppress(OSError):
            shutil.copyfile(criu_log, partial / "criu" / "dump.log")
        if options.leave_running and frozen:
            try:
                client.call({"op": "unfreeze"}, timeout=30)
            except control.ControlError as e:
                raise DumpError(f"cannot unfreeze job {job.jid}: {e}") from None
            frozen = False
        # 4. Manifest and archive.
        t0 = time.monotonic()
        try:
            regions_file = partial / ".gpu-regions.json"
            regions: list[RegionRecord] = []
            if regions_file.exists():
                regions = [RegionRecord.from_json(r) for r in json.loads(regions_file.read_text())]
                regions_file.unlink()
            if not job.gpu:
                # No device memory: the shards are there, empty, as in any checkpoint.
                write_regions(
                    partial / SHARD_DIR, [], _no_read, options.streams, options.compression
                )
            files = file_records(partial, native.checksum)
            info = JobInfo(
                id=job.jid,
                cmd=list(job.cmd),
                segment_name=job.segment or "",
                segment_size=int(gpu_answer.get("segment_size", 0)),
                generation=job.generation,
                cwd=job.cwd,
                driver=job.driver if job.gpu else None,
                geometry={k: int(v) for k, v in (gpu_answer.get("geometry") or {}).items()},
                persistent_mounts=list(job.persistent_mounts),
                uid=os.geteuid(),
                gid=os.getegid(),
                extra={
                    "gpu": job.gpu,
                    "log_path": job.log_path,
                    "log_files": log_keys,
                    "mount_namespace": mount_ns,
                    "pid_namespace": job.pid_namespace,
                    "checkpoint_id": cid,
                    "restored_from": job.restored_from,
                },
            )
            phases_now = dict(phases)
            phases_now.update(
                {f"gpu_{k}" if not k.startswith("gpu") else k: v
                 for k, v in (gpu_answer.get("phases") or {}).items()}
            )  # fmt: skip
            manifest = Manifest(
                job=info,
                va_base=int(gpu_answer.get("va_base", 0)),
                va_size=int(gpu_answer.get("va_size", 0)),
                compression=options.compression,
                streams=options.streams,
                regions=regions,
                files=files,
                device=dict(gpu_answer.get("device") or {}),
                phases=phases_now,
            )
            save_manifest(manifest, partial)
            if is_archive(options.compression):
                from cedana_gpu.checkpoint.progress import Progress

                total = path_size(partial)
                with Progress("archive", total, enabled=show) as bar:
                    pack(partial, final, options.compression, bar)
                shutil.rmtree(partial, ignore_errors=True)
            else:
                os.rename(partial, final)
        except CheckpointError as e:
            raise DumpError(f"cannot write the checkpoint of job {job.jid}: {e}") from None
        except OSError as e:
            raise DumpError(
                f"cannot write the checkpoint of job {job.jid}: {e.strerror or e}"
            ) from None
        phases["archive"] = time.monotonic() - t0
        # 5. The job lives on in its checkpoint: end it (or it runs on).
        if not options.leave_running:
            try:
                client.call({"op": "dumped"}, timeout=30)
            except control.ControlError as e:
                _remove(final)
                raise DumpError(f"job {job.jid}: {e}") from None
            processes.signal_job(job.pid, job.pid_namespace, signal.SIGKILL)
            stopped = False
            frozen = False
    except BaseException:
        # Nothing is lost: the job continues, the partial checkpoint goes.
        if stopped:
            continue_tree(job.pid)
        if frozen:
            with contextlib.suppress(control.ControlError):
                client.call({"op": "unfreeze"}, timeout=30)
        client.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not options.leave_running:
        job = _wait_final(store, job.jid)
    client.close()
    phases["total"] = time.monotonic() - t_start
    ckpt = Checkpoint(
        id=cid,
        jid=job.jid,
        path=str(final),
        size=path_size(final),
        compression=options.compression,
        streams=options.streams,
        leave_running=options.leave_running,
        generation=job.generation,
        phases=phases,
    )
    store.add_checkpoint(ckpt)
    return DumpResult(
        checkpoint=ckpt,
        job=store.require(job.jid),
        gpu_bytes=int(gpu_answer.get("bytes", 0)),
        regions=int(gpu_answer.get("regions", 0)),
        phases=phases,
    )


def _no_read(addr: int, size: int, dst: memoryview) -> int:
    raise AssertionError("a job without GPU has no device memory to read")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _wait_final(store: JobStore, jid: str) -> Job:
    """Wait until the killed job's end is recorded (its controller records it)."""
    deadline = time.monotonic() + END_TIMEOUT
    while True:
        job = lifecycle.refresh(store, store.require(jid))
        if job.state in FINAL_STATES:
            while processes.process_alive(job.controller_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            return job
        if time.monotonic() > deadline:
            return job
        time.sleep(0.02)
