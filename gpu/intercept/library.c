/* Libraries (cuLibrary*) and their context-independent kernels (cuKernel*),
 * as cuda.core uses them, built on modules.
 *
 * A library keeps its image here and is loaded as a module into each context
 * on first use there (the driver's lazy loading; at load time too when a
 * context is current, so a refused image fails the load), so every context
 * has its own instance and globals. A CUkernel names a function by library
 * and name; wherever a launch takes a CUfunction it stands for its
 * library's instance in the current context. Anything that needs the
 * controller to know the kernel (existence, parameter layout, attributes)
 * needs a current context.
 */
#include "ic.h"

#include "launch_rules.h"

#include <stdlib.h>
#include <string.h>

/* Serialises instance loading, so a library is loaded once per context. */
static pthread_mutex_t instance_lock = PTHREAD_MUTEX_INITIALIZER;

static CUresult library_arg(ic_thread *t, CUlibrary h, ic_obj **out) {
  return ic_obj_arg(t, h, IC_LIBRARY, out);
}

static CUresult kernel_arg(ic_thread *t, CUkernel h, ic_obj **out) {
  return ic_obj_arg(t, h, IC_KERNEL, out);
}

/* The library's module in ctx, loaded on first use. */
static CUresult instance(ic_thread *t, ic_obj *l, ic_obj *ctx, ic_obj **out) {
  pthread_mutex_lock(&instance_lock);
  pthread_mutex_lock(&ic_obj_lock);
  for (ic_instance **p = &l->u.l.instances; *p;) {
    ic_instance *i = *p;
    ic_obj *m = ic_obj_get(i->module, IC_MODULE);
    if (!m) { /* its context was torn down */
      *p = i->next;
      free(i);
      continue;
    }
    if (i->ctx == ctx->handle) {
      pthread_mutex_unlock(&ic_obj_lock);
      pthread_mutex_unlock(&instance_lock);
      *out = m;
      return CUDA_SUCCESS;
    }
    p = &i->next;
  }
  pthread_mutex_unlock(&ic_obj_lock);
  ic_instance *i = malloc(sizeof *i);
  CUresult rc = i ? ic_enter(t) : CUDA_ERROR_OUT_OF_MEMORY;
  ic_obj *m = NULL;
  if (!rc) {
    rc = ic_module_load(t, ctx, l->u.l.image, l->u.l.size, l->handle, &m);
    ic_leave();
  }
  if (rc) {
    free(i);
    pthread_mutex_unlock(&instance_lock);
    return rc;
  }
  i->ctx = ctx->handle;
  i->module = m->handle;
  pthread_mutex_lock(&ic_obj_lock);
  i->next = l->u.l.instances;
  l->u.l.instances = i;
  pthread_mutex_unlock(&ic_obj_lock);
  pthread_mutex_unlock(&instance_lock);
  *out = m;
  return CUDA_SUCCESS;
}

CUresult ic_kernel_function(ic_thread *t, ic_obj *k, ic_obj *ctx, ic_obj **out) {
  ic_obj *l = ic_obj_get(k->u.k.library, IC_LIBRARY);
  if (!l) return CUDA_ERROR_INVALID_HANDLE;
  ic_obj *m, *f;
  CUresult rc = instance(t, l, ctx, &m);
  if (!rc) rc = ic_module_get_function(t, m, k->u.k.name, &f);
  if (rc) return rc;
  /* An attribute set on the kernel holds in every context. */
  int shared = __atomic_load_n(&k->u.k.max_dynamic_shared, __ATOMIC_ACQUIRE);
  if (shared >= 0 && __atomic_load_n(&f->u.f.max_dynamic_shared, __ATOMIC_ACQUIRE) != shared) {
    rc = ic_cuFuncSetAttribute_9000((CUfunction)(uintptr_t)f->handle,
                                    CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared);
    if (rc) return rc;
  }
  *out = f;
  return CUDA_SUCCESS;
}

/* ---- loading and unloading ------------------------------------------------------- */

