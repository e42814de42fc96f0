"""The fake NVML (libnvidia-ml.so.1) through pynvml, the way tools use it.

Each case runs pynvml in a fresh subprocess with the fake driver's directory
on LD_LIBRARY_PATH, because NVML reads its configuration once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from preload import set_child_preload

from cedana_gpu.paths import NativeNotBuilt, api_table_path, fake_libdir

# The fake NVML itself, next to the fake driver; no system path loads it.
pytestmark = pytest.mark.only_paths(
    "fake", "interposer", reason="tests the fake NVML, which runs beside the fake driver only"
)

# NVML return codes (nvml.h).
SUCCESS = 0
UNINITIALIZED = 1
INVALID_ARGUMENT = 2
NOT_FOUND = 6
INSUFFICIENT_SIZE = 7
DRIVER_NOT_LOADED = 9
ARGUMENT_VERSION_MISMATCH = 25


def expected_uuid(index: int, seed: int | None = None) -> str:
    """The UUID both fake libraries give device ``index``: "cedana-fake-gpu" + the index
    byte, or under FAKE_CUDA_UUID_SEED "cedana-fake" + the seed's 4 bytes + the index byte."""
    prefix = b"cedana-fake-gpu" if seed is None else b"cedana-fake" + seed.to_bytes(4, "big")
    h = (prefix + bytes([index])).hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@pytest.fixture(scope="module")
def libdir() -> Path:
    try:
        d = fake_libdir()
    except NativeNotBuilt as e:
        pytest.fail(str(e))
    if not (d / "libnvidia-ml.so.1").is_file():
        pytest.fail(f"the fake NVML is not built: {d / 'libnvidia-ml.so.1'} is missing")
    return d


# Calls an NVML function and answers its return code instead of raising.
PRELUDE = """
import ctypes, json
import pynvml as n

def rc(f, *a):
    try:
        f(*a)
    except n.NVMLError as e:
        return e.value
    return 0
"""


