/* Kernel launches: validate as the driver does, copy the arguments (the
 * caller may reuse its buffers as soon as the call returns), and queue an op
 * that runs the grid on the stream's worker.
 *
 * A fault inside a kernel (SIGSEGV, SIGBUS, SIGILL, SIGFPE on the worker
 * while the kernel runs) is caught and becomes the context's sticky error,
 * which every later call in the context returns, as after a GPU fault: a bad
 * address is CUDA_ERROR_ILLEGAL_ADDRESS, a trap (__trap, __builtin_trap)
 * CUDA_ERROR_ILLEGAL_INSTRUCTION, an arithmetic trap CUDA_ERROR_LAUNCH_FAILED.
 * Faults anywhere else go to whatever handler was there before, so genuine
 * host crashes still crash.
 */
#include "module_internal.h"
#include "launch_rules.h"

#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Launch limits of the device the fake driver imitates (an H100/H200). */
#define MAX_THREADS_PER_BLOCK 1024u
#define MAX_BLOCK_X 1024u
#define MAX_BLOCK_Y 1024u
#define MAX_BLOCK_Z 64u
#define MAX_GRID_X 2147483647u
#define MAX_GRID_YZ 65535u
#define MULTIPROCESSORS 132u
#define MAX_THREADS_PER_SM 2048u
#define MAX_BLOCKS_PER_SM 32u
#define MAX_PARAM_BYTES 32764u

/* ---- fault capture ------------------------------------------------------------ */

static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
#define NFAULTS (sizeof fault_signals / sizeof fault_signals[0])

/* The handler each of ours displaced; read by the handler, so swapped
 * atomically and never freed (it changes only if someone re-installs). */
static struct sigaction *previous[NFAULTS];
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t next_check_ns;

static __thread sigjmp_buf *tls_jump;
static __thread volatile sig_atomic_t tls_in_kernel;
static __thread volatile sig_atomic_t tls_signal;

static void on_fault(int sig, siginfo_t *info, void *uctx) {
  /* si_code > 0: raised by the hardware, not sent with kill(). */
  if (tls_in_kernel && info && info->si_code > 0) {
    tls_in_kernel = 0;
    tls_signal = sig;
    siglongjmp(*tls_jump, 1);
  }
  struct sigaction *prev = NULL;
  for (size_t i = 0; i < NFAULTS; i++) {
    if (fault_signals[i] == sig) prev = __atomic_load_n(&previous[i], __ATOMIC_ACQUIRE);
  }
  if (prev && (prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
    prev->sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  /* Default action: the faulting instruction runs again and kills the
   * process as if we had never been there. */
  signal(sig, SIG_DFL);
  if (!info || info->si_code <= 0) raise(sig);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Make sure our handler is the one installed. Checked again every 100 ms, so
 * a handler installed later in the process (Python's faulthandler, as pytest
 * enables) is chained to instead of reporting a caught kernel fault as a
 * crash first. */
static void ensure_handlers(void) {
  uint64_t now = now_ns();
  if (now < __atomic_load_n(&next_check_ns, __ATOMIC_RELAXED)) return;
  pthread_mutex_lock(&install_lock);
  for (size_t i = 0; i < NFAULTS; i++) {
    struct sigaction cur;
    if (sigaction(fault_signals[i], NULL, &cur) != 0) continue;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_fault) continue;
    struct sigaction *saved = malloc(sizeof *saved);
    if (!saved) continue;
    *saved = cur;
    __atomic_store_n(&previous[i], saved, __ATOMIC_RELEASE);
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_fault;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&ours.sa_mask);
    sigaction(fault_signals[i], &ours, NULL);
  }
  __atomic_store_n(&next_check_ns, now + 100000000u, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&install_lock);
}

/* Each thread that runs kernels gets its own alternate signal stack, so a
 * kernel that overflows its stack is caught too. */
static pthread_once_t altstack_once = PTHREAD_ONCE_INIT;
static pthread_key_t altstack_key;
static __thread bool tls_altstack;

static void altstack_free(void *mem) {
  stack_t off = {.ss_flags = SS_DISABLE};
  sigaltstack(&off, NULL);
  free(mem);
}

static void altstack_make_key(void) { pthread_key_create(&altstack_key, altstack_free); }

static void ensure_altstack(void) {
  if (tls_altstack) return;
  tls_altstack = true;
  stack_t cur;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return; /* has one */
  size_t size = 64 * 1024;
  void *mem = malloc(size);
  if (!mem) return;
  stack_t st = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
  if (sigaltstack(&st, NULL) != 0) {
    free(mem);
    return;
  }
  pthread_once(&altstack_once, altstack_make_key);
  pthread_setspecific(altstack_key, mem);
}

static CUresult fault_code(int sig) {
  switch (sig) {
  case SIGSEGV:
  case SIGBUS: return CUDA_ERROR_ILLEGAL_ADDRESS;
  case SIGILL: return CUDA_ERROR_ILLEGAL_INSTRUCTION;
  default: return CUDA_ERROR_LAUNCH_FAILED;
  }
}

static CUresult ptx_code(ptx_status st) {
  switch (st) {
  case PTX_OK: return CUDA_SUCCESS;
  case PTX_ILLEGAL_ADDRESS: return CUDA_ERROR_ILLEGAL_ADDRESS;
  case PTX_MISALIGNED: return CUDA_ERROR_MISALIGNED_ADDRESS;
  case PTX_NO_MEMORY: return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
  case PTX_ASSERT: return CUDA_ERROR_ASSERT;
  default: return CUDA_ERROR_ILLEGAL_INSTRUCTION;
  }
}

/* FAKE_CUDA_PTX_STATS=1: log how many instructions each PTX launch executed
 * (bench/ptx.py reads them). */
static bool stats_enabled(void) {
  static int enabled = -1;
  int e = __atomic_load_n(&enabled, __ATOMIC_RELAXED);
  if (e < 0) {
    const char *v = getenv("FAKE_CUDA_PTX_STATS");
    e = v && strcmp(v, "1") == 0;
    __atomic_store_n(&enabled, e, __ATOMIC_RELAXED);
  }
  return e;
}

/* A PTX kernel (no run function): the interpreter, whose per-launch memory
 * is freed whether it returns or faults. */
static CUresult run_ptx(const fk_ptx_kernel *k, fk_dim3 grid, fk_dim3 block, unsigned shared_bytes,
                        void **params) {
  const unsigned char *base =
      k->info.nparams ? (const unsigned char *)params[0] - k->info.params[0].offset : NULL;
  ptx_scratch scratch = {0};
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1)) {
    ptx_scratch_free(&scratch);
    return fault_code(tls_signal);
  }
  tls_jump = &jump;
  tls_in_kernel = 1;
  ptx_status st = ptx_run(k->ptx, k->index, (ptx_dim3){grid.x, grid.y, grid.z},
                          (ptx_dim3){block.x, block.y, block.z}, shared_bytes, base, &scratch);
  tls_in_kernel = 0;
  ptx_scratch_free(&scratch);
  if (stats_enabled()) {
    fk_log("ptx stats: %s warp_instructions=%llu thread_instructions=%llu", k->info.name,
           (unsigned long long)scratch.warp_instructions,
           (unsigned long long)scratch.thread_instructions);
  }
  return ptx_code(st);
}

