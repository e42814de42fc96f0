/* The dispatcher thread: consumes the job's request ring in ticket order and
 * acts on each request against the driver.
 *
 * For every request: copy its slots into a private buffer, free the slots,
 * validate the copy (validate.c), resolve the minted handles it names through
 * the tables, check every device range against the job's own allocations,
 * then issue it. Queued requests report failures through header.async_error
 * (first error wins, as the driver's sticky errors do); synchronous ones
 * through their channel. Waits never happen here: they go to a completion
 * worker (complete.c).
 */
#include "cgc_internal.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define DEFERRED (-1) /* the request completes later, from a worker */

static inline cgs_channel *chan(cgc_t *c, uint32_t i) {
  return cgs_channel_at(c->hdr, c->channels_offset, c->channel_stride, i);
}

void cgc_complete(cgc_t *c, uint32_t channel, uint32_t token, int32_t rc, const uint64_t *ret, int nret) {
  if (channel >= c->nchannels) return;
  cgs_channel *ch = chan(c, channel);
  __atomic_store_n(&ch->result, rc, __ATOMIC_RELAXED);
  for (int i = 0; i < nret && i < 8; i++) __atomic_store_n(&ch->ret[i], ret[i], __ATOMIC_RELAXED);
  if (rc != CUDA_SUCCESS) __atomic_add_fetch(&c->n_errors, 1, __ATOMIC_RELAXED);
  /* The release store orders result and ret before done for the waiter. */
  __atomic_store_n(&ch->done, token, __ATOMIC_RELEASE);
  cgs_futex_wake(&ch->done);
}

