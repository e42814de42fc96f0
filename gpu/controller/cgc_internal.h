/* Internal state of the native dispatcher (libcedana-gpu-controller.so).
 *
 * Threads:
 * - the dispatcher: consumes the ring in ticket order, validates and issues
 *   every request to the driver, completes fast synchronous ones inline; it
 *   is the only writer of the handle tables;
 * - completion workers: wait for the slow part of synchronous requests (an
 *   event standing for a stream's work, a context synchronize) so the
 *   dispatcher never blocks and other threads' queued launches keep flowing;
 * - the heartbeat: bumps header.heartbeat every 50 ms while the process
 *   lives (also while frozen or inside a long driver call such as a JIT);
 * - the caller's threads (Python): open/start/freeze/info/stop.
 *
 * Everything read from the segment is untrusted: the dispatcher copies each
 * request to a private buffer before looking at it and keeps its own copy of
 * the geometry and of the lifecycle state.
 */
#ifndef CGC_INTERNAL_H
#define CGC_INTERNAL_H

#include <sched.h> /* cedana_gpu_ring.h uses sched_yield */

#include "cedana_gpu_controller.h"
#include "cedana_gpu_ring.h"
#include "cedana_gpu_shm.h"
#include "cgc_driver.h"
#include "cgc_hmap.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define CGC_HIDDEN __attribute__((visibility("hidden")))
#define CGC_API __attribute__((visibility("default")))

#define CGC_ERR_LEN 512
#define CGC_MAX_PARAMS 4096 /* kernel parameters per function (32 KiB of arguments / 8) */
#define CGC_MAX_BLOB ((uint64_t)1 << 31) /* largest module image accepted */
#define CGC_MAX_WORKERS 64
#define CGC_HEARTBEAT_MS 50

/* ---- tables ------------------------------------------------------------- */

typedef struct cgc_context {
  uint64_t minted;
  CUcontext real;
  int device;
  unsigned flags;
  bool primary;
  int refs;          /* primary: job retains not yet released */
  CUevent *evpool;   /* private events for synchronous waits; guarded by c->evlock */
  int nev, evcap;
  int pending;       /* completion tasks using this context; atomic */
} cgc_context;

typedef struct cgc_stream {
  uint64_t minted;
  CUstream real;
  cgc_context *ctx;
  unsigned flags;
  int priority;
} cgc_stream;

typedef struct cgc_event {
  uint64_t minted;
  CUevent real;
  cgc_context *ctx;
  unsigned flags;
  int busy;  /* completion tasks waiting on it; atomic */
  bool dead; /* destroyed by the job while busy: the last waiter destroys it */
} cgc_event;

typedef struct cgc_global {
  uint64_t dptr, size;
  struct cgc_module *module;
  char *name; /* NULL if unknown; the checkpoint finds the global again by it */
} cgc_global;

/* A module global whose address changed in a restore: the job still holds
 * `old` (from cuModuleGetGlobal before the dump); copies and memsets to it go
 * to `now` (restore.c). */
typedef struct cgc_remap {
  uint64_t old, now, size;
} cgc_remap;

typedef struct cgc_module {
  uint64_t minted;
  CUmodule real;
  cgc_context *ctx;
  uint8_t *image; /* the image bytes as loaded: the checkpoint reloads them */
  uint64_t image_size;
  int nfunctions;
} cgc_module;

typedef struct cgc_function {
  uint64_t minted;
  CUfunction real;
  cgc_module *module;
  char *name;
  int nparams;          /* -1: layout unknown (no cuFuncGetParamInfo) */
  cgs_param *params;
  uint32_t params_size; /* bytes the packed arguments must hold */
  uint32_t attr_set;    /* attributes the job set (FUNC_SET_ATTRIBUTE), by bit: a restore sets them again */
  int32_t attrs[32];
} cgc_function;

