/* Stream-ordered allocation and memory pools: cuMemAllocAsync,
 * cuMemFreeAsync, cuMemAllocFromPoolAsync, cuMemPool*, and each device's
 * default and current pool.
 *
 * A pool hands out ordinary device memory (memory.c) and takes it back when
 * the stream reaches the free: the block is then cached in the pool, and a
 * later allocation of the same (rounded) size reuses it, the way the
 * driver's pools avoid going back to the OS. Memory the pool holds beyond
 * its release threshold is given back at once when a free completes (the
 * driver does so at the next synchronize: by the time the application can
 * observe it, the two agree); cuMemPoolTrimTo gives back the rest.
 *
 * Reuse follows the pool's reuse attributes as far as this driver can tell
 * dependencies apart: a cached block freed on the allocating stream is
 * always reusable (stream order covers it); one freed on another stream
 * only while opportunistic reuse is allowed (its free has completed, which
 * is what that attribute permits).
 *
 * Accounting (RESERVED_MEM_*, USED_MEM_*) is in blocks of FK_POOL_ROUND
 * bytes: the requested size rounded up.
 */
#include "fk_memory.h"

#include <stdlib.h>
#include <string.h>

#define FK_POOL_ROUND 512u

typedef struct block {
  uintptr_t base;
  size_t size; /* rounded */
  fk_stream *freed_on;
  bool pending; /* its stream has not reached the free yet */
  uint64_t ticket; /* names that free (a block can be freed, taken and freed again) */
} block;

typedef struct fk_pool {
  fk_device *dev;
  CUmemPoolProps props;
  bool is_default;
  bool destroyed; /* by the application; freed once nothing is outstanding */
  uint64_t threshold;
  int reuse_follow, reuse_opportunistic, reuse_internal;
  uint64_t reserved, reserved_high, used, used_high;
  unsigned access[FK_MAX_DEVICES]; /* CUmemAccess_flags of other devices */
  block *cache;
  size_t ncache, capcache;
} fk_pool;

/* Live pool allocations: base -> pool, rounded size. */
typedef struct live {
  uintptr_t base;
  size_t size;
  fk_pool *pool;
} live;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
/* Every pool not yet freed, to find a block's pool when its free completes. */
static fk_pool **live_pools;
static size_t nlive_pools, caplive_pools;
static fk_pool *default_pool[FK_MAX_DEVICES];
static fk_pool *current_pool[FK_MAX_DEVICES];
static live *lives;
static size_t nlive, caplive;

static size_t rounded(size_t n) { return (n + FK_POOL_ROUND - 1) / FK_POOL_ROUND * FK_POOL_ROUND; }

static fk_pool *pool_new(fk_device *dev, const CUmemPoolProps *props, bool is_default) {
  fk_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->dev = dev;
  if (props) p->props = *props;
  p->props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  p->props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p->props.location.id = dev->ordinal;
  p->is_default = is_default;
  p->reuse_follow = p->reuse_opportunistic = p->reuse_internal = 1;
  p->access[dev->ordinal] = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (nlive_pools == caplive_pools) {
    size_t cap = caplive_pools ? 2 * caplive_pools : 8;
    fk_pool **g = realloc(live_pools, cap * sizeof *g);
    if (!g) {
      free(p);
      return NULL;
    }
    live_pools = g;
    caplive_pools = cap;
  }
  live_pools[nlive_pools++] = p;
  fk_handle_add(p, FK_MEMPOOL);
  return p;
}

/* Caller holds pool_lock. */
static fk_pool *default_of(fk_device *dev) {
  fk_pool **slot = &default_pool[dev->ordinal];
  if (!*slot) *slot = pool_new(dev, NULL, true);
  return *slot;
}

static fk_pool *current_of(fk_device *dev) {
  fk_pool *p = current_pool[dev->ordinal];
  return p ? p : default_of(dev);
}

static fk_pool *pool_of(CUmemoryPool h) {
  return fk_handle_valid(h, FK_MEMPOOL) && !((fk_pool *)h)->destroyed ? (fk_pool *)h : NULL;
}

