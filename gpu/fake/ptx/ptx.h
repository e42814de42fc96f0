/* PTX for the fake CUDA driver: a parser and a SIMT interpreter.
 *
 * Why an interpreter and not a PTX->C translation compiled at load time:
 * - the fake driver ships in the wheel and runs where no C compiler exists
 *   (a job's container); a translation would make every PTX load depend on
 *   one, and on a cache directory that CRIU must find again at restore;
 * - CUDA's semantics that a translation would have to rebuild anyway (threads
 *   of a block that wait for each other at bar.sync, warps whose lanes
 *   exchange registers with shfl/vote, divergence and reconvergence) are
 *   direct in an interpreter that runs a warp's 32 lanes in lockstep;
 * - the decode cost is paid once per instruction per warp, not per thread:
 *   each instruction runs as a tight loop over the lanes of the warp (its
 *   register operands are arrays of 32 values), which keeps an interpreter
 *   within a small factor of compiled code for the kernels CI runs;
 * - every instruction is checked when the module is loaded, so one that is
 *   not implemented is refused then, with its name, and never mis-executed.
 *
 * Divergence: each lane has its own pc; the warp runs the lanes at the
 * lowest pc together ("min-pc" scheduling), which reconverges structured
 * control flow (if/else, loops) at its join points, as the hardware does.
 * bar.sync parks lanes until every live thread of the block has arrived;
 * warp-synchronous instructions (shfl.sync, vote.sync, ...) park lanes until
 * every lane of their member mask has arrived at the same instruction.
 * A group that keeps branching backwards (spinning on a lock another lane
 * holds, on a flag another warp sets) hands over to the lanes ahead or to
 * another warp after a while, as Volta's independent thread scheduling lets
 * such code progress.
 */
#ifndef CEDANA_FAKE_PTX_H
#define CEDANA_FAKE_PTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ptx_module ptx_module;

typedef struct ptx_param {
  size_t offset;
  size_t size;
} ptx_param;

typedef struct ptx_global {
  const char *name;
  void *addr; /* storage owned by the module (.global and .const variables) */
  size_t size;
} ptx_global;

/* Parse and check a PTX text. On failure returns NULL and writes a message
 * into err; *invalid says whether the text is not valid PTX (true) or valid
 * PTX using something this interpreter does not implement (false). */
ptx_module *ptx_module_load(const char *text, char *err, size_t errlen, bool *invalid);
void ptx_module_free(ptx_module *m);

int ptx_kernel_count(const ptx_module *m);
const char *ptx_kernel_name(const ptx_module *m, int k);
int ptx_kernel_nparams(const ptx_module *m, int k);
const ptx_param *ptx_kernel_params(const ptx_module *m, int k);
size_t ptx_kernel_params_size(const ptx_module *m, int k);
size_t ptx_kernel_static_shared(const ptx_module *m, int k);
size_t ptx_kernel_local_size(const ptx_module *m, int k);
int ptx_kernel_nregs(const ptx_module *m, int k);
int ptx_global_count(const ptx_module *m);
const ptx_global *ptx_globals(const ptx_module *m);

typedef enum ptx_status {
  PTX_OK = 0,
  PTX_ILLEGAL_ADDRESS, /* an access outside shared/local/param windows */
  PTX_TRAP,            /* trap / brkpt */
  PTX_NO_MEMORY,
  PTX_MISALIGNED,
  PTX_ASSERT, /* a device-side assert() failed (__assertfail) */
} ptx_status;

typedef struct ptx_dim3 {
  unsigned x, y, z;
} ptx_dim3;

/* Run blocks [first, last) of a grid on the calling thread. params points
 * to the packed parameter buffer (offsets as ptx_kernel_params says). A bad
 * global address faults (SIGSEGV) as a host module's kernel would; the
 * caller catches that. Memory the interpreter allocates is registered in
 * *scratch so that a caller that longjmps out of a fault can free it with
 * ptx_scratch_free. */
typedef struct ptx_scratch {
  void *blocks; /* per-block state */
  /* Instructions executed: once per warp, and once per thread that issued
   * it (what the benchmark counts; FAKE_CUDA_PTX_STATS=1 logs them). */
  uint64_t warp_instructions, thread_instructions;
} ptx_scratch;

ptx_status ptx_run(const ptx_module *m, int k, ptx_dim3 grid, ptx_dim3 block, unsigned dyn_shared,
                   const void *params, ptx_scratch *scratch);
void ptx_scratch_free(ptx_scratch *s);

#endif
