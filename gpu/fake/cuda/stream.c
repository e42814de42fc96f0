/* Streams: the op engine and the cuStream* API.
 *
 * Every stream, a context's legacy default stream included, has one worker
 * thread that runs its ops in the order they were queued, so work really is
 * asynchronous: an API call queues an op and returns, and the program sees
 * NOT_READY until the worker gets there. Workers never hold a lock while an
 * op runs.
 *
 * Ordering between streams goes through dependencies (fk_dep: wait until
 * another stream's `done` reaches a sequence number), which is how both the
 * legacy default stream and cuStreamWaitEvent are built:
 * - an op on the legacy stream waits for everything queued before it on every
 *   blocking stream of the context (created without CU_STREAM_NON_BLOCKING,
 *   per-thread default streams included);
 * - an op on a blocking stream waits for everything queued before it on the
 *   legacy stream.
 * Submissions to the legacy and blocking streams of a context are serialised
 * by ctx->lock, so two such snapshots can never wait on each other.
 *
 * Contract with context.c:
 * - Activating a context calls fk_stream_create(ctx, 0, 0) while ctx->legacy
 *   is still NULL and stores the result in ctx->legacy. A stream created
 *   while the context has no legacy stream IS that legacy stream: it is kept
 *   off ctx->streams and out of the handle registry, and is_legacy is set
 *   here already. (fk_stream_resolve also creates it lazily if it is NULL.)
 * - Tearing a context down calls fk_ctx_synchronize, then fk_stream_destroy
 *   on each stream still on ctx->streams (each call unlinks that stream; the
 *   caller must not hold ctx->lock), then fk_stream_destroy(ctx->legacy).
 *   fk_stream_destroy waits until the stream's queued work has run and its
 *   worker has exited; destroying the legacy stream also destroys whatever
 *   is still on ctx->streams. After it returns nothing runs in the context.
 *
 * Lifetime: cuStreamDestroy returns at once, as the driver does; the stream
 * stays on ctx->streams (still counted for legacy ordering) until its worker
 * has drained the queue, and is reaped by a later cuStreamCreate or
 * cuStreamDestroy in that context, or at teardown. Its memory lives as long
 * as a queued dependency or an event record refers to it (fk_stream_ref).
 */
#include "fake.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ptds_entry ptds_entry;

typedef struct stream_impl {
  fk_stream pub; /* first: an fk_stream pointer is a stream_impl pointer */
  int refs;      /* atomic; the owner's reference plus one per outside user */
  int waiters;   /* threads waiting on pub.cond for `done`; guarded by pub.lock */
  bool exited;   /* the worker left its loop; guarded by pub.lock */
  bool released; /* cuStreamDestroy (or thread exit) gave it up; guarded by pub.lock */
  bool linked;   /* on ctx->streams; guarded by ctx->lock */
  /* Legacy-ordering bookkeeping, guarded by ctx->lock: the legacy seq this
   * stream already waits for, and this stream's seq a legacy op waits for. */
  uint64_t legacy_seen, legacy_covered;
  ptds_entry *ptds; /* the owning thread's entry (per-thread streams); guarded by ptds_lock */
} stream_impl;

static inline stream_impl *impl(fk_stream *s) { return (stream_impl *)s; }

static unsigned long long next_stream_id = 1;
static __thread bool tls_in_callback;

bool fk_in_host_callback(void) { return tls_in_callback; }

/* ---- reference counting and progress ------------------------------------- */

void fk_stream_ref(fk_stream *s) { __atomic_add_fetch(&impl(s)->refs, 1, __ATOMIC_RELAXED); }

