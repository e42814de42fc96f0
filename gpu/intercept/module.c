/* Modules, functions, globals and kernel launches.
 *
 * A module image is uploaded through the staging area (BLOB_PUT pieces) and
 * loaded by the controller under a minted handle. A function is looked up
 * once per (module, name): the controller answers its parameter layout
 * (cuFuncGetParamInfo on its driver), which is cached with the handle, so a
 * launch packs `kernelParams` itself and sends the packed bytes.
 *
 * The launch is the hot path: no system call (unless the controller sleeps
 * and must be woken), no allocation, no lock beyond the ring's ticket
 * fetch-add.
 */
#include "ic.h"
#include "jit_options.h"
#include "launch_rules.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FATBIN_MAGIC 0xBA55ED50u
#define FATBIN_WRAPPER_MAGIC 0x466243B1u
/* Parameters of one kernel: far beyond what a driver accepts. */
#define MAX_PARAMS 4096
/* Bytes a kernel's parameters may take (CUDA 12.1 on). */
#define MAX_PARAM_BYTES 32764u

/* ---- image sizes -------------------------------------------------------------------
 * cuModuleLoadData gets a pointer and no size: the size follows from the
 * image's own headers, as the driver finds it. */

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t elf_size(const uint8_t *p) {
  size_t end = 0;
  if (p[EI_CLASS] == ELFCLASS64) {
    Elf64_Ehdr e;
    memcpy(&e, p, sizeof e);
    end = max_sz(sizeof e, e.e_shoff + (size_t)e.e_shnum * e.e_shentsize);
    end = max_sz(end, e.e_phoff + (size_t)e.e_phnum * e.e_phentsize);
    for (unsigned i = 0; e.e_phoff && e.e_phentsize >= sizeof(Elf64_Phdr) && i < e.e_phnum; i++) {
      Elf64_Phdr ph;
      memcpy(&ph, p + e.e_phoff + (size_t)i * e.e_phentsize, sizeof ph);
      end = max_sz(end, ph.p_offset + ph.p_filesz);
    }
  } else if (p[EI_CLASS] == ELFCLASS32) {
    Elf32_Ehdr e;
    memcpy(&e, p, sizeof e);
    end = max_sz(sizeof e, e.e_shoff + (size_t)e.e_shnum * e.e_shentsize);
    end = max_sz(end, e.e_phoff + (size_t)e.e_phnum * e.e_phentsize);
    for (unsigned i = 0; e.e_phoff && e.e_phentsize >= sizeof(Elf32_Phdr) && i < e.e_phnum; i++) {
      Elf32_Phdr ph;
      memcpy(&ph, p + e.e_phoff + (size_t)i * e.e_phentsize, sizeof ph);
      end = max_sz(end, (size_t)ph.p_offset + ph.p_filesz);
    }
  }
  return end;
}

static bool looks_like_text(const uint8_t *p) {
  for (int i = 0; i < 16 && p[i]; i++)
    if (p[i] < 0x09 || (p[i] > 0x0d && p[i] < 0x20) || p[i] > 0x7e) return false;
  return true;
}

/* The bytes of an image given by pointer; the fatbin wrapper of
 * cuModuleLoadFatBinary is followed to its fatbin. */
CUresult ic_image_of(const void *image, const void **bytes, size_t *size) {
  if (!image) return CUDA_ERROR_INVALID_VALUE;
  const uint8_t *p = image;
  uint32_t magic;
  memcpy(&magic, p, sizeof magic);
  if (magic == FATBIN_WRAPPER_MAGIC) {
    const void *data;
    memcpy(&data, p + 8, sizeof data); /* {int magic; int version; const void *data; ...} */
    if (!data) return CUDA_ERROR_INVALID_IMAGE;
    p = data;
    memcpy(&magic, p, sizeof magic);
  }
  if (memcmp(p, ELFMAG, SELFMAG) == 0) {
    *size = elf_size(p);
  } else if (magic == FATBIN_MAGIC) {
    uint16_t header_size;
    uint64_t fat_size;
    memcpy(&header_size, p + 6, sizeof header_size);
    memcpy(&fat_size, p + 8, sizeof fat_size);
    *size = (size_t)header_size + (size_t)fat_size;
  } else if (looks_like_text(p)) {
    *size = strlen((const char *)p) + 1; /* PTX */
  } else {
    return CUDA_ERROR_INVALID_IMAGE;
  }
  *bytes = p;
  return *size ? CUDA_SUCCESS : CUDA_ERROR_INVALID_IMAGE;
}