static CUresult options_ok(unsigned int njit, CUjit_option *jit, void **jit_values, unsigned int nlib,
                           CUlibraryOption *lib, void **lib_values) {
  if (njit && (!jit || !jit_values)) return CUDA_ERROR_INVALID_VALUE;
  if (nlib && (!lib || !lib_values)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < nlib; i++)
    if ((unsigned)lib[i] >= CU_LIBRARY_NUM_OPTIONS) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

static CUresult load_library(CUlibrary *library, const void *bytes, size_t size) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  /* As the driver: nothing before cuInit (a handle needs the job's region). */
  CUresult init = ic_need_init();
  if (init) return init;
  void *copy = malloc(size);
  if (!copy) return CUDA_ERROR_OUT_OF_MEMORY;
  memcpy(copy, bytes, size);
  ic_obj *l = ic_obj_new(IC_LIBRARY, 0);
  if (!l) {
    free(copy);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  l->u.l.image = copy;
  l->u.l.size = size;
  ic_obj *ctx;
  if (t && ic_need_ctx(t, &ctx) == CUDA_SUCCESS) {
    ic_obj *m;
    CUresult rc = instance(t, l, ctx, &m);
    if (rc) {
      __atomic_store_n(&l->state, IC_DESTROYED, __ATOMIC_RELEASE);
      return rc;
    }
  }
  *library = (CUlibrary)(uintptr_t)l->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuLibraryLoadData_12000(CUlibrary *library, const void *code, CUjit_option *jitOptions,
                                    void **jitOptionsValues, unsigned int numJitOptions,
                                    CUlibraryOption *libraryOptions, void **libraryOptionValues,
                                    unsigned int numLibraryOptions) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!library || !code) return CUDA_ERROR_INVALID_VALUE;
  rc = options_ok(numJitOptions, jitOptions, jitOptionsValues, numLibraryOptions, libraryOptions,
                  libraryOptionValues);
  if (rc) return rc;
  const void *bytes;
  size_t size;
  rc = ic_image_of(code, &bytes, &size);
  if (!rc) rc = load_library(library, bytes, size);
  if (!rc) ic_jit_outputs(numJitOptions, jitOptions, jitOptionsValues);
  return rc;
}

CUresult ic_cuLibraryLoadFromFile_12000(CUlibrary *library, const char *fileName,
                                        CUjit_option *jitOptions, void **jitOptionsValues,
                                        unsigned int numJitOptions, CUlibraryOption *libraryOptions,
                                        void **libraryOptionValues,
                                        unsigned int numLibraryOptions) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!library || !fileName) return CUDA_ERROR_INVALID_VALUE;
  rc = options_ok(numJitOptions, jitOptions, jitOptionsValues, numLibraryOptions, libraryOptions,
                  libraryOptionValues);
  if (rc) return rc;
  void *bytes;
  size_t size;
  rc = ic_read_image(fileName, &bytes, &size);
  if (rc) return rc;
  rc = load_library(library, bytes, size);
  free(bytes);
  if (!rc) ic_jit_outputs(numJitOptions, jitOptions, jitOptionsValues);
  return rc;
}

CUresult ic_cuLibraryUnload_12000(CUlibrary library) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = library_arg(t, library, &l);
  if (rc) return rc;
  if (__atomic_exchange_n(&l->state, IC_DESTROYED, __ATOMIC_ACQ_REL) != IC_ALIVE)
    return CUDA_ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&instance_lock);
  pthread_mutex_lock(&ic_obj_lock);
  ic_instance *list = l->u.l.instances;
  l->u.l.instances = NULL;
  for (ic_obj *k = l->u.l.kernels; k; k = k->u.k.next)
    __atomic_store_n(&k->state, IC_DESTROYED, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&ic_obj_lock);
  pthread_mutex_unlock(&instance_lock);
  /* The controller waits for queued work that may still run its kernels. */
  while (list) {
    ic_instance *next = list->next;
    ic_obj *m = ic_obj_get(list->module, IC_MODULE);
    if (m) {
      CUresult r2 = ic_module_unload(t, m);
      if (!rc) rc = r2;
    }
    free(list);
    list = next;
  }
  return rc;
}

/* ---- library contents ------------------------------------------------------------- */

