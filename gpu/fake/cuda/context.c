/* Contexts: primary (retained per device) and created ones, and each
 * thread's stack of current contexts.
 *
 * Context structures are never freed: a thread may still hold a destroyed
 * context as current, and must get CUDA_ERROR_CONTEXT_IS_DESTROYED rather
 * than a read of freed memory. */
#include "fake.h"

#include "launch_rules.h"

#include <stdlib.h>
#include <string.h>

#define FK_CTX_STACK_MAX 128

static __thread fk_ctx *stack[FK_CTX_STACK_MAX];
static __thread int depth;
static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long next_ctx_id = 1;

fk_ctx *fk_current(void) { return depth ? stack[depth - 1] : NULL; }

static CUresult usable(fk_ctx *c) {
  if (!c) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  if (!c->active) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult fk_need_ctx(fk_ctx **out) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_ctx *c = fk_current();
  rc = usable(c);
  if (rc) return rc;
  CUresult sticky = __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
  if (sticky) return sticky;
  *out = c;
  return CUDA_SUCCESS;
}

CUresult fk_ctx_resolve(CUcontext h, fk_ctx **out) {
  if (!h) return fk_need_ctx(out);
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_ctx *c = (fk_ctx *)h;
  if (!fk_handle_valid(c, FK_CTX) || c->destroyed || !c->active) return CUDA_ERROR_INVALID_CONTEXT;
  CUresult sticky = __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
  if (sticky) return sticky;
  *out = c;
  return CUDA_SUCCESS;
}

static void activate(fk_ctx *c) {
  c->active = true;
  c->sticky = CUDA_SUCCESS;
  c->limits[CU_LIMIT_STACK_SIZE] = 1024;
  c->limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20;
  c->limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20;
  c->limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
  c->limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
  c->limits[CU_LIMIT_MAX_L2_FETCH_GRANULARITY] = 64;
  c->legacy = fk_stream_create(c, CU_STREAM_DEFAULT, 0);
  c->legacy->is_legacy = true;
}

static fk_ctx *ctx_new(fk_device *dev, unsigned flags, bool primary) {
  fk_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->dev = dev;
  c->flags = flags;
  c->primary = primary;
  c->id = __atomic_fetch_add(&next_ctx_id, 1, __ATOMIC_RELAXED);
  pthread_mutex_init(&c->lock, NULL);
  activate(c);
  fk_handle_add(c, FK_CTX);
  return c;
}

/* Release everything the context owns, as the driver does when a context is
 * destroyed or a primary context's last reference goes. */
static void teardown(fk_ctx *c) {
  fk_ctx_synchronize(c);
  for (;;) {
    pthread_mutex_lock(&c->lock);
    fk_stream *s = c->streams;
    pthread_mutex_unlock(&c->lock);
    if (!s) break;
    fk_stream_destroy(s); /* unlinks itself from c->streams */
  }
  fk_stream_destroy(c->legacy);
  c->legacy = NULL;
  fk_module_release_ctx(c);
  fk_mem_release_ctx(c);
  c->active = false;
}

static void drop_from_stack(fk_ctx *c) {
  if (depth && stack[depth - 1] == c) depth--;
}

static CUresult push(fk_ctx *c) {
  if (depth == FK_CTX_STACK_MAX) return CUDA_ERROR_OUT_OF_MEMORY;
  stack[depth++] = c;
  return CUDA_SUCCESS;
}

static CUresult create(CUcontext *pctx, unsigned int flags, CUdevice dev) {
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (dev < 0 || dev >= fk_cfg.device_count) return CUDA_ERROR_INVALID_DEVICE;
  if (flags & ~(unsigned)(CU_CTX_FLAGS_MASK)) return CUDA_ERROR_INVALID_VALUE;
  fk_ctx *c = ctx_new(&fk_cfg.devices[dev], flags, false);
  if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = push(c);
  if (rc) return rc;
  *pctx = (CUcontext)c;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxCreate_12050(CUcontext *pctx, CUctxCreateParams *ctxCreateParams,
                                unsigned int flags, CUdevice dev) {
  if (ctxCreateParams && (ctxCreateParams->numExecAffinityParams > 0 || ctxCreateParams->cigParams))
    return CUDA_ERROR_NOT_SUPPORTED;
  return create(pctx, flags, dev);
}

CUresult fake_cuCtxDestroy_4000(CUcontext ctx) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_ctx *c = (fk_ctx *)ctx;
  if (!fk_handle_valid(c, FK_CTX) || c->destroyed) return CUDA_ERROR_INVALID_CONTEXT;
  if (c->primary) return CUDA_ERROR_INVALID_CONTEXT;
  teardown(c);
  c->destroyed = true;
  drop_from_stack(c);
  fk_handle_remove(c);
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxPushCurrent_4000(CUcontext ctx) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_ctx *c = (fk_ctx *)ctx;
  if (!fk_handle_valid(c, FK_CTX) || c->destroyed) return CUDA_ERROR_INVALID_CONTEXT;
  return push(c);
}