/* ---- loading -------------------------------------------------------------------- */

/* Send bytes as the channel's blob (BLOB_PUT pieces), for the request that
 * takes it next (a module load, a link input); called inside ic_enter. */
CUresult ic_blob_upload(ic_thread *t, uint64_t ctx, const void *img, size_t size) {
  cgs_channel *ch;
  CUresult rc = ic_channel(t, &ch);
  if (rc) return rc;
  for (size_t off = 0; off < size || off == 0;) {
    size_t k = size - off < ic.staging_size ? size - off : (size_t)ic.staging_size;
    memcpy(ic_staging(ch), (const uint8_t *)img + off, k);
    cgs_blob *b = (cgs_blob *)t->req;
    ic_req(b, CGS_OP_BLOB_PUT, sizeof *b, ctx);
    b->offset = off;
    b->size = k;
    b->total = size;
    rc = ic_call(t, b, NULL);
    if (rc) return rc;
    off += k;
    if (off >= size) break;
  }
  return CUDA_SUCCESS;
}

static CUresult upload_and_load(ic_thread *t, ic_obj *ctx, const void *img, size_t size,
                                uint64_t module) {
  CUresult rc = ic_blob_upload(t, ctx->handle, img, size);
  if (rc) return rc;
  cgs_module *r = (cgs_module *)t->req;
  ic_req(r, CGS_OP_MODULE_LOAD, sizeof *r, ctx->handle);
  r->handle = module;
  r->size = size;
  return ic_call(t, r, NULL);
}

CUresult ic_module_load(ic_thread *t, ic_obj *ctx, const void *img, size_t size, uint64_t library,
                        ic_obj **out) {
  ic_obj *m = ic_obj_new(IC_MODULE, ctx->handle);
  if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
  m->u.m.library = library;
  CUresult rc = upload_and_load(t, ctx, img, size, m->handle);
  if (rc) {
    __atomic_store_n(&m->state, IC_DESTROYED, __ATOMIC_RELEASE);
    return rc;
  }
  *out = m;
  return CUDA_SUCCESS;
}

static CUresult load_image(CUmodule *module, const void *img, size_t size) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!module) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  ic_obj *m;
  rc = ic_module_load(t, ctx, img, size, 0, &m);
  ic_leave();
  if (!rc) *module = (CUmodule)(uintptr_t)m->handle;
  return rc;
}

static CUresult load_data(CUmodule *module, const void *image) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!module) return CUDA_ERROR_INVALID_VALUE;
  const void *bytes;
  size_t size;
  rc = ic_image_of(image, &bytes, &size);
  if (rc) return rc;
  return load_image(module, bytes, size);
}

CUresult ic_cuModuleLoadData_2000(CUmodule *module, const void *image) {
  return load_data(module, image);
}

/* JIT options are not forwarded: the controller loads with its defaults.
 * Output options read as an empty log and no time spent (jit_options.h). */
void ic_jit_outputs(unsigned int n, const CUjit_option *options, void **values) {
  cu_jit_write_outputs(n, options, values);
}

