/* Libraries (cuLibrary*) and their context-independent kernels (cuKernel*),
 * as cuda.core uses them.
 *
 * A library keeps its image and loads a separate module instance into each
 * context on first use there (the driver's lazy loading), so every context
 * has its own globals. A CUkernel may be passed wherever a launch takes a
 * CUfunction: fk_function_resolve picks the current context's instance. A
 * description-only instance, loaded without a context, answers names and
 * parameter layouts without needing one. */
#include "module_internal.h"

#include "launch_rules.h"

#include <stdlib.h>
#include <string.h>

typedef struct lib_kernel {
  fk_library *lib;
  int index;
  fk_func_attrs attrs; /* applied to every context's instance; guarded by fk_modules_lock */
} lib_kernel;

struct fk_library {
  void *image;
  size_t size;
  module_impl *meta;
  lib_kernel *kernels;
  int nkernels;
};

static const fk_kernel_info *kernel_info(const lib_kernel *k) {
  return k->lib->meta->funcs[k->index].pub.kernel;
}

/* The library's module in ctx, loaded on first use. */
static CUresult instance(fk_library *lib, fk_ctx *ctx, module_impl **out) {
  module_impl *m = NULL;
  pthread_mutex_lock(&fk_modules_lock);
  for (module_impl *x = fk_modules; x; x = x->next) {
    if (x->lib == lib && x->pub.ctx == ctx) m = x;
  }
  pthread_mutex_unlock(&fk_modules_lock);
  if (m) {
    *out = m;
    return CUDA_SUCCESS;
  }
  module_impl *fresh;
  CUresult rc = fk_image_load(ctx, lib->image, lib->size, &fresh);
  if (rc) return rc;
  fresh->lib = lib;
  pthread_mutex_lock(&fk_modules_lock);
  for (module_impl *x = fk_modules; x; x = x->next) { /* another thread may have won */
    if (x->lib == lib && x->pub.ctx == ctx) m = x;
  }
  if (!m) {
    for (int i = 0; i < lib->nkernels; i++) {
      fresh->funcs[i].attrs = lib->kernels[i].attrs;
      fresh->funcs[i].pub.max_dynamic_shared = lib->kernels[i].attrs.max_dynamic_shared;
    }
    fk_module_publish_locked(fresh);
    m = fresh;
    fresh = NULL;
  }
  pthread_mutex_unlock(&fk_modules_lock);
  if (fresh) fk_module_free(fresh);
  *out = m;
  return CUDA_SUCCESS;
}