CUresult fk_kernel_run(const fk_kernel_info *k, const fk_dim3 grid, const fk_dim3 block,
                       unsigned shared_bytes, void **params) {
  ensure_handlers();
  ensure_altstack();
  if (!k->run) return run_ptx((const fk_ptx_kernel *)k, grid, block, shared_bytes, params);
  /* host-module kernels have no shared memory (fake_cuda_kernel.h) */
  unsigned long long blocks = (unsigned long long)grid.x * grid.y * grid.z;
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1)) return fault_code(tls_signal);
  tls_jump = &jump;
  tls_in_kernel = 1;
  k->run(params, grid, block, 0, blocks);
  tls_in_kernel = 0;
  return CUDA_SUCCESS;
}

/* ---- the launch op -------------------------------------------------------------- */

typedef struct {
  const fk_kernel_info *kernel;
  fk_dim3 grid, block;
  unsigned shared;
  void **params; /* into op->heap */
} launch;

static void launch_run(fk_op *op) {
  launch *l = (launch *)op->payload;
  /* A poisoned context runs no more kernels, as on a GPU. */
  if (__atomic_load_n(&op->ctx->sticky, __ATOMIC_ACQUIRE)) return;
  CUresult rc = fk_kernel_run(l->kernel, l->grid, l->block, l->shared, l->params);
  if (rc) {
    CUresult none = CUDA_SUCCESS;
    __atomic_compare_exchange_n(&op->ctx->sticky, &none, rc, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
  }
}

/* Copy the arguments into one block: the pointer array, then the packed
 * argument buffer laid out as on the device. */
static CUresult copy_args(const fk_kernel_info *k, void **kernelParams, void **extra, void **heap,
                          void ***params) {
  const void *packed = NULL;
  if (kernelParams && extra) return CUDA_ERROR_INVALID_VALUE;
  if (extra) {
    const void *buffer = NULL;
    const size_t *size = NULL;
    for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
      if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
        buffer = extra[i + 1];
      } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
        size = extra[i + 1];
      } else {
        return CUDA_ERROR_INVALID_VALUE;
      }
    }
    if (k->nparams && (!buffer || !size)) return CUDA_ERROR_INVALID_VALUE;
    /* A buffer may be longer than the parameters (sizeof a struct counts
     * its trailing padding) but not shorter, nor past the 32764 bytes a
     * kernel's parameters may take. */
    if (size && (*size < k->params_size || *size > MAX_PARAM_BYTES)) return CUDA_ERROR_INVALID_VALUE;
    packed = buffer;
  } else if (k->nparams && !kernelParams) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  size_t ptrs = ((size_t)k->nparams * sizeof(void *) + 15) & ~(size_t)15;
  unsigned char *mem = aligned_alloc(16, ptrs + ((k->params_size + 15) & ~(size_t)15) + 16);
  if (!mem) return CUDA_ERROR_OUT_OF_MEMORY;
  void **p = (void **)mem;
  unsigned char *buf = mem + ptrs;
  for (int i = 0; i < k->nparams; i++) {
    const fk_param_info *pi = &k->params[i];
    const void *src = packed ? (const unsigned char *)packed + pi->offset : kernelParams[i];
    if (!src) {
      free(mem);
      return CUDA_ERROR_INVALID_VALUE;
    }
    memcpy(buf + pi->offset, src, pi->size);
    p[i] = buf + pi->offset;
  }
  *heap = mem;
  *params = p;
  return CUDA_SUCCESS;
}

