/* Internal interface of the fake CUDA driver.
 *
 * The fake driver runs everything on the CPU but keeps the real driver's
 * semantics: device memory lives in its own reserved address range, streams
 * run their work in order on a worker thread each, events carry real time
 * stamps, and modules are host shared objects whose exported functions are the
 * kernels. Each area lives in its own file; this header is the contract
 * between them.
 *
 * Implementations of API functions are named fake_<base>_<version> (for
 * example fake_cuMemAlloc_3020) with the parameters of that ABI variant in
 * cudaTypedefs.h; gpu/api/exports.c wires each one to its exported symbol and to
 * cuGetProcAddress. A per-thread variant without its own implementation runs
 * the default one with fk_tls_ptds set, which makes the NULL stream mean the
 * calling thread's default stream.
 */
#ifndef CEDANA_FAKE_CUDA_H
#define CEDANA_FAKE_CUDA_H

#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FK_HIDDEN __attribute__((visibility("hidden")))
/* The newest API version the driver API table is generated from (the same
 * cuda.h): clients take older versions as a reason to skip newer paths. */
#define FK_DRIVER_VERSION CUDA_VERSION
#define FK_MAX_DEVICES 8
#define FK_GRANULARITY ((size_t)2 << 20) /* 2 MiB, like the real driver */

/* ---- configuration (environment, read once at cuInit) -------------------
 * FAKE_CUDA_DEVICE_COUNT   number of devices (default 1, max 8)
 * FAKE_CUDA_DEVICE_MEMORY_MIB  memory per device (default 16384)
 * FAKE_CUDA_DEVICE_NAME    device name (default "Cedana Fake GPU")
 * FAKE_CUDA_UUID_SEED      other device UUIDs, as on another machine
 *                          (gpu/fake/include/fake_uuid.h)
 * FAKE_CUDA_LOG            1: log every unsupported call, not only the first
 * A process checkpoint restored onto other GPUs (cuCheckpointProcessRestore)
 * changes a device's name, UUID and memory size to the new GPU's. */
typedef struct fk_device {
  int ordinal;
  char name[256];
  CUuuid uuid;
  size_t total_mem;
  size_t used_mem; /* guarded by fk_mem_lock */
  uintptr_t va_base; /* start of this device's reserved address range */
  size_t va_size;
  struct fk_ctx *primary;
  int primary_refs;
  unsigned primary_flags;
} fk_device;

typedef struct fk_config {
  int device_count;
  fk_device devices[FK_MAX_DEVICES];
  bool log_all;
} fk_config;

FK_HIDDEN extern fk_config fk_cfg;
FK_HIDDEN extern bool fk_initialized;

/* ---- handle registry -------------------------------------------------------
 * Every handle given out (context, stream, event, module, function, memory
 * handle) is registered with its kind, so a stale or forged handle is
 * answered with an error code instead of being dereferenced. */
typedef enum fk_kind {
  FK_CTX = 1,
  FK_STREAM,
  FK_EVENT,
  FK_MODULE,
  FK_FUNCTION,
  FK_MEMHANDLE,
  FK_LIBRARY, /* cuLibraryLoadData */
  FK_KERNEL,  /* a library's context-independent CUkernel */
  FK_MEMPOOL, /* cuMemPoolCreate, a device's default pool (mempool.c) */
} fk_kind;

FK_HIDDEN void fk_handle_add(void *h, fk_kind kind);
FK_HIDDEN void fk_handle_remove(void *h);
FK_HIDDEN bool fk_handle_valid(const void *h, fk_kind kind);
/* Every live handle of `kind`, in a malloc'd array of *n (NULL when none or
 * out of memory). */
FK_HIDDEN void **fk_handle_list(fk_kind kind, size_t *n);

/* ---- contexts --------------------------------------------------------------*/
typedef struct fk_ctx {
  fk_device *dev;
  unsigned flags;
  bool primary;
  bool active;    /* a primary context is inactive while nobody retains it */
  bool destroyed; /* a created context after cuCtxDestroy; kept so stale handles stay checkable */
  unsigned long long id;
  CUresult sticky; /* an asynchronous error that poisons the context (e.g. a kernel fault) */
  struct fk_stream *legacy; /* the legacy default stream */
  pthread_mutex_t lock; /* guards the stream list */
  struct fk_stream *streams; /* created streams, linked through next_in_ctx */
  size_t limits[16];
} fk_ctx;

/* The calling thread's current context, or NULL. */
FK_HIDDEN fk_ctx *fk_current(void);
/* Check initialisation and fetch the current context (INVALID_CONTEXT if none,
 * the sticky error if it is poisoned). */
FK_HIDDEN CUresult fk_need_ctx(fk_ctx **out);
FK_HIDDEN CUresult fk_need_init(void);
/* Validate a context handle (NULL means the current one). */
FK_HIDDEN CUresult fk_ctx_resolve(CUcontext h, fk_ctx **out);

/* Set while a per-thread-default-stream (_ptds/_ptsz) variant runs. */
FK_HIDDEN extern __thread int fk_tls_ptds;

