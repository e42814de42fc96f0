/* Managed memory: cuMemAllocManaged, cuMemAdvise, cuMemPrefetchAsync.
 *
 * The fake device is the host's CPU, so its memory is already reachable
 * from the host: a managed allocation is device memory (memory.c) marked
 * managed, which the host reads and writes at the same address while
 * kernels do (CONCURRENT_MANAGED_ACCESS=1). There are no pages to migrate:
 * advice and prefetches are checked as the driver checks them and change
 * nothing.
 */
#include "fk_memory.h"

static bool valid_device(int id) { return id >= 0 && id < fk_cfg.device_count; }

CUresult fake_cuMemAllocManaged_6000(CUdeviceptr_v2 *dptr, size_t bytesize, unsigned int flags) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) return CUDA_ERROR_INVALID_VALUE;
  return fk_dev_alloc(ctx, bytesize, FK_ALLOC_MANAGED, dptr);
}

/* Whether all of [p, p+n) lies in one managed allocation. */
static bool managed_range(CUdeviceptr_v2 p, size_t n) {
  fk_alloc a;
  bool covered = false;
  if (!p || n == 0 || !fk_mem_query((uintptr_t)p, n, &a, &covered, NULL)) return false;
  return covered && a.kind == FK_MEM_DEVICE && (a.flags & FK_ALLOC_MANAGED);
}

/* A location advice or a prefetch may name: a device, or the host. A device
 * that does not exist is `bad_device` (NVIDIA's driver 580 answers an advice
 * naming one with CUDA_ERROR_INVALID_VALUE). */
static CUresult check_location(CUmemLocation loc, bool host_ok, CUresult bad_device) {
  switch (loc.type) {
  case CU_MEM_LOCATION_TYPE_DEVICE: return valid_device(loc.id) ? CUDA_SUCCESS : bad_device;
  case CU_MEM_LOCATION_TYPE_HOST:
  case CU_MEM_LOCATION_TYPE_HOST_NUMA:
  case CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT: return host_ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult fake_cuMemAdvise_12020(CUdeviceptr_v2 devPtr, size_t count, CUmem_advise advice, CUmemLocation_v1 location) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (advice < CU_MEM_ADVISE_SET_READ_MOSTLY || advice > CU_MEM_ADVISE_UNSET_ACCESSED_BY) return CUDA_ERROR_INVALID_VALUE;
  if (!managed_range(devPtr, count)) return CUDA_ERROR_INVALID_VALUE;
  /* Read-mostly takes no location; the others name where. */
  if (advice == CU_MEM_ADVISE_SET_READ_MOSTLY || advice == CU_MEM_ADVISE_UNSET_READ_MOSTLY) return CUDA_SUCCESS;
  return check_location(location, true, CUDA_ERROR_INVALID_VALUE);
}

CUresult fake_cuMemAdvise_8000(CUdeviceptr_v2 devPtr, size_t count, CUmem_advise advice, CUdevice_v1 device) {
  CUmemLocation loc = {.type = device == CU_DEVICE_CPU ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE,
                       .id = device == CU_DEVICE_CPU ? 0 : device};
  return fake_cuMemAdvise_12020(devPtr, count, advice, loc);
}

CUresult fake_cuMemPrefetchAsync_12020(CUdeviceptr_v2 devPtr, size_t count, CUmemLocation_v1 location,
                                       unsigned int flags, CUstream hStream) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &ctx, &s);
  if (rc) return rc;
  if (flags || !managed_range(devPtr, count)) return CUDA_ERROR_INVALID_VALUE;
  return check_location(location, true, CUDA_ERROR_INVALID_DEVICE);
}

CUresult fake_cuMemPrefetchAsync_8000(CUdeviceptr_v2 devPtr, size_t count, CUdevice_v1 dstDevice, CUstream hStream) {
  CUmemLocation loc = {.type = dstDevice == CU_DEVICE_CPU ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE,
                       .id = dstDevice == CU_DEVICE_CPU ? 0 : dstDevice};
  return fake_cuMemPrefetchAsync_12020(devPtr, count, loc, 0, hStream);
}
