/* Internal interface of the interposer (libcedana-gpu.so, SONAME libcuda.so.1).
 *
 * The interposer is the job's CUDA driver. It never talks to a GPU: every call
 * that needs one is forwarded over the job's shared-memory segment (see
 * gpu/include/cedana_gpu_shm.h) to the controller, which owns the real
 * driver. Everything the interposer can answer itself (devices, the current
 * context, handle checks, stream and event properties, pointer attributes,
 * kernel parameter layouts) never crosses.
 *
 * Handles (contexts, streams, events, modules, functions) are minted here:
 * creation calls queue an announcement and return at once, and the values
 * stay valid across checkpoint/restore because the job's memory holds them
 * and a new controller rebinds them.
 *
 * Implementations of API functions are named ic_<base>_<version> (for example
 * ic_cuMemAlloc_3020) with the parameters of that ABI variant in
 * cudaTypedefs.h; gpu/api/exports.c wires each one to its exported symbol and to
 * cuGetProcAddress. A per-thread variant without its own implementation runs
 * the default one with ic_tls_ptds set, which makes the NULL stream mean the
 * calling thread's per-thread default stream.
 */
#ifndef CEDANA_GPU_INTERCEPT_H
#define CEDANA_GPU_INTERCEPT_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
/* The profiler control functions' types, where the API table has them. */
#if __has_include(<cudaProfiler.h>)
#include <cudaProfiler.h>
#endif

#include <sched.h> /* cedana_gpu_ring.h uses sched_yield */

#include "cedana_gpu_ring.h"
#include "cedana_gpu_shm.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IC_HIDDEN __attribute__((visibility("hidden")))
#define IC_LIKELY(x) __builtin_expect(!!(x), 1)
#define IC_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* What cuDriverGetVersion answers before the segment says otherwise: the
 * newest API version the table is generated from (the same cuda.h). */
#define IC_DRIVER_VERSION CUDA_VERSION
#define IC_CTX_STACK_MAX 128
#define IC_PTDS_MAX 8
/* Dynamic shared memory a kernel may use without opting in (48 KiB on every
 * architecture). */
#define IC_DEFAULT_DYNAMIC_SHARED 49152
/* How long a waiting call trusts a controller whose heartbeat stands still,
 * unless the segment or CEDANA_GPU_TIMEOUT_MS says otherwise. */
#define IC_DEFAULT_TIMEOUT_MS 5000u
/* How long a job waits for a controller that is still starting (loading a
 * real driver can take seconds on a large machine). */
#define IC_START_TIMEOUT_MS 60000u
/* The error every call returns once the controller is gone: the job can no
 * longer reach its device. */
#define IC_DEAD_ERROR CUDA_ERROR_DEVICE_UNAVAILABLE

/* ---- the connection ---------------------------------------------------------
 * Geometry is copied out of the header once at attach: the segment is
 * writable by anyone in the job, and the controller keeps its own copy too. */
typedef struct ic_conn {
  cgs_header *h;
  size_t map_size;
  cgs_slot *ring;
  uint32_t ring_mask;
  uint32_t nchannels;
  uint64_t channels_offset;
  uint64_t channel_stride;
  uint64_t staging_size;
  uint64_t va_base, va_size; /* the controller's device address range */
  uint32_t timeout_ms;
  int device_count;
  int driver_version;
  char job_id[CGS_JOB_ID_MAX];
  int log; /* CEDANA_GPU_LOG=1: print every forwarded request */
} ic_conn;

IC_HIDDEN extern ic_conn ic;
/* Set by a successful cuInit; calls before it answer NOT_INITIALIZED. */
IC_HIDDEN extern int ic_initialized;
/* Nonzero once the controller is gone: the CUresult every call now returns. */
IC_HIDDEN extern int ic_dead;
/* Set while a per-thread-default-stream (_ptds/_ptsz) variant runs. */
IC_HIDDEN extern __thread int ic_tls_ptds;

/* Attach to the segment named by CEDANA_GPU_SHM, once; CUDA_SUCCESS or
 * CUDA_ERROR_NO_DEVICE (the reason printed once). */