CUresult ic_cuLibraryGetKernel_12000(CUkernel *pKernel, CUlibrary library, const char *name) {
  ic_thread *t = ic_self();
  ic_obj *l;
  CUresult rc = library_arg(t, library, &l);
  if (rc) return rc;
  if (!pKernel || !name) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&ic_obj_lock);
  for (ic_obj *k = l->u.l.kernels; k; k = k->u.k.next) {
    if (strcmp(k->u.k.name, name) == 0) {
      pthread_mutex_unlock(&ic_obj_lock);
      *pKernel = (CUkernel)(uintptr_t)k->handle;
      return CUDA_SUCCESS;
    }
  }
  pthread_mutex_unlock(&ic_obj_lock);
  /* With a context current, the name is checked now (NOT_FOUND). */
  ic_obj *ctx, *m, *f;
  if (ic_need_ctx(t, &ctx) == CUDA_SUCCESS) {
    rc = instance(t, l, ctx, &m);
    if (!rc) rc = ic_module_get_function(t, m, name, &f);
    if (rc) return rc;
  }
  char *copy = strdup(name);
  ic_obj *k = copy ? ic_obj_new(IC_KERNEL, 0) : NULL;
  if (!k) {
    free(copy);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  k->u.k.library = l->handle;
  k->u.k.name = copy;
  k->u.k.max_dynamic_shared = -1;
  pthread_mutex_lock(&ic_obj_lock);
  for (ic_obj *g = l->u.l.kernels; g; g = g->u.k.next) { /* another thread may have won */
    if (strcmp(g->u.k.name, name) == 0) {
      pthread_mutex_unlock(&ic_obj_lock);
      __atomic_store_n(&k->state, IC_DESTROYED, __ATOMIC_RELEASE);
      *pKernel = (CUkernel)(uintptr_t)g->handle;
      return CUDA_SUCCESS;
    }
  }
  k->u.k.next = l->u.l.kernels;
  l->u.l.kernels = k;
  pthread_mutex_unlock(&ic_obj_lock);
  *pKernel = (CUkernel)(uintptr_t)k->handle;
  return CUDA_SUCCESS;
}

/* The library's instance in the current context. */
static CUresult current_instance(ic_thread *t, CUlibrary library, ic_obj **out) {
  ic_obj *l, *ctx;
  CUresult rc = library_arg(t, library, &l);
  if (!rc) rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  return instance(t, l, ctx, out);
}

CUresult ic_cuLibraryGetModule_12000(CUmodule *pMod, CUlibrary library) {
  ic_obj *m;
  CUresult rc = current_instance(ic_self(), library, &m);
  if (rc) return rc;
  if (!pMod) return CUDA_ERROR_INVALID_VALUE;
  *pMod = (CUmodule)(uintptr_t)m->handle;
  return CUDA_SUCCESS;
}

CUresult ic_cuLibraryGetGlobal_12000(CUdeviceptr *dptr, size_t *bytes, CUlibrary library,
                                     const char *name) {
  ic_obj *m;
  CUresult rc = current_instance(ic_self(), library, &m);
  if (rc) return rc;
  return ic_cuModuleGetGlobal_3020(dptr, bytes, (CUmodule)(uintptr_t)m->handle, name);
}

/* ---- kernels -------------------------------------------------------------------------- */

/* The kernel's function in the current context. */
static CUresult current_function(ic_thread *t, ic_obj *k, ic_obj **out) {
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  return ic_kernel_function(t, k, ctx, out);
}

CUresult ic_cuKernelGetFunction_12000(CUfunction *pFunc, CUkernel kernel) {
  ic_thread *t = ic_self();
  ic_obj *k, *f;
  CUresult rc = kernel_arg(t, kernel, &k);
  if (rc) return rc;
  if (!pFunc) return CUDA_ERROR_INVALID_VALUE;
  rc = current_function(t, k, &f);
  if (!rc) *pFunc = (CUfunction)(uintptr_t)f->handle;
  return rc;
}

CUresult ic_cuKernelGetLibrary_12050(CUlibrary *pLib, CUkernel kernel) {
  ic_obj *k;
  CUresult rc = kernel_arg(ic_self(), kernel, &k);
  if (rc) return rc;
  if (!pLib) return CUDA_ERROR_INVALID_VALUE;
  *pLib = (CUlibrary)(uintptr_t)k->u.k.library;
  return CUDA_SUCCESS;
}