CUresult ic_cuModuleLoadDataEx_2010(CUmodule *module, const void *image, unsigned int numOptions,
                                    CUjit_option *options, void **optionValues) {
  if (numOptions && (!options || !optionValues)) {
    ic_obj *ctx;
    CUresult rc = ic_need_ctx(ic_self(), &ctx);
    return rc ? rc : CUDA_ERROR_INVALID_VALUE;
  }
  CUresult rc = load_data(module, image);
  if (!rc) ic_jit_outputs(numOptions, options, optionValues);
  return rc;
}

CUresult ic_read_image(const char *fname, void **bytes, size_t *out_size) {
  int fd = open(fname, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOMEM ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_FILE_NOT_FOUND;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return CUDA_ERROR_FILE_NOT_FOUND;
  }
  size_t size = (size_t)st.st_size;
  /* One byte more: a PTX file is text without its NUL. */
  uint8_t *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t k = read(fd, buf + got, size - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
  }
  close(fd);
  if (got != size || size == 0) {
    free(buf);
    return size == 0 ? CUDA_ERROR_INVALID_IMAGE : CUDA_ERROR_FILE_NOT_FOUND;
  }
  buf[size] = 0;
  uint32_t magic = 0;
  memcpy(&magic, buf, size < 4 ? size : 4);
  bool binary = (size >= SELFMAG && memcmp(buf, ELFMAG, SELFMAG) == 0) || magic == FATBIN_MAGIC;
  if (!binary && !looks_like_text(buf)) {
    free(buf);
    return CUDA_ERROR_INVALID_IMAGE;
  }
  if (!binary && buf[size - 1] != 0) size++; /* send the NUL along */
  *bytes = buf;
  *out_size = size;
  return CUDA_SUCCESS;
}

CUresult ic_cuModuleLoad_2000(CUmodule *module, const char *fname) {
  ic_thread *t = ic_self();
  if (t && t->in_callback) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  CUresult rc = ic_need_ctx(t, &ctx);
  if (rc) return rc;
  if (!module || !fname) return CUDA_ERROR_INVALID_VALUE;
  void *buf;
  size_t size;
  rc = ic_read_image(fname, &buf, &size);
  if (rc) return rc;
  rc = load_image(module, buf, size);
  free(buf);
  return rc;
}

/* Arguments of any context: an object that is gone because its context was
 * destroyed says so. */
static CUresult gone(ic_obj *o) {
  ic_obj *c = o ? ic_obj_peek(o->ctx, IC_CTX) : NULL;
  if (c && __atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == IC_DESTROYED)
    return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  return CUDA_ERROR_INVALID_HANDLE;
}

/* A live module or function argument whose context has no sticky error. */
static CUresult live_arg(ic_thread *t, uint64_t h, ic_kind kind, ic_obj **out) {
  CUresult rc = ic_need_thread(t);
  if (rc) return rc;
  ic_obj *o = ic_obj_peek(h, kind);
  if (!o || __atomic_load_n(&o->state, __ATOMIC_ACQUIRE) != IC_ALIVE) return gone(o);
  rc = ic_ctx_sticky(o->ctx);
  if (rc) return rc;
  *out = o;
  return CUDA_SUCCESS;
}

CUresult ic_module_arg(ic_thread *t, CUmodule h, ic_obj **out) {
  return live_arg(t, (uint64_t)(uintptr_t)h, IC_MODULE, out);
}

CUresult ic_function_arg(ic_thread *t, CUfunction h, ic_obj **out) {
  return live_arg(t, (uint64_t)(uintptr_t)h, IC_FUNCTION, out);
}

CUresult ic_module_unload(ic_thread *t, ic_obj *m) {
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_module *r = (cgs_module *)t->req;
  ic_req(r, CGS_OP_MODULE_UNLOAD, sizeof *r, m->ctx);
  r->handle = m->handle;
  r->size = 0;
  rc = ic_call(t, r, NULL);
  ic_leave();
  if (rc) return rc;
  pthread_mutex_lock(&ic_obj_lock);
  __atomic_store_n(&m->state, IC_DESTROYED, __ATOMIC_RELEASE);
  for (ic_obj *f = m->u.m.functions; f; f = f->u.f.next)
    __atomic_store_n(&f->state, IC_DESTROYED, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&ic_obj_lock);
  ic_mem_drop_module(m->handle);
  return CUDA_SUCCESS;
}

