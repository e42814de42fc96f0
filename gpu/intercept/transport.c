/* The interposer's side of the transport: attaching to the job's segment,
 * per-thread state and channels, queuing requests on the ring, waiting for
 * completions, and the controller's lifecycle as the job sees it (start,
 * freeze, restore by a new controller, death).
 *
 * Nothing here may hang the job: every wait watches the controller's
 * heartbeat and gives up after timeout_ms of silence, after which every call
 * fails at once with IC_DEAD_ERROR.
 */
#include "ic.h"

#include "log_line.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ic_conn ic;
int ic_initialized;
int ic_dead;
__thread int ic_tls_ptds;
__thread ic_thread *ic_tls_self;

/* How long a waiting thread spins before it sleeps on the futex: a little
 * more than a typical controller round trip, so a fast answer costs no
 * system call, and short enough not to steal a small machine's cores. */
#define SPIN_NS 20000u
/* Futex waits are cut in slices so the heartbeat is looked at regularly. */
#define SLICE_MS 50
/* A gap this long between two looks at the heartbeat means this thread did
 * not run (stopped, checkpointed): that time does not count as silence. */
#define STALL_NS 1000000000ull

uint64_t ic_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ic_say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cu_log_line("cedana-gpu", fmt, ap);
  va_end(ap);
}

/* ---- controller liveness ------------------------------------------------------ */

typedef struct ic_watch {
  uint64_t hb, gen;
  uint64_t since; /* when the heartbeat last moved */
  uint64_t last;  /* when we last looked */
} ic_watch;

static void watch_start(ic_watch *w) {
  w->hb = __atomic_load_n(&ic.h->heartbeat, __ATOMIC_ACQUIRE);
  w->gen = __atomic_load_n(&ic.h->generation, __ATOMIC_ACQUIRE);
  w->since = w->last = ic_now_ns();
}

