/* Virtual memory management: address reservations, physical allocations
 * (cuMemCreate), mappings and access rights.
 *
 * A reservation is a stretch of a device's address range, which is already
 * PROT_NONE. Physical memory is a memfd, so it can be mapped at several
 * addresses and exported as a file descriptor. A mapping maps the memfd
 * MAP_SHARED at the reserved address but stays PROT_NONE until cuMemSetAccess
 * grants access; only then is it registered as device memory, so copies,
 * kernels and pointer attributes see exactly what a GPU would let through. */
#include "fk_memory.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MEMFD_TAG "cedana-fake-cuda-vmm:dev="

typedef struct vmm_phys {
  int fd;
  size_t size;
  CUmemAllocationProp prop;
  fk_device *dev;
  int refs; /* handle references: create or import, plus each retain */
  int maps; /* live mappings */
  bool charged; /* counted in dev->used_mem (not for imports) */
  bool exported; /* its fd went out (cuMemExportToShareableHandle) */
  unsigned long long block_id;
  unsigned char *saved; /* its bytes while the process is checkpointed (fd is -1) */
  struct vmm_phys *prev, *next; /* every physical allocation (phys_all) */
} vmm_phys;

typedef struct resv {
  uintptr_t base;
  size_t size;
  fk_device *dev; /* whose address range holds it */
} resv;

typedef struct mapping {
  uintptr_t base;
  size_t size;
  vmm_phys *phys;
  unsigned access[FK_MAX_DEVICES]; /* CUmemAccess_flags per device */
  int prot;                        /* the host protection: the widest access granted */
  fk_ctx *ctx;                     /* current when access was granted */
  unsigned long long buffer_id;
} mapping;

/* One lock for all VMM state: these calls are rare next to copies, which
 * never take it (they use the allocation registry). */
static pthread_mutex_t vmm_lock = PTHREAD_MUTEX_INITIALIZER;
static resv *resvs;
static size_t nresv, capresv;
static mapping *maps;
static size_t nmaps, capmaps;
static vmm_phys *phys_all; /* for checkpoints: every physical allocation alive */

/* Caller holds vmm_lock. */
static void phys_link(vmm_phys *p) {
  p->prev = NULL;
  p->next = phys_all;
  if (phys_all) phys_all->prev = p;
  phys_all = p;
}

/* Sorted-array helpers shared by both tables. */
#define FLOOR_FN(name, type, arr, n)                 \
  static long name(uintptr_t p) {                    \
    long lo = 0, hi = (long)(n) - 1, ans = -1;       \
    while (lo <= hi) {                               \
      long mid = lo + (hi - lo) / 2;                 \
      if ((arr)[mid].base <= p) {                    \
        ans = mid;                                   \
        lo = mid + 1;                                \
      } else {                                       \
        hi = mid - 1;                                \
      }                                              \
    }                                                \
    return ans;                                      \
  }
FLOOR_FN(resv_floor, resv, resvs, nresv)
FLOOR_FN(map_floor, mapping, maps, nmaps)

static bool grow(void **arr, size_t *cap, size_t n, size_t elem) {
  if (n < *cap) return true;
  size_t c = *cap ? *cap * 2 : 64;
  void *g = realloc(*arr, c * elem);
  if (!g) return false;
  *arr = g;
  *cap = c;
  return true;
}

/* The reservation holding all of [p, p+n), or -1. */
static long resv_holding(uintptr_t p, size_t n) {
  long i = resv_floor(p);
  if (i < 0 || p - resvs[i].base >= resvs[i].size || n > resvs[i].size - (p - resvs[i].base))
    return -1;
  return i;
}

/* The mapping holding p, or -1. */
static long map_holding(uintptr_t p) {
  long i = map_floor(p);
  return i >= 0 && p - maps[i].base < maps[i].size ? i : -1;
}

static vmm_phys *phys_of(CUmemGenericAllocationHandle h) {
  void *p = (void *)(uintptr_t)h;
  return fk_handle_valid(p, FK_MEMHANDLE) ? p : NULL;
}