IC_HIDDEN CUresult ic_attach(void);
/* CUDA_SUCCESS once cuInit succeeded, else NOT_INITIALIZED. */
static inline CUresult ic_need_init(void) {
  return IC_LIKELY(__atomic_load_n(&ic_initialized, __ATOMIC_ACQUIRE)) ? CUDA_SUCCESS
                                                                       : CUDA_ERROR_NOT_INITIALIZED;
}

/* ---- per-thread state ------------------------------------------------------ */
typedef struct ic_thread {
  uint64_t stack[IC_CTX_STACK_MAX]; /* current context stack (minted handles) */
  int depth;
  int32_t channel;   /* claimed channel, -1 if none */
  uint32_t token;    /* last token sent on the channel */
  uint32_t tid;
  uint64_t gen;      /* the controller generation this thread last saw */
  int in_callback;   /* the callback thread: CUDA calls are not permitted there */
  /* This thread's per-thread default streams, one per context: minted
   * blocking streams (which is what a per-thread default stream is: it
   * synchronises with the legacy stream and with nothing else). */
  struct {
    uint64_t ctx, stream;
  } ptds[IC_PTDS_MAX];
  int nptds;
  /* Requests are built here: no allocation on the hot path. */
  uint8_t req[CGS_MAX_REQUEST] __attribute__((aligned(64)));
} ic_thread;

IC_HIDDEN ic_thread *ic_thread_slow(void);
IC_HIDDEN extern __thread ic_thread *ic_tls_self;
static inline ic_thread *ic_self(void) {
  ic_thread *t = ic_tls_self;
  return IC_LIKELY(t != NULL) ? t : ic_thread_slow();
}

/* The checks before a call that uses thread t's state (t from ic_self, NULL
 * when it could not be made): not inside a host function, after cuInit. */
