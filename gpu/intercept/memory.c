/* Device and pinned host memory as the job sees it.
 *
 * Device memory is allocated by the controller (MEM_ALLOC), which places it
 * inside its fixed reserved address range so the addresses survive a
 * restore. The interposer keeps a table of every allocation it was given, so
 * copies can tell device pointers from host pointers, and pointer attributes
 * and address ranges are answered without a round trip.
 *
 * Pinned host memory (cuMemAllocHost, cuMemHostAlloc) is a shared-memory file
 * /dev/shm/cedana-gpu.<job id>.pin.<id> that the job and the controller both
 * map, so asynchronous copies from and to it need no extra copy. The job asks
 * for it at an address in a range processes rarely use, and the controller
 * maps it at the same address when it can, so the device pointer of pinned
 * memory (its host address, under unified addressing) means the same bytes
 * on both sides.
 *
 * cuMemHostRegister of the job's own memory is tracked (flags, ranges,
 * errors) but that memory is not shared with the controller: copies from and
 * to it go through the staging area like pageable memory, and kernels cannot
 * reach it through its device pointer.
 */
#include "ic.h"
#include "memory_rules.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Where pinned files are mapped: above the usual executable (~85 TiB) and
 * below the shared libraries and stack (~127 TiB), away from the fake
 * driver's device ranges (32 TiB on). */
#ifdef __SANITIZE_THREAD__
/* ThreadSanitizer keeps its shadow memory over the range below and aborts on
 * a fixed mapping there; its builds (make check-native) use part of the low
 * range it leaves to applications. */
#define PIN_HINT_BASE ((uintptr_t)0x001000000000ull)
#define PIN_HINT_END ((uintptr_t)0x007000000000ull)
#else
#define PIN_HINT_BASE ((uintptr_t)0x600000000000ull)
#define PIN_HINT_END ((uintptr_t)0x700000000000ull)
#endif
#define PIN_GAP ((size_t)2 << 20)
/* Bits of ic_alloc.flags above the CU_MEMHOSTALLOC_* / REGISTER flags. */
#define IC_ALLOC_SYNC_MEMOPS 0x40000u

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static size_t page_size(void) {
  static size_t ps;
  if (!ps) {
    long v = sysconf(_SC_PAGESIZE);
    ps = v > 0 ? (size_t)v : 4096;
  }
  return ps;
}

/* ---- the allocation table -----------------------------------------------------
 * A sorted array under a rwlock: copies look pointers up, allocation and
 * free are rarer. */
static pthread_rwlock_t lock = PTHREAD_RWLOCK_INITIALIZER;
static ic_alloc *tab;
static size_t tab_n, tab_cap;
static unsigned long long next_buffer_id = 1;