CUresult ic_cuModuleUnload_2000(CUmodule hmod) {
  ic_thread *t = ic_self();
  ic_obj *m;
  CUresult rc = ic_module_arg(t, hmod, &m);
  if (rc) return rc;
  /* A library's instance goes with its library (cuLibraryUnload). */
  if (m->u.m.library) return CUDA_ERROR_NOT_PERMITTED;
  return ic_module_unload(t, m);
}

/* ---- functions and globals --------------------------------------------------------- */

static CUresult symbol_request(ic_thread *t, uint32_t op, ic_obj *m, uint64_t handle,
                               const char *name, cgs_channel **ch) {
  cgs_symbol *r = (cgs_symbol *)t->req;
  size_t len = strlen(name);
  if (len >= sizeof r->name) {
    ic_say("symbol name too long to forward (%zu bytes, at most %zu): %.64s...", len,
           sizeof r->name - 1, name);
    return CUDA_ERROR_NOT_FOUND;
  }
  ic_req(r, op, sizeof *r, m->ctx);
  r->module = m->handle;
  r->handle = handle;
  memcpy(r->name, name, len + 1);
  memset(r->name + len + 1, 0, sizeof r->name - len - 1);
  return ic_call(t, r, ch);
}

/* The same name gives the same function, as from the driver; the first
 * lookup asks the controller, which answers the parameter layout too. */