typedef struct cgc_alloc {
  uint64_t dptr, size; /* size as placed (its slot, or its chunk for a big one) */
  uint64_t req_size;   /* size the job asked for */
  CUmemGenericAllocationHandle handle; /* its chunk's */
  int device;
  uint64_t ctx; /* minted context that allocated it */
  int32_t index; /* in c->allocs */
  struct cgc_alloc *next; /* on a release list */
  struct cgc_chunk *chunk;
  uint32_t slot; /* in its chunk */
  /* Memory pools (pool.c): the pool a block belongs to, or NULL. */
  struct cgc_pool *pool;
  uint64_t pool_size; /* the size the pool counts */
  bool cached;        /* freed into its pool: the job no longer holds it */
  CUevent done;       /* cached: recorded behind the free until the stream got there; else NULL */
  uint64_t freed_on;  /* cached: the minted stream that freed it */
  struct cgc_alloc *pnext; /* the pool's list of cached blocks */
} cgc_alloc;

typedef struct cgc_pool {
  uint64_t minted;
  int device;
  bool is_default;
  bool destroyed; /* by the job; kept until no block is left */
  uint64_t max_size, threshold;
  int reuse_follow, reuse_opportunistic, reuse_internal;
  uint64_t reserved, reserved_high, used, used_high;
  cgc_alloc *cache; /* cached blocks, through pnext */
} cgc_pool;

/* A piece of device memory mapped inside the reserved range (memory.c): one
 * big allocation of its own (cls < 0), or a slab of equal slots of one size
 * class for small allocations. Chunks are what a checkpoint saves. */
#define CGC_NCLASSES 22
#define CGC_SMALL_MAX ((uint64_t)512 << 10) /* larger allocations get a chunk of their own */
typedef struct cgc_chunk {
  uint64_t base, size;
  CUmemGenericAllocationHandle handle;
  int device;
  int cls;                 /* size class, -1: one big allocation */
  uint32_t slot_size, nslots;
  uint32_t used;           /* allocations in the tables; under c->lock */
  uint32_t live;           /* allocations not yet released; under va_lock */
  uint32_t nfree;          /* free slots on the stack; under va_lock */
  uint32_t *free_slots;
  struct cgc_alloc **slots; /* by slot: its allocation, or NULL; written under c->lock */
  int32_t index;           /* in c->chunks */
  bool partial;            /* on its class's list of chunks with free slots; va_lock */
  bool reap_queued;        /* on the reap list; va_lock */
  struct cgc_chunk *pnext, *pprev, *rnext;
} cgc_chunk;

/* A pinned bounce buffer and a stream for the checkpoint's copies
 * (checkpoint.c), taken by one calling thread at a time. */
typedef struct cgc_xfer cgc_xfer;

typedef struct cgc_pin {
  uint32_t id;
  uint64_t size;
  uint8_t *map;
  uint64_t app_addr;
  bool registered; /* cuMemHostRegister succeeded */
  bool same_addr;  /* mapped at app_addr: its device address is the job's */
} cgc_pin;

/* A channel's module image under construction (BLOB_PUT). */
typedef struct cgc_blob {
  uint8_t *buf;
  uint64_t total, filled;
} cgc_blob;

/* Free device address extents inside the reserved range, sorted. */
typedef struct cgc_extent {
  uint64_t start, len;
} cgc_extent;

/* ---- completion tasks --------------------------------------------------- */

typedef enum cgc_task_kind {
  CGC_TASK_EVENT = 1, /* cuEventSynchronize(ev), then complete */
  CGC_TASK_CTX_SYNC,  /* cuCtxSynchronize in ctx, then complete */
  CGC_TASK_FREE,      /* ctx sync, unmap + release allocations, complete */
  CGC_TASK_UNPIN,     /* ctx sync, unregister + unmap a pin file, complete */
  CGC_TASK_CTX_DESTROY,
} cgc_task_kind;

/* A driver object whose owner was torn down, destroyed by a worker after the
 * context has drained. */
typedef struct cgc_dead {
  enum { CGC_DEAD_STREAM = 1, CGC_DEAD_EVENT, CGC_DEAD_MODULE } kind;
  void *h;
} cgc_dead;

