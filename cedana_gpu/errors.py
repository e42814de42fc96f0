"""The one error hierarchy of cedana-gpu.

Every error a user can act on derives from ``CedanaError`` and reads as one
line that says what happened and what to do; the CLI prints ``str(err)`` and
exits non-zero, so a traceback is always a bug. Modules define their specific
errors as subclasses of the family below that fits, so a caller can catch a
whole family (``except CheckpointError``) without knowing every module.

    CedanaError
    ├── SetupError        something the installation lacks (native build, CRIU, driver)
    ├── StoreError        the job store / state directory
    ├── JobError          starting, signalling or following a job
    ├── ControllerError   a job's GPU controller (start-up, control socket, native dispatcher)
    ├── CheckpointError   a checkpoint on disk (format, manifest, codecs)
    │   └── CorruptCheckpoint  refused before anything starts
    ├── DumpError         a dump failed; the job runs on
    └── RestoreError      a restore failed; nothing half-restored stays
"""

from __future__ import annotations


class CedanaError(Exception):
    """Base of every error a user can act on (one line, says what to do)."""


class SetupError(CedanaError):
    """The installation lacks something: the native build, CRIU, a driver."""


class StoreError(CedanaError):
    """The job store or the state directory cannot be used."""


class JobError(CedanaError):
    """A job could not be started, signalled or followed."""


class ControllerError(CedanaError):
    """A job's GPU controller failed or could not be reached."""


class CheckpointError(CedanaError):
    """A checkpoint on disk cannot be used."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint failed verification; it is refused before anything starts."""


class DumpError(CedanaError):
    """A dump failed; the job runs on (one line saying why)."""


class RestoreError(CedanaError):
    """A restore failed; nothing half-restored stays behind."""
