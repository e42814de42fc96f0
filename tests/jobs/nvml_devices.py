"""A GPU job that asks NVML and the driver for its devices, as tools and
libraries do (pynvml loads libnvidia-ml.so.1 by name). Prints one JSON
document: both descriptions, and which libraries the process mapped."""

from __future__ import annotations

import json
from pathlib import Path

import pynvml as n
from cuda.bindings import driver as cu


def main() -> None:
    assert cu.cuInit(0)[0] == cu.CUresult.CUDA_SUCCESS
    n.nvmlInit()
    A = cu.CUdevice_attribute
    rows = []
    for i in range(cu.cuDeviceGetCount()[1]):
        d = cu.cuDeviceGet(i)[1]
        h = n.nvmlDeviceGetHandleByIndex(i)
        raw = bytes(cu.cuDeviceGetUuid(d)[1].bytes)[:16].hex()
        uuid = f"GPU-{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
        cc = [
            cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d)[1],
            cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d)[1],
        ]
        rows.append(
            {
                "cuda": [
                    cu.cuDeviceGetName(256, d)[1].split(b"\0")[0].decode(),
                    uuid,
                    cu.cuDeviceTotalMem(d)[1],
                    cc,
                ],
                "nvml": [
                    n.nvmlDeviceGetName(h),
                    n.nvmlDeviceGetUUID(h),
                    n.nvmlDeviceGetMemoryInfo(h).total,
                    list(n.nvmlDeviceGetCudaComputeCapability(h)),
                ],
            }
        )
    maps = Path("/proc/self/maps").read_text().splitlines()
    libs = sorted({ln.split()[-1] for ln in maps if "libnvidia-ml" in ln or "libcuda" in ln})
    libs += sorted({ln.split()[-1] for ln in maps if "libcedana-gpu" in ln})
    print(
        json.dumps(
            {
                "rows": rows,
                "nvml_count": n.nvmlDeviceGetCount(),
                "cuda_version": cu.cuDriverGetVersion()[1],
                "nvml_cuda_version": n.nvmlSystemGetCudaDriverVersion(),
                "libs": libs,
            }
        )
    )
    n.nvmlShutdown()


if __name__ == "__main__":
    main()
