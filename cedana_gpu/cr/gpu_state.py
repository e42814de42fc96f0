"""The controller's side of a checkpoint: its GPU state to and from a checkpoint directory.

Dump (the job frozen): ``dump_gpu`` writes ``<ckpt>/gpu/``: the handle tables
and module images (``cgc_export_state``: ``state.json``, ``modules/``), the
device memory in N shards (``checkpoint.shards.write_regions`` reading with
``cgc_read_device``), and the pinned host memory files' contents
(``pins/<id>.bin``: CRIU does not save /dev/shm files' contents). The region
records go to ``<ckpt>/.gpu-regions.json`` for the CLI to put in the manifest
(there may be 100,000 of them: too many for a control message).

Restore (a fresh dispatcher opened with the checkpoint's geometry, address
range and segment name): ``restore_gpu`` re-creates the pinned files with
their saved contents, imports the state (``cgc_import_state``: mappings at
the same addresses, modules, handles) and writes every region back
(``checkpoint.shards.read_regions`` with ``cgc_write_device``), each
region's checksum verified before its bytes reach the device.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from cedana_gpu.controller import shm_layout
from cedana_gpu.cr.pipeline import fault_point
from cedana_gpu.errors import ControllerError

GPU_DIR = "gpu"
PINS_DIR = "pins"
REGIONS_FILE = ".gpu-regions.json"
"""Region records of a dump in progress, in the checkpoint's top directory;
the CLI moves them into the manifest and removes the file."""

_PIN_RE = re.compile(r"\.pin\.(\d+)$")


class GpuStateError(ControllerError):
    """The GPU state could not be dumped or restored (one line saying why)."""


class Counter:
    """A progress sink the control socket's ``progress`` op can read while a
    dump or restore runs in another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.phase = ""
        self.done = 0
        self.total = 0

    def reset(self, phase: str, total: int) -> None:
        with self._lock:
            self.phase, self.done, self.total = phase, 0, total

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"phase": self.phase, "done": self.done, "total": self.total}


def pin_id(path: Path) -> int | None:
    m = _PIN_RE.search(path.name)
    return int(m.group(1)) if m else None


