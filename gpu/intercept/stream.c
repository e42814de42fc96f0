/* Streams, events and host functions.
 *
 * Creation and destruction are queued (the handles are minted here);
 * properties are answered locally; queries and synchronisation wait for the
 * controller.
 *
 * Host functions (cuLaunchHostFunc, cuStreamAddCallback) run in the job, on
 * one callback thread started on first use: the controller posts each one
 * into the header's callback ring when its stream reaches it and waits until
 * the job marks it done, so the stream's later work waits for it as on the
 * driver.
 */
#include "ic.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- resolving stream arguments --------------------------------------------------- */

/* A stream argument of a call that works on any context's stream (query,
 * synchronize, getters): special handles mean the current context's. */
static CUresult lookup(ic_thread *t, CUstream h, ic_obj **ctx, ic_obj **s, uint64_t *handle,
                       uint32_t *pt) {
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  uintptr_t v = (uintptr_t)h;
  if (v <= 2) {
    CUresult rc = ic_need_ctx(t, ctx);
    if (rc) return rc;
    *s = NULL;
    return ic_stream_resolve(h, (*ctx)->handle, handle, pt);
  }
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  ic_obj *o = ic_obj_get(v, IC_STREAM);
  if (!o) return CUDA_ERROR_INVALID_HANDLE;
  ic_obj *c = ic_obj_peek(o->ctx, IC_CTX);
  if (!c) return CUDA_ERROR_INVALID_HANDLE;
  if (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == IC_DESTROYED) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  rc = (CUresult)__atomic_load_n(&c->u.c.sticky, __ATOMIC_ACQUIRE);
  if (rc) return rc;
  *ctx = c;
  *s = o;
  *handle = v;
  *pt = 0;
  return CUDA_SUCCESS;
}

static void stream_req(cgs_stream *r, uint32_t op, uint64_t ctx, uint64_t handle, uint32_t pt) {
  ic_req(r, op, sizeof *r, ctx);
  r->handle = handle;
  r->event = 0;
  r->flags = 0;
  r->priority = 0;
  r->per_thread = pt;
  r->_pad = 0;
}

/* ---- per-thread default streams ----------------------------------------------------
 * The controller serves all of the job's threads from one thread, so its own
 * per-thread default stream would be shared by every job thread. Each job
 * thread gets a minted blocking stream per context instead. The requests are
 * built on the stack: callers may be filling the thread's request buffer. */

static CUresult post_stream(ic_thread *t, uint32_t op, uint64_t ctx, uint64_t handle) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_stream r;
  ic_req(&r, op, sizeof r, ctx);
  r.handle = handle;
  r.event = 0;
  r.flags = CU_STREAM_DEFAULT;
  r.priority = 0;
  r.per_thread = 0;
  r._pad = 0;
  rc = ic_post(t, &r);
  ic_leave();
  return rc;
}

CUresult ic_per_thread_stream(uint64_t ctx, uint64_t *out, uint32_t *per_thread) {
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  for (int i = 0; i < t->nptds; i++) {
    if (t->ptds[i].ctx != ctx) continue;
    if (ic_obj_get(t->ptds[i].stream, IC_STREAM)) {
      *out = t->ptds[i].stream;
      *per_thread = 0;
      return CUDA_SUCCESS;
    }
    t->ptds[i] = t->ptds[--t->nptds]; /* its context was torn down */
    break;
  }
  *out = 0;
  *per_thread = 1;
  if (t->nptds == IC_PTDS_MAX) return CUDA_SUCCESS; /* the controller's shared one */
  ic_obj *s = ic_obj_new(IC_STREAM, ctx);
  if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
  s->u.s.flags = CU_STREAM_DEFAULT;
  CUresult rc = post_stream(t, CGS_OP_STREAM_CREATE, ctx, s->handle);
  if (rc) {
    __atomic_store_n(&s->state, IC_DESTROYED, __ATOMIC_RELEASE);
    return rc;
  }
  t->ptds[t->nptds].ctx = ctx;
  t->ptds[t->nptds].stream = s->handle;
  t->nptds++;
  *out = s->handle;
  *per_thread = 0;
  return CUDA_SUCCESS;
}

