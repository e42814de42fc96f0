"""``cedana gpu libdir`` and ``cedana gpu info``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cr_helpers import clean_env

import cedana_gpu
from cedana_gpu.gpu_info import DeviceInfo, format_uuid
from cedana_gpu.paths import NativeNotBuilt, fake_libdir

REPO = Path(__file__).resolve().parent.parent


def expected_uuid(index: int) -> str:
    h = (b"cedana-fake-gpu" + bytes([index])).hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def cedana(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cedana_gpu", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int) -> str:
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("cedana: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def libdir() -> Path:
    try:
        d = fake_libdir()
    except NativeNotBuilt as e:
        pytest.fail(str(e))
    return d


def system_driver_present() -> bool:
    """Whether the loader finds a libcuda.so.1 with no help from us."""
    probe = "import ctypes; ctypes.CDLL('libcuda.so.1')"
    return subprocess.run([sys.executable, "-c", probe], env=clean_env()).returncode == 0


# ---- in-process helpers --------------------------------------------------------


def test_format_uuid() -> None:
    assert format_uuid(b"cedana-fake-gpu\x07") == expected_uuid(7)
    assert format_uuid(bytes(range(16))) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_device_info_json() -> None:
    d = DeviceInfo(0, "X", expected_uuid(0), 1 << 30, (9, 0))
    assert json.loads(json.dumps(d.to_json())) == {
        "index": 0,
        "name": "X",
        "uuid": expected_uuid(0),
        "total_memory_bytes": 1 << 30,
        "compute_capability": [9, 0],
    }


# ---- the command line ------------------------------------------------------------


def test_version() -> None:
    proc = cedana("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"cedana {cedana_gpu.__version__}"


def test_console_script() -> None:
    script = Path(sys.executable).parent / "cedana"
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter (no 'cedana' script)")
    proc = subprocess.run(
        [str(script), "--version"], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"cedana {cedana_gpu.__version__}"


@pytest.mark.parametrize(
    "args",
    [(), ("gpu",), ("gpu", "nope"), ("gpu", "info", "--driver", "nope"), ("--bogus",)],
)
def test_usage_errors(args: tuple[str, ...]) -> None:
    line = assert_one_line_error(cedana(*args), 2)
    assert "--help" in line


@pytest.mark.parametrize("args", [("gpu", "libdir", "--driver", "fake"), ("gpu", "libdir")])
def test_libdir_fake(libdir: Path, args: tuple[str, ...]) -> None:
    proc = cedana(*args)
    assert proc.returncode == 0, proc.stderr
    printed = Path(proc.stdout.strip())
    assert printed.is_absolute()
    assert printed == libdir
    assert (printed / "libcuda.so.1").is_file()
    assert (printed / "libnvidia-ml.so.1").is_file()


def test_libdir_runs_programs_on_the_fake_driver(libdir: Path) -> None:
    """LD_LIBRARY_PATH=$(cedana gpu libdir --driver fake) python app.py"""
    printed = cedana("gpu", "libdir", "--driver", "fake").stdout.strip()
    app = (
        "import pynvml as n\n"
        "from cuda.bindings import driver as cu\n"
        "n.nvmlInit()\n"
        "assert cu.cuInit(0)[0] == cu.CUresult.CUDA_SUCCESS\n"
        "print(n.nvmlDeviceGetCount(), cu.cuDeviceGetCount()[1],"
        " n.nvmlDeviceGetName(n.nvmlDeviceGetHandleByIndex(0)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", app],
        env=clean_env(LD_LIBRARY_PATH=printed, FAKE_CUDA_DEVICE_COUNT="2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().split(maxsplit=2) == ["2", "2", "Cedana Fake GPU"]


def test_info_fake_table(libdir: Path) -> None:
    proc = cedana(
        "gpu",
        "info",
        "--driver",
        "fake",
        FAKE_CUDA_DEVICE_COUNT="3",
        FAKE_CUDA_DEVICE_MEMORY_MIB="2048",
        FAKE_CUDA_DEVICE_NAME="Table Test GPU",
    )
    assert proc.returncode == 0, proc.stderr
    header, *rows, api = proc.stdout.splitlines()
    assert header.split() == ["INDEX", "NAME", "UUID", "MEMORY", "COMPUTE"]
    assert api.startswith("driver CUDA ") and "checkpoint API (--gpu-engine driver)" in api
    assert len(rows) == 3
    for i, row in enumerate(rows):
        assert row.split() == [
            str(i),
            "Table",
            "Test",
            "GPU",
            expected_uuid(i),
            "2048",
            "MiB",
            "9.0",
        ]


@pytest.mark.parametrize("source", ["auto", "nvml", "cuda"])
def test_info_fake_json(libdir: Path, source: str) -> None:
    proc = cedana(
        "gpu",
        "info",
        "--driver",
        "fake",
        "--output",
        "json",
        "--source",
        source,
        FAKE_CUDA_DEVICE_COUNT="2",
        FAKE_CUDA_DEVICE_MEMORY_MIB="4096",
        FAKE_CUDA_DEVICE_NAME="Json Test GPU",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    api = doc.pop("checkpoint_api")
    assert set(api) == {"driver_version", "checkpoint", "gpu_remap", "custom_storage"}
    assert doc == {
        "driver": "fake",
        "devices": [
            {
                "index": i,
                "name": "Json Test GPU",
                "uuid": expected_uuid(i),
                "total_memory_bytes": 4096 << 20,
                "compute_capability": [9, 0],
            }
            for i in range(2)
        ],
    }


def test_info_defaults_from_env(libdir: Path) -> None:
    proc = cedana("gpu", "info", "-o", "json", CEDANA_GPU_DRIVER="fake")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["driver"] == "fake"
    assert [(d["name"], d["total_memory_bytes"]) for d in doc["devices"]] == [
        ("Cedana Fake GPU", 16384 << 20)
    ]


def test_info_no_devices(libdir: Path) -> None:
    proc = cedana("gpu", "info", "--driver", "fake", FAKE_CUDA_DEVICE_COUNT="0")
    assert proc.returncode == 0, proc.stderr
    first, api = proc.stdout.strip().splitlines()
    assert first == "no GPUs found (driver: fake)"
    assert api.startswith("driver CUDA ") and "checkpoint API" in api


def test_bad_driver_env() -> None:
    line = assert_one_line_error(cedana("gpu", "info", CEDANA_GPU_DRIVER="tpu"), 1)
    assert "CEDANA_GPU_DRIVER" in line


def test_native_dir_missing(tmp_path: Path) -> None:
    proc = cedana("gpu", "info", "--driver", "fake", CEDANA_GPU_NATIVE_DIR=str(tmp_path))
    line = assert_one_line_error(proc, 1)
    assert str(tmp_path) in line


@pytest.mark.parametrize("command", ["info", "libdir"])
def test_system_driver_missing(command: str) -> None:
    proc = cedana("gpu", command, "--driver", "system")
    if system_driver_present():
        if command == "info":
            # A machine with NVIDIA's driver but no GPU visible may still fail;
            # either way the answer is clean.
            assert "Traceback" not in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr
            assert Path(proc.stdout.strip()).is_dir()
        pytest.skip("an NVIDIA driver is installed here")
    line = assert_one_line_error(proc, 1)
    assert "no NVIDIA driver found" in line


@pytest.mark.parametrize(
    ("version", "checkpoint", "remap", "custom"),
    [("12040", False, False, False), ("12080", True, False, False), ("13000", True, True, False)],
)
def test_info_fake_driver_reporting_an_older_version(
    libdir: Path, version: str, checkpoint: bool, remap: bool, custom: bool
) -> None:
    """FAKE_CUDA_DRIVER_VERSION makes the fake driver answer cuDriverGetVersion as
    an older driver would; what the checkpoint API offers follows its version."""
    proc = cedana(
        "gpu", "info", "--driver", "fake", "--output", "json", "--source", "cuda",
        FAKE_CUDA_DRIVER_VERSION=version,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    api = json.loads(proc.stdout)["checkpoint_api"]
    major, minor = int(version) // 1000, int(version) % 1000 // 10
    assert api == {
        "driver_version": f"{major}.{minor}",
        "checkpoint": checkpoint,
        "gpu_remap": remap,
        "custom_storage": custom,
    }