/* Physical memory goes when no handle reference and no mapping is left. */
static void phys_maybe_free(vmm_phys *p) {
  if (p->refs > 0 || p->maps > 0) return;
  if (p->prev) {
    p->prev->next = p->next;
  } else {
    phys_all = p->next;
  }
  if (p->next) p->next->prev = p->prev;
  close(p->fd);
  if (p->charged) fk_mem_uncharge(p->dev, p->size);
  free(p);
}

/* Wait for work that may touch memory about to lose its mapping or access,
 * as the driver does (these calls are documented as synchronizing). Called
 * with vmm_lock held, which it lets go meanwhile: queued work may wait for a
 * thread that is itself about to make a VMM call. Callers check their
 * arguments again afterwards. */
static void settle(fk_ctx *owner) {
  pthread_mutex_unlock(&vmm_lock);
  fk_ctx *cur = fk_current();
  if (cur && cur->active) fk_ctx_synchronize(cur);
  if (owner && owner != cur && owner->active) fk_ctx_synchronize(owner);
  pthread_mutex_lock(&vmm_lock);
}

static bool valid_device(int id) { return id >= 0 && id < fk_cfg.device_count; }

/* Checks shared by cuMemCreate and cuMemGetAllocationGranularity. */
static CUresult check_prop(const CUmemAllocationProp *prop) {
  if (prop->type != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (prop->location.type == CU_MEM_LOCATION_TYPE_HOST ||
      prop->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED; /* host VMM allocations are not modelled */
  if (prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(prop->location.id)) return CUDA_ERROR_INVALID_DEVICE;
  if (prop->requestedHandleTypes & ~(unsigned)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)
    return CUDA_ERROR_NOT_SUPPORTED; /* Win32 handles, fabric handles */
  return CUDA_SUCCESS;
}

/* ---- reservations --------------------------------------------------------*/
CUresult fake_cuMemAddressReserve_10020(CUdeviceptr_v2 *ptr, size_t size, size_t alignment,
                                        CUdeviceptr_v2 addr, unsigned long long flags) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  size_t ps = fk_page_size();
  if (!ptr || size == 0 || flags || size % ps || addr % ps || (alignment & (alignment - 1)))
    return CUDA_ERROR_INVALID_VALUE;
  size_t align = alignment > FK_GRANULARITY ? alignment : FK_GRANULARITY;
  pthread_mutex_lock(&vmm_lock);
  if (!grow((void **)&resvs, &capresv, nresv, sizeof *resvs)) {
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  uintptr_t got = 0;
  fk_device *dev = NULL;
  /* The address is a hint: honoured when that stretch is free. */
  if (addr) {
    dev = fk_mem_device_of(addr);
    if (!dev || addr + size < addr || fk_mem_device_of(addr + size - 1) != dev ||
        fk_va_take(dev, size, ps, addr, &got) != CUDA_SUCCESS)
      got = 0;
  }
  if (!got) {
    fk_ctx *cur = fk_current();
    int first = cur ? cur->dev->ordinal : 0;
    for (int k = 0; k < fk_cfg.device_count && !got; k++) {
      dev = &fk_cfg.devices[(first + k) % fk_cfg.device_count];
      if (fk_va_take(dev, size, align, 0, &got) != CUDA_SUCCESS) got = 0;
    }
  }
  if (!got) {
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  long at = resv_floor(got) + 1;
  memmove(&resvs[at + 1], &resvs[at], (nresv - (size_t)at) * sizeof *resvs);
  resvs[at] = (resv){got, size, dev};
  nresv++;
  pthread_mutex_unlock(&vmm_lock);
  *ptr = (CUdeviceptr_v2)got;
  return CUDA_SUCCESS;
}

/* Drop mapping i (caller holds vmm_lock and has settled pending work). */
static void unmap_at(long i) {
  mapping m = maps[i];
  fk_alloc gone;
  if (m.prot != PROT_NONE) fk_mem_take(m.base, 1u << FK_MEM_VMM, &gone);
  fk_va_protect_none(m.base, m.size);
  memmove(&maps[i], &maps[i + 1], (nmaps - (size_t)i - 1) * sizeof *maps);
  nmaps--;
  m.phys->maps--;
  phys_maybe_free(m.phys);
}

CUresult fake_cuMemAddressFree_10020(CUdeviceptr_v2 ptr, size_t size) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  pthread_mutex_lock(&vmm_lock);
  long r;
  for (bool settled = false;; settled = true) {
    r = resv_floor((uintptr_t)ptr);
    if (!ptr || r < 0 || resvs[r].base != ptr || resvs[r].size != size) {
      pthread_mutex_unlock(&vmm_lock);
      return CUDA_ERROR_INVALID_VALUE;
    }
    /* Like the driver, freeing a reservation drops what is still mapped in it. */
    bool any = false;
    fk_ctx *owner = NULL;
    for (long i = map_floor((uintptr_t)ptr + size - 1); i >= 0 && maps[i].base >= ptr; i--) {
      any = true;
      if (maps[i].ctx) owner = maps[i].ctx;
    }
    if (!any || settled) break;
    settle(owner);
  }
  for (long i = map_floor((uintptr_t)ptr + size - 1); i >= 0 && maps[i].base >= ptr;
       i = map_floor((uintptr_t)ptr + size - 1))
    unmap_at(i);
  fk_device *dev = resvs[r].dev;
  memmove(&resvs[r], &resvs[r + 1], (nresv - (size_t)r - 1) * sizeof *resvs);
  nresv--;
  fk_va_give(dev, (uintptr_t)ptr, size);
  pthread_mutex_unlock(&vmm_lock);
  return CUDA_SUCCESS;
}

/* ---- physical memory -----------------------------------------------------*/
CUresult fake_cuMemCreate_10020(CUmemGenericAllocationHandle_v1 *handle, size_t size,
                                const CUmemAllocationProp_v1 *prop, unsigned long long flags) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!handle || !prop || flags) return CUDA_ERROR_INVALID_VALUE;
  rc = check_prop(prop);
  if (rc) return rc;
  if (size == 0 || size % FK_GRANULARITY) return CUDA_ERROR_INVALID_VALUE;
  fk_device *dev = &fk_cfg.devices[prop->location.id];
  vmm_phys *p = calloc(1, sizeof *p);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = fk_mem_charge(dev, size);
  if (rc) {
    free(p);
    return rc;
  }
  char name[64];
  snprintf(name, sizeof name, MEMFD_TAG "%d", dev->ordinal);
  p->fd = memfd_create(name, MFD_CLOEXEC);
  if (p->fd < 0 || ftruncate(p->fd, (off_t)size) != 0) {
    if (p->fd >= 0) close(p->fd);
    fk_mem_uncharge(dev, size);
    free(p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  p->size = size;
  p->prop = *prop;
  p->dev = dev;
  p->refs = 1;
  p->charged = true;
  p->block_id = fk_mem_new_id();
  pthread_mutex_lock(&vmm_lock);
  phys_link(p);
  fk_handle_add(p, FK_MEMHANDLE);
  pthread_mutex_unlock(&vmm_lock);
  *handle = (CUmemGenericAllocationHandle_v1)(uintptr_t)p;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemRelease_10020(CUmemGenericAllocationHandle_v1 handle) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  pthread_mutex_lock(&vmm_lock);
  vmm_phys *p = phys_of(handle);
  if (!p) {
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (--p->refs == 0) fk_handle_remove(p);
  phys_maybe_free(p);
  pthread_mutex_unlock(&vmm_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuMemRetainAllocationHandle_11000(CUmemGenericAllocationHandle_v1 *handle,
                                                void *addr) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!handle) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&vmm_lock);
  long i = map_holding((uintptr_t)addr);
  if (i < 0) {
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  vmm_phys *p = maps[i].phys;
  if (p->refs++ == 0) fk_handle_add(p, FK_MEMHANDLE); /* released while mapped: valid again */
  pthread_mutex_unlock(&vmm_lock);
  *handle = (CUmemGenericAllocationHandle_v1)(uintptr_t)p;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemGetAllocationPropertiesFromHandle_10020(CUmemAllocationProp_v1 *prop,
                                                           CUmemGenericAllocationHandle_v1 handle) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!prop) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&vmm_lock);
  vmm_phys *p = phys_of(handle);
  if (p) *prop = p->prop;
  pthread_mutex_unlock(&vmm_lock);
  return p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult fake_cuMemGetAllocationGranularity_10020(size_t *granularity,
                                                  const CUmemAllocationProp_v1 *prop,
                                                  CUmemAllocationGranularity_flags option) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!granularity || !prop) return CUDA_ERROR_INVALID_VALUE;
  if (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
    return CUDA_ERROR_INVALID_VALUE;
  rc = check_prop(prop);
  if (rc) return rc;
  *granularity = FK_GRANULARITY;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemExportToShareableHandle_10020(void *shareableHandle,
                                                 CUmemGenericAllocationHandle_v1 handle,
                                                 CUmemAllocationHandleType handleType,
                                                 unsigned long long flags) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!shareableHandle || flags) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&vmm_lock);
  vmm_phys *p = phys_of(handle);
  /* Only the handle types asked for at creation can be exported. */
  if (!p || handleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR ||
      !(p->prop.requestedHandleTypes & CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR)) {
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  int fd = fcntl(p->fd, F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) p->exported = true;
  pthread_mutex_unlock(&vmm_lock);
  if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
  *(int *)shareableHandle = fd;
  return CUDA_SUCCESS;
}

