/* The job's memory pools and stream-ordered allocations (cuMemPoolCreate,
 * cuMemAllocAsync, cuMemAllocFromPoolAsync, cuMemFreeAsync, ...).
 *
 * The driver's own pools hand out memory at addresses of the driver's
 * choosing, which a restore could not get back. So the controller keeps the
 * job's pools itself, on top of its own allocator (memory.c): every block is
 * an ordinary allocation inside the reserved range, saved and restored at
 * its address like any other, and the pool (its attributes, which blocks it
 * holds, which of them the job has freed) is part of the checkpoint.
 *
 * The pool works like the fake driver's (gpu/fake/cuda/mempool.c) and the
 * conformance tests hold both to the same behaviour: a freed block is cached
 * and reused, at once by later allocations on the stream that freed it,
 * by others once the stream got there (an event recorded behind the free
 * says when) and opportunistic reuse is allowed; what a pool holds beyond
 * its release threshold goes back once the stream reached the free (checked
 * whenever the job asks about pools or free memory); cuMemPoolTrimTo gives
 * back the rest. Blocks belong to no context (pools are the device's), so a
 * context teardown leaves them alone.
 *
 * Threads: everything here runs on the dispatcher, which is the only writer;
 * the tables it changes (allocations) are changed under c->lock as memory.c
 * does.
 */
#include "cgc_internal.h"

#include <errno.h>
#include <stdlib.h>

#define POOL_ROUND 512u

static uint64_t rounded(uint64_t n) { return (n + POOL_ROUND - 1) / POOL_ROUND * POOL_ROUND; }

static cgc_pool *pool_get(cgc_t *c, uint64_t minted) {
  cgc_pool *p = cgc_hmap_get(&c->pools, minted);
  return p && !p->destroyed ? p : NULL;
}

/* Give a cached block back to the allocator for good. */
static void release_block(cgc_t *c, cgc_pool *p, cgc_alloc *a) {
  p->reserved -= a->pool_size;
  a = cgc_mem_take(c, a->dptr);
  if (a) cgc_mem_release(c, a);
}

static void unlink_cached(cgc_pool *p, cgc_alloc *a) {
  for (cgc_alloc **pp = &p->cache; *pp; pp = &(*pp)->pnext)
    if (*pp == a) {
      *pp = a->pnext;
      a->pnext = NULL;
      return;
    }
}

/* Whether the stream reached the free of cached block a. */
static bool reached(cgc_t *c, cgc_alloc *a) {
  if (!a->done) return true;
  CUresult rc = c->drv.cuEventQuery(a->done);
  if (rc == CUDA_ERROR_NOT_READY) return false;
  /* Done, or its context is gone with its work: either way nothing queued
   * uses the block any more. */
  if (rc == CUDA_SUCCESS) c->drv.cuEventDestroy(a->done);
  a->done = NULL;
  return true;
}

/* Give back cached blocks the streams are done with until the pool holds at
 * most `keep` bytes. */
static void trim(cgc_t *c, cgc_pool *p, uint64_t keep) {
  for (cgc_alloc **pp = &p->cache; *pp && p->reserved > keep;) {
    cgc_alloc *a = *pp;
    if (!reached(c, a)) {
      pp = &a->pnext;
      continue;
    }
    *pp = a->pnext;
    release_block(c, p, a);
  }
}

static void pool_maybe_free(cgc_t *c, cgc_pool *p) {
  if (!p->destroyed || p->used || p->cache) return;
  cgc_hmap_del(&c->pools, p->minted);
  free(p);
}

void cgc_pools_settle(cgc_t *c) {
  if (!c->pools.len) return;
  CGC_HMAP_EACH(&c->pools, cgc_pool *, p) {
    trim(c, p, p->destroyed ? 0 : p->threshold);
    pool_maybe_free(c, p);
  }
}

static CUresult pool_alloc(cgc_t *c, cgc_pool *p, uint64_t stream, uint64_t size, uint64_t *dptr) {
  uint64_t n = rounded(size);
  if (n < size) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_pools_settle(c);
  for (cgc_alloc *a = p->cache; a; a = a->pnext) {
    /* Stream order makes a block freed on this stream safe at once; one
     * freed on another once its stream got there. */
    if (a->pool_size != n || (a->freed_on != stream && (!p->reuse_opportunistic || !reached(c, a)))) continue;
    unlink_cached(p, a);
    if (a->done) c->drv.cuEventDestroy(a->done);
    a->done = NULL;
    a->cached = false;
    a->req_size = size;
    p->used += n;
    if (p->used > p->used_high) p->used_high = p->used;
    *dptr = a->dptr;
    return CUDA_SUCCESS;
  }
  if (p->max_size && p->reserved + n > p->max_size) return CUDA_ERROR_OUT_OF_MEMORY;
  uint64_t d = 0;
  CUresult rc = cgc_mem_alloc(c, n, p->device, 0, &d);
  if (rc) return rc;
  cgc_alloc *a = cgc_mem_at(c, d);
  if (!a) return CUDA_ERROR_UNKNOWN;
  pthread_mutex_lock(&c->lock);
  a->req_size = size;
  a->pool = p;
  a->pool_size = n;
  pthread_mutex_unlock(&c->lock);
  p->reserved += n;
  if (p->reserved > p->reserved_high) p->reserved_high = p->reserved;
  p->used += n;
  if (p->used > p->used_high) p->used_high = p->used;
  *dptr = d;
  return CUDA_SUCCESS;
}