void fk_stream_unref(fk_stream *s) {
  if (__atomic_sub_fetch(&impl(s)->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->cond);
  free(impl(s));
}

static inline uint64_t done_of(fk_stream *s) { return __atomic_load_n(&s->done, __ATOMIC_ACQUIRE); }
static inline uint64_t submitted_of(fk_stream *s) {
  return __atomic_load_n(&s->submitted, __ATOMIC_ACQUIRE);
}

bool fk_stream_reached(fk_stream *s, uint64_t seq) { return done_of(s) >= seq; }

/* Waiting sides spin this long before sleeping: a futex wake-up costs tens
 * of microseconds on a VM, more than most ops take, and synchronous calls
 * (a launch then a synchronize) would pay it twice. */
#define SPIN_NS 20000

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

void fk_stream_wait(fk_stream *s, uint64_t seq) {
  if (done_of(s) >= seq) return;
  for (uint64_t end = now_ns() + SPIN_NS; now_ns() < end;) {
    for (int i = 0; i < 64; i++) cpu_relax();
    if (done_of(s) >= seq) return;
  }
  pthread_mutex_lock(&s->lock);
  impl(s)->waiters++;
  while (s->done < seq) pthread_cond_wait(&s->cond, &s->lock);
  impl(s)->waiters--;
  pthread_mutex_unlock(&s->lock);
}

/* ---- the worker ------------------------------------------------------------ */

fk_op *fk_op_new(fk_op_fn run, size_t payload) {
  fk_op *op = calloc(1, sizeof *op + payload);
  if (op) op->run = run;
  return op;
}

static void run_op(fk_op *op) {
  for (int i = 0; i < op->ndeps; i++) {
    fk_stream_wait(op->deps[i].stream, op->deps[i].seq);
    fk_stream_unref(op->deps[i].stream);
  }
  if (op->run) op->run(op);
  free(op->heap);
  free(op);
}

static void *worker_main(void *arg) {
  fk_stream *s = arg;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    if (!s->head && !s->stopping) { /* idle: spin a little before sleeping */
      pthread_mutex_unlock(&s->lock);
      for (uint64_t end = now_ns() + SPIN_NS; now_ns() < end;) {
        for (int i = 0; i < 64; i++) cpu_relax();
        if (__atomic_load_n(&s->head, __ATOMIC_ACQUIRE)) break;
      }
      pthread_mutex_lock(&s->lock);
    }
    while (!s->head && !s->stopping) pthread_cond_wait(&s->cond, &s->lock);
    fk_op *op = s->head;
    if (!op) break; /* stopping and drained */
    s->head = op->next;
    if (!s->head) s->tail = NULL;
    uint64_t seq = op->seq;
    pthread_mutex_unlock(&s->lock);
    run_op(op);
    pthread_mutex_lock(&s->lock);
    __atomic_store_n(&s->done, seq, __ATOMIC_RELEASE);
    if (impl(s)->waiters) pthread_cond_broadcast(&s->cond);
  }
  impl(s)->exited = true;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* Workers take no asynchronous signals (those belong to the application's
 * threads) but keep the synchronous ones a faulting kernel raises. */
static int spawn_worker(fk_stream *s) {
  sigset_t all, old;
  sigfillset(&all);
  sigdelset(&all, SIGSEGV);
  sigdelset(&all, SIGBUS);
  sigdelset(&all, SIGILL);
  sigdelset(&all, SIGFPE);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&s->worker, NULL, worker_main, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc == 0) pthread_setname_np(s->worker, "fk-stream");
  return rc;
}

/* ---- creation and destruction ---------------------------------------------- */

static fk_stream *stream_new(fk_ctx *ctx, unsigned flags, int priority, bool legacy,
                             bool per_thread) {
  stream_impl *si = calloc(1, sizeof *si);
  if (!si) return NULL;
  fk_stream *s = &si->pub;
  s->ctx = ctx;
  s->flags = flags;
  s->priority = priority;
  s->is_legacy = legacy;
  s->is_per_thread = per_thread;
  s->id = __atomic_fetch_add(&next_stream_id, 1, __ATOMIC_RELAXED);
  si->refs = 1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->cond, NULL);
  if (spawn_worker(s) != 0) {
    fk_log("cannot start a stream worker thread");
    fk_stream_unref(s);
    return NULL;
  }
  if (!legacy) {
    pthread_mutex_lock(&ctx->lock);
    s->next_in_ctx = ctx->streams;
    ctx->streams = s;
    si->linked = true;
    pthread_mutex_unlock(&ctx->lock);
  }
  return s;
}