/* Index of the last entry with base <= p, or -1. Caller holds the lock. */
static long floor_index(uintptr_t p) {
  long lo = 0, hi = (long)tab_n - 1, ans = -1;
  while (lo <= hi) {
    long mid = lo + (hi - lo) / 2;
    if (tab[mid].base <= p) {
      ans = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return ans;
}

static bool holds(const ic_alloc *a, uintptr_t p) {
  return p >= a->base && (p - a->base < a->size || (a->size == 0 && p == a->base));
}

bool ic_mem_find(uintptr_t p, ic_alloc *out) {
  pthread_rwlock_rdlock(&lock);
  long i = floor_index(p);
  bool ok = i >= 0 && holds(&tab[i], p);
  if (ok) *out = tab[i];
  pthread_rwlock_unlock(&lock);
  return ok;
}

bool ic_mem_is_device(uintptr_t p, size_t n) {
  ic_alloc a;
  if (!ic_mem_find(p, &a)) return false;
  if (a.kind == IC_MEM_REGISTERED) return false;
  return n <= a.size - (p - a.base);
}

CUresult ic_mem_add(const ic_alloc *a) {
  pthread_rwlock_wrlock(&lock);
  long i = floor_index(a->base + (a->size ? a->size - 1 : 0));
  if (i >= 0 && tab[i].base + (tab[i].size ? tab[i].size : 1) > a->base) {
    pthread_rwlock_unlock(&lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (tab_n == tab_cap) {
    size_t cap = tab_cap ? tab_cap * 2 : 256;
    ic_alloc *grown = realloc(tab, cap * sizeof *grown);
    if (!grown) {
      pthread_rwlock_unlock(&lock);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    tab = grown;
    tab_cap = cap;
  }
  size_t at = (size_t)(i + 1);
  memmove(&tab[at + 1], &tab[at], (tab_n - at) * sizeof *tab);
  tab[at] = *a;
  if (!tab[at].buffer_id) tab[at].buffer_id = __atomic_fetch_add(&next_buffer_id, 1, __ATOMIC_RELAXED);
  tab_n++;
  pthread_rwlock_unlock(&lock);
  return CUDA_SUCCESS;
}

bool ic_mem_take(uintptr_t base, unsigned kind_mask, ic_alloc *out) {
  pthread_rwlock_wrlock(&lock);
  long i = floor_index(base);
  bool ok = i >= 0 && tab[i].base == base && (kind_mask & (1u << tab[i].kind));
  if (ok) {
    if (out) *out = tab[i];
    memmove(&tab[i], &tab[i + 1], (tab_n - (size_t)i - 1) * sizeof *tab);
    tab_n--;
  }
  pthread_rwlock_unlock(&lock);
  return ok;
}

static void unmap_pin(const ic_alloc *a) {
  munmap((void *)a->base, a->map_size);
  char name[128];
  snprintf(name, sizeof name, "%s%s.pin.%u", CGS_NAME_PREFIX, ic.job_id, a->pin_id);
  shm_unlink(name);
}

/* Drop entries matching `pred` (the controller already released them). */
static void drop_where(bool (*pred)(const ic_alloc *, uint64_t), uint64_t key) {
  ic_alloc *doomed = NULL;
  size_t ndoomed = 0;
  pthread_rwlock_wrlock(&lock);
  size_t kept = 0;
  for (size_t i = 0; i < tab_n; i++) {
    if (pred(&tab[i], key)) {
      if (tab[i].kind == IC_MEM_HOST || tab[i].kind == IC_MEM_MANAGED) {
        ic_alloc *grown = realloc(doomed, (ndoomed + 1) * sizeof *grown);
        if (grown) {
          doomed = grown;
          doomed[ndoomed++] = tab[i];
        }
      }
      continue;
    }
    tab[kept++] = tab[i];
  }
  tab_n = kept;
  pthread_rwlock_unlock(&lock);
  for (size_t i = 0; i < ndoomed; i++) unmap_pin(&doomed[i]);
  free(doomed);
}

static bool of_ctx(const ic_alloc *a, uint64_t ctx) {
  return a->ctx == ctx && a->kind != IC_MEM_GLOBAL;
}

static bool of_module(const ic_alloc *a, uint64_t module) {
  return a->kind == IC_MEM_GLOBAL && a->module == module;
}

void ic_mem_drop_ctx(uint64_t ctx) { drop_where(of_ctx, ctx); }
void ic_mem_drop_module(uint64_t module) { drop_where(of_module, module); }

/* ---- device memory ----------------------------------------------------------------- */

static CUresult mem_op(ic_thread *t, uint32_t op, uint64_t ctx, uint64_t dptr, uint64_t size,
                       cgs_channel **out) {
  cgs_mem *r = (cgs_mem *)t->req;
  ic_req(r, op, sizeof *r, ctx);
  r->dptr = dptr;
  r->size = size;
  return ic_call(t, r, out);
}

static CUresult dev_alloc(ic_thread *t, ic_obj *ctx, size_t size, CUdeviceptr *out) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_channel *ch;
  rc = mem_op(t, CGS_OP_MEM_ALLOC, ctx->handle, 0, size, &ch);
  uint64_t p = rc ? 0 : ch->ret[0];
  if (!rc) {
    ic_alloc a = {.base = (uintptr_t)p, .size = size, .kind = IC_MEM_DEVICE, .ctx = ctx->handle};
    rc = ic_mem_add(&a);
    if (rc) mem_op(t, CGS_OP_MEM_FREE, ctx->handle, p, size, NULL);
  }
  ic_leave();
  if (!rc) *out = (CUdeviceptr)p;
  return rc;
}

CUresult ic_cuMemAlloc_3020(CUdeviceptr_v2 *dptr, size_t bytesize) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  return dev_alloc(t, ctx, bytesize, dptr);
}

CUresult ic_cuMemAllocPitch_3020(CUdeviceptr_v2 *dptr, size_t *pPitch, size_t WidthInBytes,
                                 size_t Height, unsigned int ElementSizeBytes) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  size_t pitch, bytes;
  rc = cu_mem_pitch_rule(dptr && pPitch, WidthInBytes, Height, ElementSizeBytes, &pitch, &bytes);
  if (rc) return rc;
  rc = dev_alloc(t, ctx, bytes, dptr);
  if (rc) return rc;
  *pPitch = pitch;
  return CUDA_SUCCESS;
}

/* The allocation a free names, taken out of the table for the caller to free
 * (or to put back if the free fails), in the current context. NULL is freed
 * as free(NULL) is, as the driver does: the caller then has nothing to do. */
static CUresult take_for_free(ic_thread *t, uintptr_t p, ic_mem_kind kind, ic_obj **ctx,
                              ic_alloc *a) {
  CUresult rc = ic_need_ctx(t, ctx);
  if (rc || !p) return rc;
  if (!ic_mem_take(p, 1u << kind, a)) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

static CUresult shared_free(ic_thread *t, ic_obj *ctx, ic_alloc a);

/* The controller synchronizes before freeing, as the driver does. */
CUresult ic_cuMemFree_3020(CUdeviceptr_v2 dptr) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  ic_alloc a;
  CUresult rc = take_for_free(t, (uintptr_t)dptr, IC_MEM_DEVICE, &ctx, &a);
  /* Managed memory is a shared file, freed as pinned memory is. */
  if (rc == CUDA_ERROR_INVALID_VALUE && ic_mem_take((uintptr_t)dptr, 1u << IC_MEM_MANAGED, &a))
    return shared_free(t, ctx, a);
  if (rc || !dptr) return rc;
  /* A pool's block goes back to its pool, ordered on the NULL stream (the
   * driver does not synchronize for it). */
  if (a.pool) return ic_pool_free(t, &a, 0, 0);
  rc = ic_enter(t);
  if (!rc) {
    rc = mem_op(t, CGS_OP_MEM_FREE, a.ctx, dptr, a.size, NULL);
    ic_leave();
  }
  /* A free the controller refused is still ours to free later. */
  if (rc == CUDA_ERROR_INVALID_VALUE) ic_mem_add(&a);
  return rc;
}

CUresult ic_cuMemGetInfo_3020(size_t *free_bytes, size_t *total) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  /* NULL outputs are not written, and not an error (NVIDIA's driver 580). */
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_channel *ch;
  rc = mem_op(t, CGS_OP_MEM_GET_INFO, ctx->handle, 0, 0, &ch);
  if (!rc) {
    if (free_bytes) *free_bytes = (size_t)ch->ret[0];
    if (total) *total = (size_t)ch->ret[1];
  }
  ic_leave();
  return rc;
}

CUresult ic_cuMemGetAddressRange_3020(CUdeviceptr_v2 *pbase, size_t *psize, CUdeviceptr_v2 dptr) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  ic_alloc a;
  if (!ic_mem_find((uintptr_t)dptr, &a)) return CUDA_ERROR_NOT_FOUND;
  if (pbase) *pbase = (CUdeviceptr_v2)a.base;
  if (psize) *psize = a.size;
  return CUDA_SUCCESS;
}