/* ---- streams ---------------------------------------------------------------
 * An op is one unit of work run in order on a stream's worker thread. It may
 * wait on earlier work of other streams (legacy stream semantics, stream wait
 * on events) through its dependency list. */
typedef struct fk_dep {
  struct fk_stream *stream;
  uint64_t seq; /* wait until stream->done >= seq */
} fk_dep;

typedef struct fk_op fk_op;
typedef void (*fk_op_fn)(fk_op *op);
struct fk_op {
  fk_op_fn run;
  fk_op *next;
  uint64_t seq;
  fk_ctx *ctx;
  int ndeps;
  int node_type; /* CUgraphNodeType of the op when a capture records it (0: a kernel); fills
                  * the padding after ndeps, so payload stays 8-byte aligned */
  fk_dep deps[FK_MAX_DEVICES + 64];
  void *heap; /* freed after run (e.g. staged bytes, copied kernel arguments) */
  unsigned char payload[]; /* op-specific data */
};
_Static_assert(offsetof(struct fk_op, payload) % 8 == 0, "op payloads hold pointers");

typedef struct fk_stream {
  fk_ctx *ctx;
  unsigned flags; /* CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING */
  int priority;
  bool is_legacy;
  bool is_per_thread;
  unsigned long long id;
  pthread_mutex_t lock;
  pthread_cond_t cond; /* signalled when work is queued or done */
  fk_op *head, *tail;
  uint64_t submitted; /* seq of the last op queued */
  uint64_t done; /* seq of the last op finished */
  bool stopping;
  pthread_t worker;
  struct fk_stream *next_in_ctx;
} fk_stream;

/* Allocate an op with `payload` bytes of zeroed op-specific data. */
FK_HIDDEN fk_op *fk_op_new(fk_op_fn run, size_t payload);
/* Resolve a stream argument: NULL / CU_STREAM_LEGACY / CU_STREAM_PER_THREAD
 * or a created stream, checked against the current context. */
FK_HIDDEN CUresult fk_stream_resolve(CUstream h, fk_ctx *ctx, fk_stream **out);
/* The current context and a stream argument of it, for a call that queues
 * work: refused on a stream worker running a host function, as the driver
 * refuses any call made there. */
FK_HIDDEN CUresult fk_work_stream(CUstream h, fk_ctx **ctx, fk_stream **out);
/* The answer to a call that queues work but has an invalid argument: the
 * checks the driver makes first (not inside a host function, a current
 * context) keep their own errors. */
FK_HIDDEN CUresult fk_invalid_work_arg(void);
/* Queue op on s (adding the implicit legacy-stream dependencies); takes
 * ownership. Returns the op's sequence number through *seq if non-NULL. */
FK_HIDDEN void fk_stream_submit(fk_stream *s, fk_op *op, uint64_t *seq);
/* graph.c: if s is capturing, record op in its graph (taking it) and return
 * true; false (quickly) when no stream captures. */
FK_HIDDEN bool fk_graph_capture(fk_stream *s, fk_op *op);
/* Block until s has finished everything up to seq. */
FK_HIDDEN void fk_stream_wait(fk_stream *s, uint64_t seq);
/* Block until every stream of ctx is idle. */
FK_HIDDEN void fk_ctx_synchronize(fk_ctx *ctx);
/* Whether every stream of ctx has finished what was queued; never blocks. */
FK_HIDDEN bool fk_ctx_idle(fk_ctx *ctx);
/* Called while ctx->legacy is NULL, it creates the context's legacy stream
 * (see the contract at the top of stream.c). */
FK_HIDDEN fk_stream *fk_stream_create(fk_ctx *ctx, unsigned flags, int priority);
/* Wait for s's queued work and its worker, unlink it from its context, and
 * release it; on the legacy stream, every stream still in the context goes
 * too. The caller must not hold ctx->lock. */
FK_HIDDEN void fk_stream_destroy(fk_stream *s);
/* Run `fn(arg)` on s in order and wait for it (synchronous API calls). */
FK_HIDDEN void fk_stream_run_sync(fk_stream *s, fk_op *op);
/* Keep a stream's memory alive while something outside it (a queued
 * dependency, an event's last record) refers to it; the last unref frees a
 * destroyed stream. */
FK_HIDDEN void fk_stream_ref(fk_stream *s);
FK_HIDDEN void fk_stream_unref(fk_stream *s);
/* Whether s has finished everything up to seq; never blocks. */
FK_HIDDEN bool fk_stream_reached(fk_stream *s, uint64_t seq);
/* True on a stream worker while it runs a host function or stream callback:
 * the real driver answers CUDA_ERROR_NOT_PERMITTED to any call made there. */
FK_HIDDEN bool fk_in_host_callback(void);
/* Stream priority range an H100/H200 reports (cuCtxGetStreamPriorityRange). */
#define FK_STREAM_PRIORITY_LEAST 0
#define FK_STREAM_PRIORITY_GREATEST (-5)

