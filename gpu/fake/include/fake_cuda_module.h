/* The module format of the fake CUDA driver.
 *
 * A module for the fake driver is a host shared object built from the same
 * CUDA C source as the real kernels (see fake_cuda_kernel.h and
 * gen_module.py). It exports one symbol, `fake_cuda_module`, describing its
 * kernels (with the parameter layout cuFuncGetParamInfo answers) and its
 * __device__ globals. The fake driver loads it with dlopen and runs kernels
 * on the CPU.
 */
#ifndef CEDANA_FAKE_CUDA_MODULE_H
#define CEDANA_FAKE_CUDA_MODULE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FK_MODULE_MAGIC 0x4b4d4b46u /* "FKMK" */
#define FK_MODULE_ABI 1
#define FK_MODULE_SYMBOL "fake_cuda_module"

typedef struct fk_dim3 {
  unsigned x, y, z;
} fk_dim3;

typedef struct fk_param_info {
  size_t offset; /* offset in the packed argument buffer (the `extra` form) */
  size_t size;
} fk_param_info;

/* Runs blocks [first_block, last_block) of the grid (blocks numbered x
 * fastest), every thread of each block in turn. params[i] points to the
 * bytes of parameter i. */
typedef void (*fk_kernel_run_fn)(void *const *params, fk_dim3 grid, fk_dim3 block,
                                 unsigned long long first_block, unsigned long long last_block);

typedef struct fk_kernel_info {
  const char *name;
  int nparams;
  const fk_param_info *params;
  size_t params_size; /* size of the packed argument buffer */
  fk_kernel_run_fn run;
} fk_kernel_info;

typedef struct fk_global_info {
  const char *name;
  void *addr;
  size_t size;
} fk_global_info;

typedef struct fk_module_info {
  uint32_t magic;
  uint32_t abi;
  int nkernels;
  const fk_kernel_info *kernels;
  int nglobals;
  const fk_global_info *globals;
} fk_module_info;

#ifdef __cplusplus
}
#endif
#endif