static inline CUresult ic_need_thread(const ic_thread *t) {
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = ic_need_init();
  if (rc) return rc;
  return t ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static inline uint64_t ic_current_ctx(const ic_thread *t) {
  return t->depth ? t->stack[t->depth - 1] : 0;
}

/* ---- talking to the controller ---------------------------------------------
 * A call that talks to the controller brackets its traffic with ic_enter /
 * ic_leave. ic_enter counts the thread in header.inflight and parks it while
 * the controller is frozen (checkpoint), follows a new controller after a
 * restore (generation), and fails at once when the controller is gone. */
IC_HIDDEN CUresult ic_enter_slow(ic_thread *t);
static inline CUresult ic_enter(ic_thread *t) {
  cgs_header *h = ic.h;
  int dead = __atomic_load_n(&ic_dead, __ATOMIC_RELAXED);
  if (IC_UNLIKELY(dead)) return (CUresult)dead;
  if (IC_UNLIKELY(t->in_callback)) return CUDA_ERROR_NOT_PERMITTED;
  __atomic_fetch_add(&h->inflight, 1, __ATOMIC_SEQ_CST);
  if (IC_LIKELY(__atomic_load_n(&h->state, __ATOMIC_SEQ_CST) == CGS_STATE_RUNNING &&
                __atomic_load_n(&h->generation, __ATOMIC_ACQUIRE) == t->gen))
    return CUDA_SUCCESS;
  return ic_enter_slow(t);
}
static inline void ic_leave(void) { __atomic_fetch_sub(&ic.h->inflight, 1, __ATOMIC_RELEASE); }

/* Fill a request header. */
static inline void ic_req(void *r, uint32_t op, uint32_t len, uint64_t ctx) {
  cgs_req *q = (cgs_req *)r;
  q->op = op;
  q->nslots = cgs_slots_for(len);
  q->channel = CGS_NO_CHANNEL;
  q->token = 0;
  q->length = len;
  q->_pad = 0;
  q->ctx = ctx;
}

/* Queue an asynchronous request and return (the ring keeps issue order). */
IC_HIDDEN CUresult ic_post(ic_thread *t, void *req);
/* The calling thread's channel (claimed on first use). */
IC_HIDDEN CUresult ic_channel(ic_thread *t, cgs_channel **out);
/* Send a synchronous request on the thread's channel and wait for its
 * completion: the request's result, or a pending asynchronous error. */
IC_HIDDEN CUresult ic_call(ic_thread *t, void *req, cgs_channel **out);
static inline uint8_t *ic_staging(cgs_channel *c) { return cgs_staging(c); }

/* Monotonic clock in nanoseconds. */
IC_HIDDEN uint64_t ic_now_ns(void);

/* ---- minted handles -----------------------------------------------------------
 * A handle is the address of the object's record (handles.c), a user-space
 * pointer like the driver's: never 0, CU_STREAM_LEGACY or CU_STREAM_PER_THREAD,
 * unique in the job (across its processes too), and checked without a lock.
 * Objects are never freed or reused, so a stale handle is always recognised. */
typedef enum ic_kind {
  IC_CTX = 1,
  IC_STREAM,
  IC_EVENT,
  IC_MODULE,
  IC_FUNCTION,
  IC_LIBRARY,
  IC_KERNEL,
  IC_MEMPOOL, /* pool.c */
  IC_LINK,    /* link.c: a JIT link state */
} ic_kind;

typedef struct ic_instance {
  uint64_t ctx, module;
  struct ic_instance *next;
} ic_instance;

enum { IC_DEAD_OBJ = 0, IC_ALIVE = 1, IC_DESTROYED = 2 };

typedef struct ic_param_layout {
  int nparams; /* -1: unknown (the controller could not tell) */
  uint32_t args_size;
  cgs_param params[];
} ic_param_layout;

typedef struct ic_obj {
  uint32_t kind;
  uint32_t state; /* IC_ALIVE, IC_DESTROYED (atomic) */
  uint64_t handle;
  uint64_t ctx; /* owning context (contexts: themselves) */
  union {
    struct {
      int device;
      unsigned flags;
      int primary;
      int active;     /* primary contexts: retained by someone */
      int refs;       /* primary contexts: retain count */
      int sticky;     /* an error that poisoned the context (a kernel fault): every call returns it */
      unsigned long long id;
      size_t limits[16];
    } c;
    struct {
      unsigned flags;
      int priority;
    } s;
    struct {
      int device;
      int is_default;
      uint8_t access[CGS_MAX_DEVICES]; /* CUmemAccess_flags of each device */
    } p;
    struct {
      unsigned flags;
      int recorded;
    } e;
    struct {
      struct ic_obj *functions; /* linked through f.next; guarded by ic_obj_lock */
      uint64_t library;         /* a library's instance in a context, or 0 */
    } m;
    struct {
      void *image; /* kept: each context loads its own instance on first use */
      size_t size;
      ic_instance *instances;   /* guarded by ic_obj_lock */
      struct ic_obj *kernels;   /* linked through k.next; guarded by ic_obj_lock */
    } l;
    struct {
      uint64_t library;
      char *name;
      int max_dynamic_shared; /* -1: never set through cuKernelSetAttribute */
      struct ic_obj *next;
    } k;
    struct {
      uint64_t module;
      ic_param_layout *layout; /* published with a release store */
      char *name;
      int max_dynamic_shared;
      struct ic_obj *next;
    } f;
    struct {
      void *image; /* the linked image, ours until cuLinkDestroy */
      size_t image_size;
      char *log[2]; /* the caller's info and error log buffers (kept by it for the link's life) */
      size_t log_size[2];
    } ln;
  } u;
} ic_obj;

IC_HIDDEN extern pthread_mutex_t ic_obj_lock;
/* Create an object (state ALIVE); NULL when out of memory. */
IC_HIDDEN ic_obj *ic_obj_new(ic_kind kind, uint64_t ctx);
/* The primary context object of a device (created at attach). */
IC_HIDDEN ic_obj *ic_primary(int device);
/* Any object with this handle and kind, whatever its state; NULL if none. */
IC_HIDDEN ic_obj *ic_obj_peek(uint64_t handle, ic_kind kind);
/* An object that is alive. */
static inline ic_obj *ic_obj_get(uint64_t handle, ic_kind kind) {
  ic_obj *o = ic_obj_peek(handle, kind);
  return o && __atomic_load_n(&o->state, __ATOMIC_ACQUIRE) == IC_ALIVE ? o : NULL;
}
/* A live handle argument of `kind` for a call made by thread t (see
 * ic_need_thread); CUDA_ERROR_INVALID_HANDLE if it names none. */
static inline CUresult ic_obj_arg(const ic_thread *t, const void *h, ic_kind kind, ic_obj **out) {
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  *out = ic_obj_get((uint64_t)(uintptr_t)h, kind);
  return *out ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/* Enter and mint the handle of an object the controller is about to create
 * (see ic_post_create); out of memory leaves again. */
static inline CUresult ic_enter_new(ic_thread *t, ic_kind kind, uint64_t ctx, ic_obj **out) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  *out = ic_obj_new(kind, ctx);
  if (*out) return CUDA_SUCCESS;
  ic_leave();
  return CUDA_ERROR_OUT_OF_MEMORY;
}

/* Post the request (in t->req, inside ic_enter) that creates the minted `o`
 * on the controller, and leave: a create the controller refuses leaves the
 * handle dead, so it never names a half-made object. */
static inline CUresult ic_post_create(ic_thread *t, void *req, ic_obj *o) {
  CUresult rc = ic_post(t, req);
  ic_leave();
  if (rc) __atomic_store_n(&o->state, IC_DESTROYED, __ATOMIC_RELEASE);
  return rc;
}

/* Enter and claim `o` for destruction: of two threads destroying the same
 * handle, one wins and the other gets CUDA_ERROR_INVALID_HANDLE. On success
 * the caller posts the destroy and leaves. */
static inline CUresult ic_enter_destroy(ic_thread *t, ic_obj *o) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  if (__atomic_exchange_n(&o->state, IC_DESTROYED, __ATOMIC_ACQ_REL) == IC_ALIVE)
    return CUDA_SUCCESS;
  ic_leave();
  return CUDA_ERROR_INVALID_HANDLE;
}
/* Kill every stream, event, module and function of a context (it was
 * destroyed or torn down by the controller). */
