/* Events: a record queues a marker op on the stream; the marker stamps the
 * time (CLOCK_MONOTONIC) when the worker reaches it, so elapsed times are real
 * and an event is "complete" exactly when the work before it has run.
 *
 * An event remembers only its latest record (stream, seq), as the driver
 * does: queries and waits look at the state captured by the most recent
 * record at the time of the call. A destroyed event lives on until its queued
 * markers have run. */
#include "fake.h"

#include <stdlib.h>
#include <time.h>

typedef struct fk_event {
  fk_ctx *ctx;
  unsigned flags;
  int refs; /* atomic: the handle's plus one per queued marker */
  pthread_mutex_t lock;
  /* The latest record, guarded by lock. stream is NULL until the first
   * record and holds a stream reference. */
  fk_stream *stream;
  uint64_t seq;
  uint64_t gen;      /* number of records so far */
  uint64_t stamp_ns; /* when the latest record's marker ran */
} fk_event;

typedef struct {
  fk_event *ev;
  uint64_t gen;
} marker;

static void event_unref(fk_event *ev) {
  if (__atomic_sub_fetch(&ev->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (ev->stream) fk_stream_unref(ev->stream);
  pthread_mutex_destroy(&ev->lock);
  free(ev);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void marker_run(fk_op *op) {
  marker *m = (marker *)op->payload;
  uint64_t t = now_ns();
  pthread_mutex_lock(&m->ev->lock);
  if (m->gen == m->ev->gen) m->ev->stamp_ns = t; /* an older record's marker stamps nothing */
  pthread_mutex_unlock(&m->ev->lock);
  event_unref(m->ev);
}

static CUresult ctx_state(fk_ctx *c) {
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  if (!c->active) return CUDA_ERROR_INVALID_CONTEXT;
  return __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
}

/* An event argument of a call that does not need the current context. */
static CUresult lookup(CUevent h, fk_event **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
  fk_event *ev = (fk_event *)h;
  rc = ctx_state(ev->ctx);
  if (rc) return rc;
  *out = ev;
  return CUDA_SUCCESS;
}

CUresult fake_cuEventCreate_2000(CUevent *phEvent, unsigned int Flags) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  const unsigned known = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
  if (!phEvent || (Flags & ~known)) return CUDA_ERROR_INVALID_VALUE;
  /* An interprocess event must have timing disabled. */
  if ((Flags & CU_EVENT_INTERPROCESS) && !(Flags & CU_EVENT_DISABLE_TIMING))
    return CUDA_ERROR_INVALID_VALUE;
  fk_event *ev = calloc(1, sizeof *ev);
  if (!ev) return CUDA_ERROR_OUT_OF_MEMORY;
  ev->ctx = c;
  ev->flags = Flags;
  ev->refs = 1;
  pthread_mutex_init(&ev->lock, NULL);
  fk_handle_add(ev, FK_EVENT);
  *phEvent = (CUevent)ev;
  return CUDA_SUCCESS;
}

CUresult fake_cuEventDestroy_4000(CUevent hEvent) {
  fk_event *ev;
  CUresult rc = lookup(hEvent, &ev);
  if (rc) return rc;
  fk_handle_remove(ev);
  event_unref(ev);
  return CUDA_SUCCESS;
}

CUresult fake_cuEventRecordWithFlags_11010(CUevent hEvent, CUstream hStream, unsigned int flags) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (!fk_handle_valid(hEvent, FK_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
  fk_event *ev = (fk_event *)hEvent;
  fk_stream *s;
  rc = fk_stream_resolve(hStream, c, &s);
  if (rc) return rc;
  if (ev->ctx != s->ctx) return CUDA_ERROR_INVALID_HANDLE;
  /* CU_EVENT_RECORD_EXTERNAL is only valid during stream capture, which the
   * fake driver never does. */
  if (flags != CU_EVENT_RECORD_DEFAULT) return CUDA_ERROR_INVALID_VALUE;
  fk_op *op = fk_op_new(marker_run, sizeof(marker));
  if (op) op->node_type = CU_GRAPH_NODE_TYPE_EVENT_RECORD;
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  pthread_mutex_lock(&ev->lock);
  __atomic_add_fetch(&ev->refs, 1, __ATOMIC_RELAXED); /* the marker's */
  marker *m = (marker *)op->payload;
  m->ev = ev;
  m->gen = ++ev->gen;
  uint64_t seq;
  fk_stream_submit(s, op, &seq);
  fk_stream *old = ev->stream;
  fk_stream_ref(s);
  ev->stream = s;
  ev->seq = seq;
  pthread_mutex_unlock(&ev->lock);
  if (old) fk_stream_unref(old);
  return CUDA_SUCCESS;
}

/* The latest record of ev, with a reference on its stream (NULL if never
 * recorded). */
static fk_stream *latest(fk_event *ev, uint64_t *seq) {
  pthread_mutex_lock(&ev->lock);
  fk_stream *s = ev->stream;
  if (s) fk_stream_ref(s);
  *seq = ev->seq;
  pthread_mutex_unlock(&ev->lock);
  return s;
}

static uint64_t stamp_of(fk_event *ev) {
  pthread_mutex_lock(&ev->lock);
  uint64_t t = ev->stamp_ns;
  pthread_mutex_unlock(&ev->lock);
  return t;
}

/* The checked event's latest record: its stream, with a reference (NULL if
 * never recorded), and sequence number. */
static CUresult latest_record(CUevent h, fk_event **ev, fk_stream **s, uint64_t *seq) {
  CUresult rc = lookup(h, ev);
  if (rc) return rc;
  *s = latest(*ev, seq);
  return CUDA_SUCCESS;
}

CUresult fake_cuEventQuery_2000(CUevent hEvent) {
  fk_event *ev;
  fk_stream *s;
  uint64_t seq;
  CUresult rc = latest_record(hEvent, &ev, &s, &seq);
  if (rc || !s) return rc; /* an event never recorded stands for no work */
  bool done = fk_stream_reached(s, seq);
  fk_stream_unref(s);
  return done ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult fake_cuEventSynchronize_2000(CUevent hEvent) {
  fk_event *ev;
  fk_stream *s;
  uint64_t seq;
  CUresult rc = latest_record(hEvent, &ev, &s, &seq);
  if (rc || !s) return rc;
  fk_stream_wait(s, seq);
  fk_stream_unref(s);
  /* A fault in the work waited for is reported here, as on a GPU. */
  return __atomic_load_n(&ev->ctx->sticky, __ATOMIC_ACQUIRE);
}

CUresult fake_cuEventElapsedTime_12080(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
  fk_event *a, *b;
  CUresult rc = lookup(hStart, &a);
  if (rc) return rc;
  rc = lookup(hEnd, &b);
  if (rc) return rc;
  if (!pMilliseconds) return CUDA_ERROR_INVALID_VALUE;
  uint64_t sa, sb;
  fk_stream *xa = latest(a, &sa), *xb = latest(b, &sb);
  rc = CUDA_SUCCESS;
  if (!xa || !xb || ((a->flags | b->flags) & CU_EVENT_DISABLE_TIMING))
    rc = CUDA_ERROR_INVALID_HANDLE;
  else if (!fk_stream_reached(xa, sa) || !fk_stream_reached(xb, sb))
    rc = CUDA_ERROR_NOT_READY;
  if (xa) fk_stream_unref(xa);
  if (xb) fk_stream_unref(xb);
  if (rc) return rc;
  /* The stamps belong to the records just seen complete, unless another
   * record raced in, which the driver leaves unspecified too. */
  uint64_t ta = stamp_of(a), tb = stamp_of(b);
  *pMilliseconds = (float)(((double)tb - (double)ta) / 1e6);
  return CUDA_SUCCESS;
}

/* cuStreamWaitEvent lives here because it reads the event's latest record.
 * The event may belong to another context or device. */
CUresult fake_cuStreamWaitEvent_3020(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  fk_ctx *c;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &c, &s);
  if (rc) return rc;
  if (!fk_handle_valid(hEvent, FK_EVENT)) return CUDA_ERROR_INVALID_HANDLE;
  /* CU_EVENT_WAIT_EXTERNAL is only valid during stream capture. */
  if (Flags != CU_EVENT_WAIT_DEFAULT) return CUDA_ERROR_INVALID_VALUE;
  fk_event *ev = (fk_event *)hEvent;
  uint64_t seq;
  fk_stream *dep = latest(ev, &seq);
  if (!dep) return CUDA_SUCCESS; /* never recorded: nothing to wait for */
  if (!fk_stream_reached(dep, seq)) {
    fk_op *op = fk_op_new(NULL, 0);
    if (op) op->node_type = CU_GRAPH_NODE_TYPE_WAIT_EVENT;
    if (!op) {
      fk_stream_unref(dep);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    op->deps[0] = (fk_dep){dep, seq};
    op->ndeps = 1;
    fk_stream_submit(s, op, NULL);
  }
  fk_stream_unref(dep);
  return CUDA_SUCCESS;
}