typedef struct cgc_task {
  struct cgc_task *next;
  cgc_task_kind kind;
  uint32_t op;      /* the request's op, for the freeze error message */
  uint32_t channel; /* CGS_NO_CHANNEL: queued request, errors go to async_error */
  uint32_t token;
  cgc_context *ctx;
  CUevent ev;          /* CGC_TASK_EVENT */
  bool ev_private;     /* return ev to ctx's pool afterwards */
  cgc_event *job_ev;   /* EVENT_SYNCHRONIZE: drop busy afterwards */
  cgc_alloc *alloc;    /* CGC_TASK_FREE */
  cgc_pin *pin;        /* CGC_TASK_UNPIN */
  bool reset_only;     /* CGC_TASK_CTX_DESTROY for a primary reset: keep the context */
  cgc_dead *dead;      /* CGC_TASK_CTX_DESTROY: objects to destroy */
  int ndead;
  uint64_t ret0;
} cgc_task;

/* ---- the controller ----------------------------------------------------- */

/* The job's own VMM objects (vmm.c). */
typedef struct cgc_vresv {
  uint64_t addr, size; /* as the job asked */
  uint64_t taken;      /* of our range: size rounded up to the granularity */
} cgc_vresv;

typedef struct cgc_vphys {
  uint64_t id; /* the job's handle */
  uint64_t size;
  uint64_t shadow; /* our own mapping of it, where the checkpoint reads it */
  CUmemGenericAllocationHandle real;
  int device;
  uint32_t handle_types;
  bool released; /* the job released its handle; lives while mapped */
  int maps;      /* the job's mappings of it */
} cgc_vphys;

typedef struct cgc_vmap {
  uint64_t addr, size;
  uint64_t phys; /* id of its physical allocation */
  uint8_t access[CGS_MAX_DEVICES]; /* CUmemAccess_flags per device */
} cgc_vmap;

struct cgc {
  /* Private copy of the geometry: never re-read from the segment. */
  char job_id[CGS_JOB_ID_MAX];
  char seg_path[512];   /* <shm_dir>/<segment_name> */
  char pin_prefix[512]; /* <shm_dir>/<segment_name>.pin. */
  uint32_t ring_slots, ring_mask, nchannels;
  uint64_t staging_size, channel_stride, ring_offset, channels_offset, segment_size;
  uint64_t generation;
  uint32_t timeout_ms;
  uint32_t uid, gid;
  bool chown;

  cgs_header *hdr; /* the segment (MAP_SHARED) */
  cgs_slot *ring;
  int shm_fd;
  bool seg_created; /* ours to unlink */
  bool segment_registered;

  cgc_driver drv;
  int driver_version;
  int device_count;
  CUcontext primary0; /* our own retain of device 0's primary context */
  CUdevice dev0;
  uint64_t granularity;
  uint64_t va_base, va_size;
  bool va_reserved;
  bool reservation_pending; /* cgc_open was given cgc_reserve's range and has not taken it over yet */

  /* Lifecycle, private: the segment's state word is only ever written. */
  int state;        /* enum cgs_state; atomic */
  bool started;
  int stopping;     /* atomic */
  int pause_req;    /* 1: dispatcher stops consuming (frozen); atomic */
  int paused;       /* dispatcher acknowledged pause; atomic */
  int poisoned;     /* the job truncated the segment: nothing more to serve; atomic */
  int handed_off;   /* the job went to the driver engine (ENGINE_HANDOFF); atomic */
  pthread_t dispatcher, heartbeat;
  pthread_mutex_t life_lock; /* heartbeat sleep */
  pthread_cond_t life_cond;

  /* Dispatcher-private. */
  uint64_t tail;
  uint8_t *req;          /* private copy of the request being served */
  void **kparams;        /* kernelParams scratch */
  uint8_t *argbuf;       /* aligned copy of the packed arguments */
  cgc_context *cur;      /* context current on the dispatcher thread */
  cgc_context own;       /* our retain of device 0's primary context (requests with ctx 0) */
  bool own_primary[CGS_MAX_DEVICES]; /* devices whose primary context we retain ourselves */
  void *dl;              /* the driver, as found by its SONAME */
  uint8_t cb_busy[CGS_CALLBACKS]; /* callback entry waited on; guarded by cb_lock */

