"""NVIDIA's CUDA driver on this machine, if there is a usable one.

Found by a probe in a child process, so that the test process itself loads
no libcuda.so.1 (the driver under test must be the first one it loads). The
probe runs with cedana's own driver directories (the fake driver, the
interposer's shim) taken off the search path, and a libcuda.so.1 that is one
of ours does not count. The driver must also initialise and report a device:
an installed driver without a GPU is no use to these tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = r"""
import ctypes, json, os

def say(**kw):
    print(json.dumps(kw))
    raise SystemExit(0)

try:
    lib = ctypes.CDLL("libcuda.so.1")
except OSError as e:
    say(error=f"libcuda.so.1 is not on the library search path ({e})")

class LinkMap(ctypes.Structure):
    _fields_ = (("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p))

link_map = ctypes.POINTER(LinkMap)()
libc = ctypes.CDLL(None)
path = lib._name
if libc.dlinfo(ctypes.c_void_p(lib._handle), 2, ctypes.byref(link_map)) == 0:
    path = os.fsdecode(link_map.contents.l_name)
rc = lib.cuInit(0)
if rc != 0:
    say(path=path, error=f"cuInit failed with CUresult {rc}")
count, version = ctypes.c_int(0), ctypes.c_int(0)
lib.cuDeviceGetCount(ctypes.byref(count))
lib.cuDriverGetVersion(ctypes.byref(version))
say(path=path, devices=count.value, version=version.value)
"""


@dataclass(frozen=True)
class SystemDriver:
    path: Path
    """The file the loader opens for libcuda.so.1."""
    devices: int
    version: int

    @property
    def libdir(self) -> Path:
        return self.path.parent


def _ours() -> list[Path]:
    """Directories whose libcuda.so.1 is cedana's, not NVIDIA's."""
    from cedana_gpu import paths

    dirs = [REPO]
    with contextlib.suppress(paths.NativeNotBuilt):
        dirs.append(paths.native_dir())
    build = paths.build_dir()
    if build is not None:
        dirs.append(build)
    return [d.resolve() for d in dirs]


def _is_ours(path: Path) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(d) for d in _ours())


def search_env() -> dict[str, str]:
    """This environment without cedana's driver directories on the search
    path and without preloads: where the loader finds NVIDIA's driver."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    kept = [
        d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d and not _is_ours(Path(d))
    ]
    if kept:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
    else:
        env.pop("LD_LIBRARY_PATH", None)
    return env


@cache
def find() -> SystemDriver | str:
    """NVIDIA's driver, or why there is none to test on (one line)."""
    try:
        r = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=search_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "no NVIDIA driver: probing libcuda.so.1 did not finish in 120 s"
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no NVIDIA driver: probing libcuda.so.1 failed ({tail})"
    said = json.loads(lines[-1])
    path = Path(said["path"]) if said.get("path") else None
    if path is not None and _is_ours(path):
        return f"no NVIDIA driver: the libcuda.so.1 on the search path is cedana's own ({path})"
    if "error" in said:
        where = f" ({path})" if path else ""
        return f"no NVIDIA driver found: {said['error']}{where}"
    if said["devices"] < 1:
        return f"no NVIDIA GPU: the driver at {path} reports no devices"
    assert path is not None
    return SystemDriver(path=path, devices=int(said["devices"]), version=int(said["version"]))


def require() -> SystemDriver:
    """NVIDIA's driver, or skip the calling test with the reason."""
    import pytest

    found = find()
    if isinstance(found, str):
        pytest.skip(found)
    return found