fk_stream *fk_stream_create(fk_ctx *ctx, unsigned flags, int priority) {
  return stream_new(ctx, flags, priority, ctx->legacy == NULL, false);
}

static fk_stream *legacy_of(fk_ctx *ctx) {
  fk_stream *s = __atomic_load_n(&ctx->legacy, __ATOMIC_ACQUIRE);
  if (s) return s;
  pthread_mutex_lock(&ctx->lock);
  if (!ctx->legacy) __atomic_store_n(&ctx->legacy, stream_new(ctx, 0, 0, true, false), __ATOMIC_RELEASE);
  s = ctx->legacy;
  pthread_mutex_unlock(&ctx->lock);
  return s;
}

/* Called with ctx->lock held. */
static void unlink_locked(fk_ctx *ctx, fk_stream *s) {
  for (fk_stream **p = &ctx->streams; *p; p = &(*p)->next_in_ctx) {
    if (*p == s) {
      *p = s->next_in_ctx;
      break;
    }
  }
  s->next_in_ctx = NULL;
  impl(s)->linked = false;
}

static void clear_ptds_entry(fk_stream *s);

/* Give a stream up without waiting: its worker drains the queue and exits. */
static void release_stream(fk_stream *s) {
  pthread_mutex_lock(&s->lock);
  impl(s)->released = true;
  s->stopping = true;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
}

/* Free released streams of ctx whose workers have finished. */
static void reap(fk_ctx *ctx) {
  fk_stream *done = NULL;
  pthread_mutex_lock(&ctx->lock);
  for (fk_stream **p = &ctx->streams; *p;) {
    fk_stream *s = *p;
    pthread_mutex_lock(&s->lock);
    bool gone = impl(s)->released && impl(s)->exited;
    pthread_mutex_unlock(&s->lock);
    if (!gone) {
      p = &s->next_in_ctx;
      continue;
    }
    *p = s->next_in_ctx;
    impl(s)->linked = false;
    s->next_in_ctx = done;
    done = s;
  }
  pthread_mutex_unlock(&ctx->lock);
  while (done) {
    fk_stream *next = done->next_in_ctx;
    pthread_join(done->worker, NULL);
    fk_stream_unref(done);
    done = next;
  }
}

/* Stop s after its queued work, wait for its worker, and drop the owner's
 * reference; whoever unlinks the stream owns the join. */
static void destroy_one(fk_stream *s) {
  fk_ctx *ctx = s->ctx;
  fk_handle_remove(s);
  pthread_mutex_lock(&s->lock);
  s->stopping = true;
  pthread_cond_broadcast(&s->cond);
  pthread_mutex_unlock(&s->lock);
  clear_ptds_entry(s);
  bool owner = s->is_legacy;
  if (!owner) {
    pthread_mutex_lock(&ctx->lock);
    owner = impl(s)->linked;
    if (owner) unlink_locked(ctx, s);
    pthread_mutex_unlock(&ctx->lock);
  }
  if (!owner) return;
  pthread_join(s->worker, NULL);
  fk_stream_unref(s);
}

void fk_stream_destroy(fk_stream *s) {
  if (!s) return;
  if (s->is_legacy) {
    fk_ctx *ctx = s->ctx;
    for (;;) {
      pthread_mutex_lock(&ctx->lock);
      fk_stream *t = ctx->streams;
      pthread_mutex_unlock(&ctx->lock);
      if (!t) break;
      destroy_one(t);
    }
  }
  destroy_one(s);
}

/* ---- per-thread default streams ---------------------------------------------
 * One blocking stream per (thread, context), created on first use. The
 * owning thread keeps its entries; a context teardown empties an entry, and
 * thread exit releases the streams still there. */