/* Stream-ordered allocation and memory pools: pool.c. */

/* ---- pinned host memory ------------------------------------------------------------ */

static uintptr_t pin_hint = PIN_HINT_BASE;
static uint32_t next_pin_id = 1;

static void *map_pin(int fd, size_t size) {
  for (int tries = 0; tries < 8; tries++) {
    uintptr_t want = __atomic_fetch_add(&pin_hint, round_up(size, PIN_GAP) + PIN_GAP, __ATOMIC_RELAXED);
    if (want >= PIN_HINT_END || want + size > PIN_HINT_END) break;
    void *p = mmap((void *)want, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
    if (p == MAP_FAILED) continue;
    if ((uintptr_t)p == want) return p;
    munmap(p, size); /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? NULL : p;
}

CUresult ic_shared_alloc(void **pp, size_t bytesize, unsigned flags, ic_mem_kind kind) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!pp) return CUDA_ERROR_INVALID_VALUE;
  if (kind == IC_MEM_HOST && (flags & ~(unsigned)CU_MEMHOSTALLOC_KNOWN)) return CUDA_ERROR_INVALID_VALUE;
  /* As the driver (and the fake driver): zero bytes succeed with a NULL
   * pointer, which a free takes. */
  if (bytesize == 0) {
    *pp = NULL;
    return CUDA_SUCCESS;
  }
  if (bytesize > ((size_t)1 << 62)) return CUDA_ERROR_OUT_OF_MEMORY;
  size_t mapped = round_up(bytesize, page_size());
  char name[128];
  int fd = -1;
  uint32_t id = 0;
  /* Another process of the job may have taken an id: try the next. */
  for (int tries = 0; fd < 0 && tries < 1024; tries++) {
    id = __atomic_fetch_add(&next_pin_id, 1, __ATOMIC_RELAXED);
    snprintf(name, sizeof name, "%s%s.pin.%u", CGS_NAME_PREFIX, ic.job_id, id);
    fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
  void *p = NULL;
  if (ftruncate(fd, (off_t)mapped) == 0) p = map_pin(fd, mapped);
  close(fd);
  if (!p) {
    shm_unlink(name);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  rc = ic_enter(t);
  if (!rc) {
    cgs_pin *r = (cgs_pin *)t->req;
    ic_req(r, CGS_OP_HOST_REGISTER, sizeof *r, ctx->handle);
    r->app_addr = (uint64_t)(uintptr_t)p;
    r->size = mapped;
    r->pin_id = id;
    r->flags = kind == IC_MEM_MANAGED ? CGS_PIN_SAME_ADDRESS : flags;
    rc = ic_call(t, r, NULL);
    ic_leave();
  }
  ic_alloc a = {.base = (uintptr_t)p,
                .size = bytesize,
                .kind = kind,
                .ctx = ctx->handle,
                .flags = flags,
                .pin_id = id,
                .map_size = mapped};
  if (!rc) rc = ic_mem_add(&a);
  if (rc) {
    unmap_pin(&a);
    return rc == CUDA_ERROR_INVALID_VALUE ? CUDA_ERROR_OUT_OF_MEMORY : rc;
  }
  *pp = p;
  return CUDA_SUCCESS;
}

static CUresult host_alloc(void **pp, size_t bytesize, unsigned flags) {
  return ic_shared_alloc(pp, bytesize, flags, IC_MEM_HOST);
}

CUresult ic_cuMemHostAlloc_2020(void **pp, size_t bytesize, unsigned int Flags) {
  return host_alloc(pp, bytesize, Flags);
}

/* The controller stops using the file (after the work that may touch it),
 * then the job unmaps and removes it. */
CUresult ic_cuMemFreeHost_2000(void *p) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  ic_alloc a;
  CUresult rc = take_for_free(t, (uintptr_t)p, IC_MEM_HOST, &ctx, &a);
  if (rc || !p) return rc;
  return shared_free(t, ctx, a);
}

/* A shared file taken out of the table (pinned or managed memory). */
static CUresult shared_free(ic_thread *t, ic_obj *ctx, ic_alloc a) {
  CUresult rc = ic_enter(t);
  if (rc && rc != IC_DEAD_ERROR) {
    ic_mem_add(&a); /* not sent: still pinned */
    return rc;
  }
  if (!rc) {
    cgs_pin *r = (cgs_pin *)t->req;
    ic_req(r, CGS_OP_HOST_UNREGISTER, sizeof *r, ctx->handle);
    r->app_addr = (uint64_t)a.base;
    r->size = a.map_size;
    r->pin_id = a.pin_id;
    r->flags = a.flags;
    rc = ic_call(t, r, NULL);
    ic_leave();
  }
  /* Whatever the answer (a sticky error, a gone controller), the controller
   * is done with the file: remove it, or it outlives the job. */
  unmap_pin(&a);
  return rc;
}

/* Pinned or registered host memory holding p (any address inside it). */
static bool find_host(void *p, ic_alloc *a, unsigned kind_mask) {
  return p && ic_mem_find((uintptr_t)p, a) && (kind_mask & (1u << a->kind));
}

CUresult ic_cuMemHostGetDevicePointer_3020(CUdeviceptr_v2 *pdptr, void *p, unsigned int Flags) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  ic_alloc a;
  if (!pdptr || Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  /* Under unified addressing a pinned range's device address is its host
   * address. */
  if (!find_host(p, &a, 1u << IC_MEM_HOST | 1u << IC_MEM_REGISTERED)) return CUDA_ERROR_INVALID_VALUE;
  *pdptr = (CUdeviceptr_v2)(uintptr_t)p;
  return CUDA_SUCCESS;
}

CUresult ic_cuMemHostGetFlags_2030(unsigned int *pFlags, void *p) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  ic_alloc a;
  if (!pFlags || !find_host(p, &a, 1u << IC_MEM_HOST)) return CUDA_ERROR_INVALID_VALUE;
  *pFlags = a.flags & (CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                       CU_MEMHOSTALLOC_WRITECOMBINED);
  return CUDA_SUCCESS;
}

