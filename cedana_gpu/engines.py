"""The GPU engines' names, and which one a job gets.

Two engines sit under one CLI (``../shared/DESIGN.md``): ``intercept`` (the
interposer forwards the job's driver calls to its controller, which owns the
GPU context) and ``driver`` (the job loads the driver itself; its controller
drives the driver's own checkpoint API, ``cuCheckpointProcess*``, on the
job's pid). ``auto`` starts a job intercepted; the interposer may hand it to
the driver engine (``Controller.current_engine``).

Kept free of imports so that the CLI, the controller and the store can all
use it.
"""

from __future__ import annotations

INTERCEPT = "intercept"
DRIVER = "driver"
AUTO = "auto"
ENGINES = (INTERCEPT, DRIVER)
"""What a job runs under (the store's ``engine`` column, a checkpoint's ``job.engine``)."""
CHOICES = (AUTO, INTERCEPT, DRIVER)
"""What ``--gpu-engine`` accepts."""

ENGINE_ENV = "CEDANA_GPU_ENGINE"
"""The default of ``--gpu-engine`` (else ``auto``)."""


class BadEngine(ValueError):
    """Not an engine name (``str()`` is the one line)."""


def check_choice(value: str, where: str = "--gpu-engine") -> str:
    if value not in CHOICES:
        raise BadEngine(f"{where}={value!r} is not a GPU engine: use {', '.join(CHOICES)}")
    return value


def default_choice(environ: dict[str, str] | None = None) -> str:
    """``$CEDANA_GPU_ENGINE`` if set, else ``auto``."""
    import os

    env = os.environ if environ is None else environ
    value = env.get(ENGINE_ENV, "").strip() or AUTO
    return check_choice(value, ENGINE_ENV)


def initial_engine(choice: str) -> str:
    """The engine a new job starts under: ``auto`` starts intercepted."""
    check_choice(choice)
    return INTERCEPT if choice == AUTO else choice


def of_checkpoint(job_doc: dict[str, object]) -> str:
    """The engine a checkpoint's job (``manifest.job`` as JSON, or its ``extra``) ran
    under: checkpoints from before the field existed were all intercepted."""
    value = job_doc.get("engine")
    return value if isinstance(value, str) and value in ENGINES else INTERCEPT