struct ptds_entry {
  fk_ctx *ctx;
  fk_stream *s;
  ptds_entry *next;
};

static pthread_mutex_t ptds_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t ptds_once = PTHREAD_ONCE_INIT;
static pthread_key_t ptds_key;
static __thread ptds_entry *tls_ptds;

static void ptds_thread_exit(void *unused) {
  (void)unused;
  pthread_mutex_lock(&ptds_lock);
  ptds_entry *e = tls_ptds;
  tls_ptds = NULL;
  for (ptds_entry *x = e; x; x = x->next) {
    if (x->s) impl(x->s)->ptds = NULL;
  }
  pthread_mutex_unlock(&ptds_lock);
  while (e) {
    ptds_entry *next = e->next;
    if (e->s) release_stream(e->s);
    free(e);
    e = next;
  }
}

static void ptds_make_key(void) { pthread_key_create(&ptds_key, ptds_thread_exit); }

static void clear_ptds_entry(fk_stream *s) {
  if (!s->is_per_thread) return;
  pthread_mutex_lock(&ptds_lock);
  ptds_entry *e = impl(s)->ptds;
  if (e) {
    e->s = NULL;
    e->ctx = NULL;
    impl(s)->ptds = NULL;
  }
  pthread_mutex_unlock(&ptds_lock);
}

static fk_stream *per_thread_of(fk_ctx *ctx) {
  fk_stream *s = NULL;
  pthread_mutex_lock(&ptds_lock);
  for (ptds_entry **p = &tls_ptds; *p;) {
    ptds_entry *e = *p;
    if (!e->s) { /* its context was torn down */
      *p = e->next;
      free(e);
      continue;
    }
    if (e->ctx == ctx) s = e->s;
    p = &e->next;
  }
  pthread_mutex_unlock(&ptds_lock);
  if (s) return s;
  ptds_entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  s = stream_new(ctx, CU_STREAM_DEFAULT, 0, false, true);
  if (!s) {
    free(e);
    return NULL;
  }
  pthread_once(&ptds_once, ptds_make_key);
  pthread_setspecific(ptds_key, e); /* any non-NULL value: it only arms the destructor */
  pthread_mutex_lock(&ptds_lock);
  e->ctx = ctx;
  e->s = s;
  e->next = tls_ptds;
  tls_ptds = e;
  impl(s)->ptds = e;
  pthread_mutex_unlock(&ptds_lock);
  return s;
}

/* ---- resolving stream arguments ------------------------------------------- */

CUresult fk_stream_resolve(CUstream h, fk_ctx *ctx, fk_stream **out) {
  if (!ctx) return CUDA_ERROR_INVALID_CONTEXT;
  if (!h) h = fk_tls_ptds ? CU_STREAM_PER_THREAD : CU_STREAM_LEGACY;
  fk_stream *s;
  if (h == CU_STREAM_LEGACY) {
    s = legacy_of(ctx);
  } else if (h == CU_STREAM_PER_THREAD) {
    s = per_thread_of(ctx);
  } else {
    if (!fk_handle_valid(h, FK_STREAM)) return CUDA_ERROR_INVALID_HANDLE;
    s = (fk_stream *)h;
    if (s->ctx != ctx) return CUDA_ERROR_INVALID_HANDLE;
  }
  if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
  *out = s;
  return CUDA_SUCCESS;
}

static CUresult ctx_state(fk_ctx *c) {
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  if (!c->active) return CUDA_ERROR_INVALID_CONTEXT;
  return __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
}

CUresult fk_work_stream(CUstream h, fk_ctx **ctx, fk_stream **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_ctx(ctx);
  if (rc) return rc;
  return fk_stream_resolve(h, *ctx, out);
}

CUresult fk_invalid_work_arg(void) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  return rc ? rc : CUDA_ERROR_INVALID_VALUE;
}

/* A stream argument of a call that works on any context's stream (query,
 * synchronize, getters): special handles mean the current context's. */
