"""Dumping a job: the CLI's side of a checkpoint (``cedana dump job|process``).

A dump is a list of phases (``DUMP_PHASES``) run by ``cr.pipeline``; each
has an undo, called in reverse order when a later phase fails or the dump is
interrupted (Ctrl-C, SIGTERM), so that a failed dump leaves the job running
and no checkpoint behind:

    phase       does                                          undo
    directory   record the checkpoint in the store as         remove it and the row
                *pending*, owned by this process; create
                ``.<name>.partial``
    connect     one control connection to the job's           close it (a controller
                controller, for the whole dump                left frozen by it unfreezes)
    hold        jobs without GPU: the controller knows a      unfreeze (ends the hold)
                dump holds the job (and continues it if this
                process dies while CRIU has it stopped)
    freeze      GPU jobs: the engine freezes the job          unfreeze
    gpu_dump    the engine writes the GPU state into          (the directory's undo)
                ``<partial>/gpu`` (shards in parallel)
    criu_dump   CRIU dumps the job's PID namespace into       SIGCONT the tree CRIU
                ``<partial>/criu``, /dev/shm external;        left stopped
                without ``--leave-running`` the job is left
                *stopped*, not killed, so nothing is lost if
                a later phase fails
    thaw        ``--leave-running``: unfreeze right away      -
    unhold      ``--leave-running``, no GPU: end the hold      -
    write       the manifest: files and checksums, the GPU    (the directory's undo)
                regions, its own checksum; signed with a key
    verify      read back what was written (manifest, every   -
                file, every region against the device's
                checksum)
    pack        archives: one ``.<name>.tar.partial``         (the directory's undo)
    sync        fsync every file and directory (0600/0700)    -
    commit      rename to the final name, fsync the parent:   remove the checkpoint
                from here the checkpoint is whole on disk
    store       the row becomes *committed*: listed           (the directory's undo)
    release     without ``--leave-running``: the controller   - (point of no return:
                is told (``dumped``) and the job killed       nothing is undone after it)
    record      wait until the job's end is recorded          -

The checkpoint is recorded, durably, before the job is killed: a dump
interrupted after ``release`` leaves a job that lives on in a listed
checkpoint. A dump killed with SIGKILL runs no undo: its
``cr.janitor.Janitor`` removes what it left (the partial directory, a
checkpoint not yet recorded) once it is gone, and if even that cannot run
(a crash, a power loss), the pending row names what was left and the next
operation settles it (``cr.recovery``). docs/reliability.md states what
holds at each phase.

A failed or interrupted dump ends with one line that says what became of
the job (``settle``): it runs on; it was checkpointed (after ``release``);
or it is lost, because a GPU job cannot go on without its controller: the
dump then ends what is left of it and records it failed, keeping its
checkpoint when one was complete and recorded before the controller died
(CRIU finished while the controller lived, so the GPU state and the
processes in it agree).

The engine (``cr.engine.GpuEngine``; today ``InterceptEngine``, the job's
controller over its control socket) does freeze, gpu_dump and unfreeze; the
rest is the same for any engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cedana_gpu.controller import control
from cedana_gpu.cr import criu, host_mounts, recovery
from cedana_gpu.cr.engine import FREEZE_TIMEOUT_ENV, GpuDump, GpuEngine, dump_engine
from cedana_gpu.cr.janitor import Janitor
from cedana_gpu.cr.pipeline import Phase, Pipeline, fault_point
from cedana_gpu.errors import DumpError, StoreError
from cedana_gpu.jobs import job_stdin, lifecycle, processes, statedir
from cedana_gpu.jobs.store import (
    CHECKPOINTED,
    FAILED,
    FINAL_STATES,
    PENDING,
    RUNNING,
    Checkpoint,
    Job,
    JobStore,
)

if TYPE_CHECKING:  # the checkpoint format is imported by the phases that use it
    from cedana_gpu.checkpoint.manifest import Manifest
    from cedana_gpu.checkpoint.signing import SigningKey

DEFAULT_FREEZE_TIMEOUT_MS = 30_000
CRIU_TIMEOUT_ENV = "CEDANA_CRIU_TIMEOUT"
DEFAULT_CRIU_TIMEOUT = 600.0
DURABLE_ENV = "CEDANA_DUMP_DURABLE"
MAX_STREAMS = 64
"""More shards than this only adds threads and files: no disk is that parallel."""
GPU_STORAGES = ("auto", "host", "custom")
"""The driver engine's places for the GPU memory (``--gpu-storage``)."""
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
    gpu_storage: str = "auto"
    """Driver engine: where the GPU memory goes (``--gpu-storage auto|host|custom``)."""
    progress: bool | None = None
    """Draw progress on stderr: None means when stderr is a terminal."""
    signing_key: Path | None = None
    """Sign the checkpoint with this key file (None: ``CEDANA_CHECKPOINT_SIGNING_KEY``, if set)."""
    durable: bool = field(default_factory=lambda: os.environ.get(DURABLE_ENV, "1") != "0")
    """Verify and fsync before the commit. Only a benchmark of what that costs turns it
    off (``CEDANA_DUMP_DURABLE=0``): without it a crash can lose a job that was dumped."""
    on_phase: Callable[[str], None] | None = None
    """Told each phase's name as it starts (the daemon's progress events)."""
    report: Callable[[str], None] | None = None
    """Where the dump's own notes go, one line each (None: stderr, as ``cedana: ...``)."""


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
            "engine": self.job.gpu_engine,
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