/* As the driver at thread exit: the streams go, their queued work still runs. */
void ic_per_thread_streams_release(ic_thread *t) {
  for (int i = 0; i < t->nptds; i++) {
    ic_obj *s = ic_obj_get(t->ptds[i].stream, IC_STREAM);
    if (s && __atomic_exchange_n(&s->state, IC_DESTROYED, __ATOMIC_ACQ_REL) == IC_ALIVE)
      post_stream(t, CGS_OP_STREAM_DESTROY, s->ctx, s->handle);
  }
  t->nptds = 0;
}

/* ---- creation and destruction ----------------------------------------------------- */

static CUresult create(CUstream *phStream, unsigned int flags, int priority) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!phStream || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING)) return CUDA_ERROR_INVALID_VALUE;
  /* Clamped to the range cuCtxGetStreamPriorityRange answers. */
  if (priority > 0) priority = 0;
  if (priority < -5) priority = -5;
  ic_obj *s;
  rc = ic_enter_new(t, IC_STREAM, ctx->handle, &s);
  if (rc) return rc;
  s->u.s.flags = flags;
  s->u.s.priority = priority;
  cgs_stream *r = (cgs_stream *)t->req;
  stream_req(r, CGS_OP_STREAM_CREATE, ctx->handle, s->handle, 0);
  r->flags = flags;
  r->priority = priority;
  rc = ic_post_create(t, r, s);
  if (rc) return rc;
  *phStream = (CUstream)(uintptr_t)s->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuStreamCreateWithPriority_5050(CUstream *phStream, unsigned int flags, int priority) {
  return create(phStream, flags, priority);
}

/* Returns at once, as the driver does: the stream's queued work still runs. */
CUresult ic_cuStreamDestroy_4000(CUstream hStream) {
  ic_thread *t = ic_self();
  /* The default streams are not the caller's to destroy. */
  ic_obj *s;
  CUresult rc = ic_obj_arg(t, hStream, IC_STREAM, &s);
  if (rc) return rc;
  rc = ic_enter_destroy(t, s);
  if (rc) return rc;
  cgs_stream *r = (cgs_stream *)t->req;
  stream_req(r, CGS_OP_STREAM_DESTROY, s->ctx, s->handle, 0);
  rc = ic_post(t, r);
  ic_leave();
  return rc;
}

/* ---- waiting ------------------------------------------------------------------------ */

static CUresult wait_op(CUstream hStream, uint32_t op) {
  ic_thread *t = ic_self();
  ic_obj *ctx, *s;
  uint64_t handle;
  uint32_t pt;
  CUresult rc = lookup(t, hStream, &ctx, &s, &handle, &pt);
  if (rc) return rc;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_stream *r = (cgs_stream *)t->req;
  stream_req(r, op, ctx->handle, handle, pt);
  rc = ic_call(t, r, NULL);
  ic_leave();
  return rc;
}

CUresult ic_cuStreamSynchronize_2000(CUstream hStream) {
  return wait_op(hStream, CGS_OP_STREAM_SYNCHRONIZE);
}

CUresult ic_cuStreamQuery_2000(CUstream hStream) { return wait_op(hStream, CGS_OP_STREAM_QUERY); }

CUresult ic_cuStreamWaitEvent_3020(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  ic_obj *e = ic_obj_get((uint64_t)(uintptr_t)hEvent, IC_EVENT);
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  /* CU_EVENT_WAIT_EXTERNAL is only valid during stream capture. */
  if (Flags != CU_EVENT_WAIT_DEFAULT) return CUDA_ERROR_INVALID_VALUE;
  if (!__atomic_load_n(&e->u.e.recorded, __ATOMIC_ACQUIRE)) return CUDA_SUCCESS; /* nothing to wait for */
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_stream *r = (cgs_stream *)t->req;
  stream_req(r, CGS_OP_STREAM_WAIT_EVENT, ctx->handle, s, pt);
  r->event = e->handle;
  r->flags = Flags;
  rc = ic_post(t, r);
  ic_leave();
  return rc;
}

/* ---- properties, answered locally --------------------------------------------------- */

typedef struct stream_ref {
  ic_obj *ctx, *s; /* s is NULL for a default stream */
  uint64_t handle;
  uint32_t pt;
} stream_ref;

/* A property query: resolve the stream (its errors come first, as the
 * driver's do), then refuse a NULL out pointer. */
