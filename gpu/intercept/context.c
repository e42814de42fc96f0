/* Contexts: primary (retained per device) and created ones, and each
 * thread's stack of current contexts. The stack is local: only creation,
 * destruction, retain/release and synchronisation reach the controller, and
 * creation does not wait for it (the handle is minted here). */
#include "ic.h"

#include "launch_rules.h"

#include <string.h>

static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;

static CUresult usable(ic_obj *c) {
  if (!c) return CUDA_ERROR_INVALID_CONTEXT;
  uint32_t st = __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
  if (st == IC_DESTROYED) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  if (st != IC_ALIVE || (c->u.c.primary && !__atomic_load_n(&c->u.c.active, __ATOMIC_ACQUIRE)))
    return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

CUresult ic_need_ctx(ic_thread *t, ic_obj **out) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  uint64_t h = ic_current_ctx(t);
  if (!h) return CUDA_ERROR_INVALID_CONTEXT;
  ic_obj *c = ic_obj_peek(h, IC_CTX);
  rc = usable(c);
  if (rc) return rc;
  rc = (CUresult)__atomic_load_n(&c->u.c.sticky, __ATOMIC_ACQUIRE);
  if (IC_UNLIKELY(rc)) return rc;
  *out = c;
  return CUDA_SUCCESS;
}

CUresult ic_ctx_resolve(ic_thread *t, CUcontext h, ic_obj **out) {
  if (!h) return ic_need_ctx(t, out);
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_obj *c = ic_obj_peek((uint64_t)(uintptr_t)h, IC_CTX);
  if (usable(c)) return CUDA_ERROR_INVALID_CONTEXT;
  rc = (CUresult)__atomic_load_n(&c->u.c.sticky, __ATOMIC_ACQUIRE);
  if (rc) return rc;
  *out = c;
  return CUDA_SUCCESS;
}

static CUresult push(ic_thread *t, uint64_t c) {
  if (t->depth == IC_CTX_STACK_MAX) return CUDA_ERROR_OUT_OF_MEMORY;
  t->stack[t->depth++] = c;
  return CUDA_SUCCESS;
}

static CUresult create(CUcontext *pctx, unsigned int flags, CUdevice dev) {
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  if (dev < 0 || dev >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  if (flags & ~(unsigned)(CU_CTX_FLAGS_MASK)) return CUDA_ERROR_INVALID_VALUE;
  if (t->depth == IC_CTX_STACK_MAX) return CUDA_ERROR_OUT_OF_MEMORY;
  ic_obj *c;
  rc = ic_enter_new(t, IC_CTX, 0, &c);
  if (rc) return rc;
  c->u.c.device = dev;
  c->u.c.flags = flags;
  cgs_ctx *r = (cgs_ctx *)t->req;
  ic_req(r, CGS_OP_CTX_CREATE, sizeof *r, c->handle);
  r->handle = c->handle;
  r->device = dev;
  r->flags = flags;
  rc = ic_post_create(t, r, c);
  if (rc) return rc;
  push(t, c->handle);
  *pctx = (CUcontext)(uintptr_t)c->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxCreate_12050(CUcontext *pctx, CUctxCreateParams *ctxCreateParams,
                              unsigned int flags, CUdevice dev) {
  if (ctxCreateParams && (ctxCreateParams->numExecAffinityParams > 0 || ctxCreateParams->cigParams))
    return CUDA_ERROR_NOT_SUPPORTED;
  return create(pctx, flags, dev);
}

/* Everything the context owned is gone on the controller's side. */
static void forget_ctx(uint64_t c) {
  ic_obj_drop_ctx(c);
  ic_mem_drop_ctx(c);
}

CUresult ic_cuCtxDestroy_4000(CUcontext ctx) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  ic_obj *c = ic_obj_peek((uint64_t)(uintptr_t)ctx, IC_CTX);
  if (!c || c->u.c.primary || __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) != IC_ALIVE)
    return CUDA_ERROR_INVALID_CONTEXT;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_ctx *r = (cgs_ctx *)t->req;
  ic_req(r, CGS_OP_CTX_DESTROY, sizeof *r, ic_current_ctx(t));
  r->handle = c->handle;
  r->device = c->u.c.device;
  r->flags = 0;
  rc = ic_call(t, r, NULL);
  ic_leave();
  if (rc) return rc;
  __atomic_store_n(&c->state, IC_DESTROYED, __ATOMIC_RELEASE);
  if (t->depth && t->stack[t->depth - 1] == c->handle) t->depth--;
  forget_ctx(c->handle);
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxPushCurrent_4000(CUcontext ctx) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  ic_obj *c = ic_obj_peek((uint64_t)(uintptr_t)ctx, IC_CTX);
  if (!c || __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) != IC_ALIVE)
    return CUDA_ERROR_INVALID_CONTEXT;
  return push(t, c->handle);
}