def log_file_keys(root: int, log_path: str | None) -> list[str]:
    """CRIU's ``file[mnt_id:inode]`` keys of the job's log as its processes have it open.

    The log is dumped as an external file and handed to the restored job
    (``--inherit-fd``) as the new job's log: the old one may be gone (a
    migration), and a file opened outside the job's mount namespace could not
    be dumped at all."""
    return open_file_keys(root, log_path)


def open_file_keys(root: int, path: str | None) -> list[str]:
    """CRIU's ``file[mnt_id:inode]`` keys of ``path`` as the job's processes have it open
    (its log; its input FIFO, ``jobs.job_stdin``, handed on the same way)."""
    if not path:
        return []
    keys: list[str] = []
    for pid in processes.tree_pids(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != path:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    fields = dict(
                        line.split(":", 1) for line in f.read().splitlines() if ":" in line
                    )
                mnt_id = int(fields["mnt_id"].strip())
                ino = int(fields["ino"].strip()) if "ino" in fields else os.stat(path).st_ino
            except (OSError, KeyError, ValueError):
                continue
            key = f"file[{mnt_id:x}:{ino:x}]"
            if key not in keys:
                keys.append(key)
    return keys


@dataclass
class DumpContext:
    """What the dump phases share."""

    store: JobStore
    state: Path
    job: Job
    options: DumpOptions
    cid: str
    base: Path
    """The directory the checkpoint goes in."""
    final: Path
    partial: Path
    freeze_ms: int
    show: bool
    """Draw progress on stderr."""
    timings: dict[str, float]
    """The pipeline's timings so far (the manifest records them)."""
    mount_ns: bool = False
    scratch: Path | None = None
    """A private directory in memory where the engine may have CRIU dump first
    (``GpuEngine.criu_dir``); the write phase empties and removes it."""
    images: Path | None = None
    """Where CRIU dumped (None: not yet)."""
    client: control.ControlClient | None = None
    engine: GpuEngine | None = None
    gpu: GpuDump = field(default_factory=GpuDump)
    log_keys: list[str] = field(default_factory=list)
    host_mounts: dict[str, str] = field(default_factory=dict)
    """The host's mounts CRIU dumped as external (key: mount point; cr/host_mounts.py)."""
    stdin_keys: list[str] = field(default_factory=list)
    stdin_closed: bool = False
    stopped: bool = False
    """CRIU left the job's tree stopped (``--leave-stopped``)."""
    key: SigningKey | None = None
    staged: Path | None = None
    """The archive under its temporary name (``.<id>.tar.partial``); None for a directory."""
    manifest: Manifest | None = None
    recorded: bool = False
    """The store has the checkpoint's row (pending until the store phase)."""
    committed: bool = False
    """The checkpoint has its final name."""
    consistent: bool = False
    """CRIU finished while the job's controller lived: the GPU state and the
    processes in the checkpoint are of the same moment."""
    janitor: Janitor | None = None
    checkpoint: Checkpoint | None = None
    """The checkpoint, once committed in the job store (the store phase)."""
    released: bool = False
    """The job was ended as dumped (``release``)."""
    _keep: bool | None = None

    def keeps_checkpoint(self) -> bool:
        """Whether the undos leave the checkpoint: the job was lost (its
        controller died) after a consistent checkpoint of it was recorded,
        which is then all that is left of it. Decided once, at the first undo."""
        if self._keep is None:
            self._keep = (
                self.checkpoint is not None
                and self.consistent
                and self.job.gpu
                and not processes.process_alive(self.job.controller_pid)
            )
        return self._keep


# ---- the phases, in order ----------------------------------------------------------


def make_directory(ctx: DumpContext) -> None:
    if ctx.base.exists() and not ctx.base.is_dir():
        raise DumpError(
            f"{ctx.base} is a file, not a directory: give --dir a directory (it is created "
            "if missing)"
        )
    try:
        if ctx.options.directory is None:
            statedir.ensure_private_dir(ctx.base.parent)
        ctx.base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise DumpError(
            f"cannot create the checkpoint directory {ctx.base}: {e.strerror or e}"
        ) from None
    except statedir.StateDirError as e:
        raise DumpError(f"cannot create the checkpoint directory {ctx.base}: {e}") from None
    # The paths the checkpoint is recorded under have no symbolic links.
    resolved = ctx.base.resolve()
    ctx.final = resolved / ctx.final.name
    ctx.partial = resolved / ctx.partial.name
    ctx.base = resolved
    if ctx.staged is not None:
        ctx.staged = resolved / ctx.staged.name
    # The row goes in first, pending, naming this process: whatever a crash
    # leaves from here on is attributable, and the next operation cleans it
    # up or lists it (``cr.recovery``).
    o = ctx.options
    ctx.store.add_checkpoint(
        Checkpoint(
            id=ctx.cid,
            jid=ctx.job.jid,
            path=str(ctx.final),
            size=0,
            compression=o.compression,
            streams=o.streams,
            leave_running=o.leave_running,
            generation=ctx.job.generation,
            status=PENDING,
            owner=processes.process_identity(),
        )
    )
    ctx.recorded = True
    try:
        ctx.partial.mkdir(mode=0o700)
        fault_point()
        (ctx.partial / "criu").mkdir(mode=0o700)
    except OSError as e:
        raise DumpError(f"cannot create {ctx.partial}: {e.strerror}") from None
    from cedana_gpu.checkpoint import partial_path

    ctx.janitor = Janitor(
        [ctx.partial, partial_path(ctx.final), ctx.final, *([ctx.scratch] if ctx.scratch else [])]
    )


def remove_partial(ctx: DumpContext) -> None:
    shutil.rmtree(ctx.partial, ignore_errors=True)
    if ctx.scratch is not None:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    if ctx.staged is not None:
        ctx.staged.unlink(missing_ok=True)
    if ctx.recorded and not ctx.keeps_checkpoint():
        ctx.store.delete_checkpoint(ctx.cid)
        ctx.recorded = False


def connect(ctx: DumpContext) -> None:
    assert ctx.job.socket_path
    try:
        ctx.client = control.ControlClient(Path(ctx.job.socket_path))
    except control.ControlError as e:
        raise DumpError(f"cannot reach the controller of job {ctx.job.jid}: {e}") from None
    ctx.engine = dump_engine(
        ctx.job, ctx.client, show_progress=ctx.show, storage=ctx.options.gpu_storage
    )


def disconnect(ctx: DumpContext) -> None:
    if ctx.client is not None:
        ctx.client.close()


def is_gpu(ctx: DumpContext) -> bool:
    return ctx.job.gpu


def is_plain(ctx: DumpContext) -> bool:
    return not ctx.job.gpu


def hold(ctx: DumpContext) -> None:
    """A job without GPU is not frozen, but its controller must still know a
    dump holds it: if this process dies while CRIU has the job stopped, the
    controller continues the job."""
    assert ctx.client is not None
    try:
        ctx.client.call({"op": "hold"}, timeout=30)
    except control.ControlError as e:
        raise DumpError(f"job {ctx.job.jid}: {e}") from None


def unhold(ctx: DumpContext) -> None:
    assert ctx.client is not None
    # As unfreeze_quietly: a controller that cannot be told lets go of the
    # job itself when the connection closes.
    with contextlib.suppress(control.ControlError):
        ctx.client.call({"op": "unfreeze"}, timeout=30)


def freeze(ctx: DumpContext) -> None:
    assert ctx.engine is not None
    ctx.engine.freeze(ctx.freeze_ms)


def unfreeze_quietly(ctx: DumpContext) -> None:
    assert ctx.engine is not None
    # A controller that cannot be told (it died, the connection broke) is no
    # failure of the undo: a live one unfreezes the job when the connection
    # closes (the next undo), and a dead one's job cannot go on anyway.
    with contextlib.suppress(DumpError):
        ctx.engine.unfreeze()


def dump_gpu(ctx: DumpContext) -> None:
    assert ctx.engine is not None
    ctx.gpu = ctx.engine.dump_gpu(
        ctx.partial, compression=ctx.options.compression, streams=ctx.options.streams
    )


def criu_dump(ctx: DumpContext) -> None:
    job, options = ctx.job, ctx.options
    assert job.pid is not None
    criu_log = statedir.job_dir(ctx.state, job.jid) / "criu-dump.log"
    images = ctx.partial / "criu"
    if ctx.engine is not None and ctx.scratch is not None:
        try:
            images = ctx.engine.criu_dir(ctx.partial, ctx.scratch)
        except OSError as e:
            raise DumpError(f"cannot create {ctx.scratch}: {e.strerror}") from None
    ctx.images = images
    args = ["dump", "-t", str(job.pid), "-D", str(images)]
    args.append("--leave-running" if options.leave_running else "--leave-stopped")
    if ctx.mount_ns:
        args += ["--external", "mnt[/dev/shm]:shm"]
        try:
            foreign = host_mounts.of_process(job.pid, managed=frozenset({"/dev/shm"}))
        except FileNotFoundError:
            raise DumpError(f"job {job.jid} ended before CRIU could dump it") from None
        except OSError as e:
            raise DumpError(f"cannot read job {job.jid}'s mounts: {e.strerror}") from None
        mount_args, ctx.host_mounts = host_mounts.dump_args(foreign)
        args += mount_args
    ctx.log_keys = log_file_keys(job.pid, job.log_path)
    fifo = job_stdin.fifo_path(statedir.job_dir(ctx.state, job.jid))
    ctx.stdin_keys = open_file_keys(job.pid, str(fifo)) if fifo.exists() else []
    if ctx.stdin_keys and ctx.client is not None:
        # Input closed by its clients stays closed in the restored job.
        with contextlib.suppress(control.ControlError):
            ctx.stdin_closed = not ctx.client.call({"op": "info"}, timeout=30).get("stdin", True)
    for key in ctx.log_keys + ctx.stdin_keys:
        args += ["--external", key]
    # Set first: CRIU may stop the tree and then fail, and the undo must continue it.
    ctx.stopped = not options.leave_running
    try:
        criu.run_criu(
            args, log_file=criu_log, timeout=_env_number(CRIU_TIMEOUT_ENV, DEFAULT_CRIU_TIMEOUT)
        )
    except (criu.CriuError, criu.CriuNotFound) as e:
        raise DumpError(f"CRIU could not dump job {job.jid}: {e}") from None
    ctx.consistent = processes.process_alive(ctx.job.controller_pid)
    with contextlib.suppress(OSError):
        shutil.copyfile(criu_log, ctx.partial / "criu" / "dump.log")


def continue_stopped(ctx: DumpContext) -> None:
    if ctx.stopped and ctx.job.pid:
        processes.continue_tree(ctx.job.pid)
        ctx.stopped = False


def leaves_running_gpu(ctx: DumpContext) -> bool:
    return ctx.options.leave_running and ctx.job.gpu


def leaves_running_plain(ctx: DumpContext) -> bool:
    return ctx.options.leave_running and not ctx.job.gpu


def thaw(ctx: DumpContext) -> None:
    """With ``--leave-running`` the job goes on as soon as CRIU has it, before the archive."""
    assert ctx.engine is not None
    ctx.engine.unfreeze()


@contextlib.contextmanager
def _dump_errors(what: str) -> Iterator[None]:
    """A phase's file errors as its one line: ``what`` failed, and why."""
    from cedana_gpu.checkpoint import CheckpointError

    try:
        yield
    except CheckpointError as e:
        raise DumpError(f"{what}: {e}") from None
    except OSError as e:
        raise DumpError(f"{what}: {e.strerror or e}") from None


def write(ctx: DumpContext) -> None:
    """The manifest: every file's size and checksum, the GPU regions; signed with a key."""
    from cedana_gpu.checkpoint import (
        SHARD_DIR,
        JobInfo,
        Manifest,
        RegionRecord,
        file_records,
        save_manifest,
        shard_name,
        signing,
        write_regions,
    )
    from cedana_gpu.controller import native

    job, options, partial, gpu = ctx.job, ctx.options, ctx.partial, ctx.gpu
    with _dump_errors(f"cannot write the checkpoint of job {job.jid}"):
        regions_file = partial / ".gpu-regions.json"
        regions: list[RegionRecord] = []
        if regions_file.exists():
            regions = [RegionRecord.from_json(r) for r in json.loads(regions_file.read_text())]
            regions_file.unlink()
        images = None
        if ctx.engine is not None:
            # The engine's part of CRIU's images (the driver engine: the page
            # images, which hold the GPU memory, into the shards).
            images = ctx.engine.pack_images(
                partial,
                compression=options.compression,
                streams=options.streams,
                images=ctx.images or partial / "criu",
            )
            if ctx.scratch is not None:
                shutil.rmtree(ctx.scratch, ignore_errors=True)
            if images.criu_pages:
                regions = list(images.regions)
                gpu.va_base, gpu.va_size = 0, images.va_size
                gpu.bytes, gpu.regions = images.va_size, len(regions)
                ctx.timings["criu_pages"] = images.seconds
        if not job.gpu:
            # No device memory: the shards are there, empty, as in any checkpoint.
            write_regions(partial / SHARD_DIR, [], _no_read, options.streams, options.compression)
        files = file_records(partial, native.checksum)
        info = JobInfo(
            id=job.jid,
            cmd=list(job.cmd),
            segment_name=job.segment or "",
            segment_size=gpu.segment_size,
            generation=job.generation,
            cwd=job.cwd,
            driver=job.driver if job.gpu else None,
            geometry=dict(gpu.geometry),
            persistent_mounts=list(job.persistent_mounts),
            uid=os.geteuid(),
            gid=os.getegid(),
            extra={
                "gpu": job.gpu,
                **({"engine": ctx.engine.engine} if ctx.engine is not None else {}),
                "log_path": job.log_path,
                "log_files": ctx.log_keys,
                "stdin_files": ctx.stdin_keys,
                **({"stdin_closed": True} if ctx.stdin_closed else {}),
                "mount_namespace": ctx.mount_ns,
                **({"host_mounts": ctx.host_mounts} if ctx.host_mounts else {}),
                "pid_namespace": job.pid_namespace,
                "checkpoint_id": ctx.cid,
                "restored_from": job.restored_from,
            },
        )
        phases_now = dict(ctx.timings)
        phases_now.update(
            {k if k.startswith("gpu") else f"gpu_{k}": v for k, v in gpu.phases.items()}
        )
        manifest = Manifest(
            job=info,
            va_base=gpu.va_base,
            va_size=gpu.va_size,
            compression=options.compression,
            streams=options.streams,
            regions=regions,
            files=files,
            device=dict(gpu.device),
            phases=phases_now,
            criu_pages=list(images.criu_pages) if images is not None else [],
        )
        if ctx.key is not None:
            shards = [
                f"{SHARD_DIR}/{shard_name(i, options.compression)}" for i in range(options.streams)
            ]
            signing.sign(manifest, partial, shards, ctx.key)
        save_manifest(manifest, partial)
        fault_point()
        ctx.manifest = manifest


def verify(ctx: DumpContext) -> None:
    """Read back what was written before trusting it with the job.

    The manifest is loaded again (its own checksum round trip) and must be
    the one written; every file it lists must have the size it records, and
    every shard the size its regions account for; each region's bytes are
    read back, decoded and checked against the checksum taken from the
    device. What this catches: a short or torn write, a codec fault, a file
    changed behind our back. The other files' checksums are not computed
    again: ``write`` computed them from these same bytes a moment ago. Reads
    come from the page cache (the files were just written), so it costs a
    pass over the device memory at memory speed, not a disk read."""
    from cedana_gpu.checkpoint import (
        SHARD_DIR,
        CheckpointError,
        load_manifest,
        read_regions,
        verify_layout,
    )
    from cedana_gpu.controller import native

    partial = ctx.partial
    try:
        fault_point()
        loaded = load_manifest(partial)
        if loaded != ctx.manifest:
            raise CheckpointError("the manifest read back is not the one written")
        verify_layout(partial, loaded)
        for rec in loaded.files:
            size = os.stat(partial / rec.path).st_size
            if size != rec.size:
                raise CheckpointError(f"{rec.path} has {size} bytes, {rec.size} were written")
        read_regions(
            partial / SHARD_DIR,
            loaded.regions,
            _discard,
            loaded.streams,
            loaded.compression,
            native.checksum,
        )
    except CheckpointError as e:
        raise DumpError(
            f"the checkpoint did not read back as written ({e}): check the disk"
        ) from None
    except OSError as e:
        raise DumpError(f"cannot read back the checkpoint: {e.strerror or e}") from None


def is_archive_dump(ctx: DumpContext) -> bool:
    from cedana_gpu.checkpoint import is_archive

    return is_archive(ctx.options.compression)


def pack_archive(ctx: DumpContext) -> None:
    """One file (``.tar``), written under its temporary name; the commit renames it."""
    from cedana_gpu.checkpoint import pack, path_size
    from cedana_gpu.checkpoint.progress import Progress

    assert ctx.staged is not None
    with _dump_errors(f"cannot write the checkpoint of job {ctx.job.jid}"):
        with Progress("archive", path_size(ctx.partial), enabled=ctx.show) as bar:
            pack(ctx.partial, ctx.staged, ctx.options.compression, bar, rename=False)
        fault_point()


def is_durable(ctx: DumpContext) -> bool:
    return ctx.options.durable


def sync(ctx: DumpContext) -> None:
    """Every file and directory of the checkpoint on disk (fsync) before the rename."""
    from cedana_gpu.checkpoint.durable import fsync_file, sync_tree

    with _dump_errors(f"cannot save the checkpoint of job {ctx.job.jid}"):
        fault_point()
        if ctx.staged is not None:
            fsync_file(ctx.staged)
        else:
            sync_tree(ctx.partial)


def commit(ctx: DumpContext) -> None:
    """The rename that makes the checkpoint whole, then its directory synced: from
    here a crash leaves the complete checkpoint (``cr.recovery`` lists it)."""
    from cedana_gpu.checkpoint.durable import fsync_dir

    src = ctx.staged if ctx.staged is not None else ctx.partial
    with _dump_errors(f"cannot save the checkpoint of job {ctx.job.jid}"):
        fault_point()
        os.rename(src, ctx.final)
        ctx.committed = True
        if ctx.options.durable:
            fsync_dir(ctx.base)
    if ctx.staged is not None:
        # The archive holds everything: the unpacked tree it was made from goes.
        shutil.rmtree(ctx.partial, ignore_errors=True)


def record_checkpoint(ctx: DumpContext) -> None:
    """The store lists the checkpoint (its row, pending since the start, is
    committed) before the job is killed: a dump stopped after this leaves a
    job that lives on in a listed checkpoint."""
    from cedana_gpu.checkpoint import path_size

    try:
        size = path_size(ctx.final)
        fault_point()
        done = ctx.store.commit_checkpoint(ctx.cid, size=size, phases=dict(ctx.timings))
    except OSError as e:
        raise DumpError(f"cannot record checkpoint {ctx.cid}: {e.strerror or e}") from None
    except StoreError as e:
        raise DumpError(f"cannot record checkpoint {ctx.cid}: {e}") from None
    if not done:
        raise DumpError(f"the job store lost the record of checkpoint {ctx.cid}: dump again")
    ctx.checkpoint = ctx.store.get_checkpoint(ctx.cid)
    if ctx.janitor is not None:
        ctx.janitor.keep()


def uncommit(ctx: DumpContext) -> None:
    if ctx.committed and not ctx.keeps_checkpoint():
        _remove(ctx.final)
        ctx.committed = False


def ends_the_job(ctx: DumpContext) -> bool:
    return not ctx.options.leave_running


def release(ctx: DumpContext) -> None:
    """The job lives on in its checkpoint: end it."""
    assert ctx.client is not None and ctx.job.pid is not None
    try:
        ctx.client.call({"op": "dumped"}, timeout=30)
    except control.ControlError as e:
        if not processes.process_alive(ctx.job.controller_pid):
            raise DumpError(f"the controller of job {ctx.job.jid} is gone") from None
        raise DumpError(f"job {ctx.job.jid}: {e}") from None
    processes.signal_job(ctx.job.pid, ctx.job.pid_namespace, signal.SIGKILL)
    ctx.stopped = False
    ctx.released = True


def record(ctx: DumpContext) -> None:
    if not ctx.options.leave_running:
        ctx.job = _wait_final(ctx.store, ctx.job.jid)
    disconnect(ctx)


DUMP_PHASES: list[Phase[DumpContext]] = [
    Phase("directory", make_directory, undo=remove_partial),
    Phase("connect", connect, undo=disconnect, io=False),
    Phase("hold", hold, undo=unhold, when=is_plain, io=False),
    Phase("freeze", freeze, undo=unfreeze_quietly, timing="freeze", when=is_gpu, io=False),
    Phase("gpu_dump", dump_gpu, timing="gpu_dump", when=is_gpu),
    Phase("criu_dump", criu_dump, undo=continue_stopped, timing="criu_dump"),
    Phase("thaw", thaw, when=leaves_running_gpu, io=False),
    Phase("unhold", unhold, when=leaves_running_plain, io=False),
    Phase("write", write, timing="write"),
    Phase("verify", verify, timing="verify", when=is_durable),
    Phase("pack", pack_archive, timing="archive", when=is_archive_dump),
    Phase("sync", sync, timing="sync", when=is_durable),
    Phase("commit", commit, undo=uncommit, timing="commit"),
    Phase("store", record_checkpoint),
    Phase("release", release, when=ends_the_job, irreversible=True, io=False),
    Phase("record", record, io=False),
]


def dump_job(store: JobStore, state: Path, job: Job, options: DumpOptions) -> DumpResult:
    """Checkpoint ``job`` (running). Raises DumpError (one line); the job then runs on."""
    from cedana_gpu.checkpoint import (
        CheckpointError,
        check_compression,
        is_archive,
        partial_path,
        signing,
    )

    require_root()
    try:
        check_compression(options.compression)
    except CheckpointError as e:
        raise DumpError(str(e)) from None
    if not 1 <= options.streams <= MAX_STREAMS:
        raise DumpError(f"--stream must be between 1 and {MAX_STREAMS}, not {options.streams}")
    if options.gpu_storage not in GPU_STORAGES:
        raise DumpError(
            f"--gpu-storage {options.gpu_storage!r}: choose one of {', '.join(GPU_STORAGES)}"
        )
    try:
        key = signing.configured_key(options.signing_key)
    except CheckpointError as e:
        raise DumpError(str(e)) from None
    report = options.report or _report
    recovery.recover(store, state, job.jid, report)
    job = lifecycle.refresh(store, job)
    if job.state != RUNNING or not job.pid:
        raise DumpError(f"job {job.jid} is not running ({lifecycle.describe(job)})")
    if not job.socket_path:
        raise DumpError(f"job {job.jid} has no controller to talk to")
    stopped = processes.stopped_pids(job.pid)
    if stopped:
        # Frozen by someone else (SIGSTOP, a debugger): its GPU work cannot drain,
        # and CRIU would capture it stopped (its restore would be stopped too).
        raise DumpError(
            f"job {job.jid} is stopped (process {stopped[0]} is in state T): continue it "
            f"(kill -CONT {stopped[0]}) and dump again"
        )

    cid = checkpoint_id(job.jid)
    base = options.directory or statedir.checkpoints_dir(state, job.jid)
    base = base.absolute()
    pipeline = Pipeline(DUMP_PHASES, name="dump", observer=options.on_phase)
    if options.report is not None:
        pipeline.report = options.report
    ctx = DumpContext(
        store=store,
        state=state,
        job=job,
        options=options,
        cid=cid,
        base=base,
        final=base / (cid + (".tar" if is_archive(options.compression) else "")),
        partial=partial_path(base / cid),
        staged=partial_path(base / (cid + ".tar")) if is_archive(options.compression) else None,
        key=key,
        freeze_ms=options.freeze_timeout_ms
        or int(_env_number(FREEZE_TIMEOUT_ENV, DEFAULT_FREEZE_TIMEOUT_MS)),
        show=sys.stderr.isatty() if options.progress is None else options.progress,
        timings=pipeline.timings,
        mount_ns=job_is_mount_ns(job),
        scratch=Path("/dev/shm") / f"cedana-gpu-dump.{cid}",
    )
    t_start = time.monotonic()
    try:
        phases = pipeline.run_telling(ctx, settle, DumpError)
    finally:
        if ctx.janitor is not None:
            ctx.janitor.close()
    phases["total"] = time.monotonic() - t_start
    store.set_checkpoint_phases(cid, phases)
    ckpt = ctx.checkpoint
    assert ckpt is not None  # the store phase committed it
    ckpt.phases = phases
    return DumpResult(
        checkpoint=ckpt,
        job=store.require(job.jid),
        gpu_bytes=ctx.gpu.bytes,
        regions=ctx.gpu.regions,
        phases=phases,
    )


def _report(line: str) -> None:
    print(f"cedana: {line}", file=sys.stderr)


def settle(ctx: DumpContext) -> str:
    """After a failed or interrupted dump, its undos done: what became of the
    job, and what to do, in one clause (the end of the dump's one line); a
    job that lost its controller is ended and recorded first."""
    job = ctx.job
    restore = f"restore it with 'cedana restore job {job.jid}'"
    if ctx.released:
        return f"job {job.jid} was checkpointed as {ctx.cid}: {restore}"
    controller_alive = processes.process_alive(job.controller_pid)
    now = ctx.store.get(job.jid)
    if now is not None and now.state in FINAL_STATES:
        # The job ended on its own account (killed, exited) while it was being
        # dumped, and its controller recorded that and went: nothing was lost
        # to the dump. A checkpoint CRIU finished before is whole and kept.
        ended = f"job {job.jid} ended during the dump ({lifecycle.describe(now)})"
        if ctx.keeps_checkpoint():
            return f"{ended}, but checkpoint {ctx.cid} was complete: {restore}"
        return f"{ended}; no checkpoint was made"
    if job.gpu and not controller_alive:
        _end_lost_job(ctx)
        if ctx.keeps_checkpoint():
            return (
                f"job {job.jid} is lost (its controller died during the dump), "
                f"but checkpoint {ctx.cid} was complete: {restore}"
            )
        return (
            f"job {job.jid} is lost: its controller died during the dump, before a "
            "checkpoint was complete (restore an earlier checkpoint, if it has one)"
        )
    if not processes.process_alive(job.pid):
        return f"job {job.jid} has ended (see 'cedana ps'); no checkpoint was made"
    if not controller_alive:
        return (
            f"job {job.jid} runs on, but its controller died: its end will not be "
            "recorded; no checkpoint was made"
        )
    return f"job {job.jid} runs on; no checkpoint was made"


def _end_lost_job(ctx: DumpContext) -> None:
    """A GPU job whose controller died has lost its GPU state: end what is
    left of it and record it, so that nothing says it runs."""
    job = ctx.job
    if job.pid:
        processes.signal_job(job.pid, job.pid_namespace, signal.SIGKILL)
        deadline = time.monotonic() + END_TIMEOUT
        while processes.process_alive(job.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    error = "its controller died during a dump"
    if ctx.keeps_checkpoint():
        error += f"; checkpoint {ctx.cid} holds it"
    if ctx.store.finish(job.jid, FAILED, error=error):
        lifecycle.remove_leftovers(job)


def _no_read(addr: int, size: int, dst: memoryview) -> int:
    raise AssertionError("a job without GPU has no device memory to read")


def _discard(addr: int, src: memoryview) -> None:
    """The read-back's device: the bytes were checked on their way here."""


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _wait_final(store: JobStore, jid: str) -> Job:
    """Wait until the killed job and its controller are gone (the controller
    records the job's end, then exits)."""
    deadline = time.monotonic() + END_TIMEOUT
    while True:
        job = store.require(jid)
        if not processes.process_alive(job.controller_pid) and not processes.process_alive(job.pid):
            # A controller killed before it recorded the end of the job, or
            # before it removed its segment, left that to this dump: the job
            # lives on in the checkpoint recorded before it was killed.
            store.finish(jid, CHECKPOINTED)
            lifecycle.remove_leftovers(job)
            return store.require(jid)
        if time.monotonic() > deadline:
            return lifecycle.refresh(store, job)
        time.sleep(0.02)