static CUresult lookup(CUstream h, fk_stream **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  if (!h || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
    fk_ctx *c;
    CUresult rc = fk_need_ctx(&c);
    if (rc) return rc;
    return fk_stream_resolve(h, c, out);
  }
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_STREAM)) return CUDA_ERROR_INVALID_HANDLE;
  fk_stream *s = (fk_stream *)h;
  rc = ctx_state(s->ctx);
  if (rc) return rc;
  *out = s;
  return CUDA_SUCCESS;
}

/* ---- submission ------------------------------------------------------------- */

static void enqueue(fk_stream *s, fk_op *op, uint64_t *seq) {
  op->next = NULL;
  pthread_mutex_lock(&s->lock);
  op->seq = s->submitted + 1;
  __atomic_store_n(&s->submitted, op->seq, __ATOMIC_RELEASE);
  if (seq) *seq = op->seq;
  if (s->tail) {
    s->tail->next = op;
  } else {
    __atomic_store_n(&s->head, op, __ATOMIC_RELEASE); /* an idle worker spins on it */
    pthread_cond_broadcast(&s->cond); /* the worker may be idle */
  }
  s->tail = op;
  pthread_mutex_unlock(&s->lock);
}

/* Add dependency d to op. When op has no room left, its dependencies so far
 * move to a barrier (an op that only waits) queued just before it. Called
 * with ctx->lock held. */
static void add_dep(fk_stream *s, fk_op *op, fk_dep d) {
  if (op->ndeps == (int)(sizeof op->deps / sizeof op->deps[0])) {
    fk_op *barrier = fk_op_new(NULL, 0);
    if (!barrier) { /* out of memory: wait here instead of on the worker */
      fk_stream_wait(d.stream, d.seq);
      return;
    }
    memcpy(barrier->deps, op->deps, sizeof op->deps);
    barrier->ndeps = op->ndeps;
    barrier->ctx = op->ctx;
    enqueue(s, barrier, NULL);
    op->ndeps = 0;
  }
  fk_stream_ref(d.stream);
  op->deps[op->ndeps++] = d;
}

/* The legacy stream waits for the work queued so far on every blocking stream
 * of its context, except what an earlier legacy op already waits for.
 * Called with ctx->lock held. */
static void legacy_deps(fk_ctx *ctx, fk_stream *legacy, fk_op *op) {
  for (fk_stream *t = ctx->streams; t; t = t->next_in_ctx) {
    if (t->flags & CU_STREAM_NON_BLOCKING) continue;
    uint64_t seq = submitted_of(t);
    if (seq <= impl(t)->legacy_covered) continue;
    impl(t)->legacy_covered = seq;
    if (done_of(t) >= seq) continue;
    add_dep(legacy, op, (fk_dep){t, seq});
  }
}

void fk_stream_submit(fk_stream *s, fk_op *op, uint64_t *seq) {
  fk_ctx *ctx = s->ctx;
  if (!op->ctx) op->ctx = ctx;
  /* A capturing stream records the op in its graph instead (graph.c). */
  if (!s->is_legacy && fk_graph_capture(s, op)) {
    if (seq) *seq = __atomic_load_n(&s->submitted, __ATOMIC_ACQUIRE);
    return;
  }
  /* Keep the dependencies that can still make the op wait. */
  int n = 0;
  for (int i = 0; i < op->ndeps; i++) {
    fk_dep d = op->deps[i];
    if (!d.stream || d.stream == s || done_of(d.stream) >= d.seq) continue;
    fk_stream_ref(d.stream);
    op->deps[n++] = d;
  }
  op->ndeps = n;
  if (!s->is_legacy && (s->flags & CU_STREAM_NON_BLOCKING)) {
    enqueue(s, op, seq);
    return;
  }
  pthread_mutex_lock(&ctx->lock);
  if (s->is_legacy) {
    legacy_deps(ctx, s, op);
  } else if (ctx->legacy) {
    fk_stream *l = ctx->legacy;
    uint64_t lseq = submitted_of(l);
    if (lseq > impl(s)->legacy_seen) {
      impl(s)->legacy_seen = lseq;
      if (done_of(l) < lseq) add_dep(s, op, (fk_dep){l, lseq});
    }
  }
  enqueue(s, op, seq);
  pthread_mutex_unlock(&ctx->lock);
}

