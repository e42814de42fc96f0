from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Job(_message.Message):
    __slots__ = ("jid", "cmd", "state", "status", "exit_code", "signal", "pid", "pid_namespace", "controller_pid", "gpu", "driver", "cwd", "log_path", "socket_path", "error", "generation", "created_at", "updated_at", "shm_dir", "segment", "persistent_mounts", "restored_from", "policy", "engine")
    JID_FIELD_NUMBER: _ClassVar[int]
    CMD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PID_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_PID_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    SOCKET_PATH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SHM_DIR_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FROM_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    jid: str
    cmd: _containers.RepeatedScalarFieldContainer[str]
    state: str
    status: str
    exit_code: int
    signal: int
    pid: int
    pid_namespace: bool
    controller_pid: int
    gpu: bool
    driver: str
    cwd: str
    log_path: str
    socket_path: str
    error: str
    generation: int
    created_at: float
    updated_at: float
    shm_dir: str
    segment: str
    persistent_mounts: _containers.RepeatedScalarFieldContainer[str]
    restored_from: str
    policy: CheckpointPolicy
    engine: str
    def __init__(self, jid: _Optional[str] = ..., cmd: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., status: _Optional[str] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., pid: _Optional[int] = ..., pid_namespace: _Optional[bool] = ..., controller_pid: _Optional[int] = ..., gpu: _Optional[bool] = ..., driver: _Optional[str] = ..., cwd: _Optional[str] = ..., log_path: _Optional[str] = ..., socket_path: _Optional[str] = ..., error: _Optional[str] = ..., generation: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., shm_dir: _Optional[str] = ..., segment: _Optional[str] = ..., persistent_mounts: _Optional[_Iterable[str]] = ..., restored_from: _Optional[str] = ..., policy: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., engine: _Optional[str] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("every", "keep")
    EVERY_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    every: float
    keep: int
    def __init__(self, every: _Optional[float] = ..., keep: _Optional[int] = ...) -> None: ...

class RunReq(_message.Message):
    __slots__ = ("cmd", "jid", "gpu", "gpu_driver", "gpu_engine", "persistent_mounts", "env", "cwd", "policy", "stdin")
    CMD_FIELD_NUMBER: _ClassVar[int]
    JID_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    GPU_DRIVER_FIELD_NUMBER: _ClassVar[int]
    GPU_ENGINE_FIELD_NUMBER: _ClassVar[int]
    PERSISTENT_MOUNTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    cmd: _containers.RepeatedScalarFieldContainer[str]
    jid: str
    gpu: bool
    gpu_driver: str
    gpu_engine: str
    persistent_mounts: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.RepeatedScalarFieldContainer[str]
    cwd: str
    policy: CheckpointPolicy
    stdin: bool
    def __init__(self, cmd: _Optional[_Iterable[str]] = ..., jid: _Optional[str] = ..., gpu: _Optional[bool] = ..., gpu_driver: _Optional[str] = ..., gpu_engine: _Optional[str] = ..., persistent_mounts: _Optional[_Iterable[str]] = ..., env: _Optional[_Iterable[str]] = ..., cwd: _Optional[str] = ..., policy: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., stdin: _Optional[bool] = ...) -> None: ...

class RunResp(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetReq(_message.Message):
    __slots__ = ("jid", "live")
    JID_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    jid: str
    live: bool
    def __init__(self, jid: _Optional[str] = ..., live: _Optional[bool] = ...) -> None: ...

class GetResp(_message.Message):
    __slots__ = ("job", "live_json", "live_error")
    JOB_FIELD_NUMBER: _ClassVar[int]
    LIVE_JSON_FIELD_NUMBER: _ClassVar[int]
    LIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    job: Job
    live_json: str
    live_error: str
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., live_json: _Optional[str] = ..., live_error: _Optional[str] = ...) -> None: ...

class ListReq(_message.Message):
    __slots__ = ("jids",)
    JIDS_FIELD_NUMBER: _ClassVar[int]
    jids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, jids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListResp(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class KillReq(_message.Message):
    __slots__ = ("jid",)
    JID_FIELD_NUMBER: _ClassVar[int]
    jid: str
    def __init__(self, jid: _Optional[str] = ...) -> None: ...

class KillResp(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteReq(_message.Message):
    __slots__ = ("jid", "checkpoints")
    JID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    jid: str
    checkpoints: bool
    def __init__(self, jid: _Optional[str] = ..., checkpoints: _Optional[bool] = ...) -> None: ...

class DeleteResp(_message.Message):
    __slots__ = ("jid", "deleted_checkpoints")
    JID_FIELD_NUMBER: _ClassVar[int]
    DELETED_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    jid: str
    deleted_checkpoints: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, jid: _Optional[str] = ..., deleted_checkpoints: _Optional[_Iterable[str]] = ...) -> None: ...

class AttachReq(_message.Message):
    __slots__ = ("jid", "stdin", "offset", "close_stdin")
    JID_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CLOSE_STDIN_FIELD_NUMBER: _ClassVar[int]
    jid: str
    stdin: bytes
    offset: int
    close_stdin: bool
    def __init__(self, jid: _Optional[str] = ..., stdin: _Optional[bytes] = ..., offset: _Optional[int] = ..., close_stdin: _Optional[bool] = ...) -> None: ...

class AttachResp(_message.Message):
    __slots__ = ("output", "ended")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    output: bytes
    ended: Job
    def __init__(self, output: _Optional[bytes] = ..., ended: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class FreezeReq(_message.Message):
    __slots__ = ("jid", "timeout_ms")
    JID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    jid: str
    timeout_ms: int
    def __init__(self, jid: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class FreezeResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UnfreezeReq(_message.Message):
    __slots__ = ("jid",)
    JID_FIELD_NUMBER: _ClassVar[int]
    jid: str
    def __init__(self, jid: _Optional[str] = ...) -> None: ...

class UnfreezeResp(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DumpReq(_message.Message):
    __slots__ = ("jid", "pid", "dir", "compression", "stream", "leave_running", "signing_key", "gpu_storage")
    JID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DIR_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LEAVE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_FIELD_NUMBER: _ClassVar[int]
    GPU_STORAGE_FIELD_NUMBER: _ClassVar[int]
    jid: str
    pid: int
    dir: str
    compression: str
    stream: int
    leave_running: bool
    signing_key: str
    gpu_storage: str
    def __init__(self, jid: _Optional[str] = ..., pid: _Optional[int] = ..., dir: _Optional[str] = ..., compression: _Optional[str] = ..., stream: _Optional[int] = ..., leave_running: _Optional[bool] = ..., signing_key: _Optional[str] = ..., gpu_storage: _Optional[str] = ...) -> None: ...

class DumpResp(_message.Message):
    __slots__ = ("checkpoint", "job", "path", "size", "compression", "streams", "leave_running", "generation", "gpu_bytes", "regions", "phases", "job_state", "engine")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    LEAVE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    GPU_BYTES_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    JOB_STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    checkpoint: str
    job: str
    path: str
    size: int
    compression: str
    streams: int
    leave_running: bool
    generation: int
    gpu_bytes: int
    regions: int
    phases: _containers.RepeatedCompositeFieldContainer[PhaseTime]
    job_state: str
    engine: str
    def __init__(self, checkpoint: _Optional[str] = ..., job: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., compression: _Optional[str] = ..., streams: _Optional[int] = ..., leave_running: _Optional[bool] = ..., generation: _Optional[int] = ..., gpu_bytes: _Optional[int] = ..., regions: _Optional[int] = ..., phases: _Optional[_Iterable[_Union[PhaseTime, _Mapping]]] = ..., job_state: _Optional[str] = ..., engine: _Optional[str] = ...) -> None: ...

class RestoreReq(_message.Message):
    __slots__ = ("jid", "path", "new_jid", "gpu_driver", "signing_key", "allow_unsigned", "gpu_map")
    JID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NEW_JID_FIELD_NUMBER: _ClassVar[int]
    GPU_DRIVER_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNSIGNED_FIELD_NUMBER: _ClassVar[int]
    GPU_MAP_FIELD_NUMBER: _ClassVar[int]
    jid: str
    path: str
    new_jid: str
    gpu_driver: str
    signing_key: str
    allow_unsigned: bool
    gpu_map: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, jid: _Optional[str] = ..., path: _Optional[str] = ..., new_jid: _Optional[str] = ..., gpu_driver: _Optional[str] = ..., signing_key: _Optional[str] = ..., allow_unsigned: _Optional[bool] = ..., gpu_map: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreResp(_message.Message):
    __slots__ = ("job", "pid", "state", "generation", "checkpoint", "path", "controller_pid", "signature", "phases")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_PID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    job: str
    pid: int
    state: str
    generation: int
    checkpoint: str
    path: str
    controller_pid: int
    signature: str
    phases: _containers.RepeatedCompositeFieldContainer[PhaseTime]
    def __init__(self, job: _Optional[str] = ..., pid: _Optional[int] = ..., state: _Optional[str] = ..., generation: _Optional[int] = ..., checkpoint: _Optional[str] = ..., path: _Optional[str] = ..., controller_pid: _Optional[int] = ..., signature: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[PhaseTime, _Mapping]]] = ...) -> None: ...

class PhaseTime(_message.Message):
    __slots__ = ("name", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    seconds: float
    def __init__(self, name: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "done", "total")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class DumpEvent(_message.Message):
    __slots__ = ("progress", "log", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    log: str
    result: DumpResp
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., log: _Optional[str] = ..., result: _Optional[_Union[DumpResp, _Mapping]] = ...) -> None: ...

class RestoreEvent(_message.Message):
    __slots__ = ("progress", "log", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    log: str
    result: RestoreResp
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., log: _Optional[str] = ..., result: _Optional[_Union[RestoreResp, _Mapping]] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("id", "jid", "path", "size", "compression", "streams", "leave_running", "generation", "phases", "created", "status", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    JID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    LEAVE_RUNNING_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    jid: str
    path: str
    size: int
    compression: str
    streams: int
    leave_running: bool
    generation: int
    phases: _containers.RepeatedCompositeFieldContainer[PhaseTime]
    created: float
    status: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., jid: _Optional[str] = ..., path: _Optional[str] = ..., size: _Optional[int] = ..., compression: _Optional[str] = ..., streams: _Optional[int] = ..., leave_running: _Optional[bool] = ..., generation: _Optional[int] = ..., phases: _Optional[_Iterable[_Union[PhaseTime, _Mapping]]] = ..., created: _Optional[float] = ..., status: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class GetCheckpointReq(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetCheckpointResp(_message.Message):
    __slots__ = ("checkpoint", "manifest_json", "manifest_error")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_ERROR_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    manifest_json: str
    manifest_error: str
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., manifest_json: _Optional[str] = ..., manifest_error: _Optional[str] = ...) -> None: ...

class ListCheckpointsReq(_message.Message):
    __slots__ = ("jid",)
    JID_FIELD_NUMBER: _ClassVar[int]
    jid: str
    def __init__(self, jid: _Optional[str] = ...) -> None: ...

class ListCheckpointsResp(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ...) -> None: ...

class DeleteCheckpointReq(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteCheckpointResp(_message.Message):
    __slots__ = ("checkpoint",)
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ...) -> None: ...

class PruneCheckpointsReq(_message.Message):
    __slots__ = ("jid", "keep")
    JID_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    jid: str
    keep: int
    def __init__(self, jid: _Optional[str] = ..., keep: _Optional[int] = ...) -> None: ...

class PruneCheckpointsResp(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedCompositeFieldContainer[Checkpoint]
    def __init__(self, deleted: _Optional[_Iterable[_Union[Checkpoint, _Mapping]]] = ...) -> None: ...

class SetCheckpointPolicyReq(_message.Message):
    __slots__ = ("jid", "policy")
    JID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    jid: str
    policy: CheckpointPolicy
    def __init__(self, jid: _Optional[str] = ..., policy: _Optional[_Union[CheckpointPolicy, _Mapping]] = ...) -> None: ...

class SetCheckpointPolicyResp(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class HealthCheckReq(_message.Message):
    __slots__ = ("full",)
    FULL_FIELD_NUMBER: _ClassVar[int]
    full: bool
    def __init__(self, full: _Optional[bool] = ...) -> None: ...

class HealthResult(_message.Message):
    __slots__ = ("name", "status", "detail", "hint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: str
    detail: str
    hint: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[str] = ..., detail: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class DaemonInfo(_message.Message):
    __slots__ = ("version", "pid", "state_dir", "address", "started")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_DIR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    state_dir: str
    address: str
    started: float
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., state_dir: _Optional[str] = ..., address: _Optional[str] = ..., started: _Optional[float] = ...) -> None: ...

class HealthCheckResp(_message.Message):
    __slots__ = ("daemon", "results")
    DAEMON_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    daemon: DaemonInfo
    results: _containers.RepeatedCompositeFieldContainer[HealthResult]
    def __init__(self, daemon: _Optional[_Union[DaemonInfo, _Mapping]] = ..., results: _Optional[_Iterable[_Union[HealthResult, _Mapping]]] = ...) -> None: ...