static CUresult query(CUstream hStream, const void *out, stream_ref *r) {
  CUresult rc = lookup(ic_self(), hStream, &r->ctx, &r->s, &r->handle, &r->pt);
  if (rc) return rc;
  return out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult ic_cuStreamGetPriority_5050(CUstream hStream, int *priority) {
  stream_ref r;
  CUresult rc = query(hStream, priority, &r);
  if (rc) return rc;
  *priority = r.s ? r.s->u.s.priority : 0;
  return CUDA_SUCCESS;
}

CUresult ic_cuStreamGetFlags_5050(CUstream hStream, unsigned int *flags) {
  stream_ref r;
  CUresult rc = query(hStream, flags, &r);
  if (rc) return rc;
  *flags = r.s ? r.s->u.s.flags : CU_STREAM_DEFAULT;
  return CUDA_SUCCESS;
}

/* Created streams are numbered by their index; the default streams of a
 * context get ids above every index. */
CUresult ic_cuStreamGetId_12000(CUstream hStream, unsigned long long *streamId) {
  stream_ref r;
  CUresult rc = query(hStream, streamId, &r);
  if (rc) return rc;
  if (r.s)
    *streamId = (uint32_t)r.s->handle;
  else
    *streamId = (1ull << 40) + ((unsigned long long)r.ctx->u.c.id << 20) + (r.pt ? ic_self()->tid : 0);
  return CUDA_SUCCESS;
}

CUresult ic_cuStreamGetCtx_12050(CUstream hStream, CUcontext *pctx, CUgreenCtx *pGreenCtx) {
  stream_ref r;
  CUresult rc = query(hStream, pctx, &r);
  if (rc) return rc;
  *pctx = (CUcontext)(uintptr_t)r.ctx->handle;
  if (pGreenCtx) *pGreenCtx = NULL; /* no green contexts */
  return CUDA_SUCCESS;
}

CUresult ic_cuStreamGetDevice_12080(CUstream hStream, CUdevice *device) {
  stream_ref r;
  CUresult rc = query(hStream, device, &r);
  if (rc) return rc;
  *device = r.ctx->u.c.device;
  return CUDA_SUCCESS;
}

/* Stream capture (cuStreamIsCapturing and the rest): graph.c. */

/* ---- host functions ----------------------------------------------------------------
 * Pending callbacks live in a table indexed by the low bits of their id; the
 * high bits count uses of the slot, so a stale or forged id runs nothing. */

typedef struct cb_entry {
  uint64_t id; /* 0: free */
  CUhostFn fn;
  CUstreamCallback callback;
  CUstream stream; /* as the caller named it, handed back to a callback */
  void *user;
  uint32_t next_free;
  uint32_t uses;
} cb_entry;

static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static cb_entry *cbs;
static uint32_t cb_cap, cb_free = UINT32_MAX;
static pthread_once_t cb_once = PTHREAD_ONCE_INIT;
static int cb_started; /* 1: the thread runs; -1: it could not start */

static uint64_t cb_add(const cb_entry *e) {
  pthread_mutex_lock(&cb_lock);
  if (cb_free == UINT32_MAX) {
    uint32_t cap = cb_cap ? cb_cap * 2 : 64;
    cb_entry *grown = realloc(cbs, cap * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&cb_lock);
      return 0;
    }
    for (uint32_t i = cb_cap; i < cap; i++) {
      memset(&grown[i], 0, sizeof grown[i]);
      grown[i].next_free = i + 1 < cap ? i + 1 : cb_free;
    }
    cb_free = cb_cap;
    cbs = grown;
    cb_cap = cap;
  }
  uint32_t i = cb_free;
  cb_entry *s = &cbs[i];
  cb_free = s->next_free;
  uint32_t uses = s->uses + 1;
  *s = *e;
  s->uses = uses;
  s->id = (uint64_t)uses << 32 | i;
  uint64_t id = s->id;
  pthread_mutex_unlock(&cb_lock);
  return id;
}

static bool cb_take(uint64_t id, cb_entry *out) {
  uint32_t i = (uint32_t)id;
  pthread_mutex_lock(&cb_lock);
  bool ok = id && i < cb_cap && cbs[i].id == id;
  if (ok) {
    *out = cbs[i];
    cbs[i].id = 0;
    cbs[i].next_free = cb_free;
    cb_free = i;
  }
  pthread_mutex_unlock(&cb_lock);
  return ok;
}

static void cb_drop(uint64_t id) {
  cb_entry e;
  cb_take(id, &e);
}