/* Whether every page of [p, p+n) is mapped in this process. */
static bool host_range_mapped(void *p, size_t n) {
  uintptr_t start = (uintptr_t)p & ~(uintptr_t)(page_size() - 1);
  size_t len = round_up((uintptr_t)p + n - start, page_size());
  return msync((void *)start, len, MS_ASYNC) == 0;
}

static bool overlaps(uintptr_t base, size_t size) {
  pthread_rwlock_rdlock(&lock);
  long i = floor_index(base + size - 1);
  bool hit = i >= 0 && tab[i].base + (tab[i].size ? tab[i].size : 1) > base;
  pthread_rwlock_unlock(&lock);
  return hit;
}

CUresult ic_cuMemHostRegister_6050(void *p, size_t bytesize, unsigned int Flags) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  if (!p || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (Flags & ~(unsigned)(CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                          CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY))
    return CUDA_ERROR_INVALID_VALUE;
  if (Flags & CU_MEMHOSTREGISTER_IOMEMORY) return CUDA_ERROR_NOT_SUPPORTED;
  uintptr_t b = (uintptr_t)p;
  if (b + bytesize < b) return CUDA_ERROR_INVALID_VALUE;
  /* Device memory is not host memory, whatever its address. */
  if (ic.va_size && b < ic.va_base + ic.va_size && b + bytesize > ic.va_base)
    return CUDA_ERROR_INVALID_VALUE;
  if (overlaps(b, bytesize)) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  if (!host_range_mapped(p, bytesize)) return CUDA_ERROR_INVALID_VALUE;
  ic_alloc a = {.base = b, .size = bytesize, .kind = IC_MEM_REGISTERED, .ctx = ctx->handle, .flags = Flags};
  rc = ic_mem_add(&a);
  if (rc == CUDA_ERROR_INVALID_VALUE) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED; /* raced */
  return rc;
}