CUresult ic_module_get_function(ic_thread *t, ic_obj *m, const char *name, ic_obj **out) {
  pthread_mutex_lock(&ic_obj_lock);
  for (ic_obj *f = m->u.m.functions; f; f = f->u.f.next) {
    if (strcmp(f->u.f.name, name) == 0) {
      pthread_mutex_unlock(&ic_obj_lock);
      *out = f;
      return CUDA_SUCCESS;
    }
  }
  pthread_mutex_unlock(&ic_obj_lock);
  char *copy = strdup(name);
  if (!copy) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = ic_enter(t);
  if (rc) {
    free(copy);
    return rc;
  }
  ic_obj *f = ic_obj_new(IC_FUNCTION, m->ctx);
  if (!f) {
    ic_leave();
    free(copy);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  cgs_channel *ch;
  rc = symbol_request(t, CGS_OP_MODULE_GET_FUNCTION, m, f->handle, name, &ch);
  ic_param_layout *layout = NULL;
  if (!rc) {
    uint64_t n = ch->ret[0];
    bool known = n <= MAX_PARAMS && n * sizeof(cgs_param) <= ic.staging_size;
    layout = malloc(sizeof *layout + (known ? n : 0) * sizeof(cgs_param));
    if (layout) {
      layout->nparams = known ? (int)n : -1;
      layout->args_size = 0;
      if (known) memcpy(layout->params, ic_staging(ch), n * sizeof(cgs_param));
      for (int i = 0; i < layout->nparams; i++) {
        uint64_t end = (uint64_t)layout->params[i].offset + layout->params[i].size;
        if (end > CGS_MAX_LAUNCH_ARGS) {
          layout->nparams = -1; /* not a layout a launch could carry */
          break;
        }
        if (end > layout->args_size) layout->args_size = (uint32_t)end;
      }
    } else {
      rc = CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  ic_leave();
  if (rc) {
    __atomic_store_n(&f->state, IC_DESTROYED, __ATOMIC_RELEASE);
    free(copy);
    free(layout);
    return rc;
  }
  f->u.f.module = m->handle;
  f->u.f.name = copy;
  f->u.f.max_dynamic_shared = IC_DEFAULT_DYNAMIC_SHARED;
  __atomic_store_n(&f->u.f.layout, layout, __ATOMIC_RELEASE);
  pthread_mutex_lock(&ic_obj_lock);
  /* Another thread may have looked the same name up meanwhile: keep one. */
  for (ic_obj *g = m->u.m.functions; g; g = g->u.f.next) {
    if (strcmp(g->u.f.name, name) == 0) {
      pthread_mutex_unlock(&ic_obj_lock);
      __atomic_store_n(&f->state, IC_DESTROYED, __ATOMIC_RELEASE);
      *out = g;
      return CUDA_SUCCESS;
    }
  }
  f->u.f.next = m->u.m.functions;
  m->u.m.functions = f;
  pthread_mutex_unlock(&ic_obj_lock);
  *out = f;
  return CUDA_SUCCESS;
}

CUresult ic_cuModuleGetFunction_2000(CUfunction *hfunc, CUmodule hmod, const char *name) {
  ic_thread *t = ic_self();
  ic_obj *m, *f;
  CUresult rc = ic_module_arg(t, hmod, &m);
  if (rc) return rc;
  if (!hfunc || !name) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_module_get_function(t, m, name, &f);
  if (!rc) *hfunc = (CUfunction)(uintptr_t)f->handle;
  return rc;
}

CUresult ic_cuModuleGetLoadingMode_11070(CUmoduleLoadingMode *mode) {
  CUresult rc = ic_need_init();
  if (rc) return rc;
  if (!mode) return CUDA_ERROR_INVALID_VALUE;
  /* Lazy is the driver's default since CUDA 12.2; CUDA_MODULE_LOADING picks. */
  const char *env = getenv("CUDA_MODULE_LOADING");
  *mode = env && strcmp(env, "EAGER") == 0 ? CU_MODULE_EAGER_LOADING : CU_MODULE_LAZY_LOADING;
  return CUDA_SUCCESS;
}

CUresult ic_cuModuleGetGlobal_3020(CUdeviceptr_v2 *dptr, size_t *bytes, CUmodule hmod,
                                   const char *name) {
  ic_thread *t = ic_self();
  ic_obj *m;
  CUresult rc = ic_module_arg(t, hmod, &m);
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_channel *ch;
  rc = symbol_request(t, CGS_OP_MODULE_GET_GLOBAL, m, 0, name, &ch);
  uint64_t p = rc ? 0 : ch->ret[0], size = rc ? 0 : ch->ret[1];
  ic_leave();
  if (rc) return rc;
  /* Known as device memory from now on (copies, pointer attributes). */
  ic_alloc a = {.base = (uintptr_t)p, .size = (size_t)size, .kind = IC_MEM_GLOBAL, .ctx = m->ctx, .module = m->handle};
  ic_mem_add(&a); /* fails harmlessly when already known */
  if (dptr) *dptr = (CUdeviceptr_v2)p;
  if (bytes) *bytes = (size_t)size;
  return CUDA_SUCCESS;
}

static CUresult function_of(CUfunction h, ic_obj **out) {
  return ic_function_arg(ic_self(), h, out);
}

CUresult ic_cuFuncGetParamInfo_12040(CUfunction func, size_t paramIndex, size_t *paramOffset,
                                     size_t *paramSize) {
  ic_obj *f;
  CUresult rc = function_of(func, &f);
  if (rc) return rc;
  const ic_param_layout *l = __atomic_load_n(&f->u.f.layout, __ATOMIC_ACQUIRE);
  if (!l || l->nparams < 0) return CUDA_ERROR_NOT_SUPPORTED;
  if (!paramOffset || paramIndex >= (size_t)l->nparams) return CUDA_ERROR_INVALID_VALUE;
  if (paramOffset) *paramOffset = l->params[paramIndex].offset;
  if (paramSize) *paramSize = l->params[paramIndex].size;
  return CUDA_SUCCESS;
}

CUresult ic_cuFuncGetModule_11000(CUmodule *hmod, CUfunction hfunc) {
  ic_obj *f;
  CUresult rc = function_of(hfunc, &f);
  if (rc) return rc;
  if (!hmod) return CUDA_ERROR_INVALID_VALUE;
  *hmod = (CUmodule)(uintptr_t)f->u.f.module;
  return CUDA_SUCCESS;
}

CUresult ic_cuFuncGetName_12030(const char **name, CUfunction hfunc) {
  ic_obj *f;
  /* No function at all is an invalid value to the driver, a stale or foreign
   * one an invalid handle. */
  CUresult rc = hfunc ? function_of(hfunc, &f) : ic_need_thread(ic_self());
  if (!rc && !hfunc) rc = CUDA_ERROR_INVALID_VALUE;
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  *name = f->u.f.name;
  return CUDA_SUCCESS;
}

CUresult ic_cuFuncIsLoaded_12040(CUfunctionLoadingState *state, CUfunction function) {
  ic_obj *f;
  CUresult rc = function_of(function, &f);
  if (rc) return rc;
  if (!state) return CUDA_ERROR_INVALID_VALUE;
  *state = CU_FUNCTION_LOADING_STATE_LOADED;
  return CUDA_SUCCESS;
}

CUresult ic_cuFuncLoad_12040(CUfunction function) {
  ic_obj *f;
  return function_of(function, &f);
}

CUresult ic_cuFuncGetAttribute_2020(int *pi, CUfunction_attribute attrib, CUfunction hfunc) {
  ic_thread *t = ic_self();
  ic_obj *f;
  CUresult rc = function_of(hfunc, &f);
  if (rc) return rc;
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  if (!pi || (int)attrib < 0 || attrib >= CU_FUNC_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_func_attr *r = (cgs_func_attr *)t->req;
  ic_req(r, CGS_OP_FUNC_GET_ATTRIBUTE, sizeof *r, f->ctx);
  r->function = f->handle;
  r->attribute = (int32_t)attrib;
  r->value = 0;
  cgs_channel *ch;
  rc = ic_call(t, r, &ch);
  if (!rc) *pi = (int)(int64_t)ch->ret[0];
  ic_leave();
  return rc;
}

/* Checked here as the driver checks it, so a bad value is an error of this
 * call and not a sticky one later. */
static CUresult attr_check(ic_obj *ctx, CUfunction_attribute attrib, int value) {
  int dev = ctx ? ctx->u.c.device : 0;
  switch (attrib) {
  case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: {
    int optin = ic.h->devices[dev].attributes[CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN];
    return value < 0 || value > optin ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
  }
  case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
    return value < -1 || value > 100 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
  case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
  case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
    return value < 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
  default:
    return CUDA_ERROR_INVALID_VALUE;
  }
}

static CUresult func_set_attribute(ic_thread *t, ic_obj *f, CUfunction_attribute attrib, int value) {
  CUresult rc = attr_check(ic_obj_peek(f->ctx, IC_CTX), attrib, value);
  if (rc) return rc;
  rc = ic_enter(t);
  if (rc) return rc;
  cgs_func_attr *r = (cgs_func_attr *)t->req;
  ic_req(r, CGS_OP_FUNC_SET_ATTRIBUTE, sizeof *r, f->ctx);
  r->function = f->handle;
  r->attribute = (int32_t)attrib;
  r->value = value;
  rc = ic_post(t, r);
  ic_leave();
  if (!rc && attrib == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
    __atomic_store_n(&f->u.f.max_dynamic_shared, value, __ATOMIC_RELEASE);
  return rc;
}

CUresult ic_cuFuncSetAttribute_9000(CUfunction hfunc, CUfunction_attribute attrib, int value) {
  ic_thread *t = ic_self();
  ic_obj *f;
  CUresult rc = function_of(hfunc, &f);
  if (rc) return rc;
  return func_set_attribute(t, f, attrib, value);
}

CUresult ic_cuFuncSetCacheConfig_3000(CUfunction hfunc, CUfunc_cache config) {
  ic_obj *f;
  CUresult rc = function_of(hfunc, &f);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}

CUresult ic_cuFuncSetSharedMemConfig_4020(CUfunction hfunc, CUsharedconfig config) {
  ic_obj *f;
  CUresult rc = function_of(hfunc, &f);
  if (rc) return rc;
  return cu_shared_config_rule(config);
}

/* ---- launches ----------------------------------------------------------------------- */

/* A launch's function: a CUfunction of this context, or a CUkernel (its
 * library's instance in this context). */
static inline CUresult launch_function(ic_thread *t, CUfunction h, ic_obj *ctx, ic_obj **out) {
  uint64_t v = (uint64_t)(uintptr_t)h;
  ic_obj *f = ic_obj_get(v, IC_FUNCTION);
  if (IC_LIKELY(f != NULL)) {
    if (IC_UNLIKELY(f->ctx != ctx->handle)) return CUDA_ERROR_INVALID_HANDLE;
    *out = f;
    return CUDA_SUCCESS;
  }
  ic_obj *k = ic_obj_get(v, IC_KERNEL);
  if (!k) return CUDA_ERROR_INVALID_HANDLE;
  return ic_kernel_function(t, k, ctx, out);
}

static CUresult launch(CUfunction hf, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                       unsigned by, unsigned bz, unsigned shared, CUstream hStream,
                       void **kernelParams, void **extra, bool cooperative) {
  ic_thread *t = ic_self();
  if (IC_UNLIKELY(t && t->in_callback)) return CUDA_ERROR_NOT_PERMITTED;
  ic_obj *ctx;
  uint64_t stream;
  uint32_t per_thread;
  CUresult rc = ic_need_ctx_stream(t, hStream, &ctx, &stream, &per_thread);
  if (IC_UNLIKELY(rc)) return rc;
  ic_obj *f;
  rc = launch_function(t, hf, ctx, &f);
  if (IC_UNLIKELY(rc)) return rc;
  const int32_t *a = ic.h->devices[ctx->u.c.device].attributes;
  if (IC_UNLIKELY(!gx || !gy || !gz || !bx || !by || !bz ||
                  gx > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X] ||
                  gy > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y] ||
                  gz > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z] ||
                  bx > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X] ||
                  by > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y] ||
                  bz > (unsigned)a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z] ||
                  (uint64_t)bx * by * bz > (uint64_t)a[CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK]))
    return CUDA_ERROR_INVALID_VALUE;
  if (IC_UNLIKELY(shared > (unsigned)__atomic_load_n(&f->u.f.max_dynamic_shared, __ATOMIC_RELAXED)))
    return CUDA_ERROR_INVALID_VALUE;
  if (IC_UNLIKELY(cooperative)) { /* every block must be resident at once */
    uint64_t threads = (uint64_t)bx * by * bz;
    uint64_t per_sm = (uint64_t)a[CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR] / threads;
    if (per_sm > (uint64_t)a[CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR])
      per_sm = (uint64_t)a[CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR];
    if ((uint64_t)gx * gy * gz > per_sm * (uint64_t)a[CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT])
      return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
  }
  const ic_param_layout *l = __atomic_load_n(&f->u.f.layout, __ATOMIC_ACQUIRE);
  bool known = l && l->nparams >= 0;
  cgs_launch *r = (cgs_launch *)t->req;
  uint8_t *args = (uint8_t *)(r + 1);
  uint32_t args_size;
  if (extra) {
    if (kernelParams) return CUDA_ERROR_INVALID_VALUE;
    const void *buf = NULL;
    const size_t *size = NULL;
    for (void **e = extra; *e != CU_LAUNCH_PARAM_END; e += 2) {
      if (*e == CU_LAUNCH_PARAM_BUFFER_POINTER)
        buf = e[1];
      else if (*e == CU_LAUNCH_PARAM_BUFFER_SIZE)
        size = e[1];
      else
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (known && l->nparams && (!buf || !size)) return CUDA_ERROR_INVALID_VALUE;
    size_t n = size ? *size : 0;
    /* A buffer may be longer than the parameters (sizeof a struct counts its
     * trailing padding) but not shorter, nor past what a kernel may take. */
    if (size && ((known && n < l->args_size) || n > MAX_PARAM_BYTES || (n && !buf)))
      return CUDA_ERROR_INVALID_VALUE;
    if (n) memcpy(args, buf, n);
    args_size = (uint32_t)n;
  } else {
    if (IC_UNLIKELY(!known)) {
      ic_say("the parameter layout of %s is unknown: launch it with the `extra` buffer form",
             f->u.f.name ? f->u.f.name : "a kernel");
      return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (IC_UNLIKELY(l->nparams && !kernelParams)) return CUDA_ERROR_INVALID_VALUE;
    args_size = l->args_size;
    memset(args, 0, args_size); /* padding between parameters */
    for (int i = 0; i < l->nparams; i++) {
      if (IC_UNLIKELY(!kernelParams[i])) return CUDA_ERROR_INVALID_VALUE;
      memcpy(args + l->params[i].offset, kernelParams[i], l->params[i].size);
    }
  }
  /* A capturing stream records the launch in its graph (graph.c). */
  if (IC_UNLIKELY(ic_capture_active(stream)))
    return ic_capture_kernel(stream, (CUfunction)(uintptr_t)f->handle, gx, gy, gz, bx, by, bz, shared, args,
                             args_size);
  rc = ic_enter(t);
  if (IC_UNLIKELY(rc)) return rc;
  ic_req(r, CGS_OP_LAUNCH, (uint32_t)(sizeof *r + args_size), ctx->handle);
  r->function = f->handle;
  r->stream = stream;
  r->grid[0] = gx;
  r->grid[1] = gy;
  r->grid[2] = gz;
  r->block[0] = bx;
  r->block[1] = by;
  r->block[2] = bz;
  r->shared_bytes = shared;
  r->args_size = args_size;
  r->per_thread = per_thread;
  r->_pad = 0;
  rc = ic_post(t, r);
  ic_leave();
  return rc;
}

CUresult ic_cuLaunchKernel_4000(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                unsigned int gridDimZ, unsigned int blockDimX,
                                unsigned int blockDimY, unsigned int blockDimZ,
                                unsigned int sharedMemBytes, CUstream hStream, void **kernelParams,
                                void **extra) {
  return launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                hStream, kernelParams, extra, false);
}