/* The job freed block a on `stream`: cached, reusable once the stream gets
 * there (an event recorded behind the free says when). */
static CUresult pool_free(cgc_t *c, cgs_pool *r, cgc_alloc *a) {
  cgc_context *sx;
  CUstream s;
  CUresult rc = cgc_use_stream(c, &r->h, r->stream, r->per_thread, &sx, &s);
  if (rc) return rc;
  CUevent ev = NULL;
  rc = c->drv.cuEventCreate(&ev, CU_EVENT_DISABLE_TIMING);
  if (!rc) rc = c->drv.cuEventRecord(ev, s);
  if (rc) {
    if (ev) c->drv.cuEventDestroy(ev);
    return rc;
  }
  cgc_pool *p = a->pool;
  a->cached = true;
  a->done = ev;
  a->freed_on = r->stream;
  a->pnext = p->cache;
  p->cache = a;
  p->used -= a->pool_size;
  return CUDA_SUCCESS;
}

static CUresult set_attr(cgc_pool *p, uint32_t attr, uint64_t v) {
  switch (attr) {
  case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: p->reuse_follow = v != 0; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: p->reuse_opportunistic = v != 0; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: p->reuse_internal = v != 0; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: p->threshold = v; return CUDA_SUCCESS;
  /* The high watermarks can only be reset (to the current value). */
  case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH:
    if (v) return CUDA_ERROR_INVALID_VALUE;
    p->reserved_high = p->reserved;
    return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_USED_MEM_HIGH:
    if (v) return CUDA_ERROR_INVALID_VALUE;
    p->used_high = p->used;
    return CUDA_SUCCESS;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

static CUresult get_attr(const cgc_pool *p, uint32_t attr, uint64_t *v) {
  switch (attr) {
  case CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES: *v = (uint64_t)p->reuse_follow; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC: *v = (uint64_t)p->reuse_opportunistic; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES: *v = (uint64_t)p->reuse_internal; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_RELEASE_THRESHOLD: *v = p->threshold; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT: *v = p->reserved; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH: *v = p->reserved_high; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_USED_MEM_CURRENT: *v = p->used; return CUDA_SUCCESS;
  case CU_MEMPOOL_ATTR_USED_MEM_HIGH: *v = p->used_high; return CUDA_SUCCESS;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

static cgc_pool *pool_new(cgc_t *c, uint64_t minted, int device, bool is_default, uint64_t max_size) {
  cgc_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->minted = minted;
  p->device = device;
  p->is_default = is_default;
  p->max_size = max_size;
  p->reuse_follow = p->reuse_opportunistic = p->reuse_internal = 1;
  if (cgc_hmap_put(&c->pools, minted, p)) {
    free(p);
    return NULL;
  }
  return p;
}

int cgc_op_pool(cgc_t *c, cgs_pool *r, uint64_t *ret, int *nret) {
  if (!c->va_reserved) return CUDA_ERROR_NOT_INITIALIZED;
  cgc_context *x;
  CUresult rc = cgc_use_ctx(c, r->h.ctx, true, &x);
  if (rc) return rc;
  if (r->h.op == CGS_OP_POOL_CREATE) {
    if (r->device >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    if (cgc_hmap_get(&c->pools, r->handle)) return CUDA_ERROR_INVALID_VALUE;
    return pool_new(c, r->handle, r->device, r->is_default != 0, r->size) ? CUDA_SUCCESS
                                                                           : CUDA_ERROR_OUT_OF_MEMORY;
  }
  if (r->h.op == CGS_OP_POOL_FREE) {
    cgc_alloc *a = cgc_mem_at(c, r->dptr);
    if (!a || !a->pool || a->cached) return CUDA_ERROR_INVALID_VALUE;
    return pool_free(c, r, a);
  }
  cgc_pool *p = pool_get(c, r->handle);
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  switch (r->h.op) {
  case CGS_OP_POOL_DESTROY:
    if (p->is_default) return CUDA_ERROR_INVALID_VALUE;
    /* Outstanding blocks keep it until they are freed. */
    p->destroyed = true;
    trim(c, p, 0);
    pool_maybe_free(c, p);
    return CUDA_SUCCESS;
  case CGS_OP_POOL_TRIM:
    cgc_pools_settle(c);
    trim(c, p, r->size);
    return CUDA_SUCCESS;
  case CGS_OP_POOL_SET_ATTR:
    return set_attr(p, r->attr, r->value);
  case CGS_OP_POOL_GET_ATTR:
    cgc_pools_settle(c);
    *nret = 1;
    return get_attr(p, r->attr, &ret[0]);
  case CGS_OP_POOL_ALLOC: {
    /* The stream must be the job's (the allocation is ordered on it). */
    cgc_context *sx;
    CUstream s;
    rc = cgc_use_stream(c, &r->h, r->stream, r->per_thread, &sx, &s);
    if (rc) return rc;
    if (p->device != sx->device) return CUDA_ERROR_NOT_SUPPORTED; /* as the fake driver */
    *nret = 1;
    return pool_alloc(c, p, r->stream, r->size, &ret[0]);
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

void cgc_pools_free(cgc_t *c) {
  CGC_HMAP_EACH(&c->pools, cgc_pool *, p) free(p);
  cgc_hmap_free(&c->pools);
}
