/* Completion workers: the slow half of synchronous requests.
 *
 * A synchronous request that may wait for a busy stream (STREAM_SYNCHRONIZE,
 * EVENT_SYNCHRONIZE, CTX_SYNCHRONIZE, a staged copy, a free of memory still
 * in use) is issued in order by the dispatcher, which then hands the wait to
 * a worker: the worker synchronises an event (a private one recorded right
 * behind the request's work) or the context, finishes the request's side
 * effects and completes the channel. The dispatcher goes straight on, so the
 * other threads' queued launches keep flowing while one thread waits.
 *
 * Each channel has at most one synchronous request outstanding (one thread
 * owns it), so at most nchannels tasks wait at once; workers are started on
 * demand up to CGC_MAX_WORKERS and kept.
 */
#include "cgc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

/* ---- private events ------------------------------------------------------ */

CUresult cgc_event_get(cgc_t *c, cgc_context *ctx, CUevent *ev) {
  pthread_mutex_lock(&c->evlock);
  if (ctx->nev) {
    *ev = ctx->evpool[--ctx->nev];
    pthread_mutex_unlock(&c->evlock);
    return CUDA_SUCCESS;
  }
  pthread_mutex_unlock(&c->evlock);
  /* Created in the current context, which the dispatcher made ctx. */
  return c->drv.cuEventCreate(ev, CU_EVENT_DISABLE_TIMING);
}

void cgc_event_put(cgc_t *c, cgc_context *ctx, CUevent ev) {
  pthread_mutex_lock(&c->evlock);
  if (ctx->nev == ctx->evcap) {
    int cap = ctx->evcap ? 2 * ctx->evcap : 8;
    CUevent *p = realloc(ctx->evpool, (size_t)cap * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&c->evlock);
      c->drv.cuEventDestroy(ev);
      return;
    }
    ctx->evpool = p;
    ctx->evcap = cap;
  }
  ctx->evpool[ctx->nev++] = ev;
  pthread_mutex_unlock(&c->evlock);
}

CUresult cgc_ctx_sync(cgc_t *c, CUcontext ctx) {
  CUresult rc = c->drv.cuCtxSetCurrent(ctx);
  if (rc != CUDA_SUCCESS) return rc;
  if (c->drv.cuCtxSynchronize) return c->drv.cuCtxSynchronize();
  return c->drv.cuCtxSynchronize_v2(ctx);
}

/* ---- tasks --------------------------------------------------------------- */

cgc_task *cgc_task_new(cgc_t *c, cgc_task_kind kind, const cgs_req *h, cgc_context *ctx) {
  pthread_mutex_lock(&c->tlock);
  cgc_task *t = c->tfree;
  if (t) c->tfree = t->next;
  pthread_mutex_unlock(&c->tlock);
  if (!t) t = malloc(sizeof *t);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->kind = kind;
  t->op = h->op;
  t->channel = h->channel;
  t->token = h->token;
  t->ctx = ctx;
  return t;
}

void cgc_pin_unmap(cgc_t *c, cgc_pin *p) {
  if (p->registered && c->drv.cuMemHostUnregister) c->drv.cuMemHostUnregister(p->map);
  if (p->map) {
    cgc_guard_remove(p->map);
    munmap(p->map, p->size);
  }
  free(p);
}

void cgc_dead_destroy(cgc_t *c, const cgc_dead *d) {
  switch (d->kind) {
  case CGC_DEAD_STREAM: c->drv.cuStreamDestroy((CUstream)d->h); break;
  case CGC_DEAD_EVENT: c->drv.cuEventDestroy((CUevent)d->h); break;
  case CGC_DEAD_MODULE: c->drv.cuModuleUnload((CUmodule)d->h); break;
  }
}

static void run_task(cgc_t *c, cgc_task *t) {
  CUresult rc = CUDA_SUCCESS;
  uint64_t ret[1] = {t->ret0};
  int nret = 0;
  switch (t->kind) {
  case CGC_TASK_EVENT:
    rc = c->drv.cuEventSynchronize(t->ev);
    nret = 1;
    break;
  case CGC_TASK_CTX_SYNC:
    rc = cgc_ctx_sync(c, t->ctx->real);
    break;
  case CGC_TASK_FREE:
    /* Work queued before the free may still use the memory; the driver's
     * cuMemFree waits for it too. */
    if (t->ctx) rc = cgc_ctx_sync(c, t->ctx->real);
    {
      CUresult r2 = cgc_mem_release(c, t->alloc);
      if (!rc) rc = r2;
    }
    break;
  case CGC_TASK_UNPIN:
    if (t->ctx) rc = cgc_ctx_sync(c, t->ctx->real);
    cgc_pin_unmap(c, t->pin);
    break;
  case CGC_TASK_CTX_DESTROY: {
    /* Wait for the other tasks of this context to finish first. */
    while (__atomic_load_n(&t->ctx->pending, __ATOMIC_ACQUIRE) > 1) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    rc = cgc_ctx_sync(c, t->ctx->real);
    for (int i = 0; i < t->ndead; i++) cgc_dead_destroy(c, &t->dead[i]);
    free(t->dead);
    t->dead = NULL;
    for (cgc_alloc *a = t->alloc, *n; a; a = n) {
      n = a->next;
      cgc_mem_release(c, a);
    }
    if (!t->reset_only) {
      c->drv.cuCtxSetCurrent(NULL);
      CUresult r2 = c->drv.cuCtxDestroy(t->ctx->real);
      if (!rc) rc = r2;
    }
    break;
  }
  }
  if (t->ev && t->ev_private) cgc_event_put(c, t->ctx, t->ev);
  if (t->job_ev) {
    cgc_event *e = t->job_ev;
    /* The job may have destroyed the event while we waited on it: the last
     * waiter then destroys it. */
    pthread_mutex_lock(&c->evlock);
    bool last = --e->busy == 0 && e->dead;
    pthread_mutex_unlock(&c->evlock);
    if (last) {
      c->drv.cuEventDestroy(e->real);
      free(e);
    }
  }
  if (t->channel != CGS_NO_CHANNEL)
    cgc_complete(c, t->channel, t->token, (int32_t)rc, ret, nret);
  else if (rc != CUDA_SUCCESS)
    cgc_async_error(c, (int32_t)rc);
  if (t->kind == CGC_TASK_CTX_DESTROY && !t->reset_only) {
    cgc_context *x = t->ctx;
    free(x->evpool); /* destroyed with the context */
    free(x);
  } else if (t->ctx) {
    __atomic_sub_fetch(&t->ctx->pending, 1, __ATOMIC_ACQ_REL);
  }
}