/* Give cached blocks back until the pool holds at most `keep` bytes.
 * Caller holds pool_lock. */
static void trim(fk_pool *p, uint64_t keep) {
  for (size_t i = p->ncache; i-- > 0 && p->reserved > keep;) {
    if (p->cache[i].pending) continue; /* work queued before its free may still use it */
    block b = p->cache[i];
    p->cache[i] = p->cache[--p->ncache];
    fk_alloc a = {.base = b.base, .size = b.size, .dev = p->dev};
    fk_dev_release(&a);
    p->reserved -= b.size;
  }
}

static bool any_pending(const fk_pool *p) {
  for (size_t i = 0; i < p->ncache; i++)
    if (p->cache[i].pending) return true;
  return false;
}

static void pool_maybe_free(fk_pool *p) {
  if (!p->destroyed || p->used || any_pending(p)) return;
  trim(p, 0);
  fk_handle_remove(p);
  for (size_t i = 0; i < nlive_pools; i++)
    if (live_pools[i] == p) {
      live_pools[i] = live_pools[--nlive_pools];
      break;
    }
  free(p->cache);
  free(p);
}

static bool live_add(uintptr_t base, size_t size, fk_pool *p) {
  if (nlive == caplive) {
    size_t cap = caplive ? 2 * caplive : 64;
    live *g = realloc(lives, cap * sizeof *g);
    if (!g) return false;
    lives = g;
    caplive = cap;
  }
  lives[nlive++] = (live){base, size, p};
  return true;
}

static long live_find(uintptr_t base) {
  for (size_t i = 0; i < nlive; i++)
    if (lives[i].base == base) return (long)i;
  return -1;
}

CUmemoryPool fk_pool_of(uintptr_t base) {
  pthread_mutex_lock(&pool_lock);
  long i = live_find(base);
  fk_pool *p = i >= 0 ? lives[i].pool : NULL;
  pthread_mutex_unlock(&pool_lock);
  return (CUmemoryPool)p;
}

/* The stream reached the free of `base`: unless an allocation on that
 * stream took it meanwhile, the block is now free for any stream. */
static void pool_free_done(uintptr_t base, uint64_t ticket) {
  pthread_mutex_lock(&pool_lock);
  for (size_t k = 0; k < nlive_pools; k++) {
    fk_pool *p = live_pools[k];
    for (size_t i = 0; i < p->ncache; i++) {
      if (p->cache[i].base != base || !p->cache[i].pending || p->cache[i].ticket != ticket) continue;
      p->cache[i].pending = false;
      trim(p, p->destroyed ? 0 : p->threshold);
      pool_maybe_free(p);
      pthread_mutex_unlock(&pool_lock);
      return;
    }
  }
  pthread_mutex_unlock(&pool_lock);
}

static uint64_t next_ticket = 1;

/* Returns the free's ticket. */
static uint64_t block_freed(const fk_alloc *a, fk_stream *s) {
  pthread_mutex_lock(&pool_lock);
  long i = live_find(a->base);
  if (i < 0) { /* not ours after all: plain device memory */
    pthread_mutex_unlock(&pool_lock);
    fk_dev_release(a);
    return 0;
  }
  uint64_t ticket = next_ticket++;
  live l = lives[i];
  lives[i] = lives[--nlive];
  fk_pool *p = l.pool;
  p->used -= l.size;
  bool cached = false;
  /* A destroyed pool keeps a block only until its stream reaches the free. */
  if (p->ncache == p->capcache) {
    size_t cap = p->capcache ? 2 * p->capcache : 16;
    block *g = realloc(p->cache, cap * sizeof *g);
    if (g) {
      p->cache = g;
      p->capcache = cap;
    }
  }
  if (p->ncache < p->capcache && (s || !p->destroyed)) {
    p->cache[p->ncache++] = (block){l.base, l.size, s, s != NULL, ticket};
    cached = true;
  }
  if (!cached) {
    fk_alloc b = {.base = l.base, .size = l.size, .dev = p->dev};
    fk_dev_release(&b);
    p->reserved -= l.size;
  }
  trim(p, p->destroyed ? 0 : p->threshold);
  pool_maybe_free(p);
  pthread_mutex_unlock(&pool_lock);
  return ticket;
}