CUresult ic_cuCtxPopCurrent_4000(CUcontext *pctx) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  if (!t->depth) return CUDA_ERROR_INVALID_CONTEXT;
  uint64_t c = t->stack[--t->depth];
  if (pctx) *pctx = (CUcontext)(uintptr_t)c;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxSetCurrent_4000(CUcontext ctx) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  if (!ctx) {
    if (t->depth) t->depth--;
    return CUDA_SUCCESS;
  }
  ic_obj *c = ic_obj_peek((uint64_t)(uintptr_t)ctx, IC_CTX);
  if (!c || __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) != IC_ALIVE)
    return CUDA_ERROR_INVALID_CONTEXT;
  if (t->depth)
    t->stack[t->depth - 1] = c->handle;
  else
    t->stack[t->depth++] = c->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxGetCurrent_4000(CUcontext *pctx) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  *pctx = (CUcontext)(uintptr_t)ic_current_ctx(t);
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxGetDevice_13000(CUdevice *device, CUcontext ctx) {
  ic_obj *c;
  CUresult rc = ic_ctx_resolve(ic_self(), ctx, &c);
  if (rc) return rc;
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  *device = c->u.c.device;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxSynchronize_13000(CUcontext ctx) {
  ic_thread *t = ic_self();
  ic_obj *c;
  CUresult rc = ic_ctx_resolve(t, ctx, &c);
  if (rc) return rc;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_ctx *r = (cgs_ctx *)t->req;
  ic_req(r, CGS_OP_CTX_SYNCHRONIZE, sizeof *r, c->handle);
  r->handle = c->handle;
  r->device = c->u.c.device;
  r->flags = 0;
  rc = ic_call(t, r, NULL);
  ic_leave();
  return rc;
}

CUresult ic_cuCtxGetApiVersion_3020(CUcontext ctx, unsigned int *version) {
  ic_obj *c;
  CUresult rc = ic_ctx_resolve(ic_self(), ctx, &c);
  if (rc) return rc;
  if (!version) return CUDA_ERROR_INVALID_VALUE;
  *version = 3020; /* what the driver reports for contexts of the v2 API */
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxGetFlags_7000(unsigned int *flags) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if (!flags) return CUDA_ERROR_INVALID_VALUE;
  *flags = c->u.c.flags;
  return CUDA_SUCCESS;
}

/* Scheduling flags only change how the controller's threads wait; they are
 * kept here and not forwarded. */
CUresult ic_cuCtxSetFlags_12010(unsigned int flags) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if (flags & ~(unsigned)CU_CTX_FLAGS_MASK) return CUDA_ERROR_INVALID_VALUE;
  c->u.c.flags = flags;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxGetId_12000(CUcontext ctx, unsigned long long *ctxId) {
  ic_obj *c;
  CUresult rc = ic_ctx_resolve(ic_self(), ctx, &c);
  if (rc) return rc;
  if (!ctxId) return CUDA_ERROR_INVALID_VALUE;
  *ctxId = c->u.c.id;
  return CUDA_SUCCESS;
}

/* Limits are kept locally (the protocol has no op for them): reads give back
 * what was set, the device works with its defaults. */
CUresult ic_cuCtxGetLimit_3010(size_t *pvalue, CUlimit limit) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if (!pvalue || (unsigned)limit >= CU_LIMIT_MAX || (unsigned)limit >= 16)
    return CUDA_ERROR_UNSUPPORTED_LIMIT;
  *pvalue = c->u.c.limits[limit];
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxSetLimit_3010(CUlimit limit, size_t value) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if ((unsigned)limit >= CU_LIMIT_MAX || (unsigned)limit >= 16) return CUDA_ERROR_UNSUPPORTED_LIMIT;
  c->u.c.limits[limit] = value;
  return CUDA_SUCCESS;
}

/* The range of Hopper-class parts (what the fake driver and an H100/H200
 * report); the controller does not describe it in the header. */
CUresult ic_cuCtxGetStreamPriorityRange_5050(int *leastPriority, int *greatestPriority) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if (leastPriority) *leastPriority = 0;
  if (greatestPriority) *greatestPriority = -5;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxGetCacheConfig_3020(CUfunc_cache *pconfig) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  if (!pconfig) return CUDA_ERROR_INVALID_VALUE;
  *pconfig = CU_FUNC_CACHE_PREFER_NONE;
  return CUDA_SUCCESS;
}

CUresult ic_cuCtxSetCacheConfig_3020(CUfunc_cache config) {
  ic_obj *c;
  CUresult rc = ic_need_ctx(ic_self(), &c);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}

/* ---- primary contexts -------------------------------------------------------
 * Every retain and release is forwarded (queued), so the controller's own
 * reference count follows the job's; the count kept here answers errors and
 * state without a round trip. */

