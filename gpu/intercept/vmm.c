/* Virtual memory management as the job sees it: address reservations,
 * physical allocations, mappings and access rights.
 *
 * Everything is forwarded (VMM_* ops): the controller takes the job's
 * reservations from its own reserved device range and maps the job's
 * physical allocations at exactly the addresses the job asks for, so
 * pointers into them mean the same bytes in the controller, in kernels and
 * after a restore (gpu/controller/vmm.c). Here each reservation is entered
 * in the allocation table as device memory, so copies and memsets treat its
 * addresses as device pointers; whether a byte of it is mapped, and
 * accessible, is the controller's to say.
 *
 * A physical allocation's handle is the controller's number for it. The
 * properties it was created with are kept here, for
 * cuMemGetAllocationPropertiesFromHandle.
 */
#include "ic.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct phys_rec {
  uint64_t handle;
  CUmemAllocationProp prop;
} phys_rec;

static pthread_mutex_t phys_lock = PTHREAD_MUTEX_INITIALIZER;
static phys_rec *phys;
static size_t nphys, capphys;

static CUresult vmm_call(ic_thread *t, cgs_vmm *r, uint32_t op, uint64_t *ret0) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  ic_req(r, op, sizeof *r, ic_current_ctx(t));
  cgs_channel *ch;
  rc = ic_call(t, r, &ch);
  if (!rc && ret0) *ret0 = ch->ret[0];
  ic_leave();
  return rc;
}

/* A zeroed request in the thread's buffer, after the checks every call makes. */
static CUresult begin(ic_thread **t, cgs_vmm **r) {
  *t = ic_self();
  CUresult rc = ic_need_thread(*t);
  if (rc) return rc;
  *r = (cgs_vmm *)(*t)->req;
  memset(*r, 0, sizeof **r);
  return CUDA_SUCCESS;
}

/* What the driver checks of an allocation's properties (and the fake driver,
 * gpu/fake/cuda/vmm.c), before anything crosses. */
static CUresult check_prop(const CUmemAllocationProp *prop) {
  if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (prop->location.type == CU_MEM_LOCATION_TYPE_HOST || prop->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  if (prop->location.id < 0 || prop->location.id >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  /* Shareable handles would be the controller's: not forwarded. */
  if (prop->requestedHandleTypes & ~(unsigned)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (prop->allocFlags.compressionType) return CUDA_ERROR_NOT_SUPPORTED;
  return CUDA_SUCCESS;
}

static void put_prop(cgs_vmm *r, const CUmemAllocationProp *prop) {
  r->type = (uint32_t)prop->type;
  r->handle_types = (uint32_t)prop->requestedHandleTypes;
  r->location_type = (int32_t)prop->location.type;
  r->location_id = prop->location.id;
}

CUresult ic_cuMemGetAllocationGranularity_10020(size_t *granularity, const CUmemAllocationProp_v1 *prop,
                                                CUmemAllocationGranularity_flags option) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!granularity || !prop) return CUDA_ERROR_INVALID_VALUE;
  if (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
    return CUDA_ERROR_INVALID_VALUE;
  rc = check_prop(prop);
  if (rc) return rc;
  put_prop(r, prop);
  r->option = (uint32_t)option;
  uint64_t g = 0;
  rc = vmm_call(t, r, CGS_OP_VMM_GRANULARITY, &g);
  if (!rc) *granularity = (size_t)g;
  return rc;
}

CUresult ic_cuMemAddressReserve_10020(CUdeviceptr_v2 *ptr, size_t size, size_t alignment, CUdeviceptr_v2 addr,
                                      unsigned long long flags) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!ptr || size == 0 || flags) return CUDA_ERROR_INVALID_VALUE;
  r->addr = addr;
  r->size = size;
  r->alignment = alignment;
  uint64_t got = 0;
  rc = vmm_call(t, r, CGS_OP_VMM_RESERVE, &got);
  if (rc) return rc;
  ic_alloc a = {.base = (uintptr_t)got, .size = size, .kind = IC_MEM_VMM};
  rc = ic_mem_add(&a);
  if (rc) {
    r = (cgs_vmm *)t->req;
    memset(r, 0, sizeof *r);
    r->addr = got;
    r->size = size;
    vmm_call(t, r, CGS_OP_VMM_FREE, NULL);
    return rc;
  }
  *ptr = (CUdeviceptr_v2)got;
  return CUDA_SUCCESS;
}

CUresult ic_cuMemAddressFree_10020(CUdeviceptr_v2 ptr, size_t size) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  ic_alloc a;
  if (!ptr || !ic_mem_find((uintptr_t)ptr, &a) || a.kind != IC_MEM_VMM || a.base != ptr || a.size != size)
    return CUDA_ERROR_INVALID_VALUE;
  r->addr = ptr;
  r->size = size;
  rc = vmm_call(t, r, CGS_OP_VMM_FREE, NULL);
  if (!rc) ic_mem_take((uintptr_t)ptr, 1u << IC_MEM_VMM, NULL);
  return rc;
}