def _copy_file(src: Path, dst: Path) -> int:
    """Copy ``src`` to a new file ``dst`` (mode 0600); its size."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            return fout.tell()


def dump_gpu(
    dispatcher: Any,
    ckpt_dir: Path,
    *,
    shm_dir: Path,
    segment: str,
    compression: str,
    streams: int,
    progress: Counter | None = None,
) -> dict[str, Any]:
    """Write the frozen job's GPU state into ``ckpt_dir``/gpu. Returns what the
    manifest needs besides the regions: bytes, counts, timings, geometry."""
    from cedana_gpu.checkpoint.manifest import CheckpointError
    from cedana_gpu.checkpoint.shards import write_regions
    from cedana_gpu.controller.native import NativeError

    if streams < 1:
        raise GpuStateError(f"--stream must be at least 1, not {streams}")
    gpu_dir = ckpt_dir / GPU_DIR
    phases: dict[str, float] = {}
    t0 = time.monotonic()
    try:
        gpu_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = dispatcher.info()
        dispatcher.export_state(gpu_dir)
        # The dump's gpu_dump phase runs in the CLI; its I/O is done here.
        fault_point("dump.gpu_dump")
        t1 = time.monotonic()
        phases["gpu_state"] = t1 - t0
        regions = dispatcher.regions()
        total = sum(size for _addr, size in regions)
        if progress is not None:
            progress.reset("gpu dump", total)

        def read_fn(addr: int, size: int, dst: memoryview) -> int:
            return int(dispatcher.read_device(addr, dst, size))

        records = write_regions(gpu_dir, regions, read_fn, streams, compression, progress)
        t2 = time.monotonic()
        phases["gpu_memory"] = t2 - t1
        pins = shm_layout.pin_files(shm_dir, segment)
        pin_bytes = 0
        if pins:
            (gpu_dir / PINS_DIR).mkdir(mode=0o700, exist_ok=True)
        for path in pins:
            pid = pin_id(path)
            if pid is None:
                continue
            pin_bytes += _copy_file(path, gpu_dir / PINS_DIR / f"{pid}.bin")
        phases["gpu_pins"] = time.monotonic() - t2
        with open(ckpt_dir / REGIONS_FILE, "w") as f:
            json.dump([r.to_json() for r in records], f, separators=(",", ":"))
    except NativeError as e:
        raise GpuStateError(str(e)) from None
    except CheckpointError as e:
        raise GpuStateError(str(e)) from None
    except OSError as e:
        raise GpuStateError(f"cannot write {e.filename or gpu_dir}: {e.strerror}") from None
    return {
        "bytes": total,
        "regions": len(regions),
        "records": len(records),
        "pins": len(pins),
        "pin_bytes": pin_bytes,
        "seconds": time.monotonic() - t0,
        "phases": phases,
        "geometry": {
            "ring_slots": int(info.get("ring_slots", 0)),
            "nchannels": int(info.get("channels", 0)),
            "staging_size": int(info.get("staging_size", 0)),
        },
        "segment_size": int(info.get("segment_size", 0)),
        "va_base": int(info.get("va_base", 0)),
        "va_size": int(info.get("va_size", 0)),
        "device": {
            "devices": info.get("devices"),
            "driver_version": info.get("driver_version"),
            "granularity": info.get("granularity"),
            "allocations": info.get("allocations"),
            "bytes": info.get("bytes"),
            "modules": info.get("modules"),
            "functions": info.get("functions"),
            "streams": info.get("streams"),
            "events": info.get("events"),
            "contexts": info.get("contexts"),
        },
    }


def recreate_pins(ckpt_dir: Path, shm_dir: Path, segment: str, uid: int, gid: int) -> int:
    """Re-create the pinned host memory files with their saved contents, under
    the names the job has mapped. Returns how many."""
    pins_dir = ckpt_dir / GPU_DIR / PINS_DIR
    if not pins_dir.is_dir():
        return 0
    n = 0
    for src in sorted(pins_dir.glob("*.bin")):
        if not src.stem.isdigit():
            continue
        dst = shm_dir / f"{segment}.pin.{int(src.stem)}"
        try:
            _copy_file(src, dst)
            if os.geteuid() == 0:
                os.chown(dst, uid, gid)
        except OSError as e:
            raise GpuStateError(
                f"cannot re-create the pinned memory file {dst}: {e.strerror}"
            ) from None
        n += 1
    return n


def restore_gpu(
    dispatcher: Any,
    ckpt_dir: Path,
    manifest: Any,
    *,
    shm_dir: Path,
    segment: str,
    progress: Counter | None = None,
) -> dict[str, float]:
    """Rebuild the dumped GPU state on ``dispatcher`` (opened, not started). Times per phase."""
    from cedana_gpu.checkpoint.manifest import CheckpointError
    from cedana_gpu.checkpoint.shards import read_regions
    from cedana_gpu.controller import native
    from cedana_gpu.controller.native import NativeError

    phases: dict[str, float] = {}
    t0 = time.monotonic()
    gpu_dir = ckpt_dir / GPU_DIR
    try:
        recreate_pins(ckpt_dir, shm_dir, segment, os.getuid(), os.getgid())
        fault_point()
        t1 = time.monotonic()
        phases["gpu_pins"] = t1 - t0
        dispatcher.import_state(gpu_dir)
        t2 = time.monotonic()
        phases["gpu_state"] = t2 - t1
        if progress is not None:
            progress.reset("gpu restore", manifest.gpu_bytes)

        def write_fn(addr: int, src: memoryview) -> None:
            dispatcher.write_device(addr, src, len(src))

        read_regions(
            gpu_dir,
            manifest.regions,
            write_fn,
            manifest.streams,
            manifest.compression,
            native.checksum,
            progress,
        )
        phases["gpu_memory"] = time.monotonic() - t2
    except NativeError as e:
        raise GpuStateError(str(e)) from None
    except CheckpointError as e:
        raise GpuStateError(str(e)) from None
    except OSError as e:
        raise GpuStateError(f"cannot read {e.filename or gpu_dir}: {e.strerror}") from None
    return phases