/* Runs posted callbacks in order until the controller is gone. */
static void *callback_main(void *arg) {
  (void)arg;
  ic_thread *t = ic_self();
  if (t) t->in_callback = 1; /* CUDA calls that reach the controller are not permitted here */
  cgs_header *h = ic.h;
  for (;;) {
    if (__atomic_load_n(&ic_dead, __ATOMIC_ACQUIRE)) break;
    uint32_t bell = __atomic_load_n(&h->cb_doorbell, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&h->cb_tail, __ATOMIC_ACQUIRE);
    uint64_t head = __atomic_load_n(&h->cb_head, __ATOMIC_ACQUIRE);
    if (tail >= head) {
      cgs_futex_wait(&h->cb_doorbell, bell, 50);
      continue;
    }
    cgs_callback *slot = &h->callbacks[tail % CGS_CALLBACKS];
    cb_entry e;
    if (cb_take(__atomic_load_n(&slot->id, __ATOMIC_ACQUIRE), &e)) {
      if (e.callback) {
        /* A callback runs even after a device error, and is told of it. */
        CUresult status = (CUresult)__atomic_load_n(&h->async_error, __ATOMIC_ACQUIRE);
        e.callback(e.stream, status, e.user);
      } else {
        e.fn(e.user);
      }
    }
    __atomic_store_n(&slot->done, 1, __ATOMIC_RELEASE);
    cgs_futex_wake(&slot->done);
    __atomic_store_n(&h->cb_tail, tail + 1, __ATOMIC_RELEASE);
  }
  return NULL;
}

static void start_callbacks(void) {
  pthread_t th;
  pthread_attr_t attr;
  sigset_t all, old;
  /* The thread takes no signals: those belong to the application's threads. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&th, &attr, callback_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) pthread_setname_np(th, "cedana-gpu-cb");
  cb_started = rc == 0 ? 1 : -1;
}

void ic_callbacks_atfork_child(void) {
  /* The callback thread does not exist in a child; its connection is gone
   * anyway (see atfork_child in transport.c). */
  cb_started = 0;
}

static CUresult queue_host_call(CUstream hStream, const cb_entry *call) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  uint64_t s;
  uint32_t pt;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &s, &pt);
  if (rc) return rc;
  pthread_once(&cb_once, start_callbacks);
  if (cb_started != 1) return CUDA_ERROR_OUT_OF_MEMORY;
  uint64_t id = cb_add(call);
  if (!id) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = ic_enter(t);
  if (rc) {
    cb_drop(id);
    return rc;
  }
  cgs_host_func *r = (cgs_host_func *)t->req;
  ic_req(r, CGS_OP_HOST_FUNC, sizeof *r, ctx->handle);
  r->stream = s;
  r->callback_id = id;
  r->per_thread = pt;
  r->_pad = 0;
  rc = ic_post(t, r);
  ic_leave();
  if (rc) cb_drop(id);
  return rc;
}

CUresult ic_cuLaunchHostFunc_10000(CUstream hStream, CUhostFn fn, void *userData) {
  if (!fn) return ic_invalid_work_arg();
  cb_entry e = {.fn = fn, .stream = hStream, .user = userData};
  return queue_host_call(hStream, &e);
}

CUresult ic_cuStreamAddCallback_5000(CUstream hStream, CUstreamCallback callback, void *userData,
                                     unsigned int flags) {
  if (!callback || flags != 0) return ic_invalid_work_arg();
  cb_entry e = {.callback = callback, .stream = hStream, .user = userData};
  return queue_host_call(hStream, &e);
}

/* ---- events ---------------------------------------------------------------------- */

static CUresult event_of(ic_thread *t, CUevent h, ic_obj **out) {
  CUresult rc = ic_obj_arg(t, h, IC_EVENT, out);
  if (rc) return rc;
  return ic_ctx_sticky((*out)->ctx);
}

static void event_req(cgs_event *r, uint32_t op, uint64_t ctx, uint64_t handle) {
  ic_req(r, op, sizeof *r, ctx);
  r->handle = handle;
  r->stream = 0;
  r->other = 0;
  r->flags = 0;
  r->per_thread = 0;
}