IC_HIDDEN void ic_obj_drop_ctx(uint64_t ctx);
IC_HIDDEN void ic_handles_init(void);

/* ---- graphs and stream capture (graph.c) ---------------------------------------
 * Whether the minted stream is capturing; then the work is recorded in its
 * graph instead of forwarded. */
IC_HIDDEN bool ic_capture_active(uint64_t stream);
IC_HIDDEN CUresult ic_capture_kernel(uint64_t stream, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                                     unsigned bx, unsigned by, unsigned bz, unsigned shared, const void *args,
                                     size_t args_size);
IC_HIDDEN CUresult ic_capture_memset(uint64_t stream, CUdeviceptr dst, size_t pitch, unsigned value, unsigned elem,
                                     size_t width, size_t height);
IC_HIDDEN CUresult ic_capture_memcpy(uint64_t stream, CUdeviceptr dst, CUdeviceptr src, size_t bytes);

/* ---- modules, functions, libraries --------------------------------------------*/
/* A module or function argument: alive, else INVALID_HANDLE (or
 * CONTEXT_IS_DESTROYED when its context was destroyed). */
IC_HIDDEN CUresult ic_module_arg(ic_thread *t, CUmodule h, ic_obj **out);
IC_HIDDEN CUresult ic_function_arg(ic_thread *t, CUfunction h, ic_obj **out);
/* Load an image as a module of context `ctx` (inside ic_enter). */
IC_HIDDEN CUresult ic_module_load(ic_thread *t, ic_obj *ctx, const void *img, size_t size,
                                  uint64_t library, ic_obj **out);
IC_HIDDEN CUresult ic_module_unload(ic_thread *t, ic_obj *m);
/* Fill the output JIT options of a load (empty logs, no time spent). */
IC_HIDDEN void ic_jit_outputs(unsigned int n, const CUjit_option *options, void **values);
IC_HIDDEN CUresult ic_module_get_function(ic_thread *t, ic_obj *m, const char *name, ic_obj **out);
/* Read a module image from a file (PTX gets its NUL); free() the bytes. */
IC_HIDDEN CUresult ic_read_image(const char *path, void **bytes, size_t *size);
/* Send bytes as the channel's blob for the next request (inside ic_enter). */
IC_HIDDEN CUresult ic_blob_upload(ic_thread *t, uint64_t ctx, const void *bytes, size_t size);
/* The bytes and size of an image given by pointer. */
IC_HIDDEN CUresult ic_image_of(const void *image, const void **bytes, size_t *size);
/* The function a CUkernel stands for in context `ctx` (its library's
 * instance there, loaded on first use). */