/* The device a memfd was created for, from the name cuMemCreate gave it
 * (possibly in another process); device 0 for any other file. */
static int memfd_device(int fd) {
  char path[64], target[256];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n <= 0) return 0;
  target[n] = 0;
  const char *tag = strstr(target, MEMFD_TAG);
  if (!tag) return 0;
  int dev = atoi(tag + strlen(MEMFD_TAG));
  return valid_device(dev) ? dev : 0;
}

CUresult fake_cuMemImportFromShareableHandle_10020(CUmemGenericAllocationHandle_v1 *handle,
                                                   void *osHandle,
                                                   CUmemAllocationHandleType shHandleType) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!handle) return CUDA_ERROR_INVALID_VALUE;
  if (shHandleType != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
  int fd = (int)(intptr_t)osHandle;
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
      (size_t)st.st_size % FK_GRANULARITY)
    return CUDA_ERROR_INVALID_VALUE;
  vmm_phys *p = calloc(1, sizeof *p);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  /* The driver keeps its own reference: the caller may close its fd. */
  p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (p->fd < 0) {
    free(p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  int dev = memfd_device(fd);
  p->size = (size_t)st.st_size;
  p->dev = &fk_cfg.devices[dev];
  p->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p->prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  p->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p->prop.location.id = dev;
  p->refs = 1;
  p->block_id = fk_mem_new_id();
  pthread_mutex_lock(&vmm_lock);
  phys_link(p);
  fk_handle_add(p, FK_MEMHANDLE);
  pthread_mutex_unlock(&vmm_lock);
  *handle = (CUmemGenericAllocationHandle_v1)(uintptr_t)p;
  return CUDA_SUCCESS;
}

/* ---- mappings ------------------------------------------------------------*/
CUresult fake_cuMemMap_10020(CUdeviceptr_v2 ptr, size_t size, size_t offset,
                             CUmemGenericAllocationHandle_v1 handle, unsigned long long flags) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (flags || offset || size == 0 || ptr % FK_GRANULARITY) return CUDA_ERROR_INVALID_VALUE;
  /* A part of a granule: NVIDIA's driver (580) does not support it, rather
   * than calling it invalid. */
  if (size % FK_GRANULARITY) return CUDA_ERROR_NOT_SUPPORTED;
  uintptr_t base = (uintptr_t)ptr;
  pthread_mutex_lock(&vmm_lock);
  vmm_phys *p = phys_of(handle);
  long j = map_floor(base + size - 1);
  rc = CUDA_ERROR_INVALID_VALUE;
  if (!p || size > p->size || resv_holding(base, size) < 0) goto out;
  if (j >= 0 && maps[j].base + maps[j].size > base) goto out; /* already mapped */
  rc = CUDA_ERROR_OUT_OF_MEMORY;
  if (!grow((void **)&maps, &capmaps, nmaps, sizeof *maps)) goto out;
  if (mmap((void *)base, size, PROT_NONE, MAP_SHARED | MAP_FIXED, p->fd, 0) == MAP_FAILED) goto out;
  long at = j + 1;
  memmove(&maps[at + 1], &maps[at], (nmaps - (size_t)at) * sizeof *maps);
  maps[at] = (mapping){.base = base, .size = size, .phys = p, .prot = PROT_NONE,
                       .buffer_id = fk_mem_new_id()};
  nmaps++;
  p->maps++;
  rc = CUDA_SUCCESS;
out:
  pthread_mutex_unlock(&vmm_lock);
  return rc;
}

