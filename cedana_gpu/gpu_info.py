"""Load a CUDA driver (the system's or the bundled fake one) and list its devices.

The fake driver (``libcuda.so.1``) and fake NVML (``libnvidia-ml.so.1``) are
loaded by absolute path with ``RTLD_GLOBAL`` before cuda-bindings or pynvml
open anything. Their later ``dlopen("libcuda.so.1")`` and
``dlopen("libnvidia-ml.so.1")`` are then answered by the dynamic loader with
the objects already loaded, because it matches a bare name against the
SONAMEs of loaded objects. The system driver is found by the loader's normal
search.

Devices are described by NVML when it is there, and by the CUDA driver API
through cuda-bindings otherwise.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from cedana_gpu.errors import SetupError
from cedana_gpu.paths import fake_libdir

DriverKind = Literal["fake", "system"]
DRIVER_KINDS: tuple[str, ...] = get_args(DriverKind)
DeviceSource = Literal["auto", "nvml", "cuda"]
DEVICE_SOURCES: tuple[str, ...] = get_args(DeviceSource)

DRIVER_ENV = "CEDANA_GPU_DRIVER"
"""Environment variable choosing the driver when no ``--driver`` is given."""

CUDA_SONAME = "libcuda.so.1"
NVML_SONAME = "libnvidia-ml.so.1"

_RTLD_DI_LINKMAP = 2  # dlinfo request: the object's struct link_map
_CUDA_ERROR_NO_DEVICE = 100


class NoDriver(SetupError):
    """No CUDA driver library could be loaded."""


class DriverError(SetupError):
    """A driver was loaded but could not be used (conflict, failing call)."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    uuid: str
    """``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``, as NVML and nvidia-smi print it."""
    total_memory_bytes: int
    compute_capability: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = list(self.compute_capability)
        return d


@dataclass(frozen=True)
class LoadedDriver:
    kind: DriverKind
    cuda_path: Path
    """The file the loader opened for libcuda.so.1."""
    nvml_path: Path | None
    """The file opened for libnvidia-ml.so.1, or None when there is no NVML."""


def default_driver_kind(fallback: DriverKind = "system") -> DriverKind:
    """``$CEDANA_GPU_DRIVER`` if set, else ``fallback``."""
    value = os.environ.get(DRIVER_ENV, "").strip() or fallback
    if value not in DRIVER_KINDS:
        raise DriverError(
            f"{DRIVER_ENV}={value!r} is not a driver: use {' or '.join(DRIVER_KINDS)}"
        )
    return value  # type: ignore[return-value]


