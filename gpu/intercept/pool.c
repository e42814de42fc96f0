/* Memory pools and stream-ordered allocation as the job sees them.
 *
 * The controller keeps the job's pools on top of its own allocator, so that
 * every block lives inside its reserved range and comes back at the same
 * address after a restore (gpu/controller/pool.c). Pool handles are minted
 * here like streams; each device's default pool is minted on first use, and
 * which pool is a device's current one is known here only: the controller
 * is always told which pool an allocation comes from. Access rights of a
 * pool are kept here too: the pool's own device always has read-write
 * access, and no other device's setting changes what the controller does
 * (a block is reachable from every context of the job there).
 */
#include "ic.h"

#include <string.h>

CUresult ic_cuMemFree_3020(CUdeviceptr_v2 dptr); /* memory.c */

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static ic_obj *default_pool[CGS_MAX_DEVICES];
static ic_obj *current_pool[CGS_MAX_DEVICES];

static CUresult pool_call(ic_thread *t, cgs_pool *r, uint32_t op, uint64_t *ret0) {
  ic_req(r, op, sizeof *r, ic_current_ctx(t));
  cgs_channel *ch;
  CUresult rc = ic_call(t, r, &ch);
  if (!rc && ret0) *ret0 = ch->ret[0];
  return rc;
}

static cgs_pool *new_req(ic_thread *t) {
  cgs_pool *r = (cgs_pool *)t->req;
  memset(r, 0, sizeof *r);
  return r;
}

/* Mint a pool and create it on the controller. */
static CUresult pool_create(ic_thread *t, int device, bool is_default, uint64_t max_size, ic_obj **out) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  ic_obj *p = ic_obj_new(IC_MEMPOOL, 0);
  if (!p) {
    ic_leave();
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  p->u.p.device = device;
  p->u.p.is_default = is_default;
  p->u.p.access[device] = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  cgs_pool *r = new_req(t);
  r->handle = p->handle;
  r->device = device;
  r->is_default = is_default;
  r->size = max_size;
  rc = pool_call(t, r, CGS_OP_POOL_CREATE, NULL);
  ic_leave();
  if (rc) {
    __atomic_store_n(&p->state, IC_DESTROYED, __ATOMIC_RELEASE);
    return rc;
  }
  *out = p;
  return CUDA_SUCCESS;
}

static CUresult default_of(ic_thread *t, int device, ic_obj **out) {
  pthread_mutex_lock(&pools_lock);
  CUresult rc = CUDA_SUCCESS;
  if (!default_pool[device]) rc = pool_create(t, device, true, 0, &default_pool[device]);
  *out = default_pool[device];
  pthread_mutex_unlock(&pools_lock);
  return rc;
}

static CUresult current_of(ic_thread *t, int device, ic_obj **out) {
  pthread_mutex_lock(&pools_lock);
  ic_obj *p = current_pool[device];
  if (p && __atomic_load_n(&p->state, __ATOMIC_ACQUIRE) != IC_ALIVE) p = current_pool[device] = NULL;
  pthread_mutex_unlock(&pools_lock);
  if (p) {
    *out = p;
    return CUDA_SUCCESS;
  }
  return default_of(t, device, out);
}

