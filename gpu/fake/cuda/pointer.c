/* Pointer attributes: what the driver knows about an address, answered from
 * the allocation registry and, for VMM ranges, from the reservations and
 * mappings. */
#include "fk_memory.h"

#include <string.h>

typedef struct facts {
  uintptr_t p;
  bool alloc; /* p is in a registered (accessible) allocation: a */
  fk_alloc a;
  bool vmm; /* p is in a VMM reservation: v */
  fk_vmm_info v;
} facts;

static void gather(uintptr_t p, facts *f) {
  memset(f, 0, sizeof *f);
  f->p = p;
  bool covered;
  f->alloc = fk_mem_query(p, 0, &f->a, &covered, NULL);
  if ((!f->alloc || f->a.kind == FK_MEM_VMM) && fk_mem_device_of(p))
    f->vmm = fk_vmm_describe(p, &f->v);
}

static bool is_host(const facts *f) {
  return f->alloc && (f->a.kind == FK_MEM_HOST || f->a.kind == FK_MEM_REGISTERED);
}

/* Bytes each attribute writes (booleans are ints, as cuda-python reads them). */
static size_t attr_size(CUpointer_attribute a) {
  switch (a) {
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
  case CU_POINTER_ATTRIBUTE_IS_MANAGED:
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
  case CU_POINTER_ATTRIBUTE_MAPPED:
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
  case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: return sizeof(unsigned int);
  case CU_POINTER_ATTRIBUTE_CONTEXT:
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
  case CU_POINTER_ATTRIBUTE_HOST_POINTER:
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
  case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
  case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
  case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: return 8;
  default: return 0; /* P2P tokens and unknown attributes are not answered */
  }
}

static void put_u32(void *data, unsigned v) { memcpy(data, &v, sizeof v); }
static void put_int(void *data, int v) { memcpy(data, &v, sizeof v); }
static void put_u64(void *data, unsigned long long v) { memcpy(data, &v, sizeof v); }
static void put_ptr(void *data, const void *v) { memcpy(data, &v, sizeof v); }

/* Answer one attribute for a pointer the driver knows (an allocation or a
 * VMM reservation). */