def run_py(libdir: Path, code: str, **env: str) -> dict:
    """Run PRELUDE + ``code`` on the fake driver; it prints one JSON document last."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_CUDA_")}
    set_child_preload(full_env)
    full_env["LD_LIBRARY_PATH"] = str(libdir)
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_values(libdir: Path) -> None:
    out = run_py(
        libdir,
        """
        n.nvmlInit()
        devs = []
        for i in range(n.nvmlDeviceGetCount()):
            h = n.nvmlDeviceGetHandleByIndex(i)
            m = n.nvmlDeviceGetMemoryInfo(h)
            m2 = n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2)
            pci = n.nvmlDeviceGetPciInfo(h)
            devs.append(dict(
                name=n.nvmlDeviceGetName(h), uuid=n.nvmlDeviceGetUUID(h),
                index=n.nvmlDeviceGetIndex(h), minor=n.nvmlDeviceGetMinorNumber(h),
                mem=[m.total, m.free, m.used], mem2=[m2.total, m2.reserved, m2.free, m2.used],
                cc=list(n.nvmlDeviceGetCudaComputeCapability(h)),
                bus_id=pci.busId, bus_id_legacy=pci.busIdLegacy,
                bus=pci.bus, pci_device_id=pci.pciDeviceId,
                procs=n.nvmlDeviceGetComputeRunningProcesses(h),
                by_uuid=n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(n.nvmlDeviceGetUUID(h))),
                by_pci=n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByPciBusId(pci.busId)),
            ))
        print(json.dumps(dict(
            driver=n.nvmlSystemGetDriverVersion(), nvml=n.nvmlSystemGetNVMLVersion(),
            cuda=n.nvmlSystemGetCudaDriverVersion(), cuda2=n.nvmlSystemGetCudaDriverVersion_v2(),
            devs=devs)))
        """,
        FAKE_CUDA_DEVICE_COUNT="3",
        FAKE_CUDA_DEVICE_MEMORY_MIB="2048",
        FAKE_CUDA_DEVICE_NAME="NVML Test GPU",
    )
    # The fake driver's version: the API table's (the cuda.h it is built from).
    table_version = json.loads(api_table_path().read_text())["cuda_version"]
    assert out["cuda"] == out["cuda2"] == table_version
    assert out["driver"] and out["nvml"]
    assert len(out["devs"]) == 3
    total = 2048 << 20
    for i, d in enumerate(out["devs"]):
        assert d["name"] == "NVML Test GPU"
        assert d["uuid"] == expected_uuid(i)
        assert d["index"] == d["minor"] == d["by_uuid"] == d["by_pci"] == i
        assert d["mem"] == [total, total, 0]
        assert d["mem2"] == [total, 0, total, 0]
        assert d["cc"] == [9, 0]
        assert d["bus"] == 0x18 + i
        assert d["bus_id"] == f"00000000:{0x18 + i:02X}:00.0"
        assert d["bus_id_legacy"] == f"0000:{0x18 + i:02X}:00.0"
        assert d["pci_device_id"] & 0xFFFF == 0x10DE  # NVIDIA's vendor id
        assert d["procs"] == []


def test_defaults(libdir: Path) -> None:
    out = run_py(
        libdir,
        """
        n.nvmlInit()
        h = n.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps(dict(count=n.nvmlDeviceGetCount(), name=n.nvmlDeviceGetName(h),
                              total=n.nvmlDeviceGetMemoryInfo(h).total)))
        """,
    )
    assert out == {"count": 1, "name": "Cedana Fake GPU", "total": 16384 << 20}


def test_error_codes(libdir: Path) -> None:
    out = run_py(
        libdir,
        """
        r = {}
        r["count_before_init"] = rc(n.nvmlDeviceGetCount)
        r["driver_before_init"] = rc(n.nvmlSystemGetDriverVersion)
        r["shutdown_before_init"] = rc(n.nvmlShutdown)
        n.nvmlInit()
        count = n.nvmlDeviceGetCount()
        h = n.nvmlDeviceGetHandleByIndex(0)
        r["bad_index"] = rc(n.nvmlDeviceGetHandleByIndex, count)
        r["huge_index"] = rc(n.nvmlDeviceGetHandleByIndex, 1 << 31)
        zero_uuid = "GPU-00000000-0000-0000-0000-000000000000"
        r["unknown_uuid"] = rc(n.nvmlDeviceGetHandleByUUID, zero_uuid)
        r["unknown_bus"] = rc(n.nvmlDeviceGetHandleByPciBusId, "00000000:01:00.0")
        r["bad_handle"] = rc(n.nvmlDeviceGetName, n.c_nvmlDevice_t())
        lib = n.nvmlLib
        small = ctypes.create_string_buffer(4)
        r["small_name"] = lib.nvmlDeviceGetName(h, small, ctypes.c_uint(4))
        r["small_uuid"] = lib.nvmlDeviceGetUUID(h, small, ctypes.c_uint(4))
        r["small_driver"] = lib.nvmlSystemGetDriverVersion(small, ctypes.c_uint(4))
        exact = ctypes.create_string_buffer(41)
        r["exact_uuid"] = lib.nvmlDeviceGetUUID(h, exact, ctypes.c_uint(41))
        r["null_count"] = lib.nvmlDeviceGetCount_v2(None)
        m2 = n.c_nvmlMemory_v2_t()
        m2.version = 1
        r["memory_v2_bad_version"] = lib.nvmlDeviceGetMemoryInfo_v2(h, ctypes.byref(m2))
        lib.nvmlErrorString.restype = ctypes.c_char_p
        r["strings"] = [lib.nvmlErrorString(c).decode() for c in (0, 1, 2, 7, 12345)]
        # Initialisation is reference counted.
        n.nvmlInit()
        n.nvmlShutdown()
        r["after_one_shutdown"] = rc(n.nvmlDeviceGetCount)
        n.nvmlShutdown()
        r["after_last_shutdown"] = rc(n.nvmlDeviceGetCount)
        r["stale_handle"] = rc(n.nvmlDeviceGetName, h)
        r["extra_shutdown"] = rc(n.nvmlShutdown)
        print(json.dumps(r))
        """,
        FAKE_CUDA_DEVICE_COUNT="2",
    )
    assert out == {
        "count_before_init": UNINITIALIZED,
        "driver_before_init": UNINITIALIZED,
        "shutdown_before_init": UNINITIALIZED,
        "bad_index": INVALID_ARGUMENT,
        "huge_index": INVALID_ARGUMENT,
        "unknown_uuid": NOT_FOUND,
        "unknown_bus": NOT_FOUND,
        "bad_handle": INVALID_ARGUMENT,
        "small_name": INSUFFICIENT_SIZE,
        "small_uuid": INSUFFICIENT_SIZE,
        "small_driver": INSUFFICIENT_SIZE,
        "exact_uuid": SUCCESS,
        "null_count": INVALID_ARGUMENT,
        "memory_v2_bad_version": ARGUMENT_VERSION_MISMATCH,
        "strings": [
            "Success",
            "Uninitialized",
            "Invalid Argument",
            "Insufficient Size",
            "Unknown Error",
        ],
        "after_one_shutdown": SUCCESS,
        "after_last_shutdown": UNINITIALIZED,
        "stale_handle": UNINITIALIZED,
        "extra_shutdown": UNINITIALIZED,
    }


@pytest.mark.parametrize(
    ("env", "count", "mib"),
    [
        ({"FAKE_CUDA_DEVICE_COUNT": "8"}, 8, 16384),
        # Out of range or malformed values fall back to the default, as in the fake driver.
        ({"FAKE_CUDA_DEVICE_COUNT": "9"}, 1, 16384),
        ({"FAKE_CUDA_DEVICE_COUNT": "two"}, 1, 16384),
        ({"FAKE_CUDA_DEVICE_COUNT": "-1"}, 1, 16384),
        ({"FAKE_CUDA_DEVICE_MEMORY_MIB": "1"}, 1, 1),
        ({"FAKE_CUDA_DEVICE_MEMORY_MIB": "0"}, 1, 16384),
        ({"FAKE_CUDA_DEVICE_MEMORY_MIB": "12GiB"}, 1, 16384),
    ],
)
def test_configuration(libdir: Path, env: dict[str, str], count: int, mib: int) -> None:
    out = run_py(
        libdir,
        """
        n.nvmlInit()
        c = n.nvmlDeviceGetCount()
        handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(c)]
        totals = [n.nvmlDeviceGetMemoryInfo(h).total for h in handles]
        print(json.dumps(dict(count=c, totals=totals)))
        """,
        **env,
    )
    assert out == {"count": count, "totals": [mib << 20] * count}


def test_no_devices(libdir: Path) -> None:
    out = run_py(
        libdir,
        """
        r = dict(init=rc(n.nvmlInit))
        n.nvmlInitWithFlags(1)  # NVML_INIT_FLAG_NO_GPUS
        r["count"] = n.nvmlDeviceGetCount()
        r["index0"] = rc(n.nvmlDeviceGetHandleByIndex, 0)
        print(json.dumps(r))
        """,
        FAKE_CUDA_DEVICE_COUNT="0",
    )
    assert out == {"init": DRIVER_NOT_LOADED, "count": 0, "index0": INVALID_ARGUMENT}


def test_concurrent_queries(libdir: Path) -> None:
    out = run_py(
        libdir,
        """
        import threading
        n.nvmlInit()
        seen, errors = set(), []
        def work():
            try:
                for _ in range(200):
                    for i in range(n.nvmlDeviceGetCount()):
                        seen.add(n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)))
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=work) for _ in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(json.dumps(dict(seen=sorted(seen), errors=errors)))
        """,
        FAKE_CUDA_DEVICE_COUNT="4",
    )
    assert out == {"seen": [expected_uuid(i) for i in range(4)], "errors": []}


@pytest.mark.parametrize("seed", [None, 0x01020304])
def test_agrees_with_fake_driver(libdir: Path, seed: int | None) -> None:
    """NVML and the fake CUDA driver describe the same devices (also with other
    UUIDs, FAKE_CUDA_UUID_SEED)."""
    seeded = {} if seed is None else {"FAKE_CUDA_UUID_SEED": str(seed)}
    if not (libdir / "libcuda.so.1").is_file():
        pytest.fail(f"the fake CUDA driver is not built: {libdir / 'libcuda.so.1'} is missing")
    out = run_py(
        libdir,
        """
        from cuda.bindings import driver as cu
        assert cu.cuInit(0)[0] == cu.CUresult.CUDA_SUCCESS
        n.nvmlInit()
        A = cu.CUdevice_attribute
        def attr(a, d):
            return cu.cuDeviceGetAttribute(a, d)[1]
        rows = []
        for i in range(cu.cuDeviceGetCount()[1]):
            d = cu.cuDeviceGet(i)[1]
            h = n.nvmlDeviceGetHandleByIndex(i)
            raw = bytes(cu.cuDeviceGetUuid(d)[1].bytes)[:16].hex()
            rows.append(dict(
                cuda=[cu.cuDeviceGetName(256, d)[1].split(b"\\0")[0].decode(),
                      "GPU-%s-%s-%s-%s-%s" % (raw[:8], raw[8:12], raw[12:16], raw[16:20], raw[20:]),
                      cu.cuDeviceTotalMem(d)[1],
                      [attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d),
                       attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d)],
                      attr(A.CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, d)],
                nvml=[n.nvmlDeviceGetName(h), n.nvmlDeviceGetUUID(h),
                      n.nvmlDeviceGetMemoryInfo(h).total,
                      list(n.nvmlDeviceGetCudaComputeCapability(h)),
                      n.nvmlDeviceGetPciInfo(h).bus],
            ))
        ver = cu.cuDriverGetVersion()[1]
        print(json.dumps(dict(rows=rows, cuda_version=ver,
                              nvml_cuda_version=n.nvmlSystemGetCudaDriverVersion(),
                              nvml_count=n.nvmlDeviceGetCount())))
        """,
        FAKE_CUDA_DEVICE_COUNT="2",
        FAKE_CUDA_DEVICE_MEMORY_MIB="4096",
        FAKE_CUDA_DEVICE_NAME="Agreeing GPU",
        **seeded,
    )
    assert out["nvml_count"] == len(out["rows"]) == 2
    assert out["cuda_version"] == out["nvml_cuda_version"]
    for i, row in enumerate(out["rows"]):
        assert row["cuda"] == row["nvml"]
        assert row["nvml"][1] == expected_uuid(i, seed)
