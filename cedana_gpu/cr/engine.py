"""GPU engines: what the dump and restore pipelines need from a GPU checkpoint mechanism.

The pipelines (``cr.dump``, ``cr.restore``) know phases, CRIU, the manifest
and the job store; how a job's GPU state is quiesced, saved and brought back
is an engine's business, behind ``GpuEngine``:

- ``freeze``: the job makes no more GPU progress (dump phase ``freeze``);
- ``dump_gpu``: its GPU state goes into the checkpoint directory (``gpu_dump``);
- ``unfreeze``: it goes on (the undo of ``freeze``; ``--leave-running``);
- ``restore_gpu``: a checkpoint's job comes back with its GPU state.

``InterceptEngine`` is today's: the interposer forwards the job's CUDA calls
to the job's controller, which owns the context; the engine reaches that
controller over its control socket (ops ``freeze``, ``dump_gpu``,
``unfreeze``, ``progress``). Its GPU state is only ever in the controller,
and a restored job must be a child of its controller, so its
``restore_gpu`` starts a controller in restore mode, which rebuilds the GPU
state and then has CRIU bring the processes back below it
(``Controller.run_restore``).

``DriverEngine`` is the driver's own ``cuCheckpointProcess*`` API: the job
loads the driver itself (no interposer) and its controller, which still
supervises it, locks and checkpoints it (``freeze``: device memory into the
job's host memory), writes the GPUs' description (``dump_gpu``:
``gpu/devices.json``), and restores and unlocks it (``unfreeze``). The same
control ops reach it. With host storage (``--gpu-storage host``) its device
memory ends up in CRIU's page images, which ``pack_images`` (after CRIU, in
the ``write`` phase) moves into the compressed, parallel shards; a restore
writes them back, runs CRIU, then has the driver restore the GPU state
(remapped by ``--gpu-map`` or by model) and unlock the job. With custom
storage (CUDA 13.4; the default where the driver offers it) ``freeze`` only
locks, and ``dump_gpu`` checkpoints through the driver's custom storage and
copies the device memory straight into the shards (``cr.driver_storage``);
CRIU's images stay as they are, and a restore feeds the shards back through
the driver's custom restore.

One more step than the interface above: ``pack_images(directory, ...)``
after CRIU's dump: what the engine adds to the checkpoint from CRIU's images
(nothing for the intercept engine).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cedana_gpu import engines
from cedana_gpu.controller import control
from cedana_gpu.engines import AUTO, DRIVER, INTERCEPT
from cedana_gpu.errors import DumpError, RestoreError
from cedana_gpu.jobs import lifecycle, statedir
from cedana_gpu.jobs.store import Job

if TYPE_CHECKING:
    # Only for annotations: importing checkpoint/ is left to the phases that use it.
    from cedana_gpu.checkpoint.manifest import JobInfo

FREEZE_TIMEOUT_ENV = "CEDANA_FREEZE_TIMEOUT_MS"


@dataclass
class GpuDump:
    """What a GPU dump tells the manifest besides the files it wrote."""

    bytes: int = 0
    regions: int = 0
    segment_size: int = 0
    va_base: int = 0
    va_size: int = 0
    geometry: dict[str, int] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """The engine's own timings (reported with a ``gpu_`` prefix)."""

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> GpuDump:
        return cls(
            bytes=int(answer.get("bytes", 0)),
            regions=int(answer.get("regions", 0)),
            segment_size=int(answer.get("segment_size", 0)),
            va_base=int(answer.get("va_base", 0)),
            va_size=int(answer.get("va_size", 0)),
            geometry={k: int(v) for k, v in (answer.get("geometry") or {}).items()},
            device=dict(answer.get("device") or {}),
            phases={k: float(v) for k, v in (answer.get("phases") or {}).items()},
        )


@dataclass
class RestoreSpec:
    """A verified checkpoint to bring back as job ``jid``."""

    directory: Path
    jid: str
    state: Path
    cmd: Sequence[str]
    gpu: bool
    driver: str
    cwd: str
    generation: int
    persistent_mounts: Sequence[str]
    restored_from: str
    """The checkpoint id, or its path when it has none."""
    source: str = ""
    """Where the checkpoint came from (for messages)."""
    progress: bool = False
    gpu_map: Sequence[str] = ()
    """``OLD=NEW`` GPU remappings (driver engine)."""