static bool dims_valid(fk_dim3 g, fk_dim3 b) {
  if (!g.x || !g.y || !g.z || !b.x || !b.y || !b.z) return false;
  if (g.x > MAX_GRID_X || g.y > MAX_GRID_YZ || g.z > MAX_GRID_YZ) return false;
  if (b.x > MAX_BLOCK_X || b.y > MAX_BLOCK_Y || b.z > MAX_BLOCK_Z) return false;
  return (unsigned long long)b.x * b.y * b.z <= MAX_THREADS_PER_BLOCK;
}

static CUresult do_launch(CUfunction f, fk_dim3 grid, fk_dim3 block, unsigned shared,
                          CUstream hStream, void **kernelParams, void **extra, bool cooperative) {
  fk_ctx *c;
  fk_stream *s;
  CUresult rc = fk_work_stream(hStream, &c, &s);
  if (rc) return rc;
  fk_function *fn;
  rc = fk_function_resolve(f, c, &fn);
  if (rc) return rc;
  if (!dims_valid(grid, block)) return CUDA_ERROR_INVALID_VALUE;
  if (shared > (unsigned)__atomic_load_n(&fn->max_dynamic_shared, __ATOMIC_RELAXED))
    return CUDA_ERROR_INVALID_VALUE;
  if (cooperative) { /* every block must be resident at once */
    unsigned threads = block.x * block.y * block.z;
    unsigned per_sm = MAX_THREADS_PER_SM / threads;
    if (per_sm > MAX_BLOCKS_PER_SM) per_sm = MAX_BLOCKS_PER_SM;
    if ((unsigned long long)grid.x * grid.y * grid.z > (unsigned long long)per_sm * MULTIPROCESSORS)
      return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
  }
  fk_op *op = fk_op_new(launch_run, sizeof(launch));
  if (!op) return CUDA_ERROR_OUT_OF_MEMORY;
  launch *l = (launch *)op->payload;
  rc = copy_args(fn->kernel, kernelParams, extra, &op->heap, &l->params);
  if (rc) {
    free(op);
    return rc;
  }
  l->kernel = fn->kernel;
  l->grid = grid;
  l->block = block;
  l->shared = shared;
  fk_stream_submit(s, op, NULL);
  return CUDA_SUCCESS;
}

CUresult fake_cuLaunchKernel_4000(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                  unsigned int gridDimZ, unsigned int blockDimX,
                                  unsigned int blockDimY, unsigned int blockDimZ,
                                  unsigned int sharedMemBytes, CUstream hStream,
                                  void **kernelParams, void **extra) {
  return do_launch(f, (fk_dim3){gridDimX, gridDimY, gridDimZ},
                   (fk_dim3){blockDimX, blockDimY, blockDimZ}, sharedMemBytes, hStream,
                   kernelParams, extra, false);
}

CUresult fake_cuLaunchCooperativeKernel_9000(CUfunction f, unsigned int gridDimX,
                                             unsigned int gridDimY, unsigned int gridDimZ,
                                             unsigned int blockDimX, unsigned int blockDimY,
                                             unsigned int blockDimZ, unsigned int sharedMemBytes,
                                             CUstream hStream, void **kernelParams) {
  return do_launch(f, (fk_dim3){gridDimX, gridDimY, gridDimZ},
                   (fk_dim3){blockDimX, blockDimY, blockDimZ}, sharedMemBytes, hStream,
                   kernelParams, NULL, true);
}

CUresult fake_cuLaunchKernelEx_11060(const CUlaunchConfig *config, CUfunction f,
                                     void **kernelParams, void **extra) {
  if (!config || (config->numAttrs && !config->attrs)) return fk_invalid_work_arg();
  bool cooperative;
  CUresult rc = cu_launch_attrs_check(config, &cooperative);
  if (rc) return rc;
  return do_launch(f, (fk_dim3){config->gridDimX, config->gridDimY, config->gridDimZ},
                   (fk_dim3){config->blockDimX, config->blockDimY, config->blockDimZ},
                   config->sharedMemBytes, config->hStream, kernelParams, extra, cooperative);
}