CUresult ic_cuEventCreate_2000(CUevent *phEvent, unsigned int Flags) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  const unsigned known = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
  if (!phEvent || (Flags & ~known)) return CUDA_ERROR_INVALID_VALUE;
  /* An interprocess event must have timing disabled. */
  if ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING))
    return CUDA_ERROR_INVALID_VALUE;
  ic_obj *e;
  rc = ic_enter_new(t, IC_EVENT, ctx->handle, &e);
  if (rc) return rc;
  e->u.e.flags = Flags;
  cgs_event *r = (cgs_event *)t->req;
  event_req(r, CGS_OP_EVENT_CREATE, ctx->handle, e->handle);
  r->flags = Flags;
  rc = ic_post_create(t, r, e);
  if (rc) return rc;
  *phEvent = (CUevent)(uintptr_t)e->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuEventDestroy_4000(CUevent hEvent) {
  ic_thread *t = ic_self();
  ic_obj *e;
  CUresult rc = event_of(t, hEvent, &e);
  if (rc) return rc;
  rc = ic_enter_destroy(t, e);
  if (rc) return rc;
  cgs_event *r = (cgs_event *)t->req;
  event_req(r, CGS_OP_EVENT_DESTROY, e->ctx, e->handle);
  rc = ic_post(t, r);
  ic_leave();
  return rc;
}

CUresult ic_cuEventRecordWithFlags_11010(CUevent hEvent, CUstream hStream, unsigned int flags) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  ic_obj *e = ic_obj_get((uint64_t)(uintptr_t)hEvent, IC_EVENT);
  if (!e) return CUDA_ERROR_INVALID_HANDLE;
  uint64_t s;
  uint32_t pt;
  rc = ic_stream_resolve(hStream, ctx->handle, &s, &pt);
  if (rc) return rc;
  if (e->ctx != ctx->handle) return CUDA_ERROR_INVALID_HANDLE;
  /* CU_EVENT_RECORD_EXTERNAL is only valid during stream capture. */
  if (flags != CU_EVENT_RECORD_DEFAULT) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_event *r = (cgs_event *)t->req;
  event_req(r, CGS_OP_EVENT_RECORD, ctx->handle, e->handle);
  r->stream = s;
  r->flags = flags;
  r->per_thread = pt;
  rc = ic_post(t, r);
  ic_leave();
  if (!rc) __atomic_store_n(&e->u.e.recorded, 1, __ATOMIC_RELEASE);
  return rc;
}

static CUresult event_wait_op(CUevent hEvent, uint32_t op) {
  ic_thread *t = ic_self();
  ic_obj *e;
  CUresult rc = event_of(t, hEvent, &e);
  if (rc) return rc;
  /* An event never recorded stands for no work. */
  if (!__atomic_load_n(&e->u.e.recorded, __ATOMIC_ACQUIRE)) return CUDA_SUCCESS;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_event *r = (cgs_event *)t->req;
  event_req(r, op, e->ctx, e->handle);
  rc = ic_call(t, r, NULL);
  ic_leave();
  return rc;
}

CUresult ic_cuEventQuery_2000(CUevent hEvent) { return event_wait_op(hEvent, CGS_OP_EVENT_QUERY); }

CUresult ic_cuEventSynchronize_2000(CUevent hEvent) {
  return event_wait_op(hEvent, CGS_OP_EVENT_SYNCHRONIZE);
}

CUresult ic_cuEventElapsedTime_12080(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
  ic_thread *t = ic_self();
  ic_obj *a, *b;
  CUresult rc = event_of(t, hStart, &a);
  if (!rc) rc = event_of(t, hEnd, &b);
  if (rc) return rc;
  if (!pMilliseconds) return CUDA_ERROR_INVALID_VALUE;
  if (!__atomic_load_n(&a->u.e.recorded, __ATOMIC_ACQUIRE) ||
      !__atomic_load_n(&b->u.e.recorded, __ATOMIC_ACQUIRE) ||
      ((a->u.e.flags | b->u.e.flags) & CU_EVENT_DISABLE_TIMING))
    return CUDA_ERROR_INVALID_HANDLE;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_event *r = (cgs_event *)t->req;
  event_req(r, CGS_OP_EVENT_ELAPSED, a->ctx, a->handle);
  r->other = b->handle;
  cgs_channel *ch;
  rc = ic_call(t, r, &ch);
  if (!rc) {
    uint32_t bits = (uint32_t)ch->ret[0];
    memcpy(pMilliseconds, &bits, sizeof bits);
  }
  ic_leave();
  return rc;
}

