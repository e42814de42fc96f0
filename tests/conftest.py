"""Which CUDA driver the tests run on, and the fixtures that reach it.

The driver is process-global state: once ``cuda.bindings.driver`` has
dlopened ``libcuda.so.1`` it keeps that library for the life of the process.
So each pytest(-xdist) worker loads the driver under test itself, before the
first driver call, with ``RTLD_GLOBAL``: cuda-bindings' later
``dlopen("libcuda.so.1")`` is then answered with the object already loaded
(the loader matches it by SONAME).

The "path" through which the tests reach a driver is chosen with
``CEDANA_TEST_CUDA_PATH``:

``fake`` (default)
    the fake driver, loaded directly.
``interposer``
    the interposer (libcedana-gpu.so), forwarding every call over shared
    memory to a dispatcher (libcedana-gpu-controller.so) that runs the fake
    driver in a server process of its own: one server per worker, started
    when the driver is first needed and stopped (its segment removed) at the
    end of the session. A child process (``run_on_driver``,
    ``DriverPath.child_env``) gets a fresh server of its own, configured by
    the child's FAKE_CUDA_* settings, so that a child which breaks its
    context, or its controller, breaks nothing of the worker's.
``system``
    NVIDIA's libcuda.so.1, loaded directly: the same tests then hold the fake
    driver to the real one.
``system-interposer``
    the interposer in front of a dispatcher that runs NVIDIA's driver.

Where no usable NVIDIA driver is found (tests/system_driver.py), selecting
``system`` or ``system-interposer`` skips every test with that one reason.
Tests marked ``gpu`` (all of tests/gpu) need NVIDIA's driver whatever the
path, and are skipped with the same reason where there is none.

Paths are registered in ``DRIVER_PATHS``; the same tests run through each of
them unchanged, because they only use the fixtures below (``driver_path``,
``libcuda``, ``cu``, ``ctx``, ``run_on_driver``). A test that only makes
sense on some paths says so, with the reason, with
``@pytest.mark.only_paths("fake", ..., reason="...")``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from preload import set_child_preload

REPO = Path(__file__).resolve().parent.parent

# The CLI-with-CRIU fixtures (cedana, native_parts), shared by several modules.
pytest_plugins = ("cr_fixtures", "checkpoint_fuzz")
CUDA_PATH_ENV = "CEDANA_TEST_CUDA_PATH"
DEFAULT_CUDA_PATH = "fake"


@dataclass(frozen=True)
class DriverPath:
    """One way of reaching a CUDA driver from a test process.

    ``libdir`` holds the ``libcuda.so.1`` that a test process loads; ``env``
    is what a child process needs to reach the same driver (library search
    path, preloads, a controller's address...).
    """

    name: str
    libdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    real_gpu: bool = False
    """NVIDIA's driver serves the calls (it takes GPU images, not fake modules)."""

    @property
    def library(self) -> Path:
        return self.libdir / "libcuda.so.1"

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child process running on this driver."""
        env = dict(os.environ)
        # A child must read the driver's configuration from `extra` alone,
        # not inherit a parent's FAKE_CUDA_* settings by accident.
        for key in [k for k in env if k.startswith("FAKE_CUDA_")]:
            del env[key]
        search = [str(self.libdir)]
        if env.get("LD_LIBRARY_PATH"):
            search.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(search)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        env.update(self.env)
        env.update(extra or {})
        return env

    @contextlib.contextmanager
    def child(self, extra: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        """The environment of one child process, valid inside the ``with``.

        A path that needs something running for the child (a controller)
        starts it here and stops it at the end."""
        yield self.child_env(extra)

    def end_test(self) -> None:
        """Called after every test: release what ``child_env`` started for it."""


@contextlib.contextmanager
def _fake_path() -> Iterator[DriverPath]:
    from cedana_gpu import paths

    yield DriverPath(name="fake", libdir=paths.fake_libdir())


# ---- the interposer path ------------------------------------------------------

# A dispatcher serving one job's segment on a driver ("fake" or "system",
# argv[2]), in a process of its own (the driver and the interposer are both
# "libcuda.so.1": they cannot share a process). It says "ready" once the segment is RUNNING and
# serves until its stdin closes, which also happens when the test process
# dies, so a server never outlives its test process; then it stops and
# removes the segment and the pinned-memory files.
DISPATCHER_SERVER = """\
import json, sys
from cedana_gpu import gpu_info
from cedana_gpu.controller import native

gpu_info.load_driver(sys.argv[2])
dispatcher = native.Dispatcher()
try:
    dispatcher.open(native.DispatcherConfig(job_id=sys.argv[1]))
    dispatcher.start()
except native.NativeError as e:
    print(json.dumps({"error": str(e)}), flush=True)
    raise SystemExit(1) from None
print(json.dumps({"ready": True}), flush=True)
sys.stdin.read()
dispatcher.close()
print(json.dumps({"closed": True}), flush=True)
"""

# How long a dispatcher may take to start or to stop: far more than it needs,
# only there so that a broken one fails the run instead of hanging it.
SERVER_START_S = 120.0
SERVER_STOP_S = 60.0


class DispatcherServer:
    """One dispatcher server process and its segment ``/dev/shm/cedana-gpu.<job_id>``.

    ``driver`` is the driver it runs ("fake" or "system"); ``fake_env`` is the
    fake driver's configuration (FAKE_CUDA_*): the server's, since the server
    is where the driver runs."""

    def __init__(self, fake_env: Mapping[str, str] | None = None, driver: str = "fake") -> None:
        import system_driver

        from cedana_gpu.controller import shm_layout

        self.job_id = f"t-ic-{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.shm_name = shm_layout.shm_name(self.job_id)
        self.segment = shm_layout.SHM_DIR / shm_layout.segment_name(self.job_id)
        # NVIDIA's driver is found by the loader's search, which must not
        # meet the fake driver first.
        base = system_driver.search_env() if driver == "system" else os.environ
        env = {
            k: v
            for k, v in base.items()
            if not k.startswith("FAKE_CUDA_") and k not in ("LD_PRELOAD", "CEDANA_GPU_SHM")
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(fake_env or {})
        set_child_preload(env)
        # The server's stderr (the fake driver's and the dispatcher's logs)
        # goes to a file, quoted when the server fails; it lives as long as
        # the server, so no `with`.
        self._log = tempfile.TemporaryFile(prefix="cedana-test-dispatcher-")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DISPATCHER_SERVER, self.job_id, driver],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
        )
        try:
            self._wait_running()
        except BaseException:
            self.stop()
            raise

    def _log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace").strip()

    def _read_line(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line.strip() else None

    def _wait_running(self) -> None:
        from cedana_gpu.controller import shm_layout

        said = self._read_line(SERVER_START_S)
        if not said or not said.get("ready"):
            raise RuntimeError(
                f"the dispatcher of {self.job_id} did not start: {said}\n{self._log_text()}"
            )
        header = shm_layout.read_header_at(self.segment)
        state = header.state if header is not None else None
        if state != shm_layout.CgsState.CGS_STATE_RUNNING:
            raise RuntimeError(f"the segment {self.segment} is not RUNNING after start: {state}")

    def env(self) -> dict[str, str]:
        """What a job of this server needs besides the interposer itself (as
        ``cedana exec --gpu`` gives it)."""
        return {"CEDANA_GPU_SHM": self.shm_name, "CEDANA_GPU_JOB_ID": self.job_id}

    def stop(self) -> None:
        """Stop the server (its segment and pinned files go with it); idempotent."""
        from cedana_gpu.controller import shm_layout

        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        # A server that died (or was killed) left them behind.
        pins = shm_layout.pin_files(self.segment.parent, self.segment.name)
        for leftover in [self.segment, *pins]:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@dataclass(frozen=True)
class InterposerPath(DriverPath):
    """The interposer in front of a dispatcher server on ``driver``."""

    preload: Path = Path()
    driver: str = "fake"
    servers: list[DispatcherServer] = field(default_factory=list)

    @property
    def library(self) -> Path:
        return self.preload

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A child's environment on a fresh server of its own, stopped after the test.

        The child's FAKE_CUDA_* settings configure the server's driver."""
        extra = dict(extra or {})
        fake = {k: extra.pop(k) for k in list(extra) if k.startswith("FAKE_CUDA_")}
        server = DispatcherServer(fake, self.driver)
        self.servers.append(server)
        return super().child_env({**server.env(), **extra})

    @contextlib.contextmanager
    def child(self, extra: Mapping[str, str] | None = None) -> Iterator[dict[str, str]]:
        env = self.child_env(extra)
        server = self.servers[-1]
        try:
            yield env
        finally:
            self.servers.remove(server)
            server.stop()

    def end_test(self) -> None:
        while self.servers:
            self.servers.pop().stop()


def _preload_env(*libraries: str) -> dict[str, str]:
    env: dict[str, str] = {}
    set_child_preload(env, *libraries)
    return env


@contextlib.contextmanager
def _interposer_path(name: str = "interposer", driver: str = "fake") -> Iterator[DriverPath]:
    from cedana_gpu import paths

    intercept = paths.native_dir() / "intercept"
    server = DispatcherServer(driver=driver)
    # The interposer in this process reads CEDANA_GPU_SHM once, when cuInit
    # attaches; nothing else of the server's is needed here.
    saved = os.environ.get("CEDANA_GPU_SHM")
    os.environ["CEDANA_GPU_SHM"] = server.shm_name
    path = InterposerPath(
        name=name,
        libdir=intercept / "shim",
        env=_preload_env(str(intercept / "libcedana-gpu.so")),
        real_gpu=driver == "system",
        preload=intercept / "libcedana-gpu.so",
        driver=driver,
    )
    try:
        yield path
    finally:
        path.end_test()
        server.stop()
        if saved is None:
            os.environ.pop("CEDANA_GPU_SHM", None)
        else:
            os.environ["CEDANA_GPU_SHM"] = saved


# ---- NVIDIA's driver -------------------------------------------------------------


@contextlib.contextmanager
def _system_path() -> Iterator[DriverPath]:
    import system_driver

    yield DriverPath(name="system", libdir=system_driver.require().libdir, real_gpu=True)


@contextlib.contextmanager
def _system_interposer_path() -> Iterator[DriverPath]:
    import system_driver

    system_driver.require()
    with _interposer_path("system-interposer", "system") as path:
        yield path


# name -> context manager giving the path. It is entered once per worker, the
# first time a test needs the driver, and left at the end of the session, so
# it may start and stop what the path needs (a controller). A path whose child
# processes need more than a fixed environment subclasses DriverPath and
# overrides child_env / child (and end_test, to release what a test started).
DRIVER_PATHS: dict[str, Callable[[], contextlib.AbstractContextManager[DriverPath]]] = {
    "fake": _fake_path,
    "interposer": _interposer_path,
    "system": _system_path,
    "system-interposer": _system_interposer_path,
}
# The paths on NVIDIA's driver: selecting one where there is none skips every test.
SYSTEM_PATHS = ("system", "system-interposer")


def selected_path_name() -> str:
    return os.environ.get(CUDA_PATH_ENV, DEFAULT_CUDA_PATH)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "only_paths(*names): run only on these driver paths (CEDANA_TEST_CUDA_PATH)"
    )
    name = selected_path_name()
    if name not in DRIVER_PATHS:
        raise pytest.UsageError(
            f"{CUDA_PATH_ENV}={name!r} is not a known driver path; use one of: "
            + ", ".join(sorted(DRIVER_PATHS))
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip what needs NVIDIA's driver where there is none, with one reason:
    every test when a system path is selected, else the tests marked gpu."""
    import system_driver

    gpu_dir = Path(__file__).resolve().parent / "gpu"
    for item in items:
        if item.path.resolve().is_relative_to(gpu_dir):
            item.add_marker(pytest.mark.gpu)
    name = selected_path_name()
    needs_driver = items if name in SYSTEM_PATHS else [i for i in items if "gpu" in i.keywords]
    if not needs_driver:
        return
    found = system_driver.find()
    if isinstance(found, str):
        why = f"{CUDA_PATH_ENV}={name}: {found}" if name in SYSTEM_PATHS else found
        skip = pytest.mark.skip(reason=why)
        for item in needs_driver:
            item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("only_paths"):
        if selected_path_name() not in mark.args:
            why = mark.kwargs.get("reason")
            pytest.skip(
                f"only on driver paths {', '.join(mark.args)}" + (f": {why}" if why else "")
            )


def pytest_runtest_teardown(item: pytest.Item) -> None:
    path = _loaded.get("path")
    if path is not None:
        path.end_test()


def pytest_report_header(config: pytest.Config) -> str:
    return f"cuda driver path: {selected_path_name()} (set {CUDA_PATH_ENV} to change)"


_loaded: dict[str, Any] = {}


def _libcuda_in_process() -> list[str]:
    """Paths of every libcuda.so.1 mapped in this process."""
    with open("/proc/self/maps") as maps:
        found = {line.split()[-1] for line in maps if line.rstrip().endswith("libcuda.so.1")}
    return sorted(found)


def _drivers_mapped() -> list[str]:
    """Every file mapped in this process named as a CUDA driver is
    (libcuda.so, libcuda.so.1, NVIDIA's libcuda.so.580.xx)."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/" in line}
    return sorted(p for p in paths if re.fullmatch(r"libcuda\.so(\..*)?", Path(p).name))


def load_driver(path: DriverPath) -> ctypes.CDLL:
    """Load the driver of `path` into this process, once, before cuda-bindings does."""
    if "lib" in _loaded:
        return _loaded["lib"]
    if not path.library.exists():
        pytest.fail(f"{path.library} does not exist: build and install the native parts first")
    already = [p for p in _libcuda_in_process() if Path(p).resolve() != path.library.resolve()]
    if already:
        pytest.fail(
            f"another libcuda.so.1 ({already[0]}) is loaded in this process already; "
            "the driver under test must be loaded first"
        )
    lib = ctypes.CDLL(str(path.library), mode=ctypes.RTLD_GLOBAL)
    _loaded["lib"] = lib
    return lib


@pytest.fixture(scope="session")
def driver_path() -> Iterator[DriverPath]:
    """The driver path of this run (``CEDANA_TEST_CUDA_PATH``)."""
    with DRIVER_PATHS[selected_path_name()]() as path:
        _loaded["path"] = path
        try:
            yield path
        finally:
            _loaded.pop("path", None)


@pytest.fixture(scope="session")
def libcuda(driver_path: DriverPath) -> ctypes.CDLL:
    """The driver library itself, for calls that bypass cuda-bindings."""
    return load_driver(driver_path)


@pytest.fixture(scope="session")
def cu(libcuda: ctypes.CDLL, driver_path: DriverPath) -> ModuleType:
    """``cuda.bindings.driver`` on the driver under test, initialised."""
    from cuda.bindings import driver

    (err,) = driver.cuInit(0)
    assert err == driver.CUresult.CUDA_SUCCESS, f"cuInit: {err!r}"
    # cuda-bindings must have taken the library loaded for it, not found
    # another driver of its own (an absolute path, its own search): the
    # interposer paths would then test NVIDIA's driver under the wrong name.
    mine = driver_path.library.resolve()
    others = [p for p in _drivers_mapped() if Path(p).resolve() != mine]
    if others:
        pytest.fail(
            f"cuda-bindings loaded {others[0]} beside the driver under test ({mine}): "
            "this path's results would not be its own"
        )
    return driver


@pytest.fixture(scope="session")
def primary_ctx(cu: ModuleType) -> Iterator[Any]:
    """Device 0's primary context, retained for the whole session."""
    err, dev = cu.cuDeviceGet(0)
    assert err == cu.CUresult.CUDA_SUCCESS
    err, pctx = cu.cuDevicePrimaryCtxRetain(dev)
    assert err == cu.CUresult.CUDA_SUCCESS, f"cuDevicePrimaryCtxRetain: {err!r}"
    yield pctx
    cu.cuDevicePrimaryCtxRelease(dev)


@pytest.fixture
def ctx(cu: ModuleType, primary_ctx: Any) -> Iterator[Any]:
    """The primary context, current on the test's thread.

    At the end the context must be idle and healthy: a test that leaves an
    asynchronous error behind fails here rather than in the next test."""
    (err,) = cu.cuCtxSetCurrent(primary_ctx)
    assert err == cu.CUresult.CUDA_SUCCESS, f"cuCtxSetCurrent: {err!r}"
    yield primary_ctx
    (err,) = cu.cuCtxSetCurrent(primary_ctx)
    assert err == cu.CUresult.CUDA_SUCCESS, f"cuCtxSetCurrent at teardown: {err!r}"
    (err,) = cu.cuCtxSynchronize()
    assert err == cu.CUresult.CUDA_SUCCESS, f"the test left the context in error: {err!r}"


# Put in front of every snippet run_on_driver runs: the driver module as `cu`,
# the result codes as `E`, and `ok(result)` that checks a call and returns its
# value(s).
SNIPPET_PRELUDE = """\
import ctypes, os, sys, threading
from cuda.bindings import driver as cu
E = cu.CUresult

def ok(result):
    err, *rest = result
    if err != E.CUDA_SUCCESS:
        raise SystemExit(f"driver call failed: {err!r}")
    return rest[0] if len(rest) == 1 else tuple(rest) if rest else None
"""


@pytest.fixture
def run_on_driver(driver_path: DriverPath) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a Python snippet in its own process on the driver under test.

    For cases that need a fresh driver: a different FAKE_CUDA_* configuration,
    calls before cuInit, a crash, or output on stderr. The snippet gets
    ``SNIPPET_PRELUDE`` in front (``cu``, ``E``, ``ok``); ``env`` is added to
    the child's environment."""

    def run(
        code: str, env: Mapping[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        with driver_path.child(env) as child_env:
            return subprocess.run(
                [sys.executable, "-c", SNIPPET_PRELUDE + textwrap.dedent(code)],
                env=child_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )

    return run