/* The size check of a cooperative launch is made here; the controller runs it
 * as an ordinary launch (the protocol has no cooperative flag yet), which is
 * what the fake driver does too, but not enough for grid-wide
 * synchronisation on a GPU. */
CUresult ic_cuLaunchCooperativeKernel_9000(CUfunction f, unsigned int gridDimX,
                                           unsigned int gridDimY, unsigned int gridDimZ,
                                           unsigned int blockDimX, unsigned int blockDimY,
                                           unsigned int blockDimZ, unsigned int sharedMemBytes,
                                           CUstream hStream, void **kernelParams) {
  return launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                hStream, kernelParams, NULL, true);
}

/* Launch attributes are checked as the driver checks them; the scheduling
 * hints among them are not forwarded (the kernel runs with the defaults). */
CUresult ic_cuLaunchKernelEx_11060(const CUlaunchConfig *config, CUfunction f, void **kernelParams,
                                   void **extra) {
  if (!config || (config->numAttrs && !config->attrs)) return ic_invalid_work_arg();
  bool cooperative;
  CUresult rc = cu_launch_attrs_check(config, &cooperative);
  if (rc) return rc;
  return launch(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX,
                config->blockDimY, config->blockDimZ, config->sharedMemBytes, config->hStream,
                kernelParams, extra, cooperative);
}