/* Mappings [*first, *last) covering [ptr, ptr+size) with no hole; false if
 * some byte of the range is not mapped. */
static bool mapped_run(uintptr_t ptr, size_t size, long *first, long *last) {
  long i = map_holding(ptr);
  if (i < 0) return false;
  uintptr_t end = ptr + size, at = maps[i].base + maps[i].size;
  long j = i + 1;
  while (at < end && (size_t)j < nmaps && maps[j].base == at) at += maps[j++].size;
  if (at < end) return false;
  *first = i;
  *last = j;
  return true;
}

CUresult fake_cuMemUnmap_10020(CUdeviceptr_v2 ptr, size_t size) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!ptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&vmm_lock);
  long first, last;
  for (bool settled = false;; settled = true) {
    /* Whole mappings only: the range starts and ends on mapping boundaries. */
    if (!mapped_run((uintptr_t)ptr, size, &first, &last) || maps[first].base != ptr ||
        maps[last - 1].base + maps[last - 1].size != ptr + size) {
      pthread_mutex_unlock(&vmm_lock);
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (settled) break;
    fk_ctx *owner = NULL;
    for (long i = first; i < last; i++)
      if (maps[i].ctx) owner = maps[i].ctx;
    settle(owner);
  }
  for (long i = last - 1; i >= first; i--) unmap_at(i);
  pthread_mutex_unlock(&vmm_lock);
  return CUDA_SUCCESS;
}