static CUresult device_arg(ic_thread *t, CUdevice_v1 dev) {
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  return dev >= 0 && dev < ic.device_count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

static CUresult pool_arg(ic_thread *t, CUmemoryPool h, ic_obj **out) {
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  *out = ic_obj_get((uint64_t)(uintptr_t)h, IC_MEMPOOL);
  return *out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- allocations --------------------------------------------------------- */

static CUresult pool_alloc(ic_thread *t, ic_obj *ctx, ic_obj *pool, uint64_t stream, uint32_t per_thread, size_t size,
                           CUdeviceptr_v2 *dptr) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_pool *r = new_req(t);
  r->handle = pool->handle;
  r->stream = stream;
  r->per_thread = per_thread;
  r->size = size;
  uint64_t p = 0;
  rc = pool_call(t, r, CGS_OP_POOL_ALLOC, &p);
  if (!rc) {
    ic_alloc a = {.base = (uintptr_t)p, .size = size, .kind = IC_MEM_DEVICE, .ctx = ctx->handle, .pool = pool->handle};
    rc = ic_mem_add(&a);
    if (rc) {
      r = new_req(t);
      r->dptr = p;
      r->stream = stream;
      r->per_thread = per_thread;
      ic_req(r, CGS_OP_POOL_FREE, sizeof *r, ctx->handle);
      ic_post(t, r);
    }
  }
  ic_leave();
  if (!rc) *dptr = (CUdeviceptr_v2)p;
  return rc;
}

CUresult ic_cuMemAllocAsync_11020(CUdeviceptr_v2 *dptr, size_t bytesize, CUstream hStream) {
  ic_thread *t = ic_self();
  ic_obj *ctx, *pool;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  rc = current_of(t, ctx->u.c.device, &pool);
  return rc ? rc : pool_alloc(t, ctx, pool, s, pt, bytesize, dptr);
}

CUresult ic_cuMemAllocFromPoolAsync_11020(CUdeviceptr_v2 *dptr, size_t bytesize, CUmemoryPool pool,
                                          CUstream hStream) {
  ic_thread *t = ic_self();
  ic_obj *ctx, *p;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  if (!dptr || bytesize == 0 || pool_arg(t, pool, &p)) return CUDA_ERROR_INVALID_VALUE;
  return pool_alloc(t, ctx, p, s, pt, bytesize, dptr);
}

CUresult ic_pool_free(ic_thread *t, const ic_alloc *a, uint64_t stream, uint32_t per_thread) {
  CUresult rc = ic_enter(t);
  if (rc) {
    if (rc != IC_DEAD_ERROR) ic_mem_add(a); /* not sent: still the job's */
    return rc;
  }
  cgs_pool *r = new_req(t);
  r->dptr = a->base;
  r->stream = stream;
  r->per_thread = per_thread;
  ic_req(r, CGS_OP_POOL_FREE, sizeof *r, ic_current_ctx(t));
  rc = ic_post(t, r);
  ic_leave();
  return rc;
}

/* A block of a pool goes back to it when the stream gets there; other
 * memory is freed as cuMemFree frees it (which waits for the context's work:
 * a stricter order than the driver's, never a looser one). */
CUresult ic_cuMemFreeAsync_11020(CUdeviceptr_v2 dptr, CUstream hStream) {
  ic_thread *t = ic_self();
  ic_obj *ctx;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  ic_alloc a;
  if (!dptr || !ic_mem_find((uintptr_t)dptr, &a) || a.base != dptr || a.kind != IC_MEM_DEVICE)
    return CUDA_ERROR_INVALID_VALUE;
  if (!a.pool) return ic_cuMemFree_3020(dptr);
  if (!ic_mem_take((uintptr_t)dptr, 1u << IC_MEM_DEVICE, &a)) return CUDA_ERROR_INVALID_VALUE; /* raced */
  return ic_pool_free(t, &a, s, pt);
}

/* ---- pools ----------------------------------------------------------------- */

CUresult ic_cuMemPoolCreate_11020(CUmemoryPool *pool, const CUmemPoolProps_v1 *props) {
  ic_thread *t = ic_self();
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  if (!pool || !props) return CUDA_ERROR_INVALID_VALUE;
  /* What the fake driver checks (gpu/fake/cuda/mempool.c), before anything crosses. */
  if (props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (props->location.type == CU_MEM_LOCATION_TYPE_HOST || props->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (props->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  /* Properties naming no device: an invalid value (NVIDIA's driver 580). */
  if (props->location.id < 0 || props->location.id >= ic.device_count) return CUDA_ERROR_INVALID_VALUE;
  /* Shareable pools would be the controller's: not forwarded. */
  if (props->handleTypes != CU_MEM_HANDLE_TYPE_NONE) return CUDA_ERROR_NOT_SUPPORTED;
  if (props->win32SecurityAttributes) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof props->reserved; i++)
    if (props->reserved[i]) return CUDA_ERROR_INVALID_VALUE;
  ic_obj *p;
  rc = pool_create(t, props->location.id, false, props->maxSize, &p);
  if (!rc) *pool = (CUmemoryPool)(uintptr_t)p->handle;
  return rc;
}

CUresult ic_cuMemPoolDestroy_11020(CUmemoryPool pool) {
  ic_thread *t = ic_self();
  ic_obj *p;
  CUresult rc = pool_arg(t, pool, &p);
  if (rc) return rc;
  if (p->u.p.is_default) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  if (__atomic_exchange_n(&p->state, IC_DESTROYED, __ATOMIC_ACQ_REL) != IC_ALIVE) {
    ic_leave();
    return CUDA_ERROR_INVALID_VALUE;
  }
  cgs_pool *r = new_req(t);
  r->handle = p->handle;
  rc = pool_call(t, r, CGS_OP_POOL_DESTROY, NULL);
  ic_leave();
  /* The device's current pool goes back to its default. */
  pthread_mutex_lock(&pools_lock);
  if (current_pool[p->u.p.device] == p) current_pool[p->u.p.device] = NULL;
  pthread_mutex_unlock(&pools_lock);
  return rc;
}

static CUresult simple(CUmemoryPool pool, uint32_t op, uint32_t attr, uint64_t size, uint64_t value,
                       uint64_t *ret0) {
  ic_thread *t = ic_self();
  ic_obj *p;
  CUresult rc = pool_arg(t, pool, &p);
  if (rc) return rc;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_pool *r = new_req(t);
  r->handle = p->handle;
  r->attr = attr;
  r->size = size;
  r->value = value;
  rc = pool_call(t, r, op, ret0);
  ic_leave();
  return rc;
}

CUresult ic_cuMemPoolTrimTo_11020(CUmemoryPool pool, size_t minBytesToKeep) {
  return simple(pool, CGS_OP_POOL_TRIM, 0, minBytesToKeep, 0, NULL);
}

/* The reuse attributes are ints; the others 64-bit. */
static bool int_attr(CUmemPool_attribute attr) {
  return attr == CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES || attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC ||
         attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES;
}

CUresult ic_cuMemPoolSetAttribute_11020(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!value) return CUDA_ERROR_INVALID_VALUE;
  uint64_t v = int_attr(attr) ? (uint64_t)(*(int *)value != 0) : *(cuuint64_t *)value;
  return simple(pool, CGS_OP_POOL_SET_ATTR, (uint32_t)attr, 0, v, NULL);
}

CUresult ic_cuMemPoolGetAttribute_11020(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!value) return CUDA_ERROR_INVALID_VALUE;
  uint64_t v = 0;
  rc = simple(pool, CGS_OP_POOL_GET_ATTR, (uint32_t)attr, 0, 0, &v);
  if (rc) return rc;
  if (int_attr(attr))
    *(int *)value = (int)v;
  else
    *(cuuint64_t *)value = v;
  return CUDA_SUCCESS;
}

CUresult ic_cuMemPoolSetAccess_11020(CUmemoryPool pool, const CUmemAccessDesc_v1 *map, size_t count) {
  ic_thread *t = ic_self();
  ic_obj *p;
  CUresult rc = pool_arg(t, pool, &p);
  if (rc) return rc;
  if (!map || count == 0) return CUDA_ERROR_INVALID_VALUE;
  for (size_t k = 0; k < count; k++) {
    if (map[k].location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    int d = map[k].location.id;
    if (d < 0 || d >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
    if (map[k].flags > CU_MEM_ACCESS_FLAGS_PROT_READWRITE) return CUDA_ERROR_INVALID_VALUE;
    if (d == p->u.p.device && map[k].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) return CUDA_ERROR_INVALID_VALUE;
  }
  pthread_mutex_lock(&pools_lock);
  for (size_t k = 0; k < count; k++) p->u.p.access[map[k].location.id] = (uint8_t)map[k].flags;
  pthread_mutex_unlock(&pools_lock);
  return CUDA_SUCCESS;
}

CUresult ic_cuMemPoolGetAccess_11020(CUmemAccess_flags *flags, CUmemoryPool memPool, CUmemLocation_v1 *location) {
  ic_thread *t = ic_self();
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  if (!flags || !location || location->type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  if (location->id < 0 || location->id >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  ic_obj *p;
  rc = pool_arg(t, memPool, &p);
  if (rc) return rc;
  pthread_mutex_lock(&pools_lock);
  *flags = (CUmemAccess_flags)p->u.p.access[location->id];
  pthread_mutex_unlock(&pools_lock);
  return CUDA_SUCCESS;
}

/* ---- a device's default and current pool ---------------------------------- */

CUresult ic_cuDeviceGetDefaultMemPool_11020(CUmemoryPool *pool_out, CUdevice_v1 dev) {
  ic_thread *t = ic_self();
  CUresult rc = device_arg(t, dev);
  if (rc) return rc;
  if (!pool_out) return CUDA_ERROR_INVALID_VALUE;
  ic_obj *p;
  rc = default_of(t, dev, &p);
  if (!rc) *pool_out = (CUmemoryPool)(uintptr_t)p->handle;
  return rc;
}

CUresult ic_cuDeviceGetMemPool_11020(CUmemoryPool *pool, CUdevice_v1 dev) {
  ic_thread *t = ic_self();
  CUresult rc = device_arg(t, dev);
  if (rc) return rc;
  if (!pool) return CUDA_ERROR_INVALID_VALUE;
  ic_obj *p;
  rc = current_of(t, dev, &p);
  if (!rc) *pool = (CUmemoryPool)(uintptr_t)p->handle;
  return rc;
}

CUresult ic_cuDeviceSetMemPool_11020(CUdevice_v1 dev, CUmemoryPool pool) {
  ic_thread *t = ic_self();
  CUresult rc = device_arg(t, dev);
  if (rc) return rc;
  ic_obj *p;
  if (pool_arg(t, pool, &p) || p->u.p.device != dev) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pools_lock);
  current_pool[dev] = p;
  pthread_mutex_unlock(&pools_lock);
  return CUDA_SUCCESS;
}

/* CUDA 13's location-based forms: device locations of pinned memory only. */
static CUresult location_device(const CUmemLocation *location, CUmemAllocationType type, CUdevice_v1 *dev) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!location || type != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (location->type == CU_MEM_LOCATION_TYPE_HOST || location->type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (location->type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  *dev = location->id;
  return CUDA_SUCCESS;
}

CUresult ic_cuMemGetDefaultMemPool_13000(CUmemoryPool *pool_out, CUmemLocation *location, CUmemAllocationType type) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : ic_cuDeviceGetDefaultMemPool_11020(pool_out, dev);
}

CUresult ic_cuMemGetMemPool_13000(CUmemoryPool *pool, CUmemLocation *location, CUmemAllocationType type) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : ic_cuDeviceGetMemPool_11020(pool, dev);
}

CUresult ic_cuMemSetMemPool_13000(CUmemLocation *location, CUmemAllocationType type, CUmemoryPool pool) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : ic_cuDeviceSetMemPool_11020(dev, pool);
}