CUresult fake_cuCtxPopCurrent_4000(CUcontext *pctx) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!depth) return CUDA_ERROR_INVALID_CONTEXT;
  fk_ctx *c = stack[--depth];
  if (pctx) *pctx = (CUcontext)c;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxSetCurrent_4000(CUcontext ctx) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_ctx *c = (fk_ctx *)ctx;
  if (!c) {
    if (depth) depth--;
    return CUDA_SUCCESS;
  }
  if (!fk_handle_valid(c, FK_CTX) || c->destroyed) return CUDA_ERROR_INVALID_CONTEXT;
  if (depth)
    stack[depth - 1] = c;
  else
    stack[depth++] = c;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetCurrent_4000(CUcontext *pctx) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  *pctx = (CUcontext)fk_current();
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetDevice_13000(CUdevice *device, CUcontext ctx) {
  fk_ctx *c;
  CUresult rc = fk_ctx_resolve(ctx, &c);
  if (rc) return rc;
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  *device = c->dev->ordinal;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxSynchronize_13000(CUcontext ctx) {
  fk_ctx *c;
  CUresult rc = fk_ctx_resolve(ctx, &c);
  if (rc) return rc;
  fk_ctx_synchronize(c);
  return __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
}

CUresult fake_cuCtxGetApiVersion_3020(CUcontext ctx, unsigned int *version) {
  fk_ctx *c;
  CUresult rc = fk_ctx_resolve(ctx, &c);
  if (rc) return rc;
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  *version = 3020; /* what the driver reports for contexts of the v2 API */
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetFlags_7000(unsigned int *flags) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (!flags) return CUDA_ERROR_INVALID_VALUE;
  *flags = c->flags;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxSetFlags_12010(unsigned int flags) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (flags & ~(unsigned)CU_CTX_FLAGS_MASK) return CUDA_ERROR_INVALID_VALUE;
  c->flags = flags;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetId_12000(CUcontext ctx, unsigned long long *ctxId) {
  fk_ctx *c;
  CUresult rc = fk_ctx_resolve(ctx, &c);
  if (rc) return rc;
  if (!ctxId) return CUDA_ERROR_INVALID_VALUE;
  *ctxId = c->id;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetLimit_3010(size_t *pvalue, CUlimit limit) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (!pvalue || (unsigned)limit >= CU_LIMIT_MAX || (unsigned)limit >= 16)
    return CUDA_ERROR_UNSUPPORTED_LIMIT;
  *pvalue = c->limits[limit];
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxSetLimit_3010(CUlimit limit, size_t value) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if ((unsigned)limit >= CU_LIMIT_MAX || (unsigned)limit >= 16) return CUDA_ERROR_UNSUPPORTED_LIMIT;
  c->limits[limit] = value;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetStreamPriorityRange_5050(int *leastPriority, int *greatestPriority) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (leastPriority) *leastPriority = 0;
  if (greatestPriority) *greatestPriority = -5;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxGetCacheConfig_3020(CUfunc_cache *pconfig) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (!pconfig) return CUDA_ERROR_INVALID_VALUE;
  *pconfig = CU_FUNC_CACHE_PREFER_NONE;
  return CUDA_SUCCESS;
}

CUresult fake_cuCtxSetCacheConfig_3020(CUfunc_cache config) {
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}

/* ---- primary contexts ---------------------------------------------------- */

static CUresult primary_device(CUdevice dev, fk_device **out) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (dev < 0 || dev >= fk_cfg.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *out = &fk_cfg.devices[dev];
  return CUDA_SUCCESS;
}

CUresult fake_cuDevicePrimaryCtxRetain_7000(CUcontext *pctx, CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = primary_device(dev, &d);
  if (rc) return rc;
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&primary_lock);
  if (!d->primary) {
    d->primary = ctx_new(d, d->primary_flags, true);
  } else if (!d->primary->active) {
    d->primary->flags = d->primary_flags;
    activate(d->primary);
  }
  fk_ctx *c = d->primary;
  if (c) d->primary_refs++;
  pthread_mutex_unlock(&primary_lock);
  if (!c) return CUDA_ERROR_OUT_OF_MEMORY;
  *pctx = (CUcontext)c;
  return CUDA_SUCCESS;
}

CUresult fake_cuDevicePrimaryCtxRelease_11000(CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = primary_device(dev, &d);
  if (rc) return rc;
  pthread_mutex_lock(&primary_lock);
  if (!d->primary || d->primary_refs == 0) {
    pthread_mutex_unlock(&primary_lock);
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  if (--d->primary_refs == 0) teardown(d->primary);
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuDevicePrimaryCtxReset_11000(CUdevice_v1 dev) {
  fk_device *d;
  CUresult rc = primary_device(dev, &d);
  if (rc) return rc;
  pthread_mutex_lock(&primary_lock);
  if (d->primary && d->primary->active) teardown(d->primary);
  d->primary_refs = 0;
  d->primary_flags = 0;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuDevicePrimaryCtxSetFlags_11000(CUdevice_v1 dev, unsigned int flags) {
  fk_device *d;
  CUresult rc = primary_device(dev, &d);
  if (rc) return rc;
  if (flags & ~(unsigned)CU_CTX_FLAGS_MASK) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&primary_lock);
  d->primary_flags = flags;
  if (d->primary && d->primary->active) d->primary->flags = flags;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuDevicePrimaryCtxGetState_7000(CUdevice_v1 dev, unsigned int *flags, int *active) {
  fk_device *d;
  CUresult rc = primary_device(dev, &d);
  if (rc) return rc;
  if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&primary_lock);
  *flags = d->primary_flags;
  *active = d->primary && d->primary->active;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

/* ---- profiler control ---------------------------------------------------------
 * No profiler ever attaches to the fake driver: starting and stopping
 * collection is the no-op it is on NVIDIA's driver without one, in the
 * current context as the driver documents. */
CUresult fake_cuProfilerStart_4000(void) {
  fk_ctx *c;
  return fk_need_ctx(&c);
}

CUresult fake_cuProfilerStop_4000(void) {
  fk_ctx *c;
  return fk_need_ctx(&c);
}
