"""Locate and run CRIU.

The project uses CRIU 4.x from Debian trixie, unpacked into a private prefix
by ``scripts/setup-criu.sh`` (``make setup``) and run through a wrapper at
``<repo>/.criu/bin/criu``. ``CEDANA_CRIU`` points at another binary instead.
CRIU needs root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from cedana_gpu.cr.pipeline import fault_point
from cedana_gpu.errors import CedanaError, SetupError

ENV_VAR = "CEDANA_CRIU"
"""Environment variable naming the criu executable to use."""

DEFAULT_WRAPPER = Path(__file__).resolve().parents[2] / ".criu" / "bin" / "criu"
"""Where ``scripts/setup-criu.sh`` puts its wrapper by default."""

_SETUP_HINT = f"run `make setup` (scripts/setup-criu.sh, as root) or set {ENV_VAR}=/path/to/criu"

# Lines CRIU prints on every run on our machines that mean nothing.
_HARMLESS = ("Can't setup RLIMIT_NOFILE for self",)
# Summary lines that only say that something above went wrong.
_GENERIC = re.compile(r"(Dumping|Restoring|Pre-dumping) FAILED\.?\s*$")
# "(00.012345) " timestamps in CRIU's log.
_TIMESTAMP = re.compile(r"^\(\s*\d+\.\d+\)\s*")


class CriuNotFound(SetupError):
    """No usable criu executable."""


class CriuError(CedanaError):
    """criu ran and failed (or could not be run, or timed out)."""

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        output: str = "",
        log_file: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output
        self.log_file = log_file


def criu_path() -> Path:
    """Return the criu executable to run.

    Order: ``$CEDANA_CRIU``; the wrapper installed by ``scripts/setup-criu.sh``
    in ``<repo>/.criu``; ``criu`` on ``PATH``.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_absolute():
            found = shutil.which(env)
            if found is None:
                raise CriuNotFound(f"{ENV_VAR}={env} is not an executable; {_SETUP_HINT}")
            return Path(found)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise CriuNotFound(f"{ENV_VAR}={env} is not an executable file; {_SETUP_HINT}")
    if DEFAULT_WRAPPER.is_file() and os.access(DEFAULT_WRAPPER, os.X_OK):
        return DEFAULT_WRAPPER
    found = shutil.which("criu")
    if found is not None:
        return Path(found)
    raise CriuNotFound(f"criu not found (looked in {DEFAULT_WRAPPER} and PATH); {_SETUP_HINT}")


def _meaningful_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = _TIMESTAMP.sub("", raw).strip()
        if not line or any(h in line for h in _HARMLESS):
            continue
        lines.append(line)
    return lines


def _last_meaningful_line(text: str) -> str:
    """The line of CRIU's output that best says what went wrong.

    The last ``Error`` line that is not a generic "... FAILED." summary; else the
    last line that is not noise; else "".
    """
    lines = _meaningful_lines(text)
    specific = [ln for ln in lines if not _GENERIC.search(ln)]
    errors = [ln for ln in specific if "Error" in ln]
    for candidates in (errors, specific, lines):
        if candidates:
            return candidates[-1]
    return ""


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def _killed_by(returncode: int) -> str | None:
    """The signal that killed CRIU, by name; None if it exited. A shell in
    between (a wrapper) reports a killed child as 128 + the signal; CRIU's
    own failures are small numbers."""
    signum = -returncode if returncode < 0 else returncode - 128
    if returncode < 0 or returncode > 128:
        try:
            return signal.Signals(signum).name
        except ValueError:
            return None
    return None


def _has_log_option(args: list[str]) -> bool:
    return any(a in ("-o", "--log-file") or a.startswith("--log-file=") for a in args)


def run_criu(
    args: list[str],
    *,
    log_file: Path | None = None,
    timeout: float | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``criu *args`` and return the finished process (text output captured).

    ``pass_fds``: descriptors criu inherits (for ``--inherit-fd``).

    With ``log_file``, CRIU writes its log there (``--log-file``, made absolute,
    since CRIU reads a relative one against the images directory), and a failure
    is explained from that log. Raises ``CriuNotFound`` or ``CriuError``.
    """
    cmd = [str(criu_path()), *args]
    if log_file is not None:
        log_file = log_file.resolve()
        if not _has_log_option(args):
            cmd += ["--log-file", str(log_file)]
    action = next((a for a in args if not a.startswith("-")), "")
    what = f"criu {action}".rstrip()
    # Output to files, not pipes: the tasks of a restore CRIU did not finish
    # (CRIU killed midway) inherit its stdout and stderr and never exit on
    # their own; a pipe would keep this call waiting for them until the timeout.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            fault_point()  # CRIU's phases: running it fails as a real exec error would
            returncode = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                timeout=timeout,
                check=False,
                pass_fds=pass_fds,
            ).returncode
        except subprocess.TimeoutExpired as exc:
            where = f"; see {log_file}" if log_file is not None else ""
            raise CriuError(
                f"{what} timed out after {exc.timeout:g} s{where}", log_file=log_file
            ) from exc
        except OSError as exc:
            # Only a missing or unusable binary is a set-up problem.
            setup = exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC)
            hint = f"; {_SETUP_HINT}" if setup else ""
            raise CriuError(f"cannot run {cmd[0]}: {exc.strerror}{hint}") from exc
        proc = subprocess.CompletedProcess(cmd, returncode, _read(out), _read(err))
    if proc.returncode != 0:
        output = f"{proc.stdout}\n{proc.stderr}"
        where = f" (log: {log_file})" if log_file is not None else ""
        killed = _killed_by(proc.returncode)
        if killed:
            # Its log stops wherever it was: no line of it says why.
            raise CriuError(
                f"{what} was killed by {killed}{where}",
                returncode=proc.returncode,
                output=output,
                log_file=log_file,
            )
        text = output
        if log_file is not None:
            with contextlib.suppress(OSError):
                text = f"{output}\n{log_file.read_text(errors='replace')}"
        reason = _last_meaningful_line(text) or "no output"
        raise CriuError(
            f"{what} failed with exit code {proc.returncode}: {reason}{where}",
            returncode=proc.returncode,
            output=output,
            log_file=log_file,
        )
    return proc


def criu_check(*, timeout: float | None = 60) -> str:
    """Run ``criu check`` and return what it said (``"Looks good."``).

    Raises ``CriuError`` if CRIU does not find this kernel good enough.
    """
    proc = run_criu(["check"], timeout=timeout)
    said = "\n".join(_meaningful_lines(f"{proc.stdout}\n{proc.stderr}"))
    if "Looks good" not in said:
        reason = _last_meaningful_line(said) or "no output"
        raise CriuError(f"criu check did not say 'Looks good': {reason}", output=said)
    return said