void cgc_async_error(cgc_t *c, int32_t rc) {
  int32_t zero = 0;
  __atomic_add_fetch(&c->n_async_errors, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&c->n_errors, 1, __ATOMIC_RELAXED);
  __atomic_compare_exchange_n(&c->hdr->async_error, &zero, rc, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

bool cgc_ring_ready(cgc_t *c) {
  uint64_t t = __atomic_load_n(&c->tail, __ATOMIC_ACQUIRE);
  return __atomic_load_n(&c->ring[t & c->ring_mask].seq, __ATOMIC_ACQUIRE) == t + 1;
}

/* ---- handles ------------------------------------------------------------- */

static CUresult set_ctx(cgc_t *c, cgc_context *x) {
  if (c->cur == x) return CUDA_SUCCESS;
  CUresult rc = c->drv.cuCtxSetCurrent(x->real);
  if (rc == CUDA_SUCCESS) c->cur = x;
  return rc;
}

/* Make the request's context current. `minted` 0 means none: an error for
 * calls that need a context, our own primary context where `fallback`. */
static CUresult use_ctx(cgc_t *c, uint64_t minted, bool fallback, cgc_context **out) {
  cgc_context *x;
  if (c->cur && c->cur->minted == minted && (minted || fallback)) {
    *out = c->cur;
    return CUDA_SUCCESS;
  }
  if (!minted) {
    if (!fallback) return CUDA_ERROR_INVALID_CONTEXT;
    x = &c->own;
  } else {
    x = cgc_hmap_get(&c->contexts, minted);
    if (!x) return CUDA_ERROR_INVALID_CONTEXT;
  }
  *out = x;
  return set_ctx(c, x);
}

static CUresult get_stream(cgc_t *c, uint64_t h, uint32_t per_thread, cgc_context *cur, CUstream *out,
                           cgc_context **sctx) {
  *sctx = cur;
  if (h == 0) {
    /* All job threads share the dispatcher's per-thread stream: stricter
     * ordering than the driver's, never looser. */
    *out = per_thread ? CU_STREAM_PER_THREAD : CU_STREAM_LEGACY;
    return CUDA_SUCCESS;
  }
  if (h == (uint64_t)(uintptr_t)CU_STREAM_LEGACY || h == (uint64_t)(uintptr_t)CU_STREAM_PER_THREAD) {
    *out = (CUstream)(uintptr_t)h;
    return CUDA_SUCCESS;
  }
  cgc_stream *s = cgc_hmap_get(&c->streams, h);
  if (!s) return CUDA_ERROR_INVALID_HANDLE;
  *out = s->real;
  *sctx = s->ctx;
  return CUDA_SUCCESS;
}

static int table_put(cgc_t *c, cgc_hmap *m, uint64_t key, void *val) {
  pthread_mutex_lock(&c->lock);
  int rc = cgc_hmap_put(m, key, val);
  pthread_mutex_unlock(&c->lock);
  return rc;
}

static void *table_del(cgc_t *c, cgc_hmap *m, uint64_t key) {
  pthread_mutex_lock(&c->lock);
  void *v = cgc_hmap_del(m, key);
  pthread_mutex_unlock(&c->lock);
  return v;
}

int cgc_table_keep(cgc_t *c, cgc_hmap *m, uint64_t handle, const void *obj, size_t size, cgc_dead real) {
  void *copy = malloc(size);
  int rc = -ENOMEM;
  if (copy) {
    memcpy(copy, obj, size);
    if (!(rc = table_put(c, m, handle, copy))) return 0;
    free(copy);
  }
  cgc_dead_destroy(c, &real);
  return rc;
}

/* A new object kept for the job (cgc_table_keep): a full table is out of
 * memory to the job. */
static CUresult keep(cgc_t *c, cgc_hmap *m, uint64_t handle, const void *obj, size_t size, cgc_dead real) {
  return cgc_table_keep(c, m, handle, obj, size, real) ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
}

static void free_function(cgc_function *f) {
  free(f->name);
  free(f->params);
  free(f);
}

/* What a handler that queues work resolves first: the request's context,
 * made current, and the stream it names (in its own context, sx). */
typedef struct target {
  cgc_context *x, *sx;
  CUstream s;
} target;

static CUresult use_target(cgc_t *c, const cgs_req *h, uint64_t stream, uint32_t per_thread, target *t) {
  CUresult rc = use_ctx(c, h->ctx, false, &t->x);
  if (!rc) rc = get_stream(c, stream, per_thread, t->x, &t->s, &t->sx);
  return rc;
}

/* ---- waiting without blocking -------------------------------------------- */

/* Record a private event behind the work queued on `stream` and let a worker
 * wait for it and complete the request. */
static int wait_stream(cgc_t *c, const cgs_req *h, cgc_context *sctx, CUstream stream) {
  CUresult rc = set_ctx(c, sctx);
  if (rc != CUDA_SUCCESS) return rc;
  CUevent ev;
  rc = cgc_event_get(c, sctx, &ev);
  if (rc != CUDA_SUCCESS) return rc;
  rc = c->drv.cuEventRecord(ev, stream);
  if (rc != CUDA_SUCCESS) {
    cgc_event_put(c, sctx, ev);
    return rc;
  }
  cgc_task *t = cgc_task_new(c, CGC_TASK_EVENT, h, sctx);
  if (!t) {
    /* Out of memory: wait here rather than lose the request. */
    rc = c->drv.cuEventSynchronize(ev);
    cgc_event_put(c, sctx, ev);
    return rc;
  }
  t->ev = ev;
  t->ev_private = true;
  cgc_task_submit(c, t);
  return DEFERRED;
}

/* Free an allocation (a) or unmap a pinned file (p) once the work queued in
 * context x has run, from a worker; without memory for the task, wait for
 * that work here. */
static int release_drained(cgc_t *c, const cgs_req *h, cgc_context *x, cgc_alloc *a, cgc_pin *p) {
  cgc_task *t = cgc_task_new(c, a ? CGC_TASK_FREE : CGC_TASK_UNPIN, h, x);
  if (!t) {
    CUresult rc = cgc_ctx_sync(c, x->real);
    c->cur = NULL;
    if (a) cgc_mem_release(c, a);
    if (p) cgc_pin_unmap(c, p);
    return rc;
  }
  t->alloc = a;
  t->pin = p;
  cgc_task_submit(c, t);
  return DEFERRED;
}

/* ---- contexts ------------------------------------------------------------ */

/* Forget the module globals of module m, or of every module in context x
 * (the caller holds c->lock). */
static void drop_globals(cgc_t *c, const cgc_module *m, const cgc_context *x) {
  for (int i = 0; i < c->nglobals;) {
    if (c->globals[i].module == m || c->globals[i].module->ctx == x) {
      free(c->globals[i].name);
      c->globals[i] = c->globals[--c->nglobals];
    } else {
      i++;
    }
  }
}

/* Take everything that belongs to context x out of the tables, for a task
 * that destroys the driver objects once the context has drained (the
 * context's own teardown, or a primary context's last release or reset). */
static void drop_ctx_resources(cgc_t *c, cgc_context *x, cgc_task *t) {
  size_t cap = 0;
  t->dead = NULL;
  t->ndead = 0;
#define BURY(k, obj)                                                   \
  do {                                                                 \
    if ((size_t)t->ndead == cap) {                                     \
      size_t nc = cap ? 2 * cap : 16;                                  \
      cgc_dead *d = realloc(t->dead, nc * sizeof *d);                  \
      if (!d) break; /* leaks the driver object, nothing worse */      \
      t->dead = d;                                                     \
      cap = nc;                                                        \
    }                                                                  \
    t->dead[t->ndead].kind = (k);                                      \
    t->dead[t->ndead].h = (void *)(obj);                               \
    t->ndead++;                                                        \
  } while (0)
  pthread_mutex_lock(&c->lock);
  /* Each table files its objects under their minted handles. */
  CGC_HMAP_EACH(&c->functions, cgc_function *, f) {
    if (f->module->ctx != x) continue;
    cgc_hmap_del(&c->functions, f->minted);
    free_function(f);
  }
  drop_globals(c, NULL, x);
  CGC_HMAP_EACH(&c->modules, cgc_module *, m) {
    if (m->ctx != x) continue;
    cgc_hmap_del(&c->modules, m->minted);
    BURY(CGC_DEAD_MODULE, m->real);
    free(m->image);
    free(m);
  }
  CGC_HMAP_EACH(&c->streams, cgc_stream *, s) {
    if (s->ctx != x) continue;
    cgc_hmap_del(&c->streams, s->minted);
    BURY(CGC_DEAD_STREAM, s->real);
    free(s);
  }
  CGC_HMAP_EACH(&c->events, cgc_event *, ev) {
    if (ev->ctx != x) continue;
    cgc_hmap_del(&c->events, ev->minted);
    pthread_mutex_lock(&c->evlock);
    bool busy = ev->busy > 0;
    if (busy) ev->dead = true; /* its waiter destroys it */
    pthread_mutex_unlock(&c->evlock);
    if (!busy) {
      BURY(CGC_DEAD_EVENT, ev->real);
      free(ev);
    }
  }
  pthread_mutex_unlock(&c->lock);
#undef BURY
  /* Allocations made in the context go with it, as the driver frees them. */
  t->alloc = NULL;
  for (int32_t i = 0; i < c->nallocs; i++) {
    cgc_alloc *a = c->allocs[i];
    if (!a || a->ctx != x->minted || !x->minted) continue;
    a = cgc_mem_take(c, a->dptr);
    if (a) {
      a->next = t->alloc;
      t->alloc = a;
    }
  }
}

/* Tear down what the job made in context x, after its work has drained
 * (completes on the request's channel if it has one). */
static int teardown(cgc_t *c, const cgs_req *h, cgc_context *x, bool destroy) {
  cgc_task *t = cgc_task_new(c, CGC_TASK_CTX_DESTROY, h, x);
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  if (destroy) {
    table_del(c, &c->contexts, x->minted);
    if (c->cur == x) c->cur = NULL;
  }
  drop_ctx_resources(c, x, t);
  cgc_links_drop_ctx(c, x->minted);
  t->reset_only = !destroy;
  cgc_task_submit(c, t);
  return DEFERRED;
}

static int op_ctx(cgc_t *c, cgs_ctx *r, uint64_t *ret, int *nret) {
  (void)ret;
  (void)nret;
  CUresult rc;
  switch (r->h.op) {
  case CGS_OP_CTX_CREATE: {
    if (r->device >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    if (cgc_hmap_get(&c->contexts, r->handle)) return CUDA_ERROR_INVALID_VALUE;
    CUdevice d;
    rc = c->drv.cuDeviceGet(&d, r->device);
    if (rc) return rc;
    cgc_context *x = calloc(1, sizeof *x);
    if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
    rc = c->drv.cuCtxCreate(&x->real, r->flags, d);
    if (rc) {
      free(x);
      return rc;
    }
    x->minted = r->handle;
    x->device = r->device;
    x->flags = r->flags;
    c->cur = x; /* cuCtxCreate made it current */
    if (table_put(c, &c->contexts, r->handle, x)) {
      c->drv.cuCtxDestroy(x->real);
      c->cur = NULL;
      free(x);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
  }
  case CGS_OP_CTX_DESTROY: {
    cgc_context *x = cgc_hmap_get(&c->contexts, r->handle);
    if (!x || x->primary) return CUDA_ERROR_INVALID_CONTEXT;
    return teardown(c, &r->h, x, true);
  }
  case CGS_OP_CTX_SYNCHRONIZE: {
    cgc_context *x;
    /* The request names the context to synchronise; 0 means the current one. */
    rc = use_ctx(c, r->handle ? r->handle : r->h.ctx, false, &x);
    if (rc) return rc;
    cgc_task *t = cgc_task_new(c, CGC_TASK_CTX_SYNC, &r->h, x);
    if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
    cgc_task_submit(c, t);
    return DEFERRED;
  }
  case CGS_OP_PRIMARY_RETAIN: {
    /* The job's retains are counted here; the driver sees one of ours per
     * device, held until close, so the primary context (and our private
     * state in it) lives as long as we serve. */
    if (r->device >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    cgc_context *x = cgc_hmap_get(&c->contexts, r->handle);
    if (x) {
      if (!x->primary || x->device != r->device) return CUDA_ERROR_INVALID_VALUE;
      x->refs++;
      return CUDA_SUCCESS;
    }
    CUdevice d;
    rc = c->drv.cuDeviceGet(&d, r->device);
    if (rc) return rc;
    CUcontext real;
    rc = c->drv.cuDevicePrimaryCtxRetain(&real, d);
    if (rc) return rc;
    if (c->own_primary[r->device]) {
      c->drv.cuDevicePrimaryCtxRelease(d); /* we hold one already */
    } else {
      c->own_primary[r->device] = true;
    }
    x = calloc(1, sizeof *x);
    if (!x) return CUDA_ERROR_OUT_OF_MEMORY;
    x->minted = r->handle;
    x->real = real;
    x->device = r->device;
    x->flags = r->flags;
    x->primary = true;
    x->refs = 1;
    if (table_put(c, &c->contexts, r->handle, x)) {
      free(x);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return CUDA_SUCCESS;
  }
  case CGS_OP_PRIMARY_RELEASE: {
    cgc_context *x = cgc_hmap_get(&c->contexts, r->handle);
    if (!x || !x->primary || x->refs <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    /* The last release tears the context down, as the driver does (the
     * interposer forgets the context's objects at the same point). The
     * minted handle stays mapped: a device's primary context keeps it. */
    if (--x->refs == 0) return teardown(c, &r->h, x, false);
    return CUDA_SUCCESS;
  }
  case CGS_OP_PRIMARY_RESET: {
    cgc_context *x = cgc_hmap_get(&c->contexts, r->handle);
    if (!x) {
      if (r->device < 0 || r->device >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
      return CUDA_SUCCESS; /* never retained: nothing to reset */
    }
    if (!x->primary) return CUDA_ERROR_INVALID_CONTEXT;
    x->refs = 0;
    return teardown(c, &r->h, x, false);
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

/* ---- memory ---------------------------------------------------------------*/

static int op_mem(cgc_t *c, cgs_mem *r, uint64_t *ret, int *nret) {
  cgc_context *x;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  switch (r->h.op) {
  case CGS_OP_MEM_ALLOC: {
    uint64_t dptr = 0;
    rc = cgc_mem_alloc(c, r->size, x->device, x->minted, &dptr);
    ret[0] = dptr;
    *nret = 1;
    return rc;
  }
  case CGS_OP_MEM_FREE: {
    /* A pool's block goes back to its pool (POOL_FREE), never here. */
    const cgc_alloc *pooled = cgc_mem_at(c, r->dptr);
    if (pooled && pooled->pool) return CUDA_ERROR_INVALID_VALUE;
    cgc_alloc *a = cgc_mem_take(c, r->dptr);
    if (!a) return CUDA_ERROR_INVALID_VALUE;
    return release_drained(c, &r->h, x, a, NULL);
  }
  case CGS_OP_MEM_GET_INFO: {
    cgc_pools_settle(c); /* memory pools give back what they hold beyond their thresholds */
    size_t fr = 0, total = 0;
    rc = c->drv.cuMemGetInfo(&fr, &total);
    ret[0] = fr;
    ret[1] = total;
    *nret = 2;
    return rc;
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

/* Host side of a copy: the channel's staging area or a pinned file. */
static CUresult host_ptr(cgc_t *c, const cgs_copy *r, void **out) {
  if (r->host_kind == CGS_HOST_STAGING) {
    /* validate.c checked the range against our staging size. */
    *out = cgs_staging(chan(c, r->h.channel)) + r->host_offset;
    return CUDA_SUCCESS;
  }
  cgc_pin *p = cgc_hmap_get(&c->pins, r->pin_id);
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  if (r->host_offset > p->size || r->size > p->size - r->host_offset) return CUDA_ERROR_INVALID_VALUE;
  *out = p->map + r->host_offset;
  return CUDA_SUCCESS;
}

static int op_copy(cgc_t *c, cgs_copy *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  target t;
  CUresult rc = use_target(c, &r->h, r->stream, r->per_thread, &t);
  if (rc) return rc;
  if (r->size == 0) return CUDA_SUCCESS;
  if (c->nremaps) { /* module globals that moved in a restore */
    r->dst = cgc_global_remap(c, r->dst);
    r->src = cgc_global_remap(c, r->src);
  }
  void *hp = NULL;
  switch (r->h.op) {
  case CGS_OP_MEMCPY_HTOD:
    if (!cgc_mem_valid(c, r->dst, r->size)) return CUDA_ERROR_INVALID_VALUE;
    rc = host_ptr(c, r, &hp);
    if (rc) return rc;
    if (r->async && r->host_kind == CGS_HOST_STAGING && r->h.channel != CGS_NO_CHANNEL &&
        r->size <= ((uint64_t)4 << 20)) {
      /* An async copy from the job's pageable memory: the job only needs its
       * staging area back. Copy the bytes out to pageable memory of ours;
       * the driver takes a pageable source into its own staging before it
       * returns, without waiting for the stream, so the request completes
       * now instead of when the stream gets there. (Big copies wait as
       * before: the driver's staging is finite, and a full one would make
       * it wait for the stream here, holding up every other thread.) */
      void *priv = malloc(r->size);
      if (priv) {
        memcpy(priv, hp, r->size);
        rc = c->drv.cuMemcpyHtoDAsync(r->dst, priv, r->size, t.s);
        free(priv);
        return rc;
      }
    }
    rc = c->drv.cuMemcpyHtoDAsync(r->dst, hp, r->size, t.s);
    break;
  case CGS_OP_MEMCPY_DTOH:
    if (!cgc_mem_valid(c, r->src, r->size)) return CUDA_ERROR_INVALID_VALUE;
    rc = host_ptr(c, r, &hp);
    if (rc) return rc;
    rc = c->drv.cuMemcpyDtoHAsync(hp, r->src, r->size, t.s);
    break;
  default:
    if (!cgc_mem_valid(c, r->dst, r->size) || !cgc_mem_valid(c, r->src, r->size)) return CUDA_ERROR_INVALID_VALUE;
    rc = c->drv.cuMemcpyDtoDAsync(r->dst, r->src, r->size, t.s);
    break;
  }
  if (rc) return rc;
  /* A staged copy completes when the bytes have moved: the job reuses its
   * staging area right after. */
  bool staged = r->h.op != CGS_OP_MEMCPY_DTOD && r->host_kind == CGS_HOST_STAGING;
  if ((staged || !r->async) && r->h.channel != CGS_NO_CHANNEL) return wait_stream(c, &r->h, t.sx, t.s);
  return CUDA_SUCCESS;
}

static int op_memset(cgc_t *c, cgs_memset *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  target t;
  CUresult rc = use_target(c, &r->h, r->stream, r->per_thread, &t);
  if (rc) return rc;
  if (r->width == 0) return CUDA_SUCCESS;
  if (c->nremaps) r->dst = cgc_global_remap(c, r->dst);
  uint64_t row = r->width * r->elem_size; /* validate.c ruled out overflow */
  uint64_t span = r->height > 1 ? r->pitch * (r->height - 1) + row : row;
  if (!cgc_mem_valid(c, r->dst, span)) return CUDA_ERROR_INVALID_VALUE;
  if (r->height == 1) {
    switch (r->elem_size) {
    case 1: rc = c->drv.cuMemsetD8Async(r->dst, (unsigned char)r->value, r->width, t.s); break;
    case 2: rc = c->drv.cuMemsetD16Async(r->dst, (unsigned short)r->value, r->width, t.s); break;
    default: rc = c->drv.cuMemsetD32Async(r->dst, r->value, r->width, t.s); break;
    }
  } else {
    switch (r->elem_size) {
    case 1: rc = c->drv.cuMemsetD2D8Async(r->dst, r->pitch, (unsigned char)r->value, r->width, r->height, t.s); break;
    case 2: rc = c->drv.cuMemsetD2D16Async(r->dst, r->pitch, (unsigned short)r->value, r->width, r->height, t.s); break;
    default: rc = c->drv.cuMemsetD2D32Async(r->dst, r->pitch, r->value, r->width, r->height, t.s); break;
    }
  }
  if (rc) return rc;
  if (!r->async && r->h.channel != CGS_NO_CHANNEL) return wait_stream(c, &r->h, t.sx, t.s);
  return CUDA_SUCCESS;
}

/* ---- streams and events ---------------------------------------------------*/

static int op_stream(cgc_t *c, cgs_stream *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  cgc_context *x, *sx;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  switch (r->h.op) {
  case CGS_OP_STREAM_CREATE: {
    if (cgc_hmap_get(&c->streams, r->handle)) return CUDA_ERROR_INVALID_VALUE;
    cgc_stream s = {.minted = r->handle, .ctx = x, .flags = r->flags, .priority = r->priority};
    rc = c->drv.cuStreamCreateWithPriority(&s.real, r->flags, r->priority);
    if (rc) return rc;
    return keep(c, &c->streams, r->handle, &s, sizeof s, (cgc_dead){CGC_DEAD_STREAM, s.real});
  }
  case CGS_OP_STREAM_DESTROY: {
    cgc_stream *s = table_del(c, &c->streams, r->handle);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    /* The driver destroys it once its queued work has run. */
    rc = c->drv.cuStreamDestroy(s->real);
    free(s);
    return rc;
  }
  case CGS_OP_STREAM_SYNCHRONIZE:
  case CGS_OP_STREAM_QUERY: {
    CUstream s;
    rc = get_stream(c, r->handle, r->per_thread, x, &s, &sx);
    if (rc) return rc;
    if (sx != x && (rc = set_ctx(c, sx))) return rc;
    rc = c->drv.cuStreamQuery(s);
    /* An idle stream answers at once; a busy one goes to a worker. */
    if (r->h.op == CGS_OP_STREAM_QUERY || rc != CUDA_ERROR_NOT_READY) return rc;
    return wait_stream(c, &r->h, sx, s);
  }
  case CGS_OP_STREAM_WAIT_EVENT: {
    CUstream s;
    rc = get_stream(c, r->handle, r->per_thread, x, &s, &sx);
    if (rc) return rc;
    cgc_event *e = cgc_hmap_get(&c->events, r->event);
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    return c->drv.cuStreamWaitEvent(s, e->real, r->flags);
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

static int op_event(cgc_t *c, cgs_event *r, uint64_t *ret, int *nret) {
  cgc_context *x, *sx;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  if (r->h.op == CGS_OP_EVENT_CREATE) {
    if (cgc_hmap_get(&c->events, r->handle)) return CUDA_ERROR_INVALID_VALUE;
    cgc_event e = {.minted = r->handle, .ctx = x, .flags = r->flags};
    rc = c->drv.cuEventCreate(&e.real, r->flags);
    if (rc) return rc;
    return keep(c, &c->events, r->handle, &e, sizeof e, (cgc_dead){CGC_DEAD_EVENT, e.real});
  }
  cgc_event *e = cgc_hmap_get(&c->events, r->handle);
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  switch (r->h.op) {
  case CGS_OP_EVENT_RECORD: {
    CUstream s;
    rc = get_stream(c, r->stream, r->per_thread, x, &s, &sx);
    if (rc) return rc;
    return c->drv.cuEventRecord(e->real, s);
  }
  case CGS_OP_EVENT_QUERY:
    return c->drv.cuEventQuery(e->real);
  case CGS_OP_EVENT_SYNCHRONIZE: {
    rc = c->drv.cuEventQuery(e->real);
    if (rc != CUDA_ERROR_NOT_READY) return rc;
    cgc_task *t = cgc_task_new(c, CGC_TASK_EVENT, &r->h, e->ctx);
    if (!t) return c->drv.cuEventSynchronize(e->real);
    pthread_mutex_lock(&c->evlock);
    e->busy++;
    pthread_mutex_unlock(&c->evlock);
    t->ev = e->real;
    t->job_ev = e;
    cgc_task_submit(c, t);
    return DEFERRED;
  }
  case CGS_OP_EVENT_ELAPSED: {
    cgc_event *end = cgc_hmap_get(&c->events, r->other);
    if (!end) return CUDA_ERROR_INVALID_HANDLE;
    float ms = 0;
    rc = c->drv.cuEventElapsedTime(&ms, e->real, end->real);
    uint32_t bits;
    memcpy(&bits, &ms, sizeof bits);
    ret[0] = bits;
    *nret = 1;
    return rc;
  }
  case CGS_OP_EVENT_DESTROY: {
    table_del(c, &c->events, r->handle);
    pthread_mutex_lock(&c->evlock);
    bool busy = e->busy > 0;
    if (busy) e->dead = true; /* the last waiter destroys it */
    pthread_mutex_unlock(&c->evlock);
    if (busy) return CUDA_SUCCESS;
    rc = c->drv.cuEventDestroy(e->real);
    free(e);
    return rc;
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

/* ---- modules and functions ------------------------------------------------*/

static int op_blob(cgc_t *c, cgs_blob *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  cgc_blob *b = &c->blobs[r->h.channel];
  if (r->offset == 0) {
    if (!b->buf || b->total != r->total) {
      free(b->buf);
      /* One spare zero byte: a PTX image must end with a NUL. */
      b->buf = calloc(1, r->total + 1);
      b->total = b->buf ? r->total : 0;
      if (!b->buf) return CUDA_ERROR_OUT_OF_MEMORY;
    }
    b->filled = 0;
  } else if (!b->buf || b->total != r->total || r->offset > b->filled) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  memcpy(b->buf + r->offset, cgs_staging(chan(c, r->h.channel)), r->size);
  if (r->offset + r->size > b->filled) b->filled = r->offset + r->size;
  return CUDA_SUCCESS;
}

static int op_module(cgc_t *c, cgs_module *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  cgc_context *x;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  if (r->h.op == CGS_OP_MODULE_LOAD) {
    cgc_blob *b = &c->blobs[r->h.channel];
    if (!b->buf || b->total != r->size || b->filled != r->size) return CUDA_ERROR_INVALID_VALUE;
    if (cgc_hmap_get(&c->modules, r->handle)) return CUDA_ERROR_INVALID_VALUE;
    /* The image is kept as loaded: a restore loads it again. */
    cgc_module m = {.minted = r->handle, .ctx = x, .image = b->buf, .image_size = r->size};
    rc = c->drv.cuModuleLoadData(&m.real, b->buf);
    if (rc) return rc;
    b->buf = NULL; /* the module's now, kept or not */
    b->total = b->filled = 0;
    rc = keep(c, &c->modules, r->handle, &m, sizeof m, (cgc_dead){CGC_DEAD_MODULE, m.real});
    if (rc) free(m.image);
    return rc;
  }
  /* MODULE_UNLOAD */
  cgc_module *m = cgc_hmap_get(&c->modules, r->handle);
  if (!m) return CUDA_ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&c->lock);
  cgc_hmap_del(&c->modules, r->handle);
  if (m->nfunctions) {
    CGC_HMAP_EACH(&c->functions, cgc_function *, f) {
      if (f->module != m) continue;
      cgc_hmap_del(&c->functions, f->minted);
      free_function(f);
    }
  }
  drop_globals(c, m, NULL);
  pthread_mutex_unlock(&c->lock);
  rc = c->drv.cuModuleUnload(m->real);
  free(m->image);
  free(m);
  return rc;
}

/* The parameter layout of f, answered by the driver. */
static CUresult param_layout(cgc_t *c, cgc_function *f) {
  f->nparams = -1;
  f->params_size = 0;
  if (!c->drv.cuFuncGetParamInfo) return CUDA_SUCCESS;
  cgs_param tmp[64];
  cgs_param *ps = tmp;
  int cap = 64, n = 0;
  for (;;) {
    size_t off = 0, size = 0;
    CUresult rc = c->drv.cuFuncGetParamInfo(f->real, (size_t)n, &off, &size);
    if (rc == CUDA_ERROR_INVALID_VALUE) break; /* past the last parameter */
    if (rc != CUDA_SUCCESS) {
      if (ps != tmp) free(ps);
      return n == 0 ? CUDA_SUCCESS : rc; /* not supported: layout unknown */
    }
    if (n == CGC_MAX_PARAMS || off > UINT32_MAX || size > UINT32_MAX || off + size > CGS_MAX_LAUNCH_ARGS) {
      if (ps != tmp) free(ps);
      return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (n == cap) {
      cgs_param *p = malloc((size_t)cap * 2 * sizeof *p);
      if (!p) {
        if (ps != tmp) free(ps);
        return CUDA_ERROR_OUT_OF_MEMORY;
      }
      memcpy(p, ps, (size_t)n * sizeof *p);
      if (ps != tmp) free(ps);
      ps = p;
      cap *= 2;
    }
    ps[n].offset = (uint32_t)off;
    ps[n].size = (uint32_t)size;
    if (off + size > f->params_size) f->params_size = (uint32_t)(off + size);
    n++;
  }
  f->params = malloc((size_t)(n ? n : 1) * sizeof *f->params);
  if (!f->params) {
    if (ps != tmp) free(ps);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  memcpy(f->params, ps, (size_t)n * sizeof *ps);
  if (ps != tmp) free(ps);
  f->nparams = n;
  return CUDA_SUCCESS;
}

static int answer_layout(cgc_t *c, const cgs_symbol *r, const cgc_function *f, uint64_t *ret, int *nret) {
  /* ret[0] = nparams (UINT64_MAX: the driver cannot tell), ret[1] = bytes
   * of packed arguments; staging = cgs_param[nparams]. */
  ret[0] = f->nparams < 0 ? UINT64_MAX : (uint64_t)f->nparams;
  ret[1] = f->params_size;
  *nret = 2;
  if (f->nparams > 0) {
    if ((uint64_t)f->nparams * sizeof(cgs_param) > c->staging_size) return CUDA_ERROR_NOT_SUPPORTED;
    memcpy(cgs_staging(chan(c, r->h.channel)), f->params, (size_t)f->nparams * sizeof(cgs_param));
  }
  return CUDA_SUCCESS;
}

static int op_symbol(cgc_t *c, cgs_symbol *r, uint64_t *ret, int *nret) {
  cgc_context *x;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  cgc_module *m = cgc_hmap_get(&c->modules, r->module);
  if (!m) return CUDA_ERROR_INVALID_HANDLE;
  if (r->h.op == CGS_OP_MODULE_GET_GLOBAL) {
    CUdeviceptr dptr = 0;
    size_t size = 0;
    rc = c->drv.cuModuleGetGlobal(&dptr, &size, m->real, r->name);
    if (rc) return rc;
    ret[0] = dptr;
    ret[1] = size;
    /* A global that moved in a restore keeps the address the job knows. */
    for (int i = 0; i < c->nremaps; i++)
      if (c->remaps[i].now == dptr) ret[0] = c->remaps[i].old;
    *nret = 2;
    pthread_mutex_lock(&c->lock);
    bool known = false;
    for (int i = 0; i < c->nglobals && !known; i++) known = c->globals[i].dptr == dptr;
    if (!known) {
      if (c->nglobals == c->gcap) {
        int cap = c->gcap ? 2 * c->gcap : 16;
        cgc_global *g = realloc(c->globals, (size_t)cap * sizeof *g);
        if (!g) {
          pthread_mutex_unlock(&c->lock);
          return CUDA_ERROR_OUT_OF_MEMORY;
        }
        c->globals = g;
        c->gcap = cap;
      }
      c->globals[c->nglobals++] = (cgc_global){dptr, size, m, strdup(r->name)};
    }
    pthread_mutex_unlock(&c->lock);
    return CUDA_SUCCESS;
  }
  /* MODULE_GET_FUNCTION */
  cgc_function *f = cgc_hmap_get(&c->functions, r->handle);
  if (f) {
    /* Asked again (another thread raced to mint it): same answer. */
    if (f->module != m || strcmp(f->name, r->name) != 0) return CUDA_ERROR_INVALID_VALUE;
    return answer_layout(c, r, f, ret, nret);
  }
  CUfunction real;
  rc = c->drv.cuModuleGetFunction(&real, m->real, r->name);
  if (rc) return rc;
  f = calloc(1, sizeof *f);
  if (!f) return CUDA_ERROR_OUT_OF_MEMORY;
  f->minted = r->handle;
  f->real = real;
  f->module = m;
  f->name = strdup(r->name);
  rc = f->name ? param_layout(c, f) : CUDA_ERROR_OUT_OF_MEMORY;
  if (rc || table_put(c, &c->functions, r->handle, f)) {
    free_function(f);
    return rc ? rc : CUDA_ERROR_OUT_OF_MEMORY;
  }
  m->nfunctions++;
  return answer_layout(c, r, f, ret, nret);
}

static int op_func_attr(cgc_t *c, cgs_func_attr *r, uint64_t *ret, int *nret) {
  cgc_context *x;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  cgc_function *f = cgc_hmap_get(&c->functions, r->function);
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  if (r->h.op == CGS_OP_FUNC_SET_ATTRIBUTE) {
    if (!c->drv.cuFuncSetAttribute) return CUDA_ERROR_NOT_SUPPORTED;
    rc = c->drv.cuFuncSetAttribute(f->real, (CUfunction_attribute)r->attribute, r->value);
    if (rc == CUDA_SUCCESS && r->attribute >= 0 && r->attribute < 32) { /* a checkpoint keeps it */
      f->attrs[r->attribute] = r->value;
      f->attr_set |= 1u << r->attribute;
    }
    return rc;
  }
  int v = 0;
  rc = c->drv.cuFuncGetAttribute(&v, (CUfunction_attribute)r->attribute, f->real);
  ret[0] = (uint64_t)(int64_t)v;
  *nret = 1;
  return rc;
}

/* The hot path: no allocation, two hash lookups, one driver call. */
static int op_launch(cgc_t *c, cgs_launch *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  target t;
  CUresult rc = use_target(c, &r->h, r->stream, r->per_thread, &t);
  if (rc) return rc;
  cgc_function *f = cgc_hmap_get(&c->functions, r->function);
  if (!f) return CUDA_ERROR_INVALID_HANDLE;
  /* Copy the packed arguments to an aligned buffer: a kernel may read a
   * 16-byte-aligned parameter type in place (the fake driver does). */
  memcpy(c->argbuf, (const uint8_t *)r + sizeof(cgs_launch), r->args_size);
  __atomic_add_fetch(&c->n_launches, 1, __ATOMIC_RELAXED);
  if (f->nparams < 0) {
    size_t size = r->args_size;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, c->argbuf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
                     CU_LAUNCH_PARAM_END};
    return c->drv.cuLaunchKernel(f->real, r->grid[0], r->grid[1], r->grid[2], r->block[0], r->block[1],
                                 r->block[2], r->shared_bytes, t.s, NULL, extra);
  }
  if (r->args_size < f->params_size) return CUDA_ERROR_INVALID_VALUE;
  for (int i = 0; i < f->nparams; i++) c->kparams[i] = c->argbuf + f->params[i].offset;
  return c->drv.cuLaunchKernel(f->real, r->grid[0], r->grid[1], r->grid[2], r->block[0], r->block[1], r->block[2],
                               r->shared_bytes, t.s, f->nparams ? c->kparams : NULL, NULL);
}

/* ---- pinned host memory -------------------------------------------------- */

static int op_pin(cgc_t *c, cgs_pin *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  cgc_context *x;
  /* Registration works without a context of the job's (ours is used then). */
  CUresult rc = use_ctx(c, r->h.ctx, true, &x);
  if (rc) return rc;
  if (r->h.op == CGS_OP_HOST_UNREGISTER) {
    cgc_pin *p = table_del(c, &c->pins, r->pin_id);
    if (!p) return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    /* Queued copies may still use the pages: unmap after a synchronize. */
    return release_drained(c, &r->h, x, NULL, p);
  }
  if (cgc_hmap_get(&c->pins, r->pin_id)) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  /* Mapped at the job's address where that is free (checkpoint.c). */
  cgc_pin *p;
  rc = cgc_pin_map(c, r->pin_id, r->size, r->app_addr, &p);
  if (rc) return rc;
  /* Managed memory is reached through the job's own pointers, by kernels
   * too: only at the job's address, registered with the driver. */
  if ((r->flags & CGS_PIN_SAME_ADDRESS) && (!p->same_addr || !p->registered)) {
    cgc_pin_unmap(c, p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  if (table_put(c, &c->pins, r->pin_id, p)) {
    cgc_pin_unmap(c, p);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  return CUDA_SUCCESS;
}

/* ---- host functions -------------------------------------------------------*/

typedef struct hostfn {
  cgc_t *c;
  uint64_t id;
} hostfn;

/* Runs on a driver thread when the stream reaches the host function: post it
 * to the job's callback thread and wait until the job says it returned. */
static void CUDA_CB hostfn_trampoline(void *arg) {
  hostfn *hf = arg;
  cgc_t *c = hf->c;
  cgs_header *h = c->hdr;
  uint64_t idx;
  pthread_mutex_lock(&c->cb_lock);
  for (;;) {
    idx = c->cb_head;
    uint64_t tail = __atomic_load_n(&h->cb_tail, __ATOMIC_ACQUIRE);
    if (!c->cb_busy[idx % CGS_CALLBACKS] && idx - tail < CGS_CALLBACKS) break;
    pthread_mutex_unlock(&c->cb_lock);
    if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
      free(hf);
      return;
    }
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&c->cb_lock);
  }
  uint32_t slot = (uint32_t)(idx % CGS_CALLBACKS);
  cgs_callback *e = &h->callbacks[slot];
  c->cb_busy[slot] = 1;
  e->id = hf->id;
  __atomic_store_n(&e->done, 0, __ATOMIC_RELAXED);
  c->cb_head = idx + 1;
  __atomic_store_n(&h->cb_head, idx + 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&c->cb_lock);
  __atomic_fetch_add(&h->cb_doorbell, 1, __ATOMIC_RELEASE);
  cgs_futex_wake(&h->cb_doorbell);

  uint64_t start = cgc_now_ns();
  while (!__atomic_load_n(&e->done, __ATOMIC_ACQUIRE)) {
    if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) break;
    /* A job that has not even picked the call up within its timeout is
     * taken for gone; one that is running it may take as long as it likes. */
    uint64_t tail = __atomic_load_n(&h->cb_tail, __ATOMIC_ACQUIRE);
    if (tail <= idx && cgc_now_ns() - start > (uint64_t)c->timeout_ms * 1000000ull) {
      cgc_async_error(c, CUDA_ERROR_LAUNCH_TIMEOUT);
      break;
    }
    cgs_futex_wait(&e->done, 0, 100);
  }
  pthread_mutex_lock(&c->cb_lock);
  c->cb_busy[slot] = 0;
  pthread_mutex_unlock(&c->cb_lock);
  __atomic_sub_fetch(&c->n_hostfn_pending, 1, __ATOMIC_RELAXED);
  free(hf);
}

static int op_host_func(cgc_t *c, cgs_host_func *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  cgc_context *x, *sx;
  CUresult rc = use_ctx(c, r->h.ctx, false, &x);
  if (rc) return rc;
  if (!c->drv.cuLaunchHostFunc) return CUDA_ERROR_NOT_SUPPORTED;
  CUstream s;
  rc = get_stream(c, r->stream, r->per_thread, x, &s, &sx);
  if (rc) return rc;
  hostfn *hf = malloc(sizeof *hf);
  if (!hf) return CUDA_ERROR_OUT_OF_MEMORY;
  hf->c = c;
  hf->id = r->callback_id;
  __atomic_add_fetch(&c->n_hostfn_pending, 1, __ATOMIC_RELAXED);
  rc = c->drv.cuLaunchHostFunc(s, hostfn_trampoline, hf);
  if (rc) {
    __atomic_sub_fetch(&c->n_hostfn_pending, 1, __ATOMIC_RELAXED);
    free(hf);
  }
  return rc;
}

/* ---- the op table -----------------------------------------------------------
 * One handler per op (cedana_gpu_ops.def, `handler`), each taking its op's
 * request struct: the typed trampolines make a handler that takes another
 * struct than the table says a compile error. */

CUresult cgc_use_ctx(cgc_t *c, uint64_t minted, bool fallback, cgc_context **out) {
  return use_ctx(c, minted, fallback, out);
}

CUresult cgc_use_stream(cgc_t *c, const cgs_req *h, uint64_t stream, uint32_t per_thread, cgc_context **sx,
                        CUstream *s) {
  target t;
  CUresult rc = use_target(c, h, stream, per_thread, &t);
  if (rc) return rc;
  rc = set_ctx(c, t.sx);
  *sx = t.sx;
  *s = t.s;
  return rc;
}

static int op_nop(cgc_t *c, cgs_req *r, uint64_t *ret, int *nret) {
  (void)c, (void)r, (void)ret, (void)nret;
  return CUDA_SUCCESS;
}

/* The job leaves for the driver engine: only while it holds nothing here
 * (no context, allocation, module, stream, event or pinned memory), since
 * none of that could follow it onto the driver it loads itself. */
static int op_engine_handoff(cgc_t *c, cgs_symbol *r, uint64_t *ret, int *nret) {
  (void)ret, (void)nret;
  if (strcmp(r->name, "driver") != 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&c->lock);
  bool holds = c->contexts.len || c->streams.len || c->events.len || c->modules.len ||
               c->functions.len || c->pins.len || c->alloc_live || c->chunk_live;
  pthread_mutex_unlock(&c->lock);
  if (holds) return CUDA_ERROR_ILLEGAL_STATE;
  __atomic_store_n(&c->handed_off, 1, __ATOMIC_RELEASE);
  if (c->log) cgc_log(c, "the job was handed to the driver engine");
  return CUDA_SUCCESS;
}

typedef int handler_fn(cgc_t *c, cgs_req *h, uint64_t *ret, int *nret);

#define CGS_OP(name, request, channel, min_len, check, handler)              \
  static int run_##name(cgc_t *c, cgs_req *h, uint64_t *ret, int *nret) { \
    return handler(c, (request *)h, ret, nret);                            \
  }
#include "cedana_gpu_ops.def"
#undef CGS_OP

static handler_fn *const handlers[CGS_OP_COUNT] = {
#define CGS_OP(name, request, channel, min_len, check, handler) [CGS_OP_##name] = run_##name,
#include "cedana_gpu_ops.def"
#undef CGS_OP
};

/* ---- the loop -------------------------------------------------------------*/

static void execute(cgc_t *c, size_t avail) {
  cgs_req *h = (cgs_req *)c->req;
  uint64_t ret[8] = {0};
  int nret = 0;
  char why[192];
  int rc = cgc_validate(c->req, avail, c->nchannels, c->staging_size, why, c->log ? sizeof why : 0);
  if (rc) {
    __atomic_add_fetch(&c->n_invalid, 1, __ATOMIC_RELAXED);
    if (c->log) cgc_log(c, "rejected request: %s", why);
  } else {
    __atomic_store_n(&c->n_op[h->op], c->n_op[h->op] + 1, __ATOMIC_RELAXED);
    /* Pairs with cgc_complete's release of the channel's previous request.
     * The job posts a channel's next request only once it saw the last one
     * done, so what the completing thread (and the stream that ran the copy)
     * did to the staging area comes before this request touches it. That
     * order runs through the job's process, where ThreadSanitizer cannot see
     * it; this acquire states it inside ours. */
    if (h->channel != CGS_NO_CHANNEL) (void)__atomic_load_n(&chan(c, h->channel)->done, __ATOMIC_ACQUIRE);
    /* cgc_validate answered every op outside the table. */
    rc = handlers[h->op](c, h, ret, &nret);
    if (rc == DEFERRED) return;
    if (rc && c->log) cgc_log(c, "%s failed: %s", cgc_op_name(h->op), cgc_cu_name(c, (CUresult)rc));
  }
  /* A channel outside our geometry is never written to. */
  if (h->channel < c->nchannels)
    cgc_complete(c, h->channel, h->token, rc, ret, nret);
  else if (rc)
    cgc_async_error(c, rc);
}

/* Consume one request if the next ticket is published. */
static bool serve_one(cgc_t *c) {
  uint64_t t = c->tail;
  cgs_slot *s = &c->ring[t & c->ring_mask];
  if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != t + 1) return false;
  memcpy(c->req, s->data, CGS_SLOT_DATA);
  uint32_t n = ((cgs_req *)c->req)->nslots;
  /* A garbage slot count cannot tell us where the next request starts:
   * take one slot, and let validation answer the request. */
  if (n < 1 || n > CGS_MAX_REQUEST_SLOTS) n = 1;
  for (uint32_t i = 1; i < n; i++) {
    cgs_slot *si = &c->ring[(t + i) & c->ring_mask];
    unsigned spins = 0;
    /* Producers publish a request's head slot last, so its continuation is
     * there already, unless the job lied about nslots: then wait for the
     * tickets' owners, or for stop. */
    while (__atomic_load_n(&si->seq, __ATOMIC_ACQUIRE) != t + i + 1) {
      if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) return false;
      if (++spins < 4096)
        cgs_cpu_relax();
      else {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
      }
    }
    memcpy(c->req + (size_t)i * CGS_SLOT_DATA, si->data, CGS_SLOT_DATA);
  }
  for (uint32_t i = 0; i < n; i++)
    __atomic_store_n(&c->ring[(t + i) & c->ring_mask].seq, t + i + c->ring_slots, __ATOMIC_RELEASE);
  __atomic_store_n(&c->tail, t + n, __ATOMIC_RELEASE);
  __atomic_store_n(&c->hdr->tail, t + n, __ATOMIC_RELAXED);
  __atomic_store_n(&c->n_requests, c->n_requests + 1, __ATOMIC_RELAXED);
  execute(c, (size_t)n * CGS_SLOT_DATA);
  return true;
}

/* How long the idle dispatcher polls before it sleeps on the doorbell.
 * Polling answers a request that follows within microseconds without a
 * wake-up, but it takes a CPU: with fewer than 4 CPUs for the controller,
 * the job and the driver's workers, a spinning dispatcher slows them more
 * than a futex wake-up costs (measured: a training loop 20% slower on two
 * CPUs, and a job that shares a CPU with the spinner waits out its own
 * spin), so there the default is not to poll. */
static uint64_t spin_ns(void) {
  const char *v = getenv("CEDANA_GPU_SPIN_US");
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  long us = v && *v ? strtol(v, NULL, 10) : cpus >= 4 ? 50 : 0;
  if (us < 0) us = 0;
  if (us > 10000) us = 10000;
  return (uint64_t)us * 1000u;
}

void *cgc_dispatch_main(void *arg) {
  cgc_t *c = arg;
  cgs_header *h = c->hdr;
  uint64_t spin = spin_ns();
  const char *y = getenv("CEDANA_GPU_SPIN_YIELD");
  c->spin_yield = y ? strcmp(y, "0") != 0 : true;
  c->cur = NULL;
  for (;;) {
    if (__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) break;
    if (__atomic_load_n(&c->poisoned, __ATOMIC_ACQUIRE)) {
      /* The job truncated the segment: our view of it is private zeros now
       * and nothing it sends can reach us. Idle until stopped. */
      cgs_futex_wait((uint32_t *)&c->stopping, 0, 100);
      continue;
    }
    if (__atomic_load_n(&c->pause_req, __ATOMIC_ACQUIRE)) {
      /* Frozen: leave the ring alone so the tables stay still for a dump. */
      __atomic_store_n(&c->paused, 1, __ATOMIC_RELEASE);
      cgs_futex_wait((uint32_t *)&c->pause_req, 1, 100);
      continue;
    }
    if (__atomic_load_n(&c->paused, __ATOMIC_RELAXED)) __atomic_store_n(&c->paused, 0, __ATOMIC_RELEASE);
    if (serve_one(c)) continue;

    /* Idle: spin a little (a synchronous caller usually sends its next
     * request within microseconds), then sleep on the doorbell. */
    uint64_t t0 = cgc_now_ns();
    bool ready = false;
    for (unsigned spins = 0; !(ready = cgc_ring_ready(c)); spins++) {
      /* Yield while spinning: on a machine with few cores the job's threads
       * and the driver's workers need the CPU more than we do. */
      if (c->spin_yield && spins >= 8)
        sched_yield();
      else
        for (int i = 0; i < 32; i++) cgs_cpu_relax();
      if (cgc_now_ns() - t0 >= spin || __atomic_load_n(&c->stopping, __ATOMIC_RELAXED) ||
          __atomic_load_n(&c->pause_req, __ATOMIC_RELAXED))
        break;
    }
    if (ready) continue;
    uint32_t bell = __atomic_load_n(&h->ctrl_doorbell, __ATOMIC_ACQUIRE);
    __atomic_store_n(&h->ctrl_sleeping, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* Look once more after announcing sleep: a producer that published
     * before seeing ctrl_sleeping == 1 did not ring. */
    if (!cgc_ring_ready(c) && !__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE) &&
        !__atomic_load_n(&c->pause_req, __ATOMIC_ACQUIRE))
      cgs_futex_wait(&h->ctrl_doorbell, bell, 100);
    __atomic_store_n(&h->ctrl_sleeping, 0, __ATOMIC_RELAXED);
  }
  return NULL;
}

/* Free the tables (the driver objects go with the contexts or were freed). */
void cgc_tables_free(cgc_t *c) {
  cgc_links_free(c);
  cgc_pools_free(c);
  CGC_HMAP_EACH(&c->functions, cgc_function *, f) free_function(f);
  CGC_HMAP_EACH(&c->modules, cgc_module *, m) {
    c->drv.cuModuleUnload(m->real);
    free(m->image);
    free(m);
  }
  CGC_HMAP_EACH(&c->streams, cgc_stream *, s) {
    c->drv.cuStreamDestroy(s->real);
    free(s);
  }
  CGC_HMAP_EACH(&c->events, cgc_event *, e) {
    c->drv.cuEventDestroy(e->real);
    free(e);
  }
  CGC_HMAP_EACH(&c->pins, cgc_pin *, p) {
    char path[sizeof c->pin_prefix + 16];
    snprintf(path, sizeof path, "%s%u", c->pin_prefix, p->id);
    cgc_pin_unmap(c, p);
    unlink(path);
  }
  CGC_HMAP_EACH(&c->contexts, cgc_context *, x) {
    for (int k = 0; k < x->nev; k++) c->drv.cuEventDestroy(x->evpool[k]);
    free(x->evpool);
    /* Primary contexts: our own retains are released by cgc_close. */
    if (!x->primary) c->drv.cuCtxDestroy(x->real);
    free(x);
  }
  for (int k = 0; k < c->own.nev; k++) c->drv.cuEventDestroy(c->own.evpool[k]);
  free(c->own.evpool);
  c->own.evpool = NULL;
  c->own.nev = 0;
  cgc_hmap_free(&c->functions);
  cgc_hmap_free(&c->modules);
  cgc_hmap_free(&c->streams);
  cgc_hmap_free(&c->events);
  cgc_hmap_free(&c->pins);
  cgc_hmap_free(&c->contexts);
  for (int i = 0; i < c->nglobals; i++) free(c->globals[i].name);
  free(c->globals);
  c->globals = NULL;
  c->nglobals = c->gcap = 0;
}
