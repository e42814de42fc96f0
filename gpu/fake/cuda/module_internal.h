/* Shared between module.c (images, modules, functions) and library.c
 * (context-independent libraries and kernels). */
#ifndef CEDANA_FAKE_CUDA_MODULE_INTERNAL_H
#define CEDANA_FAKE_CUDA_MODULE_INTERNAL_H

#include "fake.h"
#include "../ptx/ptx.h"

/* Limits of the device the fake driver imitates (an H100/H200). */
#define FK_SHARED_DEFAULT 49152  /* dynamic shared memory without opting in */
#define FK_SHARED_OPTIN 232448   /* CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN */
#define FK_ARCH_VERSION 90       /* sm_90 */

typedef struct fk_library fk_library;

/* Settable function attributes (cuFuncSetAttribute, cuKernelSetAttribute). */
typedef struct fk_func_attrs {
  int max_dynamic_shared;
  int carveout; /* -1: no preference */
  int cluster[3];
  int non_portable_cluster;
  int scheduling_policy;
} fk_func_attrs;

typedef struct func_impl {
  fk_function pub; /* first: an fk_function pointer is a func_impl pointer */
  fk_func_attrs attrs;
} func_impl;

/* A PTX kernel as the rest of the driver sees kernels: its fk_kernel_info
 * has no run function (host modules always have one, see info_valid), which
 * tells fk_kernel_run to interpret it. */
typedef struct fk_ptx_kernel {
  fk_kernel_info info; /* first: an fk_kernel_info pointer is an fk_ptx_kernel pointer */
  const ptx_module *ptx;
  int index;
} fk_ptx_kernel;

/* What a PTX image loads into: the interpreter's module and the tables
 * describing it in the host-module format. */
typedef struct fk_ptx_image {
  ptx_module *ptx;
  fk_module_info info;
  fk_ptx_kernel *kernels;
  fk_param_info *params; /* every kernel's, one after another */
  fk_global_info *globals;
} fk_ptx_image;

typedef struct module_impl {
  fk_module pub;   /* first: an fk_module pointer is a module_impl pointer */
  fk_ptx_image *ptx; /* a PTX image, or NULL for a host module */
  func_impl *funcs; /* one per kernel, in the image's order */
  fk_library *lib;  /* the library this is the per-context instance of, or NULL */
  char path[40];    /* what dlopen was given */
  struct module_impl *next; /* on fk_modules, guarded by fk_modules_lock */
} module_impl;

/* Every module loaded into a context (libraries' instances included). */
FK_HIDDEN extern pthread_mutex_t fk_modules_lock;
FK_HIDDEN extern module_impl *fk_modules;

FK_HIDDEN void fk_func_attrs_default(fk_func_attrs *a);
FK_HIDDEN CUresult fk_func_attr_get(const fk_func_attrs *a, CUfunction_attribute attrib, int *pi);
FK_HIDDEN CUresult fk_func_attr_set(fk_func_attrs *a, CUfunction_attribute attrib, int value);
/* What a PTX kernel's code decides (static shared and local memory, registers):
 * true with *pi set, false for any other attribute or a host-module kernel. */
FK_HIDDEN bool fk_ptx_attr(const fk_kernel_info *k, CUfunction_attribute attrib, int *pi);

/* Decide whether image can be loaded: CUDA_SUCCESS with its size in bytes for
 * a fake module (a host shared object) or PTX text (its NUL included), or
 * the code the driver answers for what it is (cubin, fatbin without PTX,
 * garbage). `known` is the size when it is known (a file), else 0. */
FK_HIDDEN CUresult fk_image_check(const void *image, size_t known, size_t *size);
/* The PTX text of an image fk_image_check accepted, or NULL for a host module. */
FK_HIDDEN const char *fk_image_ptx(const void *image, size_t size);
/* A fatbin's size from its header (0 if image is not a whole fatbin), and
 * the text of its best PTX entry, malloc'd (NULL if none can be read). */
FK_HIDDEN size_t fk_fatbin_size(const void *image, size_t known);
FK_HIDDEN char *fk_fatbin_ptx(const void *image, size_t size);
/* The last load failure's message for a JIT error log (thread-local). */
FK_HIDDEN const char *fk_image_error(void);
/* Read a whole file (CUDA_ERROR_FILE_NOT_FOUND if it cannot be opened). */
FK_HIDDEN CUresult fk_image_read_file(const char *path, void **bytes, size_t *size);
/* Load a checked image as a new, separate instance. With ctx NULL the module
 * only describes the image: no handles, no registered globals. */
FK_HIDDEN CUresult fk_image_load(fk_ctx *ctx, const void *image, size_t size, module_impl **out);
/* Put a loaded module on fk_modules (caller holds fk_modules_lock). */
FK_HIDDEN void fk_module_publish_locked(module_impl *m);
/* Free a module already taken off fk_modules, its work finished. */
FK_HIDDEN void fk_module_free(module_impl *m);
/* Apply JIT options: nothing to compile, but outputs (log sizes, wall time)
 * are written back as the driver does. */
FK_HIDDEN CUresult fk_jit_options(unsigned int n, CUjit_option *options, void **values);

/* The JIT error log buffer of an option array, found before fk_jit_options
 * writes its outputs, and filled with the load's message when a PTX image is
 * refused (the driver's log of a failed compile). */
typedef struct fk_jit_log {
  char *buf;
  size_t size;
  void **size_slot;
} fk_jit_log;
FK_HIDDEN CUresult fk_jit_log_find(unsigned int n, const CUjit_option *options, void **values,
                                   fk_jit_log *log);
FK_HIDDEN void fk_jit_log_write(const fk_jit_log *log, CUresult rc);

#endif