  /* Tables: written by the dispatcher under `lock`; the dispatcher reads
   * them without it, other threads (info, checkpoint) with it. */
  pthread_mutex_t lock;
  cgc_hmap contexts, streams, events, modules, functions, pins;
  cgc_hmap pools; /* the job's memory pools, by minted handle (pool.c) */
  cgc_hmap links; /* the job's JIT link states, by minted handle (link.c); dispatcher only */
  cgc_alloc **allocs; /* by index; NULL: free slot */
  int32_t nallocs, alloc_cap, alloc_live;
  int32_t *free_alloc_idx;
  int32_t nfree_idx;
  int32_t *pages; /* per granule of the reserved range: chunk index or -1 */
  uint64_t npages;
  uint64_t alloc_bytes;
  cgc_chunk **chunks; /* by index; NULL: free slot; written under lock */
  int32_t nchunks, chunk_cap, chunk_live;
  int32_t *free_chunk_idx;
  int32_t nfree_chunk_idx;
  uint64_t chunk_bytes;
  cgc_chunk *partial[CGS_MAX_DEVICES][CGC_NCLASSES]; /* chunks with free slots; va_lock */
  cgc_chunk *reap;  /* chunks that became empty; va_lock */
  cgc_global *globals; /* module globals learned through GET_GLOBAL: valid copy targets */
  int nglobals, gcap;
  cgc_remap *remaps;   /* globals that moved in a restore (restore.c) */
  int nremaps;
  cgc_blob *blobs; /* per channel */
  /* The job's VMM objects (vmm.c): written by the dispatcher under lock. */
  cgc_vresv *vresv;
  cgc_vphys **vphys;
  cgc_vmap *vmap;
  int nvresv, vresv_cap, nvphys, vphys_cap, nvmap, vmap_cap;
  uint64_t vphys_bytes;
  uint64_t vmm_next_id; /* the next physical allocation's handle */

  /* Free address extents; guarded by va_lock (workers return extents). */
  pthread_mutex_t va_lock;
  cgc_extent *ext;
  size_t n_ext, ext_cap;

  /* Private events; guarded by evlock. */
  pthread_mutex_t evlock;

  /* Completion workers. */
  pthread_mutex_t tlock;
  pthread_cond_t tcond;   /* work queued, or stopping */
  pthread_cond_t tidle;   /* a task finished */
  cgc_task *thead, *ttail, *tfree;
  int nworkers, idle_workers, tasks_pending;
  uint32_t task_ops[CGS_OP_COUNT]; /* pending tasks per op, for the freeze error */
  pthread_t workers[CGC_MAX_WORKERS];

  /* Counters. */
  uint64_t n_requests, n_errors, n_async_errors, n_launches, n_invalid;
  uint64_t n_hostfn_pending;
  uint64_t n_op[CGS_OP_COUNT]; /* requests per op (dispatcher only) */

  /* Host functions: serialised posting into the segment's callback ring. */
  pthread_mutex_t cb_lock;
  uint64_t cb_head; /* private copy */

  bool log;
  bool spin_yield; /* yield the CPU while spinning for requests */
  char err[CGC_ERR_LEN];

  /* Checkpoint copies (checkpoint.c). */
  pthread_mutex_t xlock;
  cgc_xfer *xfree;     /* idle copy engines */
  int nxfer;
  CUcontext devctx[CGS_MAX_DEVICES]; /* primary contexts retained for copies */
  bool imported;       /* cgc_import_state ran */
  /* The job id the job itself knows (header.job_id, which names its pinned
   * files): ours, or the original job's after a restore. */
  char app_job_id[CGS_JOB_ID_MAX];
};

/* ---- helpers shared between files --------------------------------------- */