void fk_pool_block_freed(const fk_alloc *a, fk_stream *s) { (void)block_freed(a, s); }

/* An allocation of `size` bytes from pool p for stream s (its work). */
static CUresult pool_alloc(fk_pool *p, fk_ctx *ctx, fk_stream *s, size_t size, CUdeviceptr_v2 *dptr) {
  if (size > ((size_t)1 << 62)) return CUDA_ERROR_OUT_OF_MEMORY;
  size_t n = rounded(size);
  pthread_mutex_lock(&pool_lock);
  if (!live_add(0, 0, NULL)) {
    pthread_mutex_unlock(&pool_lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  nlive--; /* room for the entry made below */
  uintptr_t base = 0;
  for (size_t i = p->ncache; i-- > 0;) {
    block *b = &p->cache[i];
    /* Stream order makes a block freed on this stream safe, even before the
     * stream reaches the free; one freed on another, once its free is done. */
    if (b->size != n || (b->freed_on != s && (b->pending || !p->reuse_opportunistic))) continue;
    base = b->base;
    *b = p->cache[--p->ncache];
    break;
  }
  CUresult rc = CUDA_SUCCESS;
  if (base) {
    rc = fk_mem_add(base, n, FK_MEM_DEVICE, ctx, p->dev, FK_ALLOC_ASYNC | FK_ALLOC_POOL, 0);
    if (rc) { /* cannot register it again: give it back for good */
      fk_alloc b = {.base = base, .size = n, .dev = p->dev};
      fk_dev_release(&b);
      p->reserved -= n;
    }
  } else if (p->props.maxSize && p->reserved + n > p->props.maxSize) {
    rc = CUDA_ERROR_OUT_OF_MEMORY;
  } else if (p->dev != ctx->dev) {
    /* Memory of another device's pool from this context: not modelled. */
    rc = CUDA_ERROR_NOT_SUPPORTED;
  } else {
    CUdeviceptr d = 0;
    rc = fk_dev_alloc(ctx, n, FK_ALLOC_ASYNC | FK_ALLOC_POOL, &d);
    if (!rc) {
      base = (uintptr_t)d;
      p->reserved += n;
      if (p->reserved > p->reserved_high) p->reserved_high = p->reserved;
    }
  }
  if (!rc) {
    live_add(base, n, p);
    p->used += n;
    if (p->used > p->used_high) p->used_high = p->used;
    *dptr = (CUdeviceptr_v2)base;
  }
  pthread_mutex_unlock(&pool_lock);
  return rc;
}

CUresult fake_cuMemAllocAsync_11020(CUdeviceptr_v2 *dptr, size_t bytesize, CUstream hStream) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &ctx, &s);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = current_of(ctx->dev);
  pthread_mutex_unlock(&pool_lock);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  return pool_alloc(p, ctx, s, bytesize, dptr);
}

CUresult fake_cuMemAllocFromPoolAsync_11020(CUdeviceptr_v2 *dptr, size_t bytesize, CUmemoryPool pool,
                                            CUstream hStream) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &ctx, &s);
  if (rc) return rc;
  fk_pool *p = pool_of(pool);
  if (!dptr || bytesize == 0 || !p) return CUDA_ERROR_INVALID_VALUE;
  return pool_alloc(p, ctx, s, bytesize, dptr);
}

/* The block goes back when the stream reaches the free. */
typedef struct free_op {
  fk_alloc a;
  fk_stream *s;
  uint64_t ticket;
} free_op;

static void run_free(fk_op *op) {
  free_op *f = (free_op *)op->payload;
  if (f->a.flags & FK_ALLOC_POOL)
    pool_free_done(f->a.base, f->ticket);
  else
    fk_dev_release(&f->a);
}

