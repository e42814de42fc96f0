/* Managed memory as the job sees it: cuMemAllocManaged, cuMemAdvise,
 * cuMemPrefetchAsync.
 *
 * Under the interposer the job's CPU and the device are in different
 * processes, so managed memory is a shared-memory file, mapped at the same
 * address in the job and in the controller and registered with the driver
 * there (like pinned host memory, memory.c; the controller refuses it
 * unless it got the job's address, CGS_PIN_SAME_ADDRESS). The job's CPU
 * and the kernels then read and write the same bytes through the same
 * pointer, and the checkpoint saves the file with the pinned ones.
 *
 * On a real GPU that is mapped pinned host memory, not migrating pages:
 * kernels reach it over the bus (PCIe or NVLink-C2C) at every access, where
 * the driver's managed memory would move the pages to the device once. It
 * is correct, and as fast as zero-copy memory; a kernel that sweeps a large
 * managed buffer many times is slower than with the driver alone. Advice and
 * prefetches are checked as the driver checks them and change nothing.
 */
#include "ic.h"

CUresult ic_cuMemAllocManaged_6000(CUdeviceptr_v2 *dptr, size_t bytesize, unsigned int flags) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST) return CUDA_ERROR_INVALID_VALUE;
  void *p = NULL;
  rc = ic_shared_alloc(&p, bytesize, 0, IC_MEM_MANAGED);
  if (!rc) *dptr = (CUdeviceptr_v2)(uintptr_t)p;
  return rc;
}

/* Whether all of [p, p+n) lies in one managed allocation. */
static bool managed_range(CUdeviceptr_v2 p, size_t n) {
  ic_alloc a;
  if (!p || n == 0 || !ic_mem_find((uintptr_t)p, &a) || a.kind != IC_MEM_MANAGED) return false;
  return n <= a.size - ((uintptr_t)p - a.base);
}

/* A device that does not exist is `bad_device`: an advice naming one is an
 * invalid value to NVIDIA's driver (580), as to the fake. */
static CUresult check_location(CUmemLocation loc, CUresult bad_device) {
  switch (loc.type) {
  case CU_MEM_LOCATION_TYPE_DEVICE: return loc.id >= 0 && loc.id < ic.device_count ? CUDA_SUCCESS : bad_device;
  case CU_MEM_LOCATION_TYPE_HOST:
  case CU_MEM_LOCATION_TYPE_HOST_NUMA:
  case CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT: return CUDA_SUCCESS;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult ic_cuMemAdvise_12020(CUdeviceptr_v2 devPtr, size_t count, CUmem_advise advice, CUmemLocation_v1 location) {
  CUresult rc = ic_need_thread(ic_self());
  if (rc) return rc;
  if (advice < CU_MEM_ADVISE_SET_READ_MOSTLY || advice > CU_MEM_ADVISE_UNSET_ACCESSED_BY) return CUDA_ERROR_INVALID_VALUE;
  if (!managed_range(devPtr, count)) return CUDA_ERROR_INVALID_VALUE;
  /* Read-mostly takes no location; the others name where. */
  if (advice == CU_MEM_ADVISE_SET_READ_MOSTLY || advice == CU_MEM_ADVISE_UNSET_READ_MOSTLY) return CUDA_SUCCESS;
  return check_location(location, CUDA_ERROR_INVALID_VALUE);
}

CUresult ic_cuMemAdvise_8000(CUdeviceptr_v2 devPtr, size_t count, CUmem_advise advice, CUdevice_v1 device) {
  CUmemLocation loc = {.type = device == CU_DEVICE_CPU ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE,
                       .id = device == CU_DEVICE_CPU ? 0 : device};
  return ic_cuMemAdvise_12020(devPtr, count, advice, loc);
}

CUresult ic_cuMemPrefetchAsync_12020(CUdeviceptr_v2 devPtr, size_t count, CUmemLocation_v1 location,
                                     unsigned int flags, CUstream hStream) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  if (flags || !managed_range(devPtr, count)) return CUDA_ERROR_INVALID_VALUE;
  return check_location(location, CUDA_ERROR_INVALID_DEVICE);
}

CUresult ic_cuMemPrefetchAsync_8000(CUdeviceptr_v2 devPtr, size_t count, CUdevice_v1 dstDevice, CUstream hStream) {
  CUmemLocation loc = {.type = dstDevice == CU_DEVICE_CPU ? CU_MEM_LOCATION_TYPE_HOST : CU_MEM_LOCATION_TYPE_DEVICE,
                       .id = dstDevice == CU_DEVICE_CPU ? 0 : dstDevice};
  return ic_cuMemPrefetchAsync_12020(devPtr, count, loc, 0, hStream);
}