class GpuEngine(Protocol):
    """A GPU checkpoint mechanism, as the dump and restore pipelines use it.

    Errors are ``DumpError`` (dump side) or ``RestoreError`` (restore side),
    one line each."""

    engine: str
    """Its name (``cedana_gpu.engines``), recorded in the checkpoint."""

    def freeze(self, timeout_ms: int) -> None:
        """Stop the job's GPU work at a consistent point; raise if it did not stop."""
        ...

    def dump_gpu(self, directory: Path, *, compression: str, streams: int) -> GpuDump:
        """Write the frozen job's GPU state under ``directory``."""
        ...

    def unfreeze(self) -> None:
        """Let the job's GPU work go on; nothing to do when it is not frozen."""
        ...

    def restore_gpu(self, spec: RestoreSpec) -> lifecycle.StartedJob:
        """Bring ``spec``'s job back with its GPU state; return once it runs."""
        ...

    def criu_dir(self, directory: Path, scratch: Path) -> Path:
        """Where CRIU dumps the job: ``directory/criu``, or the private ``scratch``
        directory (in memory) that ``pack_images`` then empties into it."""
        ...

    def pack_images(
        self, directory: Path, *, compression: str, streams: int, images: Path
    ) -> ImagesDump:
        """After CRIU's dump into ``images``: what goes into the checkpoint from it."""
        ...


@dataclass
class ImagesDump:
    """What ``pack_images`` adds to the manifest (nothing, for the intercept engine)."""

    regions: list[Any] = field(default_factory=list)
    """``checkpoint.RegionRecord``s of the shards it wrote."""
    criu_pages: list[dict[str, Any]] = field(default_factory=list)
    va_size: int = 0
    seconds: float = 0.0


