"""The library's objects to and from the API's messages.

The CLI formats the library's own objects (``Job``, ``Checkpoint``, the dump
and restore documents) whether they came from an in-process call or from
the daemon: the daemon turns them into messages here and the client turns
the messages back, so both ways print the same. ``tests/test_daemon_units.py``
holds every conversion to a round trip.
"""

from __future__ import annotations

import json
from typing import Any

from cedana_gpu.daemon.ops import CheckpointDetail, JobDetail
from cedana_gpu.daemon.proto import daemon_pb2 as pb
from cedana_gpu.jobs.store import Checkpoint, Job

_JOB_OPTIONAL = (
    "exit_code",
    "signal",
    "pid",
    "controller_pid",
    "driver",
    "cwd",
    "log_path",
    "socket_path",
    "error",
    "shm_dir",
    "segment",
    "restored_from",
    "engine",
)
_JOB_PLAIN = ("jid", "state", "pid_namespace", "gpu", "generation", "created_at", "updated_at")


def phases_to_pb(phases: dict[str, float]) -> list[pb.PhaseTime]:
    return [pb.PhaseTime(name=k, seconds=v) for k, v in phases.items()]


def phases_from_pb(phases: Any) -> dict[str, float]:
    return {p.name: p.seconds for p in phases}


def job_to_pb(job: Job, *, status: str = "", policy: tuple[float, int] | None = None) -> pb.Job:
    msg = pb.Job(cmd=list(job.cmd), persistent_mounts=list(job.persistent_mounts), status=status)
    for name in _JOB_PLAIN:
        setattr(msg, name, getattr(job, name))
    for name in _JOB_OPTIONAL:
        value = getattr(job, name)
        if value is not None:
            setattr(msg, name, value)
    if policy is not None:
        msg.policy.every, msg.policy.keep = policy
    return msg


def job_from_pb(msg: pb.Job) -> Job:
    values: dict[str, Any] = {name: getattr(msg, name) for name in _JOB_PLAIN}
    for name in _JOB_OPTIONAL:
        values[name] = getattr(msg, name) if msg.HasField(name) else None
    return Job(cmd=list(msg.cmd), persistent_mounts=list(msg.persistent_mounts), **values)


def policy_from_pb(msg: pb.Job) -> tuple[float, int] | None:
    return (msg.policy.every, msg.policy.keep) if msg.policy.every > 0 else None


_CKPT_PLAIN = (
    "id",
    "jid",
    "path",
    "size",
    "compression",
    "streams",
    "leave_running",
    "generation",
    "created",
    "status",
)


def checkpoint_to_pb(ckpt: Checkpoint) -> pb.Checkpoint:
    msg = pb.Checkpoint(phases=phases_to_pb(ckpt.phases))
    for name in _CKPT_PLAIN:
        setattr(msg, name, getattr(ckpt, name))
    if ckpt.owner is not None:
        msg.owner = ckpt.owner
    return msg


def checkpoint_from_pb(msg: pb.Checkpoint) -> Checkpoint:
    values: dict[str, Any] = {name: getattr(msg, name) for name in _CKPT_PLAIN}
    return Checkpoint(
        phases=phases_from_pb(msg.phases),
        owner=msg.owner if msg.HasField("owner") else None,
        **values,
    )


_DUMP_KEYS = (
    "checkpoint",
    "job",
    "path",
    "size",
    "compression",
    "streams",
    "leave_running",
    "generation",
    "gpu_bytes",
    "regions",
    "engine",
    "phases",
    "job_state",
)
"""``DumpResult.to_json()``'s keys, in its order (so both ways print the same JSON)."""
_DUMP_OPTIONAL = ("engine",)


def dump_to_pb(doc: dict[str, Any]) -> pb.DumpResp:
    """``DumpResult.to_json()`` as a message."""
    plain = {k: doc[k] for k in _DUMP_KEYS if k != "phases" and k not in _DUMP_OPTIONAL}
    msg = pb.DumpResp(**plain, phases=phases_to_pb(doc["phases"]))
    for key in _DUMP_OPTIONAL:
        if doc.get(key) is not None:
            setattr(msg, key, doc[key])
    return msg


def dump_from_pb(msg: pb.DumpResp) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for k in _DUMP_KEYS:
        if k == "phases":
            doc[k] = phases_from_pb(msg.phases)
        elif k in _DUMP_OPTIONAL:
            doc[k] = getattr(msg, k) if msg.HasField(k) else None
        else:
            doc[k] = getattr(msg, k)
    return doc


_RESTORE_KEYS = ("job", "state", "generation", "path", "signature", "phases")
_RESTORE_OPTIONAL = {"pid": "pid", "checkpoint": "checkpoint", "controller_pid": "controller_pid"}


def restore_to_pb(doc: dict[str, Any]) -> pb.RestoreResp:
    """``RestoreResult.to_json()`` as a message."""
    msg = pb.RestoreResp(
        **{k: doc[k] for k in _RESTORE_KEYS if k != "phases"}, phases=phases_to_pb(doc["phases"])
    )
    for key in _RESTORE_OPTIONAL:
        if doc.get(key) is not None:
            setattr(msg, key, doc[key])
    return msg


def restore_from_pb(msg: pb.RestoreResp) -> dict[str, Any]:
    """The message as ``RestoreResult.to_json()`` (the same keys, in the same order)."""
    return {
        "job": msg.job,
        "pid": msg.pid if msg.HasField("pid") else None,
        "state": msg.state,
        "generation": msg.generation,
        "checkpoint": msg.checkpoint if msg.HasField("checkpoint") else None,
        "path": msg.path,
        "controller_pid": msg.controller_pid if msg.HasField("controller_pid") else None,
        "signature": msg.signature,
        "phases": phases_from_pb(msg.phases),
    }


def detail_to_pb(detail: JobDetail) -> pb.GetResp:
    msg = pb.GetResp(job=job_to_pb(detail.job, status=detail.status, policy=detail.policy))
    if detail.live is not None:
        msg.live_json = json.dumps(detail.live)
    if detail.live_error is not None:
        msg.live_error = detail.live_error
    return msg


def detail_from_pb(msg: pb.GetResp) -> JobDetail:
    return JobDetail(
        job=job_from_pb(msg.job),
        status=msg.job.status,
        policy=policy_from_pb(msg.job),
        live=json.loads(msg.live_json) if msg.HasField("live_json") else None,
        live_error=msg.live_error if msg.HasField("live_error") else None,
    )


def checkpoint_detail_to_pb(detail: CheckpointDetail) -> pb.GetCheckpointResp:
    msg = pb.GetCheckpointResp(checkpoint=checkpoint_to_pb(detail.checkpoint))
    if detail.manifest is not None:
        msg.manifest_json = json.dumps(detail.manifest)
    if detail.manifest_error is not None:
        msg.manifest_error = detail.manifest_error
    return msg


def checkpoint_detail_from_pb(msg: pb.GetCheckpointResp) -> CheckpointDetail:
    return CheckpointDetail(
        checkpoint=checkpoint_from_pb(msg.checkpoint),
        manifest=json.loads(msg.manifest_json) if msg.HasField("manifest_json") else None,
        manifest_error=msg.manifest_error if msg.HasField("manifest_error") else None,
    )