CUresult ic_cuMemHostUnregister_4000(void *p) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(ic_self(), &ctx);
  if (rc) return rc;
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  /* Copies from registered memory are staged and done by the time they
   * return, so nothing queued can still touch it. */
  if (!ic_mem_take((uintptr_t)p, 1u << IC_MEM_REGISTERED, NULL))
    return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  return CUDA_SUCCESS;
}

/* ---- pointer attributes ----------------------------------------------------------- */

static CUresult attribute(CUpointer_attribute attr, const ic_alloc *a, bool found, uintptr_t p,
                          void *data) {
  int device = 0;
  ic_obj *c = found ? ic_obj_peek(a->ctx, IC_CTX) : NULL;
  if (c) device = c->u.c.device;
  bool host = found && (a->kind == IC_MEM_HOST || a->kind == IC_MEM_REGISTERED);
  bool managed = found && a->kind == IC_MEM_MANAGED; /* device memory, with a host address too */
  switch (attr) {
  case CU_POINTER_ATTRIBUTE_CONTEXT:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(CUcontext *)data = (CUcontext)(uintptr_t)(a->kind == IC_MEM_GLOBAL ? a->ctx : a->ctx);
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = host ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(CUdeviceptr *)data = (CUdeviceptr)p;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_HOST_POINTER:
    if (!found || !(host || managed)) return CUDA_ERROR_INVALID_VALUE;
    *(void **)data = (void *)p;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = (a->flags & IC_ALLOC_SYNC_MEMOPS) != 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
  case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned long long *)data = a->buffer_id;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_MANAGED:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = managed;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(int *)data = device;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = 0; /* IPC is not forwarded */
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(void **)data = (void *)a->base;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(size_t *)data = a->size;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPED:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = 1;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned long long *)data = 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = 0;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(unsigned int *)data = (a->kind == IC_MEM_REGISTERED && (a->flags & CU_MEMHOSTREGISTER_READ_ONLY))
                                ? CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READ
                                : CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE;
    return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
    if (!found) return CUDA_ERROR_INVALID_VALUE;
    *(CUmemoryPool *)data = (CUmemoryPool)(uintptr_t)a->pool;
    return CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult ic_cuPointerGetAttribute_4000(void *data, CUpointer_attribute attr, CUdeviceptr_v2 ptr) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!data) return CUDA_ERROR_INVALID_VALUE;
  ic_alloc a;
  bool found = ic_mem_find((uintptr_t)ptr, &a);
  return attribute(attr, &a, found, (uintptr_t)ptr, data);
}