class InterceptEngine:
    """The interposer's controller, reached over the job's control socket.

    Dump side: one connection from ``freeze`` to the end of the dump (the
    controller unfreezes a job whose freezing connection goes away), shared
    with the dump's other requests to the controller (``dumped``)."""

    def __init__(
        self, client: control.ControlClient | None, *, jid: str = "", show_progress: bool = False
    ) -> None:
        self.client = client
        self.jid = jid
        self.show_progress = show_progress
        self.frozen = False

    def _call(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        if self.client is None:
            raise control.ControlError(f"job {self.jid} has no control connection")
        return self.client.call(message, timeout=timeout)

    def freeze(self, timeout_ms: int) -> None:
        self._freeze({"op": "freeze", "timeout_ms": timeout_ms}, timeout_ms)

    def _freeze(self, request: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
        try:
            answer = self._call(request, timeout=timeout_ms / 1000 + 30)
        except control.ControlError as e:
            hint = ""
            if "timed out" in str(e):
                hint = f"; dump it when it is less busy, or raise {FREEZE_TIMEOUT_ENV}"
            raise DumpError(f"{e}{hint}") from None
        self.frozen = True
        return answer

    def dump_gpu(self, directory: Path, *, compression: str, streams: int) -> GpuDump:
        assert self.client is not None
        request = {
            "op": "dump_gpu",
            "dir": str(directory),
            "compression": compression,
            "streams": streams,
        }
        try:
            with progress_poller(self.client.path, self.show_progress):
                answer = self._call(request, timeout=None)
        except control.ControlError as e:
            raise DumpError(str(e)) from None
        return GpuDump.from_answer(answer)

    def unfreeze(self) -> None:
        if not self.frozen:
            return
        try:
            self._call({"op": "unfreeze"}, timeout=30)
        except control.ControlError as e:
            raise DumpError(f"cannot unfreeze job {self.jid}: {e}") from None
        self.frozen = False

    engine = INTERCEPT

    def criu_dir(self, directory: Path, scratch: Path) -> Path:
        return directory / "criu"

    def pack_images(
        self, directory: Path, *, compression: str, streams: int, images: Path
    ) -> ImagesDump:
        return ImagesDump()

    def restore_gpu(self, spec: RestoreSpec) -> lifecycle.StartedJob:
        if spec.gpu_map:
            raise RestoreError(
                f"--gpu-map applies to driver engine checkpoints; {spec.source or spec.directory} "
                "was made by the intercept engine (its GPU state is restored by cedana itself)"
            )
        return self._start(spec)

    def _start(self, spec: RestoreSpec) -> lifecycle.StartedJob:
        socket = statedir.job_dir(spec.state, spec.jid) / statedir.CONTROL_SOCKET
        try:
            with progress_poller(socket, spec.progress):
                return lifecycle.start_job(
                    spec.cmd,
                    gpu=spec.gpu,
                    driver=spec.driver,
                    jid=spec.jid,
                    state=spec.state,
                    persistent_mounts=spec.persistent_mounts,
                    restore=spec.directory.absolute(),
                    cwd=spec.cwd,
                    generation=spec.generation,
                    restored_from=spec.restored_from,
                    engine=self.engine if spec.gpu else AUTO,
                    gpu_map=spec.gpu_map,
                )
        except lifecycle.JobError as e:
            raise RestoreError(f"cannot restore {spec.source or spec.directory}: {e}") from None


class DriverEngine(InterceptEngine):
    """The driver's own checkpoint API, driven by the job's controller.

    The control ops are the intercept engine's (``freeze``, ``dump_gpu``,
    ``unfreeze``, ``dumped``): the controller does them with the driver's
    API on the job's pid. What differs here: CRIU's page images, which hold
    the GPU memory, go into the shards (``pack_images``), and a restore starts
    the controller as a driver engine one, with the GPU remapping."""

    engine = DRIVER

    def __init__(
        self,
        client: control.ControlClient | None,
        *,
        jid: str = "",
        show_progress: bool = False,
        storage: str = "auto",
    ) -> None:
        super().__init__(client, jid=jid, show_progress=show_progress)
        self.memory = 0
        """The job's resident memory once frozen: about what CRIU's pages will be."""
        self.storage = storage
        """``--gpu-storage`` asked; once frozen, what the controller chose (host, custom)."""

    def freeze(self, timeout_ms: int) -> None:
        request = {"op": "freeze", "timeout_ms": timeout_ms, "storage": self.storage}
        answer = self._freeze(request, timeout_ms)
        self.storage = str(answer.get("storage") or "host")
        if self.storage == "custom":
            return  # the GPU memory goes into the shards, not into CRIU's pages
        if self.client is not None:
            with contextlib.suppress(control.ControlError):
                answer = self.client.call({"op": "info"}, timeout=30)
                self.memory = int(answer.get("resident_bytes") or 0)

    def criu_dir(self, directory: Path, scratch: Path) -> Path:
        """The GPU memory is in CRIU's pages now: they go to memory first when
        they fit (a quarter of the memory available, and of /dev/shm's room),
        so that the checkpoint's disk sees them once, in the shards, not as
        page images and then again as shards."""
        from cedana_gpu.checkpoint.criu_pages import fits_in_memory

        if self.storage == "custom":
            return directory / "criu"  # small: the GPU memory is in the shards already
        if not self.memory or not fits_in_memory(self.memory * 5 // 4):
            return directory / "criu"
        scratch.mkdir(mode=0o700)
        return scratch

    def pack_images(
        self, directory: Path, *, compression: str, streams: int, images: Path
    ) -> ImagesDump:
        from cedana_gpu.checkpoint import criu_pages
        from cedana_gpu.checkpoint.progress import Progress
        from cedana_gpu.controller import native

        if self.storage == "custom":
            return ImagesDump()  # as the intercept engine: the shards hold the GPU memory
        t0 = time.monotonic()
        total = sum(f.size for f in criu_pages.layout(directory, images))
        with Progress("pages", total, enabled=self.show_progress) as bar:
            files, records = criu_pages.pack_pages(
                directory, compression, streams, native.checksum, bar, images=images
            )
        return ImagesDump(
            regions=records,
            criu_pages=[f.to_json() for f in files],
            va_size=sum(f.size for f in files),
            seconds=time.monotonic() - t0,
        )

    def restore_gpu(self, spec: RestoreSpec) -> lifecycle.StartedJob:
        return self._start(spec)


def dump_engine(
    job: Job, client: control.ControlClient, *, show_progress: bool, storage: str = "auto"
) -> GpuEngine | None:
    """The engine that freezes and dumps ``job``'s GPU state; None for a job without GPU.

    The one place the pipelines choose an engine: the one the job's
    controller says the job runs under now (``auto`` jobs start intercepted
    and may be handed to the driver), else the job's row."""
    if not job.gpu:
        return None
    try:
        engine = str(client.call({"op": "engine"}, timeout=30).get("engine") or job.gpu_engine)
    except control.ControlError as e:
        # Not knowing the engine, no engine may dump it: a job handed to a
        # driver without the checkpoint API must not be dumped as intercepted.
        raise DumpError(f"job {job.jid}: {e}") from None
    if engine == DRIVER:
        return DriverEngine(client, jid=job.jid, show_progress=show_progress, storage=storage)
    return InterceptEngine(client, jid=job.jid, show_progress=show_progress)


def restore_engine(job: JobInfo) -> GpuEngine:
    """The engine that brings a checkpoint's job back (see ``dump_engine``): the
    one that made the checkpoint (``job.engine``; intercept before engines).

    Plain jobs too: their restore also goes through a controller in restore
    mode (driver ``none``), which runs CRIU and supervises the job."""
    if job.extra.get("gpu") and engines.of_checkpoint(job.extra) == DRIVER:
        return DriverEngine(None)
    return InterceptEngine(None)


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
