"""The controller's control socket: a unix SOCK_SEQPACKET socket per job.

``<state>/jobs/<jid>/control.sock``, mode 0600, in a 0700 directory; the
server also checks the peer's credentials (the job's user or root). Each
message is one JSON object: a request ``{"op": "info", ...}`` and its answer
``{"ok": true, ...}`` or ``{"ok": false, "error": "<one line>"}``. A
connection may carry several requests, one after the other.

Ops are a table (``ControlServer.handlers``): the controller registers
``info``, ``shutdown``, ``freeze``, ``unfreeze``, ``dump_gpu`` and ``dumped``.
Each connection is served by a thread of its own, so a handler can tell
connections apart by ``threading.get_ident()``; ``on_disconnect`` is called in
that thread when its connection ends. A dump holds one connection from
``freeze`` to the end (``ControlClient``): if the client goes away mid-dump,
the controller unfreezes the job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cedana_gpu.errors import ControllerError
from cedana_gpu.jobs import statedir

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 16
"""Largest request or answer, in bytes."""

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 for the NUL

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(ControllerError):
    """A control request could not be made or was refused (printed as one line)."""


@contextlib.contextmanager
def _short_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits in sun_path.

    Paths longer than 107 bytes (deep test or state directories) are reached
    through the directory's file descriptor: /proc/self/fd/<n>/<name>.
    """
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        data = json.dumps({"ok": False, "error": "answer too large"}).encode()
    sock.send(data)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a JSON message: {e}") from None
    if not isinstance(value, dict):
        raise ValueError("a message must be a JSON object")
    return value


class ControlServer:
    """Answers control requests on ``path`` from threads of its own."""

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.on_disconnect = on_disconnect
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._allowed_uids = {0, os.getuid()}

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            with _short_address(self.path) as address:
                sock.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and remove the socket file. Connections in hand finish."""
        self._closing.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            # shutdown wakes the thread blocked in accept(); close alone would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                log.exception("control socket: accept failed")
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="control-conn", daemon=True
            ).start()

    def _peer_allowed(self, conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in self._allowed_uids

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not self._peer_allowed(conn):
                    _send(conn, {"ok": False, "error": "permission denied"})
                    return
                while True:
                    data = conn.recv(MAX_MESSAGE)
                    if not data:
                        return
                    _send(conn, self.handle(data))
            except OSError as e:
                log.debug("control connection ended: %s", e)
            finally:
                if self.on_disconnect is not None:
                    try:
                        self.on_disconnect()
                    except Exception:  # the server thread must end quietly
                        log.exception("control: on_disconnect failed")

    def handle(self, data: bytes) -> dict[str, Any]:
        """The answer to one request message."""
        try:
            request = _decode(data)
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return {"ok": False, "error": f"unknown op {op!r} (known: {known})"}
        try:
            answer = handler(request)
        except ControlError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug in a handler must not kill the server
            log.exception("control op %s failed", op)
            return {"ok": False, "error": f"{op} failed: {type(e).__name__}: {e}"}
        return {"ok": True, **answer}


def _connect(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with _short_address(path) as address:
            sock.connect(address)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError(f"no controller is listening on {path}") from None
    except OSError as e:
        sock.close()
        raise ControlError(f"cannot reach the controller at {path}: {e.strerror}") from None
    return sock


def _exchange(
    sock: socket.socket, path: Path, message: dict[str, Any], timeout: float | None
) -> dict[str, Any]:
    _send_request(sock, path, message, timeout)
    return _accepted(_receive(sock, path, timeout))


@contextlib.contextmanager
def _socket_errors(path: Path, timeout: float | None) -> Iterator[None]:
    """A request's socket errors as the one line a user reads."""
    try:
        yield
    except TimeoutError:
        raise ControlError(
            f"the controller at {path} did not answer within {timeout:g} s"
        ) from None
    except OSError as e:
        raise ControlError(f"control request to {path} failed: {e.strerror}") from None


def _send_request(
    sock: socket.socket, path: Path, message: dict[str, Any], timeout: float | None
) -> None:
    sock.settimeout(timeout)
    with _socket_errors(path, timeout):
        _send(sock, message)


def _receive(sock: socket.socket, path: Path, timeout: float | None) -> dict[str, Any]:
    """The next answer on ``sock``, refused or not."""
    sock.settimeout(timeout)
    with _socket_errors(path, timeout):
        data = sock.recv(MAX_MESSAGE)
    if not data:
        raise ControlError(f"the controller at {path} closed the connection")
    try:
        return _decode(data)
    except ValueError as e:
        raise ControlError(f"bad answer from the controller at {path}: {e}") from None


def _accepted(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error") or "request refused"))
    return answer


def request(path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the control socket at ``path`` and return the answer.

    Raises ControlError when there is no controller there, it does not answer
    within ``timeout`` seconds, or it refuses the request.
    """
    with _connect(path, timeout) as sock:
        return _exchange(sock, path, message, timeout)


class ControlClient:
    """One connection to a controller, for a sequence of requests that belong
    together (a dump: freeze, dump_gpu, dumped or unfreeze). Closing it (or
    the client's death) ends the sequence: a controller left frozen by it
    unfreezes the job."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self._sock: socket.socket | None = _connect(self.path, timeout)
        self._unanswered = 0
        """Requests sent whose answer was not read (the wait was interrupted or timed out)."""

    def call(self, message: dict[str, Any], timeout: float | None = 10.0) -> dict[str, Any]:
        """Send ``message`` and return the answer; ``timeout`` None waits as long as it takes.

        An earlier request whose wait was cut short (Ctrl-C, SIGTERM, a
        timeout) may still be answered: that answer is read and dropped
        first, within ``timeout``, or this request would take it for its own
        (a dump interrupted during ``dump_gpu`` then unfreezes the job once
        the controller has stopped writing)."""
        sock = self._sock
        if sock is None:
            raise ControlError(f"the connection to {self.path} is closed")
        while self._unanswered:
            _receive(sock, self.path, timeout)
            self._unanswered -= 1
        _send_request(sock, self.path, message, timeout)
        self._unanswered += 1
        answer = _receive(sock, self.path, timeout)
        self._unanswered -= 1
        return _accepted(answer)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def socket_path(state: Path, jid: str) -> Path:
    return statedir.job_dir(state, jid) / statedir.CONTROL_SOCKET


def control_request(
    jid: str,
    message: dict[str, Any],
    timeout: float = 10.0,
    state: Path | None = None,
) -> dict[str, Any]:
    """Send ``message`` to job ``jid``'s controller (in ``state``, default this
    user's state directory) and return its answer."""
    state = statedir.state_dir(create=False) if state is None else state
    return request(socket_path(state, jid), message, timeout)