void fk_stream_run_sync(fk_stream *s, fk_op *op) {
  uint64_t seq;
  fk_stream_submit(s, op, &seq);
  fk_stream_wait(s, seq);
}

bool fk_ctx_idle(fk_ctx *ctx) {
  pthread_mutex_lock(&ctx->lock);
  bool idle = !ctx->legacy || fk_stream_reached(ctx->legacy, submitted_of(ctx->legacy));
  for (fk_stream *t = ctx->streams; t && idle; t = t->next_in_ctx)
    idle = fk_stream_reached(t, submitted_of(t));
  pthread_mutex_unlock(&ctx->lock);
  return idle;
}

void fk_ctx_synchronize(fk_ctx *ctx) {
  pthread_mutex_lock(&ctx->lock);
  size_t n = ctx->legacy ? 1 : 0;
  for (fk_stream *t = ctx->streams; t; t = t->next_in_ctx) n++;
  fk_dep *deps = malloc((n ? n : 1) * sizeof *deps);
  if (!deps) { /* out of memory: wait with the list held instead */
    if (ctx->legacy) fk_stream_wait(ctx->legacy, submitted_of(ctx->legacy));
    for (fk_stream *t = ctx->streams; t; t = t->next_in_ctx) fk_stream_wait(t, submitted_of(t));
    pthread_mutex_unlock(&ctx->lock);
    return;
  }
  size_t k = 0;
  if (ctx->legacy) deps[k++] = (fk_dep){ctx->legacy, submitted_of(ctx->legacy)};
  for (fk_stream *t = ctx->streams; t; t = t->next_in_ctx) deps[k++] = (fk_dep){t, submitted_of(t)};
  for (size_t i = 0; i < k; i++) fk_stream_ref(deps[i].stream);
  pthread_mutex_unlock(&ctx->lock);
  for (size_t i = 0; i < k; i++) {
    fk_stream_wait(deps[i].stream, deps[i].seq);
    fk_stream_unref(deps[i].stream);
  }
  free(deps);
}

/* ---- API: creation and destruction ------------------------------------------ */

static CUresult need_ctx(fk_ctx **c) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  return fk_need_ctx(c);
}

static CUresult create_api(CUstream *phStream, unsigned int flags, int priority) {
  fk_ctx *c;
  CUresult rc = need_ctx(&c);
  if (rc) return rc;
  if (!phStream || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING)) return CUDA_ERROR_INVALID_VALUE;
  if (!legacy_of(c)) return CUDA_ERROR_OUT_OF_MEMORY;
  reap(c);
  if (priority > FK_STREAM_PRIORITY_LEAST) priority = FK_STREAM_PRIORITY_LEAST;
  if (priority < FK_STREAM_PRIORITY_GREATEST) priority = FK_STREAM_PRIORITY_GREATEST;
  fk_stream *s = stream_new(c, flags, priority, false, false);
  if (!s) return CUDA_ERROR_OUT_OF_MEMORY;
  fk_handle_add(s, FK_STREAM);
  *phStream = (CUstream)s;
  return CUDA_SUCCESS;
}

CUresult fake_cuStreamCreateWithPriority_5050(CUstream *phStream, unsigned int flags, int priority) {
  return create_api(phStream, flags, priority);
}

CUresult fake_cuStreamDestroy_4000(CUstream hStream) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  /* The default streams are not the caller's to destroy. */
  if (!fk_handle_valid(hStream, FK_STREAM)) return CUDA_ERROR_INVALID_HANDLE;
  fk_stream *s = (fk_stream *)hStream;
  fk_handle_remove(s);
  release_stream(s);
  reap(s->ctx);
  return CUDA_SUCCESS;
}