static void *worker_main(void *arg) {
  cgc_t *c = arg;
  pthread_mutex_lock(&c->tlock);
  for (;;) {
    while (!c->thead && !__atomic_load_n(&c->stopping, __ATOMIC_ACQUIRE)) {
      c->idle_workers++;
      pthread_cond_wait(&c->tcond, &c->tlock);
      c->idle_workers--;
    }
    cgc_task *t = c->thead;
    if (!t) break; /* stopping, nothing left */
    c->thead = t->next;
    if (!c->thead) c->ttail = NULL;
    pthread_mutex_unlock(&c->tlock);
    run_task(c, t);
    pthread_mutex_lock(&c->tlock);
    t->next = c->tfree;
    c->tfree = t;
    c->tasks_pending--;
    c->task_ops[t->op < CGS_OP_COUNT ? t->op : 0]--;
    pthread_cond_broadcast(&c->tidle);
  }
  pthread_mutex_unlock(&c->tlock);
  return NULL;
}

int cgc_task_submit(cgc_t *c, cgc_task *t) {
  if (t->ctx) __atomic_add_fetch(&t->ctx->pending, 1, __ATOMIC_ACQ_REL);
  pthread_mutex_lock(&c->tlock);
  t->next = NULL;
  if (c->ttail)
    c->ttail->next = t;
  else
    c->thead = t;
  c->ttail = t;
  c->tasks_pending++;
  c->task_ops[t->op < CGS_OP_COUNT ? t->op : 0]++;
  int queued = 0;
  for (cgc_task *q = c->thead; q; q = q->next) queued++;
  if (c->idle_workers < queued && c->nworkers < CGC_MAX_WORKERS) {
    if (pthread_create(&c->workers[c->nworkers], NULL, worker_main, c) == 0) c->nworkers++;
  }
  pthread_cond_signal(&c->tcond);
  pthread_mutex_unlock(&c->tlock);
  if (c->nworkers == 0) {
    /* No worker could be started: run it here rather than never. */
    pthread_mutex_lock(&c->tlock);
    c->thead = c->ttail = NULL;
    pthread_mutex_unlock(&c->tlock);
    run_task(c, t);
    pthread_mutex_lock(&c->tlock);
    c->tasks_pending--;
    c->task_ops[t->op < CGS_OP_COUNT ? t->op : 0]--;
    t->next = c->tfree;
    c->tfree = t;
    pthread_mutex_unlock(&c->tlock);
  }
  return 0;
}

int cgc_tasks_pending(cgc_t *c, char *what, size_t what_len) {
  pthread_mutex_lock(&c->tlock);
  int n = c->tasks_pending;
  if (what && what_len) {
    what[0] = 0;
    size_t off = 0;
    for (uint32_t op = 0; op < CGS_OP_COUNT && off < what_len; op++) {
      if (!c->task_ops[op]) continue;
      int w = snprintf(what + off, what_len - off, "%s%u x %s", off ? ", " : "", c->task_ops[op],
                       cgc_op_name(op));
      if (w < 0) break;
      off += (size_t)w;
    }
  }
  pthread_mutex_unlock(&c->tlock);
  return n;
}

void cgc_workers_stop(cgc_t *c) {
  pthread_mutex_lock(&c->tlock);
  pthread_cond_broadcast(&c->tcond);
  int n = c->nworkers;
  pthread_mutex_unlock(&c->tlock);
  for (int i = 0; i < n; i++) pthread_join(c->workers[i], NULL);
  pthread_mutex_lock(&c->tlock);
  c->nworkers = 0;
  while (c->tfree) {
    cgc_task *t = c->tfree;
    c->tfree = t->next;
    free(t);
  }
  pthread_mutex_unlock(&c->tlock);
}
