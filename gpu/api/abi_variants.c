/* The driver functions whose every behaviour is another entry point of the
 * same library: the old ABI variants (32-bit sizes and addresses, fewer
 * parameters) and the aliases the driver keeps. They are written once here
 * and compiled into every library that implements the API (the fake driver,
 * the interposer) with that library's prefix, the way exports.c is
 * (CU_EXPORTS_IMPL; see its comment), so that a rule of an old variant, such
 * as the 4 GiB limit of the 32-bit ones, cannot drift between the two.
 *
 * Each library must define the newer variants used here; a missing one is a
 * link error (both link with --no-undefined), not a silent stub.
 */
#include "impl_names.h"

#include <stdint.h>

#include "cuda_error_text.h"

/* Prototypes of every implementation, from the API table, so that each call
 * below is checked against the real signature. */
#define CU_FN(base, version, symbol, params, args) \
  CU_HIDDEN CUresult CU_IMPL(base##_##version) params;
#define CU_FN_PTDS(base, version, symbol, dver, params, args)
#include "cuda_api_table.h"

/* ---- driver, contexts, devices ------------------------------------------ */

CUresult CU_IMPL(cuGetErrorName_6000)(CUresult error, const char **pStr) {
  return cu_error_name(error, pStr);
}

CUresult CU_IMPL(cuGetErrorString_6000)(CUresult error, const char **pStr) {
  return cu_error_string(error, pStr);
}

/* Purely local in both libraries (see get_proc_address in exports.c). */
CUresult CU_IMPL(cuGetProcAddress_11030)(const char *symbol, void **pfn, int driverVersion,
                                         cuuint64_t flags) {
  return CU_LIB(get_proc_address)(symbol, pfn, driverVersion, flags, NULL);
}

CUresult CU_IMPL(cuGetProcAddress_12000)(const char *symbol, void **pfn, int driverVersion,
                                         cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *symbolFound) {
  return CU_LIB(get_proc_address)(symbol, pfn, driverVersion, flags, symbolFound);
}

/* Without creation parameters the newest variant is the plain create. */
CUresult CU_IMPL(cuCtxCreate_2000)(CUcontext *pctx, unsigned int flags, CUdevice_v1 dev) {
  return CU_IMPL(cuCtxCreate_12050)(pctx, NULL, flags, dev);
}

CUresult CU_IMPL(cuCtxCreate_3020)(CUcontext *pctx, unsigned int flags, CUdevice_v1 dev) {
  return CU_IMPL(cuCtxCreate_12050)(pctx, NULL, flags, dev);
}

/* Execution affinity is not offered: asking for any is refused the way the
 * driver refuses an unsupported affinity. */
CUresult CU_IMPL(cuCtxCreate_11040)(CUcontext *pctx, CUexecAffinityParam *paramsArray,
                                    int numParams, unsigned int flags, CUdevice_v1 dev) {
  if (numParams < 0 || (numParams > 0 && !paramsArray)) return CUDA_ERROR_INVALID_VALUE;
  if (numParams > 0) return CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
  return CU_IMPL(cuCtxCreate_12050)(pctx, NULL, flags, dev);
}

CUresult CU_IMPL(cuCtxDestroy_2000)(CUcontext ctx) { return CU_IMPL(cuCtxDestroy_4000)(ctx); }

CUresult CU_IMPL(cuCtxPushCurrent_2000)(CUcontext ctx) {
  return CU_IMPL(cuCtxPushCurrent_4000)(ctx);
}

CUresult CU_IMPL(cuCtxPopCurrent_2000)(CUcontext *pctx) {
  return CU_IMPL(cuCtxPopCurrent_4000)(pctx);
}

CUresult CU_IMPL(cuCtxGetDevice_2000)(CUdevice_v1 *device) {
  return CU_IMPL(cuCtxGetDevice_13000)(device, NULL);
}

CUresult CU_IMPL(cuCtxSynchronize_2000)(void) { return CU_IMPL(cuCtxSynchronize_13000)(NULL); }

CUresult CU_IMPL(cuDevicePrimaryCtxRelease_7000)(CUdevice_v1 dev) {
  return CU_IMPL(cuDevicePrimaryCtxRelease_11000)(dev);
}

CUresult CU_IMPL(cuDevicePrimaryCtxReset_7000)(CUdevice_v1 dev) {
  return CU_IMPL(cuDevicePrimaryCtxReset_11000)(dev);
}

/* Before CUDA 11 the flags could not change while the context was active. */
CUresult CU_IMPL(cuDevicePrimaryCtxSetFlags_7000)(CUdevice_v1 dev, unsigned int flags) {
  unsigned int current;
  int active;
  CUresult rc = CU_IMPL(cuDevicePrimaryCtxGetState_7000)(dev, &current, &active);
  if (rc) return rc;
  if (active) return CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE;
  return CU_IMPL(cuDevicePrimaryCtxSetFlags_11000)(dev, flags);
}

CUresult CU_IMPL(cuDeviceGetUuid_9020)(CUuuid *uuid, CUdevice_v1 dev) {
  return CU_IMPL(cuDeviceGetUuid_11040)(uuid, dev);
}

/* The 32-bit size saturates, as the driver's does on a device over 4 GiB. */
CUresult CU_IMPL(cuDeviceTotalMem_2000)(unsigned int *bytes, CUdevice_v1 dev) {
  size_t b;
  CUresult rc = CU_IMPL(cuDeviceTotalMem_3020)(&b, dev);
  if (rc) return rc;
  if (!bytes) return CUDA_ERROR_INVALID_VALUE;
  *bytes = b > UINT32_MAX ? UINT32_MAX : (unsigned int)b;
  return CUDA_SUCCESS;
}

/* ---- streams and events -------------------------------------------------- */

CUresult CU_IMPL(cuStreamCreate_2000)(CUstream *phStream, unsigned int Flags) {
  return CU_IMPL(cuStreamCreateWithPriority_5050)(phStream, Flags, 0);
}

CUresult CU_IMPL(cuStreamDestroy_2000)(CUstream hStream) {
  return CU_IMPL(cuStreamDestroy_4000)(hStream);
}

CUresult CU_IMPL(cuStreamGetCtx_9020)(CUstream hStream, CUcontext *pctx) {
  return CU_IMPL(cuStreamGetCtx_12050)(hStream, pctx, NULL);
}

/* cuStreamGetCaptureInfo's variants: with stream capture, graph_impl.h. */

CUresult CU_IMPL(cuEventDestroy_2000)(CUevent hEvent) {
  return CU_IMPL(cuEventDestroy_4000)(hEvent);
}

CUresult CU_IMPL(cuEventRecord_2000)(CUevent hEvent, CUstream hStream) {
  return CU_IMPL(cuEventRecordWithFlags_11010)(hEvent, hStream, CU_EVENT_RECORD_DEFAULT);
}

CUresult CU_IMPL(cuEventElapsedTime_2000)(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
  return CU_IMPL(cuEventElapsedTime_12080)(pMilliseconds, hStart, hEnd);
}

/* ---- modules ------------------------------------------------------------- */

/* A fat binary is one of the images cuModuleLoadData takes. */
CUresult CU_IMPL(cuModuleLoadFatBinary_2000)(CUmodule *module, const void *fatCubin) {
  return CU_IMPL(cuModuleLoadData_2000)(module, fatCubin);
}

/* The 32-bit API cannot name a global above 4 GiB. */
CUresult CU_IMPL(cuModuleGetGlobal_2000)(CUdeviceptr_v1 *dptr, unsigned int *bytes, CUmodule hmod,
                                         const char *name) {
  CUdeviceptr_v2 p;
  size_t n;
  CUresult rc = CU_IMPL(cuModuleGetGlobal_3020)(&p, &n, hmod, name);
  if (rc) return rc;
  if (p > UINT32_MAX || n > UINT32_MAX) return CUDA_ERROR_INVALID_VALUE;
  if (dptr) *dptr = (CUdeviceptr_v1)p;
  if (bytes) *bytes = (unsigned int)n;
  return CUDA_SUCCESS;
}

/* ---- memory -------------------------------------------------------------- */

/* The 32-bit entry points can only name memory below 4 GiB, which neither the
 * fake devices nor the controller's address range have: an allocation that
 * lands above is given back and reported as out of memory. */
CUresult CU_IMPL(cuMemAlloc_2000)(CUdeviceptr_v1 *dptr, unsigned int bytesize) {
  if (!dptr) return CUDA_ERROR_INVALID_VALUE;
  CUdeviceptr_v2 p;
  CUresult rc = CU_IMPL(cuMemAlloc_3020)(&p, bytesize);
  if (rc) return rc;
  if (p > UINT32_MAX) {
    CU_IMPL(cuMemFree_3020)(p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *dptr = (CUdeviceptr_v1)p;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuMemAllocPitch_2000)(CUdeviceptr_v1 *dptr, unsigned int *pPitch,
                                       unsigned int WidthInBytes, unsigned int Height,
                                       unsigned int ElementSizeBytes) {
  if (!dptr || !pPitch) return CUDA_ERROR_INVALID_VALUE;
  CUdeviceptr_v2 p;
  size_t pitch;
  CUresult rc = CU_IMPL(cuMemAllocPitch_3020)(&p, &pitch, WidthInBytes, Height, ElementSizeBytes);
  if (rc) return rc;
  if (p > UINT32_MAX) {
    CU_IMPL(cuMemFree_3020)(p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *dptr = (CUdeviceptr_v1)p;
  *pPitch = (unsigned int)pitch;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuMemFree_2000)(CUdeviceptr_v1 dptr) { return CU_IMPL(cuMemFree_3020)(dptr); }

/* The 32-bit sizes saturate rather than wrap. */
CUresult CU_IMPL(cuMemGetInfo_2000)(unsigned int *free_bytes, unsigned int *total) {
  if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
  size_t f, t;
  CUresult rc = CU_IMPL(cuMemGetInfo_3020)(&f, &t);
  if (rc) return rc;
  *free_bytes = f > UINT32_MAX ? UINT32_MAX : (unsigned int)f;
  *total = t > UINT32_MAX ? UINT32_MAX : (unsigned int)t;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuMemGetAddressRange_2000)(CUdeviceptr_v1 *pbase, unsigned int *psize,
                                            CUdeviceptr_v1 dptr) {
  CUdeviceptr_v2 b;
  size_t s;
  CUresult rc = CU_IMPL(cuMemGetAddressRange_3020)(&b, &s, dptr);
  if (rc) return rc;
  if (b > UINT32_MAX || s > UINT32_MAX) return CUDA_ERROR_INVALID_VALUE;
  if (pbase) *pbase = (CUdeviceptr_v1)b;
  if (psize) *psize = (unsigned int)s;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuMemAllocHost_2000)(void **pp, unsigned int bytesize) {
  return CU_IMPL(cuMemHostAlloc_2020)(pp, bytesize, 0);
}

CUresult CU_IMPL(cuMemAllocHost_3020)(void **pp, size_t bytesize) {
  return CU_IMPL(cuMemHostAlloc_2020)(pp, bytesize, 0);
}

CUresult CU_IMPL(cuMemHostGetDevicePointer_2020)(CUdeviceptr_v1 *pdptr, void *p,
                                                 unsigned int Flags) {
  if (!pdptr) return CUDA_ERROR_INVALID_VALUE;
  CUdeviceptr_v2 d;
  CUresult rc = CU_IMPL(cuMemHostGetDevicePointer_3020)(&d, p, Flags);
  if (rc) return rc;
  if (d > UINT32_MAX) return CUDA_ERROR_INVALID_VALUE;
  *pdptr = (CUdeviceptr_v1)d;
  return CUDA_SUCCESS;
}

CUresult CU_IMPL(cuMemHostRegister_4000)(void *p, size_t bytesize, unsigned int Flags) {
  return CU_IMPL(cuMemHostRegister_6050)(p, bytesize, Flags);
}

/* ---- copies and memsets -------------------------------------------------- */

CUresult CU_IMPL(cuMemcpyHtoD_2000)(CUdeviceptr_v1 dstDevice, const void *srcHost,
                                    unsigned int ByteCount) {
  return CU_IMPL(cuMemcpyHtoD_3020)(dstDevice, srcHost, ByteCount);
}

CUresult CU_IMPL(cuMemcpyDtoH_2000)(void *dstHost, CUdeviceptr_v1 srcDevice,
                                    unsigned int ByteCount) {
  return CU_IMPL(cuMemcpyDtoH_3020)(dstHost, srcDevice, ByteCount);
}

CUresult CU_IMPL(cuMemcpyDtoD_2000)(CUdeviceptr_v1 dstDevice, CUdeviceptr_v1 srcDevice,
                                    unsigned int ByteCount) {
  return CU_IMPL(cuMemcpyDtoD_3020)(dstDevice, srcDevice, ByteCount);
}

CUresult CU_IMPL(cuMemcpyHtoDAsync_2000)(CUdeviceptr_v1 dstDevice, const void *srcHost,
                                         unsigned int ByteCount, CUstream hStream) {
  return CU_IMPL(cuMemcpyHtoDAsync_3020)(dstDevice, srcHost, ByteCount, hStream);
}

CUresult CU_IMPL(cuMemcpyDtoHAsync_2000)(void *dstHost, CUdeviceptr_v1 srcDevice,
                                         unsigned int ByteCount, CUstream hStream) {
  return CU_IMPL(cuMemcpyDtoHAsync_3020)(dstHost, srcDevice, ByteCount, hStream);
}

CUresult CU_IMPL(cuMemcpyDtoDAsync_3000)(CUdeviceptr_v1 dstDevice, CUdeviceptr_v1 srcDevice,
                                         unsigned int ByteCount, CUstream hStream) {
  return CU_IMPL(cuMemcpyDtoDAsync_3020)(dstDevice, srcDevice, ByteCount, hStream);
}

/* Both libraries copy unaligned rows the same way as aligned ones. */
CUresult CU_IMPL(cuMemcpy2DUnaligned_2000)(const CUDA_MEMCPY2D_v1 *pCopy) {
  return CU_IMPL(cuMemcpy2D_2000)(pCopy);
}

CUresult CU_IMPL(cuMemsetD8_2000)(CUdeviceptr_v1 dstDevice, unsigned char uc, unsigned int N) {
  return CU_IMPL(cuMemsetD8_3020)(dstDevice, uc, N);
}

CUresult CU_IMPL(cuMemsetD16_2000)(CUdeviceptr_v1 dstDevice, unsigned short us, unsigned int N) {
  return CU_IMPL(cuMemsetD16_3020)(dstDevice, us, N);
}

CUresult CU_IMPL(cuMemsetD32_2000)(CUdeviceptr_v1 dstDevice, unsigned int ui, unsigned int N) {
  return CU_IMPL(cuMemsetD32_3020)(dstDevice, ui, N);
}

CUresult CU_IMPL(cuMemsetD2D8_2000)(CUdeviceptr_v1 dstDevice, unsigned int dstPitch,
                                    unsigned char uc, unsigned int Width, unsigned int Height) {
  return CU_IMPL(cuMemsetD2D8_3020)(dstDevice, dstPitch, uc, Width, Height);
}

CUresult CU_IMPL(cuMemsetD2D16_2000)(CUdeviceptr_v1 dstDevice, unsigned int dstPitch,
                                     unsigned short us, unsigned int Width, unsigned int Height) {
  return CU_IMPL(cuMemsetD2D16_3020)(dstDevice, dstPitch, us, Width, Height);
}

CUresult CU_IMPL(cuMemsetD2D32_2000)(CUdeviceptr_v1 dstDevice, unsigned int dstPitch,
                                     unsigned int ui, unsigned int Width, unsigned int Height) {
  return CU_IMPL(cuMemsetD2D32_3020)(dstDevice, dstPitch, ui, Width, Height);
}