CGC_HIDDEN void cgc_set_error(cgc_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
CGC_HIDDEN void cgc_log(cgc_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
CGC_HIDDEN const char *cgc_op_name(uint32_t op);
CGC_HIDDEN const char *cgc_cu_name(cgc_t *c, CUresult rc);

CGC_HIDDEN int cgc_driver_load(cgc_t *c);
CGC_HIDDEN int cgc_validate(const void *buf, size_t len, uint32_t nchannels, uint64_t staging_size, char *why,
                            size_t why_len);

/* dispatch.c */
CGC_HIDDEN void *cgc_dispatch_main(void *arg);
CGC_HIDDEN void cgc_complete(cgc_t *c, uint32_t channel, uint32_t token, int32_t rc, const uint64_t *ret,
                             int nret);
CGC_HIDDEN void cgc_async_error(cgc_t *c, int32_t rc);
CGC_HIDDEN bool cgc_ring_ready(cgc_t *c);
/* Make the job's context `minted` current on the dispatcher (fallback: 0
 * means our own primary context). */
CGC_HIDDEN CUresult cgc_use_ctx(cgc_t *c, uint64_t minted, bool fallback, cgc_context **out);
CGC_HIDDEN void cgc_tables_free(cgc_t *c);
/* Keep a new object, made on the stack around its driver object `real`, in
 * table m under its minted handle (a heap copy goes in). 0, or -ENOMEM or
 * -EEXIST (the handle is taken), with the driver object destroyed again. */
CGC_HIDDEN int cgc_table_keep(cgc_t *c, cgc_hmap *m, uint64_t handle, const void *obj, size_t size, cgc_dead real);

/* memory.c: allocations inside the reserved range */
/* Granularity and the default range size (twice device 0's memory) for c->dev0. */
CGC_HIDDEN int cgc_va_geometry(cgc_t *c);
/* Reserve [va_base, +va_size) (va_base 0: the driver chooses), or, `reserved`,
 * take over that range cgc_reserve already reserved in this process. */
CGC_HIDDEN int cgc_va_init(cgc_t *c, bool reserved);
CGC_HIDDEN CUresult cgc_mem_alloc(cgc_t *c, uint64_t size, int device, uint64_t ctx, uint64_t *dptr);
/* Removes the allocation starting at dptr from the tables (no driver call). */
CGC_HIDDEN cgc_alloc *cgc_mem_take(cgc_t *c, uint64_t dptr);
/* Unmaps and releases a taken allocation, returns its addresses. */
CGC_HIDDEN CUresult cgc_mem_release(cgc_t *c, cgc_alloc *a);
/* Whether [p, p+len) lies inside one allocation or a learned global. */
CGC_HIDDEN bool cgc_mem_valid(cgc_t *c, uint64_t p, uint64_t len);
CGC_HIDDEN void cgc_va_free_all(cgc_t *c);
/* Unmap chunks that became empty (dispatcher thread, or before start). */
CGC_HIDDEN void cgc_mem_reap(cgc_t *c);
/* The chunk holding [p, p+len) entirely, or NULL; caller holds c->lock or is the dispatcher. */
CGC_HIDDEN cgc_chunk *cgc_chunk_holding(cgc_t *c, uint64_t p, uint64_t len);
/* Restore: map a chunk at exactly [base, base+size) (slot_size 0: one big
 * allocation), then place allocations in it at their addresses. */
CGC_HIDDEN int cgc_mem_chunk_at(cgc_t *c, uint64_t base, uint64_t size, int device, uint32_t slot_size,
                                cgc_chunk **out);
CGC_HIDDEN int cgc_mem_place(cgc_t *c, cgc_chunk *ch, uint64_t dptr, uint64_t req_size, uint64_t ctx);
/* Done placing: the chunk's unused slots become free. */
CGC_HIDDEN void cgc_mem_chunk_done(cgc_t *c, cgc_chunk *ch);
/* A global's address after a restore, for an address the job got before. */
CGC_HIDDEN uint64_t cgc_global_remap(cgc_t *c, uint64_t p);

/* memory.c: stretches of the reserved range for vmm.c (granular lengths) */
/* First fit at `align`; 0 if nothing is free. */
CGC_HIDDEN uint64_t cgc_va_take(cgc_t *c, uint64_t len, uint64_t align);
/* Exactly [at, at+len) if it is free: 0, or -1. */
CGC_HIDDEN int cgc_va_take_at(cgc_t *c, uint64_t at, uint64_t len);
CGC_HIDDEN void cgc_va_give(cgc_t *c, uint64_t start, uint64_t len);

/* vmm.c: the job's reservations, physical allocations and mappings */
CGC_HIDDEN int cgc_op_vmm(cgc_t *c, cgs_vmm *r, uint64_t *ret, int *nret);
/* Whether [p, p+len) lies in the job's mappings, accessible. */
CGC_HIDDEN bool cgc_vmm_valid(cgc_t *c, uint64_t p, uint64_t len);
/* Whether [p, p+len) lies in one physical allocation's shadow; its device. */
CGC_HIDDEN bool cgc_vmm_shadow_device(cgc_t *c, uint64_t p, uint64_t len, int *device);
/* The shadows as (address, size) pairs; returns how many there are. */
CGC_HIDDEN size_t cgc_vmm_regions(cgc_t *c, uint64_t *pairs, size_t max_pairs);
CGC_HIDDEN uint32_t cgc_vmm_access_bits(const cgc_vmap *m);
CGC_HIDDEN int cgc_vmm_import_reservation(cgc_t *c, uint64_t addr, uint64_t size, uint64_t taken);
CGC_HIDDEN int cgc_vmm_import_physical(cgc_t *c, uint64_t id, uint64_t size, int device, uint64_t shadow,
                                       bool released);
CGC_HIDDEN int cgc_vmm_import_mapping(cgc_t *c, uint64_t addr, uint64_t size, uint64_t phys, uint32_t access);
CGC_HIDDEN void cgc_vmm_import_done(cgc_t *c);
CGC_HIDDEN void cgc_vmm_free_all(cgc_t *c);

/* link.c: the job's JIT link states (transient: never checkpointed) */
CGC_HIDDEN int cgc_op_link(cgc_t *c, cgs_link *r, uint64_t *ret, int *nret);
/* Destroy every link state (the controller closes or its tables are reset). */
CGC_HIDDEN void cgc_links_free(cgc_t *c);
/* The job's context `ctx` is torn down: destroy its link states' driver objects. */
CGC_HIDDEN void cgc_links_drop_ctx(cgc_t *c, uint64_t ctx);

/* pool.c: the job's memory pools */
CGC_HIDDEN int cgc_op_pool(cgc_t *c, cgs_pool *r, uint64_t *ret, int *nret);
/* Cached blocks whose free the stream reached become reusable; memory above
 * each pool's release threshold goes back (dispatcher thread). */
CGC_HIDDEN void cgc_pools_settle(cgc_t *c);
CGC_HIDDEN void cgc_pools_free(cgc_t *c);
/* The allocation starting exactly at dptr, or NULL (dispatcher or c->lock). */
CGC_HIDDEN cgc_alloc *cgc_mem_at(cgc_t *c, uint64_t dptr);
/* Make the job's stream current for a request (dispatch.c). */
CGC_HIDDEN CUresult cgc_use_stream(cgc_t *c, const cgs_req *h, uint64_t stream, uint32_t per_thread,
                                   cgc_context **sx, CUstream *s);

/* checksum.c */
CGC_HIDDEN uint32_t cgc_crc32c_update(uint32_t crc, const void *buf, size_t len);

/* checkpoint.c */
CGC_HIDDEN void cgc_ckpt_free(cgc_t *c);
/* Map pin file `id` (HOST_REGISTER, and restore): at app_addr if free. */
CGC_HIDDEN CUresult cgc_pin_map(cgc_t *c, uint32_t id, uint64_t size, uint64_t app_addr, cgc_pin **out);

/* complete.c */
/* Destroy a driver object of one of the kinds a context teardown buries. */
CGC_HIDDEN void cgc_dead_destroy(cgc_t *c, const cgc_dead *d);
/* A task completing request `h` (its op, channel and token) in context ctx. */
CGC_HIDDEN cgc_task *cgc_task_new(cgc_t *c, cgc_task_kind kind, const cgs_req *h,
                                  cgc_context *ctx);
CGC_HIDDEN int cgc_task_submit(cgc_t *c, cgc_task *t);
CGC_HIDDEN void cgc_workers_stop(cgc_t *c);
CGC_HIDDEN CUresult cgc_event_get(cgc_t *c, cgc_context *ctx, CUevent *ev);
CGC_HIDDEN void cgc_event_put(cgc_t *c, cgc_context *ctx, CUevent ev);
CGC_HIDDEN CUresult cgc_ctx_sync(cgc_t *c, CUcontext ctx);
CGC_HIDDEN int cgc_tasks_pending(cgc_t *c, char *what, size_t what_len);
CGC_HIDDEN void cgc_pin_unmap(cgc_t *c, cgc_pin *p);

/* guard.c: survive the job shrinking a shared file under us (SIGBUS). */
CGC_HIDDEN void cgc_guard_add(void *base, size_t len, int *flag);
CGC_HIDDEN void cgc_guard_remove(void *base);

static inline uint64_t cgc_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