/* Unlike the single form, an unknown pointer is no error here: its
 * attributes read as zero (and the memory type as 0). */
CUresult ic_cuPointerGetAttributes_7000(unsigned int numAttributes, CUpointer_attribute *attributes,
                                        void **data, CUdeviceptr_v2 ptr) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!attributes || !data || numAttributes == 0) return CUDA_ERROR_INVALID_VALUE;
  ic_alloc a;
  bool found = ic_mem_find((uintptr_t)ptr, &a);
  for (unsigned i = 0; i < numAttributes; i++) {
    if (!data[i]) continue;
    CUresult r = attribute(attributes[i], &a, found, (uintptr_t)ptr, data[i]);
    if (r == CUDA_SUCCESS) continue;
    if (found || (unsigned)attributes[i] > CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE) return r;
    /* Zero of the attribute's size. */
    switch (attributes[i]) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE:
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
    case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID:
    case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
    case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
    case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
      memset(data[i], 0, 8);
      break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
      *(int *)data[i] = -2; /* what the driver answers for memory it does not know */
      break;
    default:
      memset(data[i], 0, 4);
      break;
    }
  }
  return CUDA_SUCCESS;
}

CUresult ic_cuPointerSetAttribute_6000(const void *value, CUpointer_attribute attr,
                                       CUdeviceptr_v2 ptr) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!value || attr != CU_POINTER_ATTRIBUTE_SYNC_MEMOPS) return CUDA_ERROR_INVALID_VALUE;
  pthread_rwlock_wrlock(&lock);
  long i = floor_index((uintptr_t)ptr);
  bool ok = i >= 0 && holds(&tab[i], (uintptr_t)ptr) && tab[i].kind == IC_MEM_DEVICE;
  if (ok) {
    if (*(const unsigned int *)value)
      tab[i].flags |= IC_ALLOC_SYNC_MEMOPS;
    else
      tab[i].flags &= ~IC_ALLOC_SYNC_MEMOPS;
  }
  pthread_rwlock_unlock(&lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