static int prot_of(unsigned flags) {
  if (flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE) return PROT_READ | PROT_WRITE;
  if (flags == CU_MEM_ACCESS_FLAGS_PROT_READ) return PROT_READ;
  return PROT_NONE;
}

/* The host protection a mapping gets once desc is applied: the widest right
 * any device holds. */
static int new_prot(const mapping *m, const CUmemAccessDesc_v1 *desc, size_t count) {
  unsigned acc[FK_MAX_DEVICES];
  memcpy(acc, m->access, sizeof acc);
  for (size_t k = 0; k < count; k++) acc[desc[k].location.id] = desc[k].flags;
  int prot = PROT_NONE;
  for (int d = 0; d < fk_cfg.device_count; d++) prot |= prot_of(acc[d]);
  return prot;
}

/* Access is tracked per mapping: a range that covers part of a mapping sets
 * the access of the whole mapping. */
CUresult fake_cuMemSetAccess_10020(CUdeviceptr_v2 ptr, size_t size, const CUmemAccessDesc_v1 *desc,
                                   size_t count) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!desc || count == 0 || size == 0 || ptr + size < ptr) return CUDA_ERROR_INVALID_VALUE;
  for (size_t k = 0; k < count; k++) {
    if (desc[k].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    if (!valid_device(desc[k].location.id)) return CUDA_ERROR_INVALID_DEVICE;
    unsigned f = desc[k].flags;
    if (f != CU_MEM_ACCESS_FLAGS_PROT_NONE && f != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        f != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
      return CUDA_ERROR_INVALID_VALUE;
  }
  pthread_mutex_lock(&vmm_lock);
  long first, last;
  for (bool settled = false;; settled = true) {
    if (!mapped_run((uintptr_t)ptr, size, &first, &last)) {
      pthread_mutex_unlock(&vmm_lock);
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (settled) break;
    /* Work in flight must finish before any right is taken away. */
    bool narrowing = false;
    fk_ctx *owner = NULL;
    for (long i = first; i < last; i++) {
      if ((maps[i].prot & ~new_prot(&maps[i], desc, count)) != 0) {
        narrowing = true;
        if (maps[i].ctx) owner = maps[i].ctx;
      }
    }
    if (!narrowing) break;
    settle(owner);
  }
  fk_ctx *cur = fk_current();
  for (long i = first; i < last; i++) {
    mapping *m = &maps[i];
    int prot = new_prot(m, desc, count);
    unsigned ro = (prot & PROT_WRITE) ? 0 : FK_ALLOC_READONLY;
    fk_alloc gone;
    bool ok = true;
    if (prot == PROT_NONE && m->prot != PROT_NONE) fk_mem_take(m->base, 1u << FK_MEM_VMM, &gone);
    if (prot != m->prot && mprotect((void *)m->base, m->size, prot) != 0) {
      ok = false;
    } else if (prot != PROT_NONE && m->prot == PROT_NONE) {
      m->ctx = cur && cur->active ? cur : NULL;
      ok = fk_mem_add(m->base, m->size, FK_MEM_VMM, m->ctx, m->phys->dev, ro, m->buffer_id) ==
           CUDA_SUCCESS;
    } else if (prot != PROT_NONE) {
      fk_mem_update_flags(m->base, ro, FK_ALLOC_READONLY & ~ro);
    }
    if (!ok) { /* out of kernel memory for the mapping: leave it inaccessible */
      fk_mem_take(m->base, 1u << FK_MEM_VMM, &gone);
      mprotect((void *)m->base, m->size, PROT_NONE);
      memset(m->access, 0, sizeof m->access);
      m->prot = PROT_NONE;
      rc = CUDA_ERROR_OUT_OF_MEMORY;
      continue;
    }
    for (size_t k = 0; k < count; k++) m->access[desc[k].location.id] = desc[k].flags;
    m->prot = prot;
  }
  pthread_mutex_unlock(&vmm_lock);
  return rc;
}

CUresult fake_cuMemGetAccess_10020(unsigned long long *flags, const CUmemLocation_v1 *location,
                                   CUdeviceptr_v2 ptr) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!flags || !location || location->type != CU_MEM_LOCATION_TYPE_DEVICE)
    return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(location->id)) return CUDA_ERROR_INVALID_DEVICE;
  pthread_mutex_lock(&vmm_lock);
  long i = map_holding((uintptr_t)ptr);
  if (i >= 0) *flags = maps[i].access[location->id];
  pthread_mutex_unlock(&vmm_lock);
  return i >= 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- for pointer attributes ----------------------------------------------*/