CUresult ic_cuKernelGetName_12030(const char **name, CUkernel hfunc) {
  ic_obj *k;
  /* No kernel at all is an invalid value to the driver (see cuFuncGetName). */
  CUresult rc = hfunc ? kernel_arg(ic_self(), hfunc, &k) : ic_need_thread(ic_self());
  if (!rc && !hfunc) rc = CUDA_ERROR_INVALID_VALUE;
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  *name = k->u.k.name;
  return CUDA_SUCCESS;
}

CUresult ic_cuKernelGetParamInfo_12040(CUkernel kernel, size_t paramIndex, size_t *paramOffset,
                                       size_t *paramSize) {
  ic_thread *t = ic_self();
  ic_obj *k, *f;
  CUresult rc = kernel_arg(t, kernel, &k);
  if (!rc) rc = current_function(t, k, &f);
  if (rc) return rc;
  return ic_cuFuncGetParamInfo_12040((CUfunction)(uintptr_t)f->handle, paramIndex, paramOffset,
                                     paramSize);
}

static CUresult device_arg(CUdevice dev) {
  return dev >= 0 && dev < ic.device_count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult ic_cuKernelGetAttribute_12000(int *pi, CUfunction_attribute attrib, CUkernel kernel,
                                       CUdevice dev) {
  ic_thread *t = ic_self();
  ic_obj *k, *f;
  CUresult rc = kernel_arg(t, kernel, &k);
  if (!rc) rc = device_arg(dev);
  if (rc) return rc;
  if (!pi) return CUDA_ERROR_INVALID_VALUE;
  int shared = __atomic_load_n(&k->u.k.max_dynamic_shared, __ATOMIC_ACQUIRE);
  if (attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES && shared >= 0) {
    *pi = shared;
    return CUDA_SUCCESS;
  }
  rc = current_function(t, k, &f);
  if (rc) return rc;
  return ic_cuFuncGetAttribute_2020(pi, attrib, (CUfunction)(uintptr_t)f->handle);
}

/* Applies to the kernel's function in every context, now and later. */
CUresult ic_cuKernelSetAttribute_12000(CUfunction_attribute attrib, int val, CUkernel kernel,
                                       CUdevice dev) {
  ic_thread *t = ic_self();
  ic_obj *k;
  CUresult rc = kernel_arg(t, kernel, &k);
  if (!rc) rc = device_arg(dev);
  if (rc) return rc;
  ic_obj *l = ic_obj_get(k->u.k.library, IC_LIBRARY);
  if (!l) return CUDA_ERROR_INVALID_HANDLE;
  /* Every context the library is loaded in (without the lock while asking
   * the controller: collect the modules first). */
  uint64_t mods[64];
  int n = 0;
  pthread_mutex_lock(&ic_obj_lock);
  for (ic_instance *i = l->u.l.instances; i && n < 64; i = i->next) mods[n++] = i->module;
  pthread_mutex_unlock(&ic_obj_lock);
  bool applied = false;
  for (int i = 0; i < n; i++) {
    ic_obj *m = ic_obj_get(mods[i], IC_MODULE), *f;
    if (!m || ic_module_get_function(t, m, k->u.k.name, &f)) continue;
    rc = ic_cuFuncSetAttribute_9000((CUfunction)(uintptr_t)f->handle, attrib, val);
    if (rc) return rc;
    applied = true;
  }
  if (!applied) {
    /* Nowhere loaded yet: check the value as a function would. */
    if (attrib != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) return CUDA_ERROR_NOT_SUPPORTED;
    int optin =
        ic.h->devices[dev].attributes[CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN];
    if (val < 0 || val > optin) return CUDA_ERROR_INVALID_VALUE;
  }
  if (attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
    __atomic_store_n(&k->u.k.max_dynamic_shared, val, __ATOMIC_RELEASE);
  return CUDA_SUCCESS;
}

CUresult ic_cuKernelSetCacheConfig_12000(CUkernel kernel, CUfunc_cache config, CUdevice dev) {
  ic_obj *k;
  CUresult rc = kernel_arg(ic_self(), kernel, &k);
  if (!rc) rc = device_arg(dev);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}
