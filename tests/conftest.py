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

More paths (the interposer forwarding to a controller that runs the fake
driver) register themselves in ``DRIVER_PATHS``; the same tests then run
through them unchanged, because they only use the fixtures below
(``driver_path``, ``libcuda``, ``cu``, ``ctx``, ``run_on_driver``). A test
that only makes sense on some paths says so with
``@pytest.mark.only_paths("fake", ...)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
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
def _fake_path() -> Iterator[DriverPath]:
    from cedana_gpu import paths

    yield DriverPath(name="fake", libdir=paths.fake_libdir())


# name -> context manager giving the path. It is entered once per worker, the
# first time a test needs the driver, and left at the end of the session, so
# it may start and stop what the path needs (a controller). A path whose child
# processes need more than a fixed environment subclasses DriverPath and
# overrides child_env.
DRIVER_PATHS: dict[str, Callable[[], contextlib.AbstractContextManager[DriverPath]]] = {
    "fake": _fake_path
}


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("only_paths"):
        if selected_path_name() not in mark.args:
            pytest.skip(f"only on driver paths {', '.join(mark.args)}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"cuda driver path: {selected_path_name()} (set {CUDA_PATH_ENV} to change)"


_loaded: dict[str, Any] = {}


def _libcuda_in_process() -> list[str]:
    """Paths of every libcuda.so.1 mapped in this process."""
    with open("/proc/self/maps") as maps:
        found = {line.split()[-1] for line in maps if line.rstrip().endswith("libcuda.so.1")}
    return sorted(found)


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
        yield path


@pytest.fixture(scope="session")
def libcuda(driver_path: DriverPath) -> ctypes.CDLL:
    """The driver library itself, for calls that bypass cuda-bindings."""
    return load_driver(driver_path)


@pytest.fixture(scope="session")
def cu(libcuda: ctypes.CDLL) -> ModuleType:
    """``cuda.bindings.driver`` on the driver under test, initialised."""
    from cuda.bindings import driver

    (err,) = driver.cuInit(0)
    assert err == driver.CUresult.CUDA_SUCCESS, f"cuInit: {err!r}"
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
        return subprocess.run(
            [sys.executable, "-c", SNIPPET_PRELUDE + textwrap.dedent(code)],
            env=driver_path.child_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