CUresult fake_cuMemFreeAsync_11020(CUdeviceptr_v2 dptr, CUstream hStream) {
  fk_ctx *ctx;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &ctx, &s);
  if (rc) return rc;
  fk_op *op = fk_op_new(run_free, sizeof(free_op));
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  free_op *f = (free_op *)op->payload;
  /* Taken out of the registry now, so work queued after the free is refused
   * and a second free fails; the memory goes when the stream gets here. */
  if (!dptr || !fk_mem_take((uintptr_t)dptr, 1u << FK_MEM_DEVICE, &f->a)) {
    free(op);
    return CUDA_ERROR_INVALID_VALUE;
  }
  f->s = s;
  op->ctx = ctx;
  /* A pool block is the pool's again at once, for this stream's later
   * allocations; for the others when the stream gets here. */
  if (f->a.flags & FK_ALLOC_POOL) f->ticket = block_freed(&f->a, s);
  fk_stream_submit(s, op, NULL);
  return CUDA_SUCCESS;
}

/* ---- pools --------------------------------------------------------------- */

static bool valid_device(int id) { return id >= 0 && id < fk_cfg.device_count; }

CUresult fake_cuMemPoolCreate_11020(CUmemoryPool *pool, const CUmemPoolProps_v1 *props) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!pool || !props) return CUDA_ERROR_INVALID_VALUE;
  if (props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (props->location.type == CU_MEM_LOCATION_TYPE_HOST || props->location.type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED; /* host pools are not modelled */
  if (props->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  /* A pool's properties naming no device are an invalid value (NVIDIA's 580). */
  if (!valid_device(props->location.id)) return CUDA_ERROR_INVALID_VALUE;
  if (props->handleTypes != CU_MEM_HANDLE_TYPE_NONE) return CUDA_ERROR_NOT_SUPPORTED; /* no IPC pools */
  if (props->win32SecurityAttributes) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof props->reserved; i++)
    if (props->reserved[i]) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_new(&fk_cfg.devices[props->location.id], props, false);
  pthread_mutex_unlock(&pool_lock);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  *pool = (CUmemoryPool)p;
  return CUDA_SUCCESS;
}

/* Outstanding allocations keep a destroyed pool until they are freed. */
CUresult fake_cuMemPoolDestroy_11020(CUmemoryPool pool) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  if (!p || p->is_default) {
    pthread_mutex_unlock(&pool_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  /* The device's current pool goes back to its default. */
  if (current_pool[p->dev->ordinal] == p) current_pool[p->dev->ordinal] = NULL;
  p->destroyed = true;
  trim(p, 0);
  pool_maybe_free(p);
  pthread_mutex_unlock(&pool_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuMemPoolTrimTo_11020(CUmemoryPool pool, size_t minBytesToKeep) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  if (p) trim(p, minBytesToKeep);
  pthread_mutex_unlock(&pool_lock);
  return p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult fake_cuMemPoolSetAttribute_11020(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!value) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  rc = p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  if (p) {
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: p->reuse_follow = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: p->reuse_opportunistic = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: p->reuse_internal = *(int *)value != 0; break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: p->threshold = *(cuuint64_t *)value; break;
    /* The high watermarks can only be reset (to the current value). */
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
      if (*(cuuint64_t *)value) rc = CUDA_ERROR_INVALID_VALUE;
      else p->reserved_high = p->reserved;
      break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
      if (*(cuuint64_t *)value) rc = CUDA_ERROR_INVALID_VALUE;
      else p->used_high = p->used;
      break;
    default: rc = CUDA_ERROR_INVALID_VALUE; break;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  return rc;
}

CUresult fake_cuMemPoolGetAttribute_11020(CUmemoryPool pool, CUmemPool_attribute attr, void *value) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!value) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  rc = p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  if (p) {
    switch (attr) {
    case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: *(int *)value = p->reuse_follow; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: *(int *)value = p->reuse_opportunistic; break;
    case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *(int *)value = p->reuse_internal; break;
    case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *(cuuint64_t *)value = p->threshold; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *(cuuint64_t *)value = p->reserved; break;
    case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *(cuuint64_t *)value = p->reserved_high; break;
    case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *(cuuint64_t *)value = p->used; break;
    case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *(cuuint64_t *)value = p->used_high; break;
    default: rc = CUDA_ERROR_INVALID_VALUE; break;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  return rc;
}

CUresult fake_cuMemPoolSetAccess_11020(CUmemoryPool pool, const CUmemAccessDesc_v1 *map, size_t count) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!map || count == 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  rc = p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  for (size_t k = 0; p && !rc && k < count; k++) {
    if (map[k].location.type != CU_MEM_LOCATION_TYPE_DEVICE) rc = CUDA_ERROR_INVALID_VALUE;
    else if (!valid_device(map[k].location.id)) rc = CUDA_ERROR_INVALID_DEVICE;
    else if (map[k].flags > CU_MEM_ACCESS_FLAGS_PROT_READWRITE) rc = CUDA_ERROR_INVALID_VALUE;
    /* The pool's own device always has read-write access. */
    else if (map[k].location.id == p->dev->ordinal && map[k].flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
      rc = CUDA_ERROR_INVALID_VALUE;
  }
  for (size_t k = 0; p && !rc && k < count; k++) p->access[map[k].location.id] = map[k].flags;
  pthread_mutex_unlock(&pool_lock);
  return rc;
}

CUresult fake_cuMemPoolGetAccess_11020(CUmemAccess_flags *flags, CUmemoryPool memPool, CUmemLocation_v1 *location) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!flags || !location || location->type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(location->id)) return CUDA_ERROR_INVALID_DEVICE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(memPool);
  if (p) *flags = (CUmemAccess_flags)p->access[location->id];
  pthread_mutex_unlock(&pool_lock);
  return p ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* ---- a device's default and current pool --------------------------------- */

static CUresult device_of(CUdevice_v1 dev, fk_device **out) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  *out = &fk_cfg.devices[dev];
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetDefaultMemPool_11020(CUmemoryPool *pool_out, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = device_of(dev, &d);
  if (rc) return rc;
  if (!pool_out) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = default_of(d);
  pthread_mutex_unlock(&pool_lock);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  *pool_out = (CUmemoryPool)p;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceGetMemPool_11020(CUmemoryPool *pool, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = device_of(dev, &d);
  if (rc) return rc;
  if (!pool) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = current_of(d);
  pthread_mutex_unlock(&pool_lock);
  if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
  *pool = (CUmemoryPool)p;
  return CUDA_SUCCESS;
}

CUresult fake_cuDeviceSetMemPool_11020(CUdevice_v1 dev, CUmemoryPool pool) {
  fk_device *d;
  CUresult rc = device_of(dev, &d);
  if (rc) return rc;
  pthread_mutex_lock(&pool_lock);
  fk_pool *p = pool_of(pool);
  if (p && p->dev == d) current_pool[dev] = p;
  pthread_mutex_unlock(&pool_lock);
  return p && p->dev == d ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

/* CUDA 13's location-based forms: device locations of pinned memory only. */
static CUresult location_device(const CUmemLocation *location, CUmemAllocationType type, CUdevice_v1 *dev) {
  CUresult rc = fk_mem_need_init();
  if (rc) return rc;
  if (!location || type != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
  if (location->type == CU_MEM_LOCATION_TYPE_HOST || location->type == CU_MEM_LOCATION_TYPE_HOST_NUMA)
    return CUDA_ERROR_NOT_SUPPORTED;
  if (location->type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  *dev = location->id;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemGetDefaultMemPool_13000(CUmemoryPool *pool_out, CUmemLocation *location, CUmemAllocationType type) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : fake_cuDeviceGetDefaultMemPool_11020(pool_out, dev);
}

CUresult fake_cuMemGetMemPool_13000(CUmemoryPool *pool, CUmemLocation *location, CUmemAllocationType type) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : fake_cuDeviceGetMemPool_11020(pool, dev);
}

CUresult fake_cuMemSetMemPool_13000(CUmemLocation *location, CUmemAllocationType type, CUmemoryPool pool) {
  CUdevice_v1 dev;
  CUresult rc = location_device(location, type, &dev);
  return rc ? rc : fake_cuDeviceSetMemPool_11020(dev, pool);
}