static CUresult answer(CUpointer_attribute attr, const facts *f, void *data) {
  const fk_alloc *a = &f->a;
  fk_ctx *cur = fk_current();
  /* Reserved but not accessible VMM memory only has its range and MAPPED. */
  if (!f->alloc && attr != CU_POINTER_ATTRIBUTE_RANGE_START_ADDR &&
      attr != CU_POINTER_ATTRIBUTE_RANGE_SIZE && attr != CU_POINTER_ATTRIBUTE_MAPPED &&
      !(f->v.mapped && (attr == CU_POINTER_ATTRIBUTE_MEMORY_TYPE ||
                        attr == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL ||
                        attr == CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES ||
                        attr == CU_POINTER_ATTRIBUTE_ACCESS_FLAGS ||
                        attr == CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR ||
                        attr == CU_POINTER_ATTRIBUTE_MAPPING_SIZE ||
                        attr == CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID ||
                        attr == CU_POINTER_ATTRIBUTE_IS_MANAGED)))
    return CUDA_ERROR_INVALID_VALUE;
  fk_device *dev = f->vmm && f->v.mapped ? f->v.dev : a->dev;
  switch (attr) {
  case CU_POINTER_ATTRIBUTE_CONTEXT:
    if (!a->ctx) return CUDA_ERROR_INVALID_VALUE;
    put_ptr(data, a->ctx);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
    put_u32(data, is_host(f) ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    if (!cur) return CUDA_ERROR_INVALID_CONTEXT;
    put_u64(data, f->p); /* unified addressing: the same address */
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_HOST_POINTER:
    /* Device memory has no host address; managed memory has the same one. */
    if (!is_host(f) && !(a->flags & FK_ALLOC_MANAGED)) return CUDA_ERROR_INVALID_VALUE;
    put_ptr(data, (void *)f->p);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
    put_u32(data, (a->flags & FK_ALLOC_SYNC_MEMOPS) != 0);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_BUFFER_ID: put_u64(data, a->buffer_id); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_MANAGED: put_u32(data, f->alloc && (a->flags & FK_ALLOC_MANAGED)); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
    if (!dev) return CUDA_ERROR_INVALID_VALUE;
    put_int(data, dev->ordinal);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
    put_u32(data, f->alloc && a->kind == FK_MEM_DEVICE && !(a->flags & FK_ALLOC_ASYNC));
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    /* For VMM memory: the reservation, not the mapping. */
    put_u64(data, f->vmm ? f->v.resv_base : a->base);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    put_u64(data, f->vmm ? f->v.resv_size : a->size);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPED:
    put_u32(data, f->alloc || f->v.mapped);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
    put_u64(data, f->vmm ? f->v.handle_types : CU_MEM_HANDLE_TYPE_NONE);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
    put_u32(data, 0); /* the fake devices report no GPUDirect RDMA support */
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: {
    unsigned acc = CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE;
    if (f->vmm && f->v.mapped) {
      fk_device *who = cur ? cur->dev : f->v.dev;
      acc = f->v.access[who->ordinal] == CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                ? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE
            : f->v.access[who->ordinal] == CU_MEM_ACCESS_FLAGS_PROT_READ
                ? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READ
                : CU_POINTER_ATTRIBUTE_ACCESS_FLAG_NONE;
    } else if (a->flags & FK_ALLOC_READONLY) {
      acc = CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READ;
    }
    put_u32(data, acc);
    return CUDA_SUCCESS;
  }
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
    put_ptr(data, (a->flags & FK_ALLOC_POOL) ? (void *)fk_pool_of(a->base) : NULL);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
    put_u64(data, f->vmm ? f->v.map_base : a->base);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
    put_u64(data, f->vmm ? f->v.map_size : a->size);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
    put_u64(data, f->vmm ? f->v.block_id : a->buffer_id);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: put_u32(data, 0); return CUDA_SUCCESS;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult fake_cuPointerGetAttribute_4000(void *data, CUpointer_attribute attribute,
                                         CUdeviceptr_v2 ptr) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!data || attr_size(attribute) == 0) return CUDA_ERROR_INVALID_VALUE;
  facts f;
  gather((uintptr_t)ptr, &f);
  if (!f.alloc && !f.vmm) return CUDA_ERROR_INVALID_VALUE;
  return answer(attribute, &f, data);
}

CUresult fake_cuPointerGetAttributes_7000(unsigned int numAttributes,
                                          CUpointer_attribute *attributes, void **data,
                                          CUdeviceptr_v2 ptr) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (numAttributes == 0 || !attributes || !data) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < numAttributes; i++)
    if (attr_size(attributes[i]) == 0 || !data[i]) return CUDA_ERROR_INVALID_VALUE;
  facts f;
  gather((uintptr_t)ptr, &f);
  /* Unlike the single query, what does not apply reads as zero (NULL, memory
   * type 0) instead of failing; an unknown pointer has no device (-2, what
   * the runtime calls cudaInvalidDeviceId). */
  for (unsigned i = 0; i < numAttributes; i++) {
    bool known = f.alloc || f.vmm;
    if (!known || answer(attributes[i], &f, data[i]) != CUDA_SUCCESS) {
      memset(data[i], 0, attr_size(attributes[i]));
      if (attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL) put_int(data[i], -2);
    }
  }
  return CUDA_SUCCESS;
}

CUresult fake_cuPointerSetAttribute_6000(const void *value, CUpointer_attribute attribute,
                                         CUdeviceptr_v2 ptr) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!value || attribute != CU_POINTER_ATTRIBUTE_SYNC_MEMOPS) return CUDA_ERROR_INVALID_VALUE;
  /* Read one byte: callers pass a C bool or an int holding 0 or 1. */
  bool on = *(const unsigned char *)value != 0;
  if (!fk_mem_update_flags((uintptr_t)ptr, on ? FK_ALLOC_SYNC_MEMOPS : 0,
                           on ? 0 : FK_ALLOC_SYNC_MEMOPS))
    return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}