CUresult fk_function_resolve(CUfunction h, fk_ctx *ctx, fk_function **out) {
  if (fk_handle_valid(h, FK_FUNCTION)) {
    fk_function *f = (fk_function *)h;
    if (f->mod->ctx != ctx) return CUDA_ERROR_INVALID_HANDLE;
    *out = f;
    return CUDA_SUCCESS;
  }
  if (fk_handle_valid(h, FK_KERNEL)) {
    lib_kernel *k = (lib_kernel *)h;
    module_impl *m;
    CUresult rc = instance(k->lib, ctx, &m);
    if (rc) return rc;
    *out = &m->funcs[k->index].pub;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_HANDLE;
}

/* ---- loading and unloading ------------------------------------------------------- */

static CUresult library_options(unsigned int n, CUlibraryOption *options, void **values) {
  if (n && (!options || !values)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < n; i++) {
    if ((unsigned)options[i] >= CU_LIBRARY_NUM_OPTIONS) return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

static CUresult load_library(CUlibrary *library, const void *code, size_t known,
                             CUjit_option *jitOptions, void **jitOptionsValues,
                             unsigned int numJitOptions, CUlibraryOption *libraryOptions,
                             void **libraryOptionValues, unsigned int numLibraryOptions) {
  CUresult rc = library_options(numLibraryOptions, libraryOptions, libraryOptionValues);
  if (rc) return rc;
  fk_jit_log log;
  fk_jit_log_find(numJitOptions, jitOptions, jitOptionsValues, &log);
  rc = fk_jit_options(numJitOptions, jitOptions, jitOptionsValues);
  if (rc) return rc;
  size_t size;
  rc = fk_image_check(code, known, &size);
  if (rc) return rc;
  fk_library *lib = calloc(1, sizeof *lib);
  if (!lib || !(lib->image = malloc(size))) {
    free(lib);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  memcpy(lib->image, code, size);
  lib->size = size;
  rc = fk_image_load(NULL, lib->image, size, &lib->meta);
  fk_jit_log_write(&log, rc);
  if (rc) {
    free(lib->image);
    free(lib);
    return rc;
  }
  lib->nkernels = lib->meta->pub.info->nkernels;
  if (lib->nkernels) {
    lib->kernels = calloc((size_t)lib->nkernels, sizeof *lib->kernels);
    if (!lib->kernels) {
      fk_module_free(lib->meta);
      free(lib->image);
      free(lib);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  for (int i = 0; i < lib->nkernels; i++) {
    lib->kernels[i].lib = lib;
    lib->kernels[i].index = i;
    fk_func_attrs_default(&lib->kernels[i].attrs);
    fk_handle_add(&lib->kernels[i], FK_KERNEL);
  }
  fk_handle_add(lib, FK_LIBRARY);
  *library = (CUlibrary)lib;
  return CUDA_SUCCESS;
}

static CUresult enter(void) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  return fk_need_init();
}

CUresult fake_cuLibraryLoadData_12000(CUlibrary *library, const void *code, CUjit_option *jitOptions,
                                      void **jitOptionsValues, unsigned int numJitOptions,
                                      CUlibraryOption *libraryOptions, void **libraryOptionValues,
                                      unsigned int numLibraryOptions) {
  CUresult rc = enter();
  if (rc) return rc;
  if (!library || !code) return CUDA_ERROR_INVALID_VALUE;
  return load_library(library, code, 0, jitOptions, jitOptionsValues, numJitOptions, libraryOptions,
                      libraryOptionValues, numLibraryOptions);
}

CUresult fake_cuLibraryLoadFromFile_12000(CUlibrary *library, const char *fileName,
                                          CUjit_option *jitOptions, void **jitOptionsValues,
                                          unsigned int numJitOptions,
                                          CUlibraryOption *libraryOptions,
                                          void **libraryOptionValues,
                                          unsigned int numLibraryOptions) {
  CUresult rc = enter();
  if (rc) return rc;
  if (!library || !fileName) return CUDA_ERROR_INVALID_VALUE;
  void *bytes;
  size_t size;
  rc = fk_image_read_file(fileName, &bytes, &size);
  if (rc) return rc;
  rc = size ? load_library(library, bytes, size, jitOptions, jitOptionsValues, numJitOptions,
                           libraryOptions, libraryOptionValues, numLibraryOptions)
            : CUDA_ERROR_INVALID_IMAGE;
  free(bytes);
  return rc;
}

static CUresult library_arg(CUlibrary h, fk_library **out) {
  CUresult rc = enter();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_LIBRARY)) return CUDA_ERROR_INVALID_HANDLE;
  *out = (fk_library *)h;
  return CUDA_SUCCESS;
}

CUresult fake_cuLibraryUnload_12000(CUlibrary library) {
  fk_library *lib;
  CUresult rc = library_arg(library, &lib);
  if (rc) return rc;
  fk_handle_remove(lib);
  for (int i = 0; i < lib->nkernels; i++) fk_handle_remove(&lib->kernels[i]);
  module_impl *gone = NULL;
  pthread_mutex_lock(&fk_modules_lock);
  for (module_impl **p = &fk_modules; *p;) {
    module_impl *m = *p;
    if (m->lib != lib) {
      p = &m->next;
      continue;
    }
    *p = m->next;
    m->next = gone;
    gone = m;
  }
  pthread_mutex_unlock(&fk_modules_lock);
  while (gone) {
    module_impl *next = gone->next;
    fk_ctx_synchronize(gone->pub.ctx); /* queued launches may still run its kernels */
    fk_module_free(gone);
    gone = next;
  }
  fk_module_free(lib->meta);
  free(lib->kernels);
  free(lib->image);
  free(lib);
  return CUDA_SUCCESS;
}

/* ---- library contents ------------------------------------------------------------- */

CUresult fake_cuLibraryGetKernel_12000(CUkernel *pKernel, CUlibrary library, const char *name) {
  fk_library *lib;
  CUresult rc = library_arg(library, &lib);
  if (rc) return rc;
  if (!pKernel || !name) return CUDA_ERROR_INVALID_VALUE;
  for (int i = 0; i < lib->nkernels; i++) {
    if (strcmp(kernel_info(&lib->kernels[i])->name, name) == 0) {
      *pKernel = (CUkernel)&lib->kernels[i];
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult fake_cuLibraryGetKernelCount_12040(unsigned int *count, CUlibrary lib) {
  fk_library *l;
  CUresult rc = library_arg(lib, &l);
  if (rc) return rc;
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  *count = (unsigned)l->nkernels;
  return CUDA_SUCCESS;
}

CUresult fake_cuLibraryEnumerateKernels_12040(CUkernel *kernels, unsigned int numKernels,
                                              CUlibrary lib) {
  fk_library *l;
  CUresult rc = library_arg(lib, &l);
  if (rc) return rc;
  if (!kernels) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < (unsigned)l->nkernels && i < numKernels; i++)
    kernels[i] = (CUkernel)&l->kernels[i];
  return CUDA_SUCCESS;
}

/* The library's instance in the current context. */
static CUresult current_instance(CUlibrary library, module_impl **out) {
  fk_library *lib;
  CUresult rc = library_arg(library, &lib);
  if (rc) return rc;
  fk_ctx *c;
  rc = fk_need_ctx(&c);
  if (rc) return rc;
  return instance(lib, c, out);
}

CUresult fake_cuLibraryGetModule_12000(CUmodule *pMod, CUlibrary library) {
  module_impl *m;
  CUresult rc = current_instance(library, &m);
  if (rc) return rc;
  if (!pMod) return CUDA_ERROR_INVALID_VALUE;
  *pMod = (CUmodule)m;
  return CUDA_SUCCESS;
}

CUresult fake_cuModuleGetGlobal_3020(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
                                     const char *name);

CUresult fake_cuLibraryGetGlobal_12000(CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
                                       const char *name) {
  module_impl *m;
  CUresult rc = current_instance(library, &m);
  if (rc) return rc;
  return fake_cuModuleGetGlobal_3020(dptr, bytes, (CUmodule)m, name);
}

/* ---- kernels -------------------------------------------------------------------------- */

static CUresult kernel_arg(CUkernel h, lib_kernel **out) {
  CUresult rc = enter();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_KERNEL)) return CUDA_ERROR_INVALID_HANDLE;
  *out = (lib_kernel *)h;
  return CUDA_SUCCESS;
}

CUresult fake_cuKernelGetFunction_12000(CUfunction *pFunc, CUkernel kernel) {
  lib_kernel *k;
  CUresult rc = kernel_arg(kernel, &k);
  if (rc) return rc;
  if (!pFunc) return CUDA_ERROR_INVALID_VALUE;
  fk_ctx *c;
  rc = fk_need_ctx(&c);
  if (rc) return rc;
  module_impl *m;
  rc = instance(k->lib, c, &m);
  if (rc) return rc;
  *pFunc = (CUfunction)&m->funcs[k->index];
  return CUDA_SUCCESS;
}

CUresult fake_cuKernelGetLibrary_12050(CUlibrary *pLib, CUkernel kernel) {
  lib_kernel *k;
  CUresult rc = kernel_arg(kernel, &k);
  if (rc) return rc;
  if (!pLib) return CUDA_ERROR_INVALID_VALUE;
  *pLib = (CUlibrary)k->lib;
  return CUDA_SUCCESS;
}

CUresult fake_cuKernelGetName_12030(const char **name, CUkernel hfunc) {
  lib_kernel *k;
  /* No kernel at all is an invalid value to the driver (see cuFuncGetName). */
  CUresult rc = hfunc ? kernel_arg(hfunc, &k) : enter();
  if (!rc && !hfunc) rc = CUDA_ERROR_INVALID_VALUE;
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  *name = kernel_info(k)->name;
  return CUDA_SUCCESS;
}

CUresult fake_cuKernelGetParamInfo_12040(CUkernel kernel, size_t paramIndex, size_t *paramOffset,
                                         size_t *paramSize) {
  lib_kernel *k;
  CUresult rc = kernel_arg(kernel, &k);
  if (rc) return rc;
  const fk_kernel_info *ki = kernel_info(k);
  if (!paramOffset || paramIndex >= (size_t)ki->nparams) return CUDA_ERROR_INVALID_VALUE;
  *paramOffset = ki->params[paramIndex].offset;
  if (paramSize) *paramSize = ki->params[paramIndex].size;
  return CUDA_SUCCESS;
}

/* The kernel and device arguments of the per-device kernel settings. */
static CUresult kernel_device_arg(CUkernel kernel, CUdevice dev, lib_kernel **out) {
  CUresult rc = kernel_arg(kernel, out);
  if (rc) return rc;
  return dev >= 0 && dev < fk_cfg.device_count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult fake_cuKernelGetAttribute_12000(int *pi, CUfunction_attribute attrib, CUkernel kernel,
                                         CUdevice dev) {
  lib_kernel *k;
  CUresult rc = kernel_device_arg(kernel, dev, &k);
  if (rc) return rc;
  if (fk_ptx_attr(kernel_info(k), attrib, pi)) return CUDA_SUCCESS;
  pthread_mutex_lock(&fk_modules_lock);
  rc = fk_func_attr_get(&k->attrs, attrib, pi);
  pthread_mutex_unlock(&fk_modules_lock);
  return rc;
}

CUresult fake_cuKernelSetAttribute_12000(CUfunction_attribute attrib, int val, CUkernel kernel,
                                         CUdevice dev) {
  lib_kernel *k;
  CUresult rc = kernel_device_arg(kernel, dev, &k);
  if (rc) return rc;
  pthread_mutex_lock(&fk_modules_lock);
  rc = fk_func_attr_set(&k->attrs, attrib, val);
  if (rc == CUDA_SUCCESS) { /* contexts that already have the kernel see it too */
    for (module_impl *m = fk_modules; m; m = m->next) {
      if (m->lib != k->lib) continue;
      m->funcs[k->index].attrs = k->attrs;
      __atomic_store_n(&m->funcs[k->index].pub.max_dynamic_shared, k->attrs.max_dynamic_shared,
                       __ATOMIC_RELAXED);
    }
  }
  pthread_mutex_unlock(&fk_modules_lock);
  return rc;
}

CUresult fake_cuKernelSetCacheConfig_12000(CUkernel kernel, CUfunc_cache config, CUdevice dev) {
  lib_kernel *k;
  CUresult rc = kernel_device_arg(kernel, dev, &k);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}