bool fk_vmm_describe(uintptr_t p, fk_vmm_info *out) {
  pthread_mutex_lock(&vmm_lock);
  long r = resv_holding(p, 1);
  if (r >= 0) {
    memset(out, 0, sizeof *out);
    out->resv_base = resvs[r].base;
    out->resv_size = resvs[r].size;
    long i = map_holding(p);
    if (i >= 0) {
      const mapping *m = &maps[i];
      out->mapped = true;
      out->map_base = m->base;
      out->map_size = m->size;
      out->dev = m->phys->dev;
      out->handle_types = m->phys->prop.requestedHandleTypes;
      out->block_id = m->phys->block_id;
      memcpy(out->access, m->access, sizeof out->access);
    }
  }
  pthread_mutex_unlock(&vmm_lock);
  return r >= 0;
}

/* ---- process checkpoint (see memory.c) ------------------------------------
 * Physical allocations are memfds: their bytes are copied out (fk_vmm_save),
 * the files closed (fk_vmm_release: with the device ranges unmapped, the
 * memory is gone), and at restore new memfds get the bytes back and are
 * mapped again at every mapping's address with its access (fk_vmm_restore).
 * Memory shared with another process (exported, or imported from one) cannot
 * be checkpointed, as with NVIDIA's driver before CUDA IPC support:
 * CUDA_ERROR_NOT_SUPPORTED, with nothing changed. */
static void phys_discard_saved(vmm_phys *p) {
  if (p->saved) munmap(p->saved, p->size);
  p->saved = NULL;
}

CUresult fk_vmm_save(void) {
  pthread_mutex_lock(&vmm_lock);
  CUresult rc = CUDA_SUCCESS;
  for (vmm_phys *p = phys_all; p && rc == CUDA_SUCCESS; p = p->next)
    if (!p->charged || p->exported) rc = CUDA_ERROR_NOT_SUPPORTED;
  for (vmm_phys *p = phys_all; p && rc == CUDA_SUCCESS; p = p->next) {
    void *buf = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
      rc = CUDA_ERROR_OUT_OF_MEMORY;
      break;
    }
    p->saved = buf;
    size_t done = 0;
    while (done < p->size) {
      ssize_t n = pread(p->fd, p->saved + done, p->size - done, (off_t)done);
      if (n <= 0) {
        rc = CUDA_ERROR_OPERATING_SYSTEM;
        break;
      }
      done += (size_t)n;
    }
  }
  if (rc != CUDA_SUCCESS)
    for (vmm_phys *p = phys_all; p; p = p->next) phys_discard_saved(p);
  pthread_mutex_unlock(&vmm_lock);
  return rc;
}