static CUresult primary_of(CUdevice dev, ic_obj **out) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (dev < 0 || dev >= ic.device_count) return CUDA_ERROR_INVALID_DEVICE;
  *out = ic_primary(dev);
  return *out ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

/* The primary context of dev and the calling thread, which posts the
 * change to it. */
static CUresult primary_and_self(CUdevice dev, ic_obj **c, ic_thread **t) {
  CUresult rc = primary_of(dev, c);
  if (rc) return rc;
  *t = ic_self();
  return *t ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static CUresult post_primary(ic_thread *t, uint32_t op, ic_obj *c) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_ctx *r = (cgs_ctx *)t->req;
  ic_req(r, op, sizeof *r, c->handle);
  r->handle = c->handle;
  r->device = c->u.c.device;
  r->flags = c->u.c.flags;
  rc = op == CGS_OP_PRIMARY_RESET ? ic_call(t, r, NULL) : ic_post(t, r);
  ic_leave();
  return rc;
}

/* Primary context flags as set by cuDevicePrimaryCtxSetFlags, per device. */
static unsigned primary_flags[CGS_MAX_DEVICES];

CUresult ic_cuDevicePrimaryCtxRetain_7000(CUcontext *pctx, CUdevice_v1 dev) {
  ic_obj *c;
  CUresult rc = primary_of(dev, &c);
  if (rc) return rc;
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  pthread_mutex_lock(&primary_lock);
  if (!c->u.c.active) {
    c->u.c.flags = primary_flags[dev];
    __atomic_store_n(&c->u.c.sticky, 0, __ATOMIC_RELEASE); /* a fresh context */
    __atomic_store_n(&c->u.c.active, 1, __ATOMIC_RELEASE);
  }
  c->u.c.refs++;
  rc = post_primary(t, CGS_OP_PRIMARY_RETAIN, c);
  if (rc && --c->u.c.refs == 0) __atomic_store_n(&c->u.c.active, 0, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&primary_lock);
  if (rc) return rc;
  *pctx = (CUcontext)(uintptr_t)c->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuDevicePrimaryCtxRelease_11000(CUdevice_v1 dev) {
  ic_obj *c;
  ic_thread *t;
  CUresult rc = primary_and_self(dev, &c, &t);
  if (rc) return rc;
  pthread_mutex_lock(&primary_lock);
  if (c->u.c.refs == 0) {
    pthread_mutex_unlock(&primary_lock);
    return CUDA_ERROR_INVALID_CONTEXT;
  }
  rc = post_primary(t, CGS_OP_PRIMARY_RELEASE, c);
  if (!rc && --c->u.c.refs == 0) {
    /* The last reference: the controller tears the context down. */
    __atomic_store_n(&c->u.c.active, 0, __ATOMIC_RELEASE);
    forget_ctx(c->handle);
  }
  pthread_mutex_unlock(&primary_lock);
  return rc;
}

CUresult ic_cuDevicePrimaryCtxReset_11000(CUdevice_v1 dev) {
  ic_obj *c;
  ic_thread *t;
  CUresult rc = primary_and_self(dev, &c, &t);
  if (rc) return rc;
  pthread_mutex_lock(&primary_lock);
  rc = post_primary(t, CGS_OP_PRIMARY_RESET, c);
  if (!rc) {
    if (c->u.c.active) forget_ctx(c->handle);
    c->u.c.refs = 0;
    __atomic_store_n(&c->u.c.active, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&c->u.c.sticky, 0, __ATOMIC_RELEASE);
    primary_flags[dev] = 0;
  }
  pthread_mutex_unlock(&primary_lock);
  return rc;
}

CUresult ic_cuDevicePrimaryCtxSetFlags_11000(CUdevice_v1 dev, unsigned int flags) {
  ic_obj *c;
  CUresult rc = primary_of(dev, &c);
  if (rc) return rc;
  if (flags & ~(unsigned)CU_CTX_FLAGS_MASK) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&primary_lock);
  primary_flags[dev] = flags;
  if (c->u.c.active) c->u.c.flags = flags;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

CUresult ic_cuDevicePrimaryCtxGetState_7000(CUdevice_v1 dev, unsigned int *flags, int *active) {
  ic_obj *c;
  CUresult rc = primary_of(dev, &c);
  if (rc) return rc;
  if (!flags || !active) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&primary_lock);
  *flags = primary_flags[dev];
  *active = c->u.c.active;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

/* ---- profiler control ---------------------------------------------------------
 * Answered here: a profiler would attach to the controller's driver, never to
 * the job, so starting and stopping collection is the no-op it is on the
 * driver without a profiler, in the current context as the driver documents. */
CUresult ic_cuProfilerStart_4000(void) {
  ic_obj *c;
  return ic_need_ctx(ic_self(), &c);
}

CUresult ic_cuProfilerStop_4000(void) {
  ic_obj *c;
  return ic_need_ctx(ic_self(), &c);
}