/* ---- API: waiting ---------------------------------------------------------- */

CUresult fake_cuStreamSynchronize_2000(CUstream hStream) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  fk_stream_wait(s, submitted_of(s));
  /* A fault in the work just waited for is reported here, as on a GPU. */
  return __atomic_load_n(&s->ctx->sticky, __ATOMIC_ACQUIRE);
}

CUresult fake_cuStreamQuery_2000(CUstream hStream) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  return done_of(s) >= submitted_of(s) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

/* ---- API: host functions ------------------------------------------------------ */

typedef struct {
  CUhostFn fn;
  CUstreamCallback callback;
  CUstream handle; /* as the caller named the stream, handed back to a callback */
  void *user;
} host_call;

static void host_call_run(fk_op *op) {
  host_call *h = (host_call *)op->payload;
  CUresult status = __atomic_load_n(&op->ctx->sticky, __ATOMIC_ACQUIRE);
  tls_in_callback = true;
  if (h->callback) {
    h->callback(h->handle, status, h->user); /* callbacks run even after a device error */
  } else if (status == CUDA_SUCCESS) {
    h->fn(h->user); /* host functions do not */
  }
  tls_in_callback = false;
}

static CUresult queue_host_call(CUstream hStream, host_call call) {
  fk_ctx *c;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &c, &s);
  if (rc) return rc;
  fk_op *op = fk_op_new(host_call_run, sizeof call);
  if (op) op->node_type = CU_GRAPH_NODE_TYPE_HOST;
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  memcpy(op->payload, &call, sizeof call);
  fk_stream_submit(s, op, NULL);
  return CUDA_SUCCESS;
}

CUresult fake_cuLaunchHostFunc_10000(CUstream hStream, CUhostFn fn, void *userData) {
  if (!fn) return fk_invalid_work_arg();
  return queue_host_call(hStream, (host_call){.fn = fn, .handle = hStream, .user = userData});
}

CUresult fake_cuStreamAddCallback_5000(CUstream hStream, CUstreamCallback callback, void *userData,
                                       unsigned int flags) {
  if (!callback || flags != 0) return fk_invalid_work_arg();
  return queue_host_call(hStream,
                         (host_call){.callback = callback, .handle = hStream, .user = userData});
}

/* ---- API: properties --------------------------------------------------------- */

CUresult fake_cuStreamGetPriority_5050(CUstream hStream, int *priority) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  if (!priority) return CUDA_ERROR_INVALID_VALUE;
  *priority = s->priority;
  return CUDA_SUCCESS;
}

CUresult fake_cuStreamGetFlags_5050(CUstream hStream, unsigned int *flags) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  if (!flags) return CUDA_ERROR_INVALID_VALUE;
  *flags = s->flags;
  return CUDA_SUCCESS;
}

CUresult fake_cuStreamGetId_12000(CUstream hStream, unsigned long long *streamId) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  if (!streamId) return CUDA_ERROR_INVALID_VALUE;
  *streamId = s->id;
  return CUDA_SUCCESS;
}

CUresult fake_cuStreamGetCtx_12050(CUstream hStream, CUcontext *pctx, CUgreenCtx *pGreenCtx) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  if (!pctx) return CUDA_ERROR_INVALID_VALUE;
  *pctx = (CUcontext)s->ctx;
  if (pGreenCtx) *pGreenCtx = NULL; /* the fake driver has no green contexts */
  return CUDA_SUCCESS;
}

CUresult fake_cuStreamGetDevice_12080(CUstream hStream, CUdevice *device) {
  fk_stream *s;
  CUresult rc = lookup(hStream, &s);
  if (rc) return rc;
  if (!device) return CUDA_ERROR_INVALID_VALUE;
  *device = s->ctx->dev->ordinal;
  return CUDA_SUCCESS;
}

/* Stream capture (cuStreamIsCapturing and the rest): graph.c. */