IC_HIDDEN CUresult ic_kernel_function(ic_thread *t, ic_obj *k, ic_obj *ctx, ic_obj **out);

/* ---- contexts ----------------------------------------------------------------*/
/* Errors that leave a context unusable: every later call in it returns them,
 * as on the driver, until the (primary) context is reset. */
static inline bool ic_is_sticky(CUresult e) {
  switch (e) {
  case CUDA_ERROR_ECC_UNCORRECTABLE:
  case CUDA_ERROR_ILLEGAL_ADDRESS:
  case CUDA_ERROR_LAUNCH_TIMEOUT:
  case CUDA_ERROR_ASSERT:
  case CUDA_ERROR_HARDWARE_STACK_ERROR:
  case CUDA_ERROR_ILLEGAL_INSTRUCTION:
  case CUDA_ERROR_MISALIGNED_ADDRESS:
  case CUDA_ERROR_INVALID_ADDRESS_SPACE:
  case CUDA_ERROR_INVALID_PC:
  case CUDA_ERROR_LAUNCH_FAILED:
    return true;
  default:
    return false;
  }
}
/* The sticky error of a context (0 if none or unknown). */
static inline CUresult ic_ctx_sticky(uint64_t ctx) {
  ic_obj *c = ic_obj_peek(ctx, IC_CTX);
  return c ? (CUresult)__atomic_load_n(&c->u.c.sticky, __ATOMIC_ACQUIRE) : CUDA_SUCCESS;
}

/* The current context, checked: INVALID_CONTEXT if none or inactive,
 * CONTEXT_IS_DESTROYED if destroyed. */
IC_HIDDEN CUresult ic_need_ctx(ic_thread *t, ic_obj **out);
/* A context argument (NULL: the current one). */
IC_HIDDEN CUresult ic_ctx_resolve(ic_thread *t, CUcontext h, ic_obj **out);

/* ---- streams -----------------------------------------------------------------*/
/* The calling thread's per-thread default stream in context `ctx`, created
 * on first use: (minted stream, 0), or (0, 1) to let the controller pick
 * when the thread uses too many contexts. */
IC_HIDDEN CUresult ic_per_thread_stream(uint64_t ctx, uint64_t *out, uint32_t *per_thread);
/* Give this thread's per-thread default streams back (thread exit). */
IC_HIDDEN void ic_per_thread_streams_release(ic_thread *t);

/* Resolve a stream argument for work queued in context `ctx`: NULL and
 * CU_STREAM_LEGACY become (0, 0), the legacy stream; CU_STREAM_PER_THREAD
 * (and NULL in a _ptds/_ptsz call) the thread's own stream. */
static inline CUresult ic_stream_resolve(CUstream s, uint64_t ctx, uint64_t *out,
                                         uint32_t *per_thread) {
  uintptr_t v = (uintptr_t)s;
  if (v <= 2) {
    if (v == 1 || (v == 0 && !ic_tls_ptds)) {
      *out = 0;
      *per_thread = 0;
      return CUDA_SUCCESS;
    }
    return ic_per_thread_stream(ctx, out, per_thread);
  }
  ic_obj *o = ic_obj_get(v, IC_STREAM);
  if (!o || o->ctx != ctx) return CUDA_ERROR_INVALID_HANDLE;
  *out = v;
  *per_thread = 0;
  return CUDA_SUCCESS;
}

/* The current context and a stream argument of it, for a call that queues
 * work in that context. */
static inline CUresult ic_need_ctx_stream(ic_thread *t, CUstream h, ic_obj **ctx, uint64_t *out,
                                          uint32_t *per_thread) {
  CUresult rc = ic_need_ctx(t, ctx);
  if (rc) return rc;
  return ic_stream_resolve(h, (*ctx)->handle, out, per_thread);
}