/* Mark the connection dead (once) and say why. */
static CUresult die(const char *why) {
  int expected = 0;
  if (__atomic_compare_exchange_n(&ic_dead, &expected, (int)IC_DEAD_ERROR, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    ic_say("the GPU controller of job %s %s; CUDA calls now fail with "
           "CUDA_ERROR_DEVICE_UNAVAILABLE",
           ic.job_id, why);
  return (CUresult)__atomic_load_n(&ic_dead, __ATOMIC_ACQUIRE);
}

static CUresult watch_check(ic_watch *w) {
  int dead = __atomic_load_n(&ic_dead, __ATOMIC_ACQUIRE);
  if (dead) return (CUresult)dead;
  if (__atomic_load_n(&ic.h->state, __ATOMIC_ACQUIRE) == CGS_STATE_DEAD) return die("has stopped");
  uint64_t now = ic_now_ns();
  uint64_t hb = __atomic_load_n(&ic.h->heartbeat, __ATOMIC_ACQUIRE);
  uint64_t gen = __atomic_load_n(&ic.h->generation, __ATOMIC_ACQUIRE);
  if (hb != w->hb || gen != w->gen) {
    w->hb = hb;
    w->gen = gen;
    w->since = now;
  } else if (now - w->last > STALL_NS) {
    w->since = now;
  } else if (now - w->since > (uint64_t)ic.timeout_ms * 1000000ull) {
    char why[96];
    snprintf(why, sizeof why, "stopped answering (no heartbeat for %u ms)", ic.timeout_ms);
    return die(why);
  }
  w->last = now;
  return CUDA_SUCCESS;
}

/* ---- attach -------------------------------------------------------------------- */

static pthread_once_t attach_once = PTHREAD_ONCE_INIT;
static CUresult attach_rc = CUDA_ERROR_NO_DEVICE;

static const char HOWTO[] = "run the job under `cedana exec --gpu`";

static uint32_t env_u32(const char *name, uint32_t dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end;
  unsigned long x = strtoul(v, &end, 10);
  if (*end || x == 0 || x > 86400000ul) {
    ic_say("ignoring %s=%s (expected milliseconds, 1..86400000)", name, v);
    return dflt;
  }
  return (uint32_t)x;
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

/* The geometry must describe a segment that holds what it says, or the job
 * would read and write past its mapping. */
static const char *check_geometry(const cgs_header *h, uint64_t file_size) {
  if (h->header_size != CGS_HEADER_SIZE) return "header size";
  if (h->segment_size < CGS_HEADER_SIZE || h->segment_size > file_size) return "segment size";
  if (!is_pow2(h->ring_slots) || h->ring_slots < CGS_MAX_REQUEST_SLOTS) return "ring slots";
  if (h->ring_offset < CGS_HEADER_SIZE || h->ring_offset % CGS_SLOT_SIZE ||
      h->ring_offset + (uint64_t)h->ring_slots * CGS_SLOT_SIZE > h->segment_size)
    return "ring";
  if (h->nchannels == 0 || h->staging_size < 4096 ||
      h->channel_stride < CGS_CHANNEL_HEADER + h->staging_size || h->channel_stride % 64)
    return "channels";
  if (h->channels_offset < CGS_HEADER_SIZE ||
      h->channels_offset + (uint64_t)h->nchannels * h->channel_stride > h->segment_size)
    return "channel area";
  if (h->device_count < 0 || h->device_count > CGS_MAX_DEVICES) return "device count";
  return NULL;
}

static void do_attach(void) {
  const char *v = getenv("CEDANA_GPU_LOG");
  ic.log = v && strcmp(v, "1") == 0;
  const char *env = getenv("CEDANA_GPU_SHM");
  if (!env || !*env) {
    ic_say("this process has no GPU controller (CEDANA_GPU_SHM is not set): %s", HOWTO);
    return;
  }
  char name[256];
  snprintf(name, sizeof name, "%s%s", env[0] == '/' ? "" : "/", env);
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    ic_say("cannot open the GPU controller's segment %s (%s): is the job's controller running? %s",
           name, strerror(errno), HOWTO);
    return;
  }
  uint64_t t0 = ic_now_ns(), start_ns = (uint64_t)IC_START_TIMEOUT_MS * 1000000ull;
  struct stat st;
  /* The controller sizes and fills the header before it starts the job, but
   * a job started early waits for it rather than failing. */
  for (;;) {
    if (fstat(fd, &st) != 0) {
      ic_say("cannot read the segment %s: %s", name, strerror(errno));
      close(fd);
      return;
    }
    if ((uint64_t)st.st_size >= CGS_HEADER_SIZE) break;
    if (ic_now_ns() - t0 > start_ns) {
      ic_say("the segment %s was never set up by a controller: %s", name, HOWTO);
      close(fd);
      return;
    }
    usleep(2000);
  }
  cgs_header *h = mmap(NULL, CGS_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (h == MAP_FAILED) {
    ic_say("cannot map the segment %s: %s", name, strerror(errno));
    close(fd);
    return;
  }
  while (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == 0 && ic_now_ns() - t0 <= start_ns)
    usleep(2000);
  const char *bad = NULL;
  if (h->magic != CGS_MAGIC) {
    ic_say("%s is not a cedana-gpu segment: %s", name, HOWTO);
    bad = "";
  } else if (h->layout_version != CGS_LAYOUT_VERSION) {
    ic_say("the controller speaks segment layout %u and this libcedana-gpu.so speaks %u: use the "
           "interposer of the same installation as the controller",
           h->layout_version, CGS_LAYOUT_VERSION);
    bad = "";
  }
  /* A controller still loading its driver: wait for it (bounded). */
  while (!bad && __atomic_load_n(&h->state, __ATOMIC_ACQUIRE) == CGS_STATE_STARTING) {
    if (ic_now_ns() - t0 > start_ns) {
      ic_say("the GPU controller of %s did not finish starting within %u s", name,
             IC_START_TIMEOUT_MS / 1000);
      bad = "";
      break;
    }
    cgs_futex_wait(&h->state, CGS_STATE_STARTING, SLICE_MS);
  }
  if (!bad && __atomic_load_n(&h->state, __ATOMIC_ACQUIRE) == CGS_STATE_DEAD) {
    ic_say("the GPU controller of %s has stopped: %s", name, HOWTO);
    bad = "";
  }
  if (!bad && fstat(fd, &st) == 0 && (bad = check_geometry(h, (uint64_t)st.st_size)))
    ic_say("the segment %s is malformed (%s): %s", name, bad, HOWTO);
  if (bad) {
    munmap(h, CGS_HEADER_SIZE);
    close(fd);
    return;
  }
  size_t size = (size_t)h->segment_size;
  munmap(h, CGS_HEADER_SIZE);
  h = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (h == MAP_FAILED) {
    ic_say("cannot map the segment %s (%zu bytes): %s", name, size, strerror(errno));
    return;
  }
  /* Geometry comes from this copy from now on. */
  ic.map_size = size;
  ic.ring = cgs_ring(h, h->ring_offset);
  ic.ring_mask = h->ring_slots - 1;
  ic.nchannels = h->nchannels;
  ic.channels_offset = h->channels_offset;
  ic.channel_stride = h->channel_stride;
  ic.staging_size = h->staging_size;
  ic.va_base = h->va_base;
  ic.va_size = h->va_size;
  ic.device_count = h->device_count;
  ic.driver_version = h->driver_version ? h->driver_version : IC_DRIVER_VERSION;
  ic.timeout_ms = env_u32("CEDANA_GPU_TIMEOUT_MS", h->timeout_ms ? h->timeout_ms
                                                                   : IC_DEFAULT_TIMEOUT_MS);
  memcpy(ic.job_id, h->job_id, sizeof ic.job_id);
  ic.job_id[sizeof ic.job_id - 1] = '\0';
  ic.h = h;
  ic_handles_init();
  attach_rc = CUDA_SUCCESS;
}

CUresult ic_attach(void) {
  pthread_once(&attach_once, do_attach);
  return attach_rc;
}

/* ---- threads and channels ----------------------------------------------------- */

static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static cgs_channel *channel_at(uint32_t i) {
  return cgs_channel_at(ic.h, ic.channels_offset, ic.channel_stride, i);
}

static void release_channel(ic_thread *t) {
  if (t->channel < 0 || !ic.h) return;
  /* Only a claim made in this controller's segment is ours to give back. */
  if (t->gen == __atomic_load_n(&ic.h->generation, __ATOMIC_ACQUIRE)) {
    uint32_t tid = t->tid;
    __atomic_compare_exchange_n(&channel_at((uint32_t)t->channel)->owner, &tid, 0, false,
                                __ATOMIC_RELEASE, __ATOMIC_RELAXED);
  }
  t->channel = -1;
}

static void thread_exit(void *p) {
  ic_thread *t = p;
  if (t->nptds && !__atomic_load_n(&ic_dead, __ATOMIC_ACQUIRE)) {
    ic_tls_self = t; /* the streams are released as this thread */
    ic_per_thread_streams_release(t);
  }
  release_channel(t);
  if (ic_tls_self == t) ic_tls_self = NULL;
  free(t);
}

static void make_key(void) { pthread_key_create(&thread_key, thread_exit); }

ic_thread *ic_thread_slow(void) {
  pthread_once(&key_once, make_key);
  void *mem = NULL;
  if (posix_memalign(&mem, 64, sizeof(ic_thread)) != 0) return NULL;
  ic_thread *t = mem;
  memset(t, 0, offsetof(ic_thread, req));
  t->channel = -1;
  t->tid = (uint32_t)gettid();
  ic_tls_self = t;
  pthread_setspecific(thread_key, t);
  return t;
}

/* The main thread has no thread-exit destructor: give its channel back when
 * the library goes away (process exit). */
__attribute__((destructor)) static void ic_fini(void) {
  if (ic_tls_self) release_channel(ic_tls_self);
}

CUresult ic_channel(ic_thread *t, cgs_channel **out) {
  if (IC_LIKELY(t->channel >= 0)) {
    *out = channel_at((uint32_t)t->channel);
    return CUDA_SUCCESS;
  }
  /* Start at a place of our own so threads do not all fight over channel 0. */
  uint32_t n = ic.nchannels, first = t->tid % n;
  ic_watch w;
  watch_start(&w);
  uint64_t t0 = ic_now_ns();
  unsigned nap_us = 100;
  for (;;) {
    for (uint32_t k = 0; k < n; k++) {
      uint32_t i = (first + k) % n;
      cgs_channel *c = channel_at(i);
      uint32_t zero = 0;
      if (__atomic_load_n(&c->owner, __ATOMIC_RELAXED) == 0 &&
          __atomic_compare_exchange_n(&c->owner, &zero, t->tid, false, __ATOMIC_ACQ_REL,
                                      __ATOMIC_RELAXED)) {
        t->channel = (int32_t)i;
        /* Tokens continue from what the channel last completed, so a token
         * we send can never already be in `done`. */
        t->token = __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
        *out = c;
        return CUDA_SUCCESS;
      }
    }
    /* Every channel is taken: more threads call CUDA at once than the
     * controller was configured for. Wait for one to exit, a while. */
    CUresult rc = watch_check(&w);
    if (rc) return rc;
    if (ic_now_ns() - t0 > (uint64_t)ic.timeout_ms * 1000000ull) {
      static int said;
      if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ic_say("all %u channels of job %s are taken by other threads; raise the controller's "
               "channel count",
               n, ic.job_id);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    usleep(nap_us);
    if (nap_us < 5000) nap_us *= 2;
  }
}

/* ---- entering a call: freeze, restore, death ----------------------------------- */

/* Called with this thread counted in inflight, when the state is not RUNNING
 * or the generation changed. Returns with the thread counted (success) or not
 * (error). */
CUresult ic_enter_slow(ic_thread *t) {
  cgs_header *h = ic.h;
  ic_watch w;
  watch_start(&w);
  for (;;) {
    uint32_t st = __atomic_load_n(&h->state, __ATOMIC_SEQ_CST);
    if (st == CGS_STATE_RUNNING) {
      uint64_t gen = __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE);
      if (gen != t->gen) {
        /* A new controller (restore) serves a fresh segment: every channel
         * is free again, so this thread claims one anew. Minted handles stay
         * valid: the new controller rebinds them. */
        t->gen = gen;
        t->channel = -1;
      }
      return CUDA_SUCCESS;
    }
    /* Freezing, frozen or restoring: step out so the controller sees no
     * call in hand, and park until it runs again. */
    __atomic_fetch_sub(&h->inflight, 1, __ATOMIC_SEQ_CST);
    cgs_futex_wake(&h->inflight);
    if (st == CGS_STATE_DEAD) return die("has stopped");
    cgs_futex_wait(&h->state, st, SLICE_MS);
    CUresult rc = watch_check(&w);
    if (rc) return rc;
    __atomic_fetch_add(&h->inflight, 1, __ATOMIC_SEQ_CST);
  }
}

/* ---- the ring --------------------------------------------------------------------- */

/* Wait until ticket tk's slot is free. The ring is full only while the
 * controller is busy, so this spins and yields, watching its heartbeat. */
static CUresult wait_free(cgs_slot *s, uint64_t tk) {
  if (IC_LIKELY(__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == tk)) return CUDA_SUCCESS;
  ic_watch w;
  watch_start(&w);
  for (unsigned spins = 0;; spins++) {
    if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) == tk) return CUDA_SUCCESS;
    if (spins < 256) {
      cgs_cpu_relax();
      continue;
    }
    if ((spins & 255) == 0) {
      CUresult rc = watch_check(&w);
      if (rc) return rc;
    }
    if (spins < 4096)
      sched_yield();
    else
      usleep(50);
  }
}

CUresult ic_post(ic_thread *t, void *req) {
  (void)t;
  cgs_header *h = ic.h;
  const cgs_req *r = (const cgs_req *)req;
  uint32_t len = r->length, n = r->nslots;
  if (IC_UNLIKELY(ic.log)) ic_log_request(r);
  uint64_t tk = cgs_reserve(h, n);
  const uint8_t *src = (const uint8_t *)req;
  /* As cgs_write_request: the first slot is published last, so the
   * controller never sees a head whose continuation is still being written. */
  for (uint32_t i = n; i-- > 0;) {
    cgs_slot *s = &ic.ring[(tk + i) & ic.ring_mask];
    CUresult rc = wait_free(s, tk + i);
    if (IC_UNLIKELY(rc)) return rc;
    uint32_t off = i * CGS_SLOT_DATA;
    uint32_t chunk = len - off < CGS_SLOT_DATA ? len - off : CGS_SLOT_DATA;
    memcpy(s->data, src + off, chunk);
    __atomic_store_n(&s->seq, tk + i + 1, __ATOMIC_RELEASE);
  }
  cgs_ring_doorbell(h);
  return CUDA_SUCCESS;
}

static CUresult wait_done(cgs_channel *c, uint32_t token) {
  if (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) == token) return CUDA_SUCCESS;
  uint64_t t0 = ic_now_ns();
  for (unsigned i = 1;; i++) {
    if (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) == token) return CUDA_SUCCESS;
    cgs_cpu_relax();
    if ((i & 63) == 0 && ic_now_ns() - t0 > SPIN_NS) break;
  }
  ic_watch w;
  watch_start(&w);
  for (;;) {
    uint32_t v = __atomic_load_n(&c->done, __ATOMIC_ACQUIRE);
    if (v == token) return CUDA_SUCCESS;
    cgs_futex_wait(&c->done, v, SLICE_MS);
    if (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) == token) return CUDA_SUCCESS;
    CUresult rc = watch_check(&w);
    if (rc) return rc;
  }
}

