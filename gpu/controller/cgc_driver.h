/* The driver functions the dispatcher calls, resolved at cgc_open through
 * cuGetProcAddress_v2 of the libcuda.so.1 already loaded in this process.
 *
 * The library is never linked against libcuda: the Python controller picks
 * the driver (the system's or the fake one) and loads it first; we find it by
 * its SONAME. Each function is requested at the version of the typedef we
 * call it through, so we get exactly that ABI variant.
 */
#ifndef CGC_DRIVER_H
#define CGC_DRIVER_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <cudaTypedefs.h>

/* X(name, version, required) */
#define CGC_DRIVER_FNS(X)                     \
  X(cuInit, 2000, 1)                          \
  X(cuDriverGetVersion, 2020, 1)              \
  X(cuGetErrorName, 6000, 0)                  \
  X(cuDeviceGetCount, 2000, 1)                \
  X(cuDeviceGet, 2000, 1)                     \
  X(cuDeviceGetName, 2000, 1)                 \
  X(cuDeviceGetUuid, 11040, 0)                \
  X(cuDeviceTotalMem, 3020, 1)                \
  X(cuDeviceGetAttribute, 2000, 1)            \
  X(cuDevicePrimaryCtxRetain, 7000, 1)        \
  X(cuDevicePrimaryCtxRelease, 11000, 1)      \
  X(cuCtxCreate, 3020, 1)                     \
  X(cuCtxDestroy, 4000, 1)                    \
  X(cuCtxSetCurrent, 4000, 1)                 \
  X(cuCtxGetCurrent, 4000, 1)                 \
  X(cuCtxSynchronize, 2000, 1)                \
  X(cuMemAddressReserve, 10020, 1)            \
  X(cuMemAddressFree, 10020, 1)               \
  X(cuMemCreate, 10020, 1)                    \
  X(cuMemRelease, 10020, 1)                   \
  X(cuMemMap, 10020, 1)                       \
  X(cuMemUnmap, 10020, 1)                     \
  X(cuMemSetAccess, 10020, 1)                 \
  X(cuMemGetAllocationGranularity, 10020, 1)  \
  X(cuMemGetInfo, 3020, 1)                    \
  X(cuMemHostRegister, 6050, 0)               \
  X(cuMemHostUnregister, 4000, 0)             \
  X(cuMemcpyHtoDAsync, 3020, 1)               \
  X(cuMemcpyDtoHAsync, 3020, 1)               \
  X(cuMemcpyDtoDAsync, 3020, 1)               \
  X(cuMemsetD8Async, 3020, 1)                 \
  X(cuMemsetD16Async, 3020, 1)                \
  X(cuMemsetD32Async, 3020, 1)                \
  X(cuMemsetD2D8Async, 3020, 1)               \
  X(cuMemsetD2D16Async, 3020, 1)              \
  X(cuMemsetD2D32Async, 3020, 1)              \
  X(cuStreamCreateWithPriority, 5050, 1)      \
  X(cuStreamDestroy, 4000, 1)                 \
  X(cuStreamQuery, 2000, 1)                   \
  X(cuStreamWaitEvent, 3020, 1)               \
  X(cuEventCreate, 2000, 1)                   \
  X(cuEventRecord, 2000, 1)                   \
  X(cuEventQuery, 2000, 1)                    \
  X(cuEventSynchronize, 2000, 1)              \
  X(cuEventElapsedTime, 12080, 1)             \
  X(cuEventDestroy, 4000, 1)                  \
  X(cuModuleLoadData, 2000, 1)                \
  X(cuModuleUnload, 2000, 1)                  \
  X(cuModuleGetFunction, 2000, 1)             \
  X(cuModuleGetGlobal, 3020, 1)               \
  X(cuFuncGetParamInfo, 12040, 0)             \
  X(cuFuncGetAttribute, 2020, 1)              \
  X(cuFuncSetAttribute, 9000, 0)              \
  X(cuLaunchKernel, 4000, 1)                  \
  X(cuLaunchHostFunc, 10000, 0)               \
  X(cuLinkCreate, 6050, 0)                    \
  X(cuLinkAddData, 6050, 0)                   \
  X(cuLinkComplete, 5050, 0)                  \
  X(cuLinkDestroy, 5050, 0)                   \
  /* checkpoint copies (checkpoint.c) */      \
  X(cuMemAllocHost, 3020, 0)                  \
  X(cuMemFreeHost, 2000, 0)                   \
  X(cuPointerGetAttribute, 4000, 0)           \
  X(cuStreamSynchronize, 2000, 0)             \
  X(cuMemcpyDtoH, 3020, 0)                    \
  X(cuMemcpyHtoD, 3020, 0)

/* cuEventElapsedTime's typedef for 12080 has the same arguments as 2000; a
 * driver older than 12.8 answers the 2000 variant, which is fine. */
#define CGC_PFN(name, version) PFN_##name##_v##version

typedef struct cgc_driver {
#define X(name, version, required) CGC_PFN(name, version) name;
  CGC_DRIVER_FNS(X)
#undef X
  /* cuCtxSynchronize changed in CUDA 13 to take the context; we call the
   * 2000 variant (current context) and keep this for drivers that lack it. */
  PFN_cuCtxSynchronize_v13000 cuCtxSynchronize_v2;
} cgc_driver;

#endif