class _LinkMap(ctypes.Structure):
    # The leading fields of glibc's struct link_map: what dlinfo hands back.
    _fields_ = (("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p))


def _library_path(lib: ctypes.CDLL) -> Path:
    """The file the loader opened for ``lib``."""
    libc = ctypes.CDLL(None)
    link_map = ctypes.POINTER(_LinkMap)()
    if libc.dlinfo(ctypes.c_void_p(lib._handle), _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0:
        return Path(lib._name)
    name = link_map.contents.l_name
    return Path(os.fsdecode(name)) if name else Path(lib._name)


def _already_loaded(soname: str) -> ctypes.CDLL | None:
    """The object this process already has for ``soname``, if any."""
    try:
        return ctypes.CDLL(soname, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
    except OSError:
        return None


def _load_fake(soname: str, libdir: Path) -> Path:
    path = libdir / soname
    if not path.is_file():
        raise NoDriver(
            f"the fake driver's {soname} is missing from {libdir}: "
            "rebuild with 'make setup' (or 'pip install -e .')"
        )
    loaded = _already_loaded(soname)
    if loaded is not None:
        loaded_path = _library_path(loaded)
        if loaded_path.resolve() != path.resolve():
            raise DriverError(
                f"this process already uses {soname} from {loaded_path}; "
                "the fake driver must be loaded before any other driver"
            )
        return loaded_path
    try:
        ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
    except OSError as e:
        raise NoDriver(f"cannot load the fake driver's {path}: {e}") from None
    return path


def load_driver(kind: DriverKind) -> LoadedDriver:
    """Make ``kind``'s libcuda.so.1 (and libnvidia-ml.so.1 when there is one)
    the ones this process uses. Call it before the first use of cuda-bindings
    or pynvml. Idempotent.

    Raises NoDriver when the driver library cannot be found or loaded, and
    DriverError when another driver is already loaded in this process.
    """
    if kind == "fake":
        libdir = fake_libdir()
        cuda_path = _load_fake(CUDA_SONAME, libdir)
        nvml_path: Path | None = _load_fake(NVML_SONAME, libdir)
        return LoadedDriver(kind, cuda_path, nvml_path)
    if kind != "system":
        raise DriverError(f"unknown driver {kind!r}: use {' or '.join(DRIVER_KINDS)}")
    try:
        cuda = ctypes.CDLL(CUDA_SONAME, mode=os.RTLD_GLOBAL)
    except OSError:
        raise NoDriver(
            f"no NVIDIA driver found ({CUDA_SONAME} is not on the library search path); "
            "install the NVIDIA driver or use the fake driver (CEDANA_GPU_DRIVER=fake)"
        ) from None
    try:
        nvml_path = _library_path(ctypes.CDLL(NVML_SONAME, mode=os.RTLD_GLOBAL))
    except OSError:
        nvml_path = None
    return LoadedDriver(kind, _library_path(cuda), nvml_path)


def format_uuid(raw: bytes) -> str:
    """NVML's spelling of a 16-byte device UUID."""
    h = raw.hex()
    return f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _devices_from_nvml() -> list[DeviceInfo]:
    import pynvml

    pynvml.nvmlInit()
    try:
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            devices.append(
                DeviceInfo(
                    index=i,
                    name=pynvml.nvmlDeviceGetName(h),
                    uuid=pynvml.nvmlDeviceGetUUID(h),
                    total_memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                    compute_capability=(int(major), int(minor)),
                )
            )
        return devices
    finally:
        pynvml.nvmlShutdown()


def _cu_check(result: tuple[Any, ...], what: str) -> Any:
    """The value of a cuda-bindings call ``(err, value...)``, or DriverError."""
    from cuda.bindings import driver as cu

    err, *values = result
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        label = name.decode() if isinstance(name, bytes) else str(err)
        raise DriverError(f"{what} failed: {label}")
    return values[0] if len(values) == 1 else tuple(values)


def _devices_from_cuda() -> list[DeviceInfo]:
    from cuda.bindings import driver as cu

    try:
        (err,) = cu.cuInit(0)
    except RuntimeError as e:  # cuda-pathfinder: libcuda.so.1 not found
        raise NoDriver(f"no NVIDIA driver found: {e}") from None
    if err == cu.CUresult.CUDA_ERROR_NO_DEVICE or int(err) == _CUDA_ERROR_NO_DEVICE:
        return []
    _cu_check((err,), "cuInit")
    attr = cu.CUdevice_attribute
    devices = []
    for i in range(_cu_check(cu.cuDeviceGetCount(), "cuDeviceGetCount")):
        dev = _cu_check(cu.cuDeviceGet(i), "cuDeviceGet")
        name = _cu_check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName")
        uuid = _cu_check(cu.cuDeviceGetUuid(dev), "cuDeviceGetUuid")
        major = _cu_check(
            cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
            "cuDeviceGetAttribute",
        )
        minor = _cu_check(
            cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
            "cuDeviceGetAttribute",
        )
        devices.append(
            DeviceInfo(
                index=i,
                name=bytes(name).split(b"\0", 1)[0].decode(errors="replace"),
                uuid=format_uuid(bytes(uuid.bytes)[:16]),
                total_memory_bytes=int(_cu_check(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem")),
                compute_capability=(int(major), int(minor)),
            )
        )
    return devices


def list_devices(kind: DriverKind, *, source: DeviceSource = "auto") -> list[DeviceInfo]:
    """The devices of driver ``kind``.

    ``source`` "auto" asks NVML when the driver has one and falls back to the
    CUDA driver API (through cuda-bindings); "nvml" and "cuda" ask only that one.
    """
    loaded = load_driver(kind)
    if source == "nvml" and loaded.nvml_path is None:
        raise NoDriver(f"the {kind} driver has no NVML ({NVML_SONAME} not found)")
    if source != "cuda" and loaded.nvml_path is not None:
        import pynvml

        try:
            return _devices_from_nvml()
        except pynvml.NVMLError as e:
            if source == "nvml":
                raise DriverError(f"NVML failed: {e}") from None
            # NVML present but unusable (no devices, driver not loaded): the
            # CUDA driver API gives the authoritative answer or error.
    return _devices_from_cuda()