CUresult ic_cuMemCreate_10020(CUmemGenericAllocationHandle_v1 *handle, size_t size,
                              const CUmemAllocationProp_v1 *prop, unsigned long long flags) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!handle || !prop || flags || size == 0) return CUDA_ERROR_INVALID_VALUE;
  rc = check_prop(prop);
  if (rc) return rc;
  put_prop(r, prop);
  r->size = size;
  pthread_mutex_lock(&phys_lock);
  if (nphys == capphys) {
    size_t cap = capphys ? 2 * capphys : 16;
    phys_rec *g = realloc(phys, cap * sizeof *g);
    if (!g) {
      pthread_mutex_unlock(&phys_lock);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    phys = g;
    capphys = cap;
  }
  pthread_mutex_unlock(&phys_lock);
  uint64_t h = 0;
  rc = vmm_call(t, r, CGS_OP_VMM_CREATE, &h);
  if (rc) return rc;
  pthread_mutex_lock(&phys_lock);
  phys[nphys].handle = h;
  phys[nphys].prop = *prop;
  phys[nphys].prop.win32HandleMetaData = NULL;
  nphys++;
  pthread_mutex_unlock(&phys_lock);
  *handle = (CUmemGenericAllocationHandle_v1)h;
  return CUDA_SUCCESS;
}

CUresult ic_cuMemRelease_10020(CUmemGenericAllocationHandle_v1 handle) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  r->handle = handle;
  rc = vmm_call(t, r, CGS_OP_VMM_RELEASE, NULL);
  if (rc) return rc;
  pthread_mutex_lock(&phys_lock);
  for (size_t i = 0; i < nphys; i++)
    if (phys[i].handle == handle) {
      phys[i] = phys[--nphys];
      break;
    }
  pthread_mutex_unlock(&phys_lock);
  return CUDA_SUCCESS;
}

CUresult ic_cuMemGetAllocationPropertiesFromHandle_10020(CUmemAllocationProp_v1 *prop,
                                                         CUmemGenericAllocationHandle_v1 handle) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!prop) return CUDA_ERROR_INVALID_VALUE;
  rc = CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&phys_lock);
  for (size_t i = 0; i < nphys; i++)
    if (phys[i].handle == handle) {
      *prop = phys[i].prop;
      rc = CUDA_SUCCESS;
      break;
    }
  pthread_mutex_unlock(&phys_lock);
  return rc;
}

CUresult ic_cuMemMap_10020(CUdeviceptr_v2 ptr, size_t size, size_t offset, CUmemGenericAllocationHandle_v1 handle,
                           unsigned long long flags) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!ptr || size == 0 || flags || offset) return CUDA_ERROR_INVALID_VALUE;
  r->addr = ptr;
  r->size = size;
  r->offset = offset;
  r->handle = handle;
  r->flags = flags;
  return vmm_call(t, r, CGS_OP_VMM_MAP, NULL);
}

CUresult ic_cuMemUnmap_10020(CUdeviceptr_v2 ptr, size_t size) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!ptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  r->addr = ptr;
  r->size = size;
  return vmm_call(t, r, CGS_OP_VMM_UNMAP, NULL);
}

CUresult ic_cuMemSetAccess_10020(CUdeviceptr_v2 ptr, size_t size, const CUmemAccessDesc_v1 *desc, size_t count) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!desc || count == 0 || size == 0 || ptr + size < ptr) return CUDA_ERROR_INVALID_VALUE;
  /* One descriptor per device is all a request holds; a later one for the
   * same device wins, as it would applied in order. */
  for (size_t k = 0; k < count; k++) {
    if (desc[k].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    int d = desc[k].location.id;
    if (d < 0 || d >= ic.device_count || d >= CGS_MAX_DEVICES) return CUDA_ERROR_INVALID_DEVICE;
    uint32_t j = 0;
    while (j < r->naccess && r->access_device[j] != d) j++;
    r->access_device[j] = d;
    r->access_flags[j] = (uint32_t)desc[k].flags;
    if (j == r->naccess) r->naccess++;
  }
  r->addr = ptr;
  r->size = size;
  return vmm_call(t, r, CGS_OP_VMM_SET_ACCESS, NULL);
}

CUresult ic_cuMemGetAccess_10020(unsigned long long *flags, const CUmemLocation_v1 *location, CUdeviceptr_v2 ptr) {
  ic_thread *t;
  cgs_vmm *r;
  CUresult rc = begin(&t, &r);
  if (rc) return rc;
  if (!flags || !location || location->type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  if (location->id < 0 || location->id >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  r->addr = ptr;
  r->location_type = (int32_t)location->type;
  r->location_id = location->id;
  uint64_t f = 0;
  rc = vmm_call(t, r, CGS_OP_VMM_GET_ACCESS, &f);
  if (!rc) *flags = f;
  return rc;
}