/* The answer to a call that queues work but has an invalid argument: the
 * checks the driver makes first (not inside a host function, a current
 * context) keep their own errors. */
static inline CUresult ic_invalid_work_arg(void) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *c;
  CUresult rc = ic_need_ctx(t, &c);
  return rc ? rc : CUDA_ERROR_INVALID_VALUE;
}

/* ---- memory --------------------------------------------------------------------*/
typedef enum ic_mem_kind {
  IC_MEM_DEVICE = 1, /* cuMemAlloc / cuMemAllocPitch, placed by the controller */
  IC_MEM_HOST,       /* pinned: a shared file the controller maps too */
  IC_MEM_REGISTERED, /* cuMemHostRegister: tracked here only */
  IC_MEM_GLOBAL,     /* a module's __device__ global */
  IC_MEM_VMM,        /* cuMemAddressReserve: the controller says what is mapped (vmm.c) */
  IC_MEM_MANAGED,    /* cuMemAllocManaged: a shared file like IC_MEM_HOST, at the same address there */
} ic_mem_kind;

typedef struct ic_alloc {
  uintptr_t base;
  size_t size;
  ic_mem_kind kind;
  uint64_t ctx;
  unsigned flags;
  uint32_t pin_id;   /* IC_MEM_HOST, IC_MEM_MANAGED */
  size_t map_size;   /* IC_MEM_HOST, IC_MEM_MANAGED: bytes of the file mapping */
  uint64_t module;   /* IC_MEM_GLOBAL */
  uint64_t pool;     /* IC_MEM_DEVICE from a memory pool (pool.c): the minted pool, else 0 */
  unsigned long long buffer_id;
} ic_alloc;

/* A copy of the allocation holding p, if any. */
IC_HIDDEN bool ic_mem_find(uintptr_t p, ic_alloc *out);
IC_HIDDEN CUresult ic_mem_add(const ic_alloc *a);
IC_HIDDEN bool ic_mem_take(uintptr_t base, unsigned kind_mask, ic_alloc *out);
/* Memory in a shared file the controller maps too (memory.c): pinned host
 * memory (IC_MEM_HOST) or managed memory (IC_MEM_MANAGED, at the same
 * address there or not at all). */
IC_HIDDEN CUresult ic_shared_alloc(void **pp, size_t bytesize, unsigned flags, ic_mem_kind kind);
/* pool.c: give a pool's block back (taken from the table) on `stream`. */
IC_HIDDEN CUresult ic_pool_free(ic_thread *t, const ic_alloc *a, uint64_t stream, uint32_t per_thread);
IC_HIDDEN void ic_mem_drop_ctx(uint64_t ctx);
IC_HIDDEN void ic_mem_drop_module(uint64_t module);
/* Whether [p, p+n) is device-accessible memory the job knows (device,
 * pinned or a module global). */
IC_HIDDEN bool ic_mem_is_device(uintptr_t p, size_t n);

/* ---- errors and logging --------------------------------------------------------*/
IC_HIDDEN CUresult ic_unsupported(const char *symbol);
/* Whether this is the first report of `symbol` in the process (exports.c). */
IC_HIDDEN bool ic_unsupported_first(const char *symbol);
/* One line on stderr, "cedana-gpu: ..." */
IC_HIDDEN void ic_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
IC_HIDDEN const char *ic_op_name(uint32_t op);
IC_HIDDEN void ic_log_request(const cgs_req *r);

/* Every implementation, declared from the API table so that each definition
 * is checked against its ABI variant's parameters. */
#define CU_FN(base, version, symbol, params, args) IC_HIDDEN CUresult ic_##base##_##version params;
#define CU_FN_PTDS(base, version, symbol, dver, params, args) \
  IC_HIDDEN CUresult ic_##base##_##version##_ptds params;
#include "cuda_api_table.h"

/* Stop the callback thread's bookkeeping for a forked child. */
IC_HIDDEN void ic_callbacks_atfork_child(void);

#endif