void fk_vmm_release(void) {
  pthread_mutex_lock(&vmm_lock);
  for (vmm_phys *p = phys_all; p; p = p->next) {
    close(p->fd);
    p->fd = -1;
  }
  pthread_mutex_unlock(&vmm_lock);
}

/* Caller holds vmm_lock. */
static bool phys_refill(vmm_phys *p) {
  char name[64];
  snprintf(name, sizeof name, MEMFD_TAG "%d", p->dev->ordinal);
  p->fd = memfd_create(name, MFD_CLOEXEC);
  if (p->fd < 0) return false;
  bool ok = ftruncate(p->fd, (off_t)p->size) == 0;
  for (size_t done = 0; ok && done < p->size;) {
    ssize_t n = pwrite(p->fd, p->saved + done, p->size - done, (off_t)done);
    ok = n > 0;
    if (ok) done += (size_t)n;
  }
  return ok;
}

CUresult fk_vmm_restore(void) {
  pthread_mutex_lock(&vmm_lock);
  bool ok = true;
  for (vmm_phys *p = phys_all; p && ok; p = p->next) ok = phys_refill(p);
  for (size_t i = 0; i < nmaps && ok; i++) {
    const mapping *m = &maps[i];
    ok = mmap((void *)m->base, m->size, m->prot, MAP_SHARED | MAP_FIXED, m->phys->fd, 0) !=
         MAP_FAILED;
  }
  if (!ok) { /* the caller unmaps the ranges; the saved bytes stay for another try */
    for (vmm_phys *p = phys_all; p; p = p->next) {
      if (p->fd >= 0) close(p->fd);
      p->fd = -1;
    }
  }
  pthread_mutex_unlock(&vmm_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

void fk_vmm_discard(void) {
  pthread_mutex_lock(&vmm_lock);
  for (vmm_phys *p = phys_all; p; p = p->next) phys_discard_saved(p);
  pthread_mutex_unlock(&vmm_lock);
}

/* ---- custom storage (memory.c): each device's VMM allocations, in the
 * order of phys_all, after its other memory in the device's file. */
size_t fk_vmm_saved_bytes(int ordinal) {
  pthread_mutex_lock(&vmm_lock);
  size_t n = 0;
  for (vmm_phys *p = phys_all; p; p = p->next)
    if (p->dev->ordinal == ordinal) n += p->size;
  pthread_mutex_unlock(&vmm_lock);
  return n;
}

bool fk_vmm_saved_io(int ordinal, int fd, off_t off, bool out) {
  pthread_mutex_lock(&vmm_lock);
  bool ok = true;
  for (vmm_phys *p = phys_all; p && ok; p = p->next) {
    if (p->dev->ordinal != ordinal) continue;
    for (size_t done = 0; ok && done < p->size;) {
      ssize_t k = out ? pwrite(fd, p->saved + done, p->size - done, off + (off_t)done)
                      : pread(fd, p->saved + done, p->size - done, off + (off_t)done);
      ok = k > 0;
      if (ok) done += (size_t)k;
    }
    off += (off_t)p->size;
  }
  pthread_mutex_unlock(&vmm_lock);
  return ok;
}

CUresult fk_vmm_saved_alloc(void) {
  pthread_mutex_lock(&vmm_lock);
  CUresult rc = CUDA_SUCCESS;
  for (vmm_phys *p = phys_all; p && rc == CUDA_SUCCESS; p = p->next) {
    if (p->saved) continue;
    void *buf = mmap(NULL, p->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) rc = CUDA_ERROR_OUT_OF_MEMORY;
    else p->saved = buf;
  }
  pthread_mutex_unlock(&vmm_lock);
  return rc;
}