/* ---- memory ----------------------------------------------------------------*/
typedef enum fk_mem_kind {
  FK_MEM_DEVICE = 1, /* cuMemAlloc */
  FK_MEM_VMM,        /* mapped through cuMemMap */
  FK_MEM_HOST,       /* cuMemAllocHost / cuMemHostAlloc */
  FK_MEM_REGISTERED, /* cuMemHostRegister */
  FK_MEM_MODULE,     /* a module's __device__ global */
} fk_mem_kind;

typedef struct fk_alloc {
  uintptr_t base;
  size_t size;
  fk_mem_kind kind;
  fk_ctx *ctx;
  fk_device *dev;
  unsigned flags;
  unsigned long long buffer_id;
  struct fk_alloc *next;
} fk_alloc;

/* Look up the allocation holding [ptr, ptr+len); NULL if none or out of range. */
FK_HIDDEN fk_alloc *fk_mem_find(uintptr_t ptr, size_t len);
/* Check that [ptr, ptr+len) is device-accessible memory (device, VMM with
 * access, pinned host or module global). */
FK_HIDDEN CUresult fk_mem_check_device(CUdeviceptr ptr, size_t len);
FK_HIDDEN void fk_mem_register(uintptr_t base, size_t size, fk_mem_kind kind, fk_ctx *ctx);
FK_HIDDEN void fk_mem_unregister(uintptr_t base);
/* Reserve every device's address range (at cuInit). */
FK_HIDDEN CUresult fk_mem_init(void);
/* Free everything a destroyed context owned. */
FK_HIDDEN void fk_mem_release_ctx(fk_ctx *ctx);

/* ---- modules and kernels ---------------------------------------------------*/
#include "fake_cuda_module.h"

typedef struct fk_module {
  fk_ctx *ctx;
  void *dl; /* dlopen handle of the host shared object */
  int memfd;
  const fk_module_info *info;
  struct fk_function *functions;
} fk_module;

typedef struct fk_function {
  fk_module *mod;
  const fk_kernel_info *kernel;
  int max_dynamic_shared;
  struct fk_function *next;
} fk_function;

/* Run a kernel over the grid on the calling (worker) thread. A fault inside
 * the kernel is caught and returned as CUDA_ERROR_ILLEGAL_ADDRESS. */
FK_HIDDEN CUresult fk_kernel_run(const fk_kernel_info *k, const fk_dim3 grid, const fk_dim3 block,
                                 unsigned shared_bytes, void **params);
FK_HIDDEN void fk_module_release_ctx(fk_ctx *ctx);
/* Resolve the function argument of a launch in ctx: a CUfunction of ctx, or
 * a CUkernel cast to CUfunction (its library is loaded into ctx on first
 * use). INVALID_HANDLE for anything else. */
FK_HIDDEN CUresult fk_function_resolve(CUfunction h, fk_ctx *ctx, fk_function **out);

/* ---- process checkpoint (checkpoint.c, gate.c) ------------------------------
 * The entry gate every implemented API call passes (gpu/api/exports.c): a
 * closed gate holds new calls back; fk_gate_close waits for the calls in
 * flight (CUDA_ERROR_NOT_READY and the gate open again after timeout_ms; 0
 * waits as long as it takes). */
FK_HIDDEN void fk_gate_enter(void);
FK_HIDDEN void fk_gate_leave(void);
FK_HIDDEN CUresult fk_gate_close(unsigned timeout_ms);
FK_HIDDEN void fk_gate_open(void);
FK_HIDDEN void fk_gate_reset_after_fork(void);
/* Start the checkpoint service of this process (at cuInit). */
FK_HIDDEN void fk_ckpt_start(void);
/* Copy all device memory to host memory and release the device ranges; on
 * failure nothing is released (memory.c). */
FK_HIDDEN CUresult fk_mem_checkpoint(void);
/* Map the device ranges again at the same addresses and copy the memory
 * back; on failure nothing is mapped and the copies stay for another try. */
FK_HIDDEN CUresult fk_mem_restore(void);
/* Device memory device `ordinal` held when the process was checkpointed. */
FK_HIDDEN size_t fk_mem_checkpointed_bytes(int ordinal);
/* Custom storage, after fk_mem_checkpoint: one file per device that holds
 * memory (fds[d], -1 for none; sizes[d]), the device's memory end to end,
 * and the host copies dropped (to_files); for a restore, empty files of the
 * same layout (files_for_restore), whose contents become the host copies
 * that fk_mem_restore maps back (from_files). fk_mem_restore refuses
 * (CUDA_ERROR_INVALID_VALUE) while the bytes are with the caller. */
FK_HIDDEN CUresult fk_mem_to_files(int fds[FK_MAX_DEVICES], size_t sizes[FK_MAX_DEVICES]);
FK_HIDDEN CUresult fk_mem_files_for_restore(int fds[FK_MAX_DEVICES], size_t sizes[FK_MAX_DEVICES]);
FK_HIDDEN CUresult fk_mem_from_files(const int fds[FK_MAX_DEVICES]);

/* ---- errors and logging ----------------------------------------------------*/
FK_HIDDEN CUresult fk_unsupported(const char *symbol);
/* Whether this is the first report of `symbol` in the process (exports.c). */
FK_HIDDEN bool fk_unsupported_first(const char *symbol);
FK_HIDDEN void fk_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