CUresult ic_call(ic_thread *t, void *req, cgs_channel **out) {
  cgs_channel *c;
  CUresult rc = ic_channel(t, &c);
  if (rc) return rc;
  cgs_req *r = (cgs_req *)req;
  r->channel = (uint32_t)t->channel;
  r->token = ++t->token;
  rc = ic_post(t, req);
  if (!rc) rc = wait_done(c, r->token);
  if (rc) return rc;
  if (out) *out = c;
  rc = (CUresult)__atomic_load_n(&c->result, __ATOMIC_ACQUIRE);
  /* An error of a queued call surfaces at the next call that waits, as the
   * driver reports asynchronous errors. */
  int async = __atomic_exchange_n(&ic.h->async_error, 0, __ATOMIC_ACQ_REL);
  if (async) rc = (CUresult)async;
  /* One that poisons the context is returned by every later call in it. The
   * segment does not say which context failed: the caller's is the likely
   * one (and the only one of most jobs). */
  if (IC_UNLIKELY(ic_is_sticky(rc))) {
    ic_obj *ctx = ic_obj_peek(r->ctx, IC_CTX);
    int zero = 0;
    if (ctx)
      __atomic_compare_exchange_n(&ctx->u.c.sticky, &zero, (int)rc, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_RELAXED);
  }
  return rc;
}

