"""The controller's side of the driver engine: the GPUs a checkpoint was made on,
and where its GPU state goes on restore.

Dump: ``describe`` (the loaded driver's GPUs by index, UUID, name and memory,
and its version) is written as ``gpu/devices.json``
(``schemas/gpu-devices-v1.schema.json``). The device memory itself is not
here: the driver's checkpoint staged it in the job's host memory, which CRIU
saves.

Restore: ``plan_pairs`` decides the ``gpuPairs`` of the driver's restore:
none when every GPU of the checkpoint is on this machine (the driver restores
onto the same UUIDs), else each missing GPU goes on a free GPU of the same
model (``--gpu-map OLD=NEW`` says it explicitly); a GPU that cannot be placed
refuses the restore in one line, before anything is restored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cedana_gpu.checkpoint.schema import load_schema, validate
from cedana_gpu.errors import CheckpointError, ControllerError

DEVICES_NAME = "devices.json"
"""In the checkpoint's ``gpu/``."""
SCHEMA_NAME = "gpu-devices"
VERSION = 2
"""The newest version read and written: 2 for custom storage (``storage``, ``memory``);
a host-staged checkpoint is still written as version 1, which older readers know."""
HOST_VERSION = 1
FORMAT = "cedana-gpu-devices"


class GpuMapError(ControllerError):
    """The checkpoint's GPUs cannot be placed on this machine's (one line)."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    total_memory_bytes: int

    def label(self) -> str:
        return f"GPU {self.index} ({self.name}, {self.uuid})"


def describe(driver: str, api: dict[str, Any]) -> dict[str, Any]:
    """``gpu/devices.json`` for the loaded driver (call after ``driver_api.init``)."""
    from cedana_gpu import gpu_info
    from cedana_gpu.cr import driver_api

    devices = gpu_info.list_devices(driver, source="cuda")  # type: ignore[arg-type]
    return {
        "format": FORMAT,
        "version": HOST_VERSION,
        "engine": "driver",
        "driver": driver,
        "driver_version": driver_api.driver_version(),
        "api": api,
        "devices": [d.to_json() for d in devices],
    }


def with_custom_storage(doc: dict[str, Any], memory: list[dict[str, int]]) -> dict[str, Any]:
    """``doc`` (``describe``) for GPU memory copied into the shards: version 2."""
    return {**doc, "version": VERSION, "storage": "custom", "memory": memory}


def storage(doc: dict[str, Any]) -> str:
    """``host`` or ``custom`` (version 1 documents are host-staged)."""
    return str(doc.get("storage") or "host")


def save(directory: Path, doc: dict[str, Any]) -> Path:
    validate(doc, load_schema(SCHEMA_NAME, int(doc["version"])), DEVICES_NAME)
    path = directory / DEVICES_NAME
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    return path


def load(directory: Path) -> dict[str, Any]:
    """``gpu/devices.json`` checked against its schema (``CheckpointError``, one line)."""
    path = directory / DEVICES_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: not a driver engine checkpoint, or an incomplete one"
        ) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if isinstance(doc, dict) and isinstance(doc.get("version"), int) and doc["version"] > VERSION:
        raise CheckpointError(
            f"{path} is version {doc['version']}, newer than this cedana-gpu reads: upgrade"
        )
    version = doc.get("version") if isinstance(doc, dict) else None
    validate(
        doc,
        load_schema(SCHEMA_NAME, version if version in (HOST_VERSION, VERSION) else VERSION),
        str(path),
    )
    return doc


def gpus(doc_devices: Sequence[dict[str, Any]]) -> list[Gpu]:
    return [
        Gpu(int(d["index"]), str(d["uuid"]), str(d["name"]), int(d["total_memory_bytes"]))
        for d in doc_devices
    ]


def parse_gpu_map(items: Sequence[str]) -> list[tuple[str, str]]:
    """``OLD=NEW`` strings (UUIDs or indices) -> pairs; GpuMapError for a malformed one."""
    out = []
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise GpuMapError(f"--gpu-map {item!r}: give OLD=NEW (GPU UUIDs or indices)")
        out.append((old.strip(), new.strip()))
    return out


def _find(spec: str, devices: Sequence[Gpu], where: str) -> Gpu:
    for d in devices:
        if spec == d.uuid or spec == str(d.index):
            return d
    known = ", ".join(f"{d.index}={d.uuid}" for d in devices) or "none"
    raise GpuMapError(f"--gpu-map: {spec!r} is not a GPU of {where} (it has {known})")


def plan_pairs(
    old: Sequence[Gpu], new: Sequence[Gpu], explicit: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]] | None:
    """The (old UUID, new UUID) pairs of the driver's restore; None: no remapping.

    Every GPU of the checkpoint is placed: as ``explicit`` says, else on
    itself when this machine has it, else on an unused GPU of the same name
    (the same index preferred). The driver refuses a GPU of another chip or
    with too little memory; a different name or too little memory is refused
    here first, in one line, before anything is restored."""
    chosen: dict[str, Gpu] = {}
    for old_spec, new_spec in explicit:
        o = _find(old_spec, old, "the checkpoint")
        n = _find(new_spec, new, "this machine")
        if o.uuid in chosen:
            raise GpuMapError(f"--gpu-map names the checkpoint's {o.label()} twice")
        chosen[o.uuid] = n
    present = {d.uuid: d for d in new}
    if not explicit and all(o.uuid in present for o in old):
        return None
    for o in old:
        if o.uuid in chosen:
            continue
        if o.uuid in present and present[o.uuid] not in chosen.values():
            chosen[o.uuid] = present[o.uuid]
            continue
        used = set(chosen.values())
        same = [n for n in new if n.name == o.name and n not in used and n.uuid not in
                {x.uuid for x in old if x.uuid != o.uuid}]  # fmt: skip
        same.sort(key=lambda n: (n.index != o.index, n.index))
        if not same:
            models = ", ".join(sorted({n.name for n in new})) or "none"
            raise GpuMapError(
                f"the checkpoint's {o.label()} is not on this machine and no free GPU of "
                f"that model is (this machine has: {models}): give --gpu-map OLD=NEW"
            )
        chosen[o.uuid] = same[0]
    for o in old:
        n = chosen[o.uuid]
        if n.name != o.name:
            raise GpuMapError(
                f"cannot restore the checkpoint's {o.label()} onto {n.label()}: another "
                "model (the driver restores only onto GPUs of the same chip)"
            )
        if n.total_memory_bytes < o.total_memory_bytes:
            raise GpuMapError(
                f"cannot restore the checkpoint's {o.label()} onto {n.label()}: it has less memory"
            )
    if len({n.uuid for n in chosen.values()}) != len(chosen):
        raise GpuMapError("--gpu-map puts two of the checkpoint's GPUs on one GPU")
    pairs = [(o.uuid, chosen[o.uuid].uuid) for o in old]
    if all(a == b for a, b in pairs):
        return None
    return pairs