/* ---- fork ------------------------------------------------------------------------
 * A child of a process that used the controller must not share its parent's
 * channels or handles (the driver does not support CUDA in such a child
 * either); a child of a process that never initialised starts clean. */
static void atfork_child(void) {
  if (ic_tls_self) ic_tls_self->channel = -1;
  if (ic.h) {
    __atomic_store_n(&ic_initialized, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&ic_dead, (int)CUDA_ERROR_NOT_INITIALIZED, __ATOMIC_RELEASE);
  }
  ic_callbacks_atfork_child();
}

__attribute__((constructor)) static void ic_init(void) { pthread_atfork(NULL, NULL, atfork_child); }

/* ---- logging ----------------------------------------------------------------------- */

const char *ic_op_name(uint32_t op) {
  const char *name = cgs_op_name(op);
  return name ? name : "?";
}

void ic_log_request(const cgs_req *r) {
  char chan[16];
  if (r->channel == CGS_NO_CHANNEL)
    snprintf(chan, sizeof chan, "async");
  else
    snprintf(chan, sizeof chan, "ch %u", r->channel);
  fprintf(stderr, "cedana-gpu: [%d] %s (%s, %u bytes, ctx %#llx)\n", (int)gettid(),
          ic_op_name(r->op), chan, r->length, (unsigned long long)r->ctx);
}

/* Each unsupported function is named once per process, so a user sees what
 * their workload needs without a flood. */
CUresult ic_unsupported(const char *symbol) {
  if (ic_unsupported_first(symbol)) ic_say("%s is not supported", symbol);
  return CUDA_ERROR_NOT_SUPPORTED;
}
