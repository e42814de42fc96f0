/* Modules: images are PTX text (alone or in a fatbin, fatbin.c), run by the
 * PTX interpreter (gpu/fake/ptx/), or host shared objects exporting `fake_cuda_module` (fake_cuda_module.h).
 * A host module's load copies the bytes into a memfd and dlopens it through
 * /proc/self/fd, so every load is a separate instance with its own globals,
 * as on a GPU, and the file can go away after loading. A PTX load parses the
 * text again, so it too gets its own globals.
 *
 * What cannot run is refused with the driver's own codes:
 * - a cubin (ELF for EM_CUDA) or a fatbin without PTX the fake can read:
 *   CUDA_ERROR_NO_BINARY_FOR_GPU, what the driver answers when an image holds
 *   no code for the device;
 * - PTX that does not parse: CUDA_ERROR_INVALID_PTX; PTX using what the
 *   interpreter does not implement: CUDA_ERROR_NOT_SUPPORTED. Either way the
 *   message (instruction and line) goes to the log and to the JIT error log
 *   buffer of cuModuleLoadDataEx/cuLibraryLoadData when one is given;
 * - anything else: CUDA_ERROR_INVALID_IMAGE.
 */
#include "module_internal.h"

#include "launch_rules.h"

#include "jit_options.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef EM_CUDA
#define EM_CUDA 190
#endif
#if defined(__x86_64__)
#define FK_HOST_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define FK_HOST_MACHINE EM_AARCH64
#else
#error "unsupported host architecture"
#endif

#define FATBIN_MAGIC 0xBA55ED50u
#define FATBIN_WRAPPER_MAGIC 0x466243B1u
#define MAX_IMAGE_SIZE ((size_t)1 << 32)

static void ptx_image_free(fk_ptx_image *img);

pthread_mutex_t fk_modules_lock = PTHREAD_MUTEX_INITIALIZER;
module_impl *fk_modules;

/* ---- recognising images ----------------------------------------------------- */

static bool looks_like_ptx(const char *p) {
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (p[0] == '/' && p[1] == '/') {
      while (*p && *p != '\n') p++;
    } else if (p[0] == '/' && p[1] == '*') {
      const char *end = strstr(p + 2, "*/");
      if (!end) return false;
      p = end + 2;
    } else {
      return *p == '.'; /* a directive: .version, .target, ... */
    }
  }
}

/* Size of an ELF64 file from its headers: the furthest of the header tables
 * and the segments' file contents. With `known` (the file's size) non-zero,
 * header tables beyond it make the image invalid (SIZE_MAX). */
static size_t elf_size(const Elf64_Ehdr *eh, size_t known) {
  const unsigned char *base = (const unsigned char *)eh;
  size_t limit = known ? known : MAX_IMAGE_SIZE;
  size_t end = sizeof *eh;
  if (eh->e_phoff && eh->e_phentsize >= sizeof(Elf64_Phdr)) {
    size_t t = eh->e_phoff + (size_t)eh->e_phnum * eh->e_phentsize;
    if (eh->e_phoff > limit || t > limit) return SIZE_MAX;
    if (t > end) end = t;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
      const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff + (size_t)i * eh->e_phentsize);
      t = ph->p_offset + ph->p_filesz;
      if (t > end) end = t;
    }
  }
  if (eh->e_shoff && eh->e_shentsize >= sizeof(Elf64_Shdr)) {
    size_t t = eh->e_shoff + (size_t)eh->e_shnum * eh->e_shentsize;
    if (eh->e_shoff > limit || t > limit) return SIZE_MAX;
    if (t > end) end = t;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
      const Elf64_Shdr *sh = (const Elf64_Shdr *)(base + eh->e_shoff + (size_t)i * eh->e_shentsize);
      if (sh->sh_type == SHT_NOBITS) continue;
      t = sh->sh_offset + sh->sh_size;
      if (t > end) end = t;
    }
  }
  return end;
}

CUresult fk_image_check(const void *image, size_t known, size_t *size) {
  const unsigned char *b = image;
  if (known && known < 4) return CUDA_ERROR_INVALID_IMAGE;
  uint32_t magic;
  memcpy(&magic, b, sizeof magic);
  if (magic == FATBIN_MAGIC) {
    /* runnable when it carries PTX for this device or an older one */
    size_t n = fk_fatbin_size(image, known);
    char *text = n ? fk_fatbin_ptx(image, n) : NULL;
    if (!text) return CUDA_ERROR_NO_BINARY_FOR_GPU;
    free(text);
    *size = n;
    return CUDA_SUCCESS;
  }
  if (magic == FATBIN_WRAPPER_MAGIC) return CUDA_ERROR_NO_BINARY_FOR_GPU;
  if (memcmp(b, ELFMAG, SELFMAG) == 0) {
    if (known && known < sizeof(Elf64_Ehdr)) return CUDA_ERROR_INVALID_IMAGE;
    const Elf64_Ehdr *eh = image;
    /* e_machine sits at the same offset in 32- and 64-bit headers. */
    if (eh->e_machine == EM_CUDA) return CUDA_ERROR_NO_BINARY_FOR_GPU;
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
        eh->e_machine != FK_HOST_MACHINE || eh->e_type != ET_DYN)
      return CUDA_ERROR_INVALID_IMAGE;
    size_t n = elf_size(eh, known);
    if (n > MAX_IMAGE_SIZE || (known && n > known)) return CUDA_ERROR_INVALID_IMAGE;
    *size = known ? known : n;
    return CUDA_SUCCESS;
  }
  if (looks_like_ptx((const char *)image)) {
    /* a file's text may lack its NUL: fk_image_read_file added one */
    size_t n = known ? strnlen((const char *)image, known) : strlen((const char *)image);
    *size = n + 1;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_IMAGE;
}

const char *fk_image_ptx(const void *image, size_t size) {
  const char *s = image;
  if (size == 0 || memcmp(s, ELFMAG, size < SELFMAG ? size : SELFMAG) == 0) return NULL;
  return looks_like_ptx(s) ? s : NULL;
}

static __thread char load_error[512];

const char *fk_image_error(void) { return load_error; }

CUresult fk_image_read_file(const char *path, void **bytes, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return CUDA_ERROR_FILE_NOT_FOUND;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return CUDA_ERROR_FILE_NOT_FOUND;
  }
  size_t n = (size_t)st.st_size;
  /* One spare zero byte, so a text image (PTX) is always terminated. */
  unsigned char *buf = calloc(1, n + 1);
  if (!buf) {
    close(fd);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != n) {
    free(buf);
    return CUDA_ERROR_FILE_NOT_FOUND;
  }
  *bytes = buf;
  *size = n;
  return CUDA_SUCCESS;
}

/* ---- function attributes -------------------------------------------------------- */

void fk_func_attrs_default(fk_func_attrs *a) {
  *a = (fk_func_attrs){.max_dynamic_shared = FK_SHARED_DEFAULT, .carveout = -1};
}

CUresult fk_func_attr_get(const fk_func_attrs *a, CUfunction_attribute attrib, int *pi) {
  if (!pi) return CUDA_ERROR_INVALID_VALUE;
  switch (attrib) {
  case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
  case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = 0; break; /* fake kernels have no static shared memory */
  case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *pi = 0; break;
  case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *pi = 0; break;
  case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 32; break;
  case CU_FUNC_ATTRIBUTE_PTX_VERSION: *pi = FK_ARCH_VERSION; break;
  case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = FK_ARCH_VERSION; break;
  case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *pi = 0; break;
  case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = a->max_dynamic_shared; break;
  case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *pi = a->carveout; break;
  case CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET: *pi = 0; break;
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH: *pi = a->cluster[0]; break;
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT: *pi = a->cluster[1]; break;
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH: *pi = a->cluster[2]; break;
  case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED: *pi = a->non_portable_cluster; break;
  case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE: *pi = a->scheduling_policy; break;
  default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

bool fk_ptx_attr(const fk_kernel_info *k, CUfunction_attribute attrib, int *pi) {
  if (k->run || !pi) return false;
  const fk_ptx_kernel *pk = (const fk_ptx_kernel *)k;
  size_t v;
  switch (attrib) {
  case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: v = ptx_kernel_static_shared(pk->ptx, pk->index); break;
  case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: v = ptx_kernel_local_size(pk->ptx, pk->index); break;
  case CU_FUNC_ATTRIBUTE_NUM_REGS: {
    /* PTX's virtual registers, capped at what a thread may have on sm_90 */
    int n = ptx_kernel_nregs(pk->ptx, pk->index);
    v = (size_t)(n > 255 ? 255 : n);
    break;
  }
  default: return false;
  }
  *pi = (int)v;
  return true;
}

CUresult fk_func_attr_set(fk_func_attrs *a, CUfunction_attribute attrib, int value) {
  switch (attrib) {
  case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
    if (value < 0 || value > FK_SHARED_OPTIN) return CUDA_ERROR_INVALID_VALUE;
    a->max_dynamic_shared = value;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
    if (value < -1 || value > 100) return CUDA_ERROR_INVALID_VALUE;
    a->carveout = value;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
  case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
    if (value < 0) return CUDA_ERROR_INVALID_VALUE;
    a->cluster[attrib - CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH] = value;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    if (value != 0 && value != 1) return CUDA_ERROR_INVALID_VALUE;
    a->non_portable_cluster = value;
    return CUDA_SUCCESS;
  case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
    if (value < CU_CLUSTER_SCHEDULING_POLICY_DEFAULT ||
        value > CU_CLUSTER_SCHEDULING_POLICY_LOAD_BALANCING)
      return CUDA_ERROR_INVALID_VALUE;
    a->scheduling_policy = value;
    return CUDA_SUCCESS;
  default: /* read-only or unknown */
    return CUDA_ERROR_INVALID_VALUE;
  }
}

/* ---- loading and unloading ------------------------------------------------------- */

static bool info_valid(const fk_module_info *info) {
  if (info->magic != FK_MODULE_MAGIC || info->abi != FK_MODULE_ABI) return false;
  if (info->nkernels < 0 || info->nglobals < 0) return false;
  if ((info->nkernels && !info->kernels) || (info->nglobals && !info->globals)) return false;
  for (int i = 0; i < info->nkernels; i++) {
    const fk_kernel_info *k = &info->kernels[i];
    if (!k->name || !k->run || k->nparams < 0 || (k->nparams && !k->params)) return false;
    for (int p = 0; p < k->nparams; p++) {
      if (k->params[p].offset + k->params[p].size > k->params_size) return false;
    }
  }
  for (int i = 0; i < info->nglobals; i++) {
    if (!info->globals[i].name || (info->globals[i].size && !info->globals[i].addr)) return false;
  }
  return true;
}

/* The kernel of module info's entry i (a PTX image's kernels are not in one
 * array of fk_kernel_info). */
static const fk_kernel_info *kernel_at(const module_impl *m, int i) {
  return m->ptx ? &m->ptx->kernels[i].info : &m->pub.info->kernels[i];
}

/* Functions, handles and registered globals of a loaded image; frees a PTX
 * image on failure. */
static CUresult finish_load(fk_ctx *ctx, module_impl *m, const fk_module_info *info,
                            module_impl **out) {
  m->pub.info = info;
  if (info->nkernels) {
    m->funcs = calloc((size_t)info->nkernels, sizeof *m->funcs);
    if (!m->funcs) {
      if (m->ptx) {
        ptx_image_free(m->ptx);
        free(m);
      }
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  for (int i = info->nkernels - 1; i >= 0; i--) {
    func_impl *f = &m->funcs[i];
    f->pub.mod = &m->pub;
    f->pub.kernel = kernel_at(m, i);
    fk_func_attrs_default(&f->attrs);
    f->pub.max_dynamic_shared = f->attrs.max_dynamic_shared;
    f->pub.next = m->pub.functions;
    m->pub.functions = &f->pub;
  }
  if (ctx) {
    for (int i = 0; i < info->nkernels; i++) fk_handle_add(&m->funcs[i], FK_FUNCTION);
    for (int i = 0; i < info->nglobals; i++) {
      const fk_global_info *g = &info->globals[i];
      if (g->size) fk_mem_register((uintptr_t)g->addr, g->size, FK_MEM_MODULE, ctx);
    }
    fk_handle_add(m, FK_MODULE);
  }
  *out = m;
  return CUDA_SUCCESS;
}

/* The memfd's number must stay taken while dlopen still knows the object by
 * its /proc/self/fd path (an object that cannot be unloaded), or a later load
 * through the same path would get the old instance back. */
static void close_image(module_impl *m) {
  if (m->pub.dl) dlclose(m->pub.dl);
  m->pub.dl = NULL;
  if (m->pub.memfd < 0) return;
  void *still = dlopen(m->path, RTLD_NOW | RTLD_NOLOAD);
  if (still) {
    dlclose(still);
    return; /* the descriptor is leaked on purpose */
  }
  close(m->pub.memfd);
  m->pub.memfd = -1;
}

static void ptx_image_free(fk_ptx_image *img) {
  if (!img) return;
  ptx_module_free(img->ptx);
  free(img->kernels);
  free(img->params);
  free(img->globals);
  free(img);
}

/* Parse PTX and describe it in the host-module tables. */
static CUresult ptx_image_load(const char *text, fk_ptx_image **out) {
  bool invalid;
  load_error[0] = 0;
  ptx_module *pm = ptx_module_load(text, load_error, sizeof load_error, &invalid);
  if (!pm) {
    fk_log("cannot load PTX: %s", load_error);
    return invalid ? CUDA_ERROR_INVALID_PTX : CUDA_ERROR_NOT_SUPPORTED;
  }
  fk_ptx_image *img = calloc(1, sizeof *img);
  int nk = ptx_kernel_count(pm), ng = ptx_global_count(pm);
  size_t np = 0;
  for (int i = 0; i < nk; i++) np += (size_t)ptx_kernel_nparams(pm, i);
  if (!img || !(img->kernels = calloc((size_t)nk + 1, sizeof *img->kernels)) ||
      !(img->params = calloc(np + 1, sizeof *img->params)) ||
      !(img->globals = calloc((size_t)ng + 1, sizeof *img->globals))) {
    if (img) img->ptx = pm;
    else ptx_module_free(pm);
    ptx_image_free(img);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  img->ptx = pm;
  fk_param_info *pp = img->params;
  for (int i = 0; i < nk; i++) {
    fk_ptx_kernel *k = &img->kernels[i];
    int n = ptx_kernel_nparams(pm, i);
    const ptx_param *src = ptx_kernel_params(pm, i);
    for (int j = 0; j < n; j++) pp[j] = (fk_param_info){src[j].offset, src[j].size};
    k->info = (fk_kernel_info){.name = ptx_kernel_name(pm, i), .nparams = n, .params = n ? pp : NULL,
                               .params_size = ptx_kernel_params_size(pm, i), .run = NULL};
    k->ptx = pm;
    k->index = i;
    pp += n;
  }
  const ptx_global *g = ptx_globals(pm);
  for (int i = 0; i < ng; i++) img->globals[i] = (fk_global_info){g[i].name, g[i].addr, g[i].size};
  img->info = (fk_module_info){.magic = FK_MODULE_MAGIC, .abi = FK_MODULE_ABI, .nkernels = nk,
                               .kernels = NULL, .nglobals = ng, .globals = img->globals};
  *out = img;
  return CUDA_SUCCESS;
}

CUresult fk_image_load(fk_ctx *ctx, const void *image, size_t size, module_impl **out) {
  module_impl *m = calloc(1, sizeof *m);
  if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
  m->pub.ctx = ctx;
  m->pub.memfd = -1;
  const char *text = fk_image_ptx(image, size);
  char *owned = NULL;
  if (!text && fk_fatbin_size(image, size)) text = owned = fk_fatbin_ptx(image, size);
  if (text) {
    CUresult prc = ptx_image_load(text, &m->ptx);
    free(owned); /* the parsed module keeps copies of what it needs */
    if (prc) {
      free(m);
      return prc;
    }
    return finish_load(ctx, m, &m->ptx->info, out);
  }
  m->pub.memfd = memfd_create("fake-cuda-module", MFD_CLOEXEC);
  if (m->pub.memfd < 0) {
    fk_log("memfd_create failed for a module image");
    free(m);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  const unsigned char *b = image;
  for (size_t done = 0; done < size;) {
    ssize_t w = write(m->pub.memfd, b + done, size - done);
    if (w <= 0) {
      close(m->pub.memfd);
      free(m);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    done += (size_t)w;
  }
  snprintf(m->path, sizeof m->path, "/proc/self/fd/%d", m->pub.memfd);
  CUresult rc = CUDA_ERROR_INVALID_IMAGE;
  m->pub.dl = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
  if (!m->pub.dl) {
    const char *err = dlerror();
    fk_log("cannot load module image: %s", err ? err : "?");
    /* An unresolved symbol is the host analogue of a failed device link. */
    if (err && strstr(err, "undefined symbol")) rc = CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND;
    goto fail;
  }
  const fk_module_info *info = dlsym(m->pub.dl, FK_MODULE_SYMBOL);
  if (!info || !info_valid(info)) {
    fk_log("module image has no valid %s", FK_MODULE_SYMBOL);
    goto fail;
  }
  rc = finish_load(ctx, m, info, out);
  if (rc == CUDA_SUCCESS) return rc;
fail:
  close_image(m);
  free(m->funcs);
  free(m);
  return rc;
}

void fk_module_publish_locked(module_impl *m) {
  m->next = fk_modules;
  fk_modules = m;
}

void fk_module_free(module_impl *m) {
  const fk_module_info *info = m->pub.info;
  if (m->pub.ctx) {
    fk_handle_remove(m);
    for (int i = 0; i < info->nkernels; i++) fk_handle_remove(&m->funcs[i]);
    for (int i = 0; i < info->nglobals; i++) {
      if (info->globals[i].size) fk_mem_unregister((uintptr_t)info->globals[i].addr);
    }
  }
  close_image(m);
  ptx_image_free(m->ptx);
  free(m->funcs);
  free(m);
}

static void unlink_locked(module_impl *m) {
  for (module_impl **p = &fk_modules; *p; p = &(*p)->next) {
    if (*p == m) {
      *p = m->next;
      return;
    }
  }
}

void fk_module_release_ctx(fk_ctx *ctx) {
  module_impl *gone = NULL;
  pthread_mutex_lock(&fk_modules_lock);
  for (module_impl **p = &fk_modules; *p;) {
    module_impl *m = *p;
    if (m->pub.ctx != ctx) {
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
    fk_module_free(gone);
    gone = next;
  }
}

CUresult fk_jit_options(unsigned int n, CUjit_option *options, void **values) {
  if (n && (!options || !values)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < n; i++) {
    if ((unsigned)options[i] >= CU_JIT_NUM_OPTIONS) return CUDA_ERROR_INVALID_VALUE;
  }
  /* Logs come back empty: the log sizes are written back as 0 bytes used. */
  cu_jit_write_outputs(n, options, values);
  return CUDA_SUCCESS;
}

/* ---- API: loading ---------------------------------------------------------------- */

static CUresult need_ctx(fk_ctx **c) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  return fk_need_ctx(c);
}

static CUresult load_bytes(CUmodule *module, const void *image, size_t known) {
  fk_ctx *c;
  CUresult rc = need_ctx(&c);
  if (rc) return rc;
  if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
  size_t size;
  rc = fk_image_check(image, known, &size);
  if (rc) return rc;
  module_impl *m;
  rc = fk_image_load(c, image, size, &m);
  if (rc) return rc;
  pthread_mutex_lock(&fk_modules_lock);
  fk_module_publish_locked(m);
  pthread_mutex_unlock(&fk_modules_lock);
  *module = (CUmodule)m;
  return CUDA_SUCCESS;
}

CUresult fake_cuModuleLoadData_2000(CUmodule *module, const void *image) {
  return load_bytes(module, image, 0);
}

CUresult fk_jit_log_find(unsigned int n, const CUjit_option *options, void **values,
                         fk_jit_log *log) {
  *log = (fk_jit_log){0};
  if (n && (!options || !values)) return CUDA_ERROR_INVALID_VALUE;
  for (unsigned i = 0; i < n; i++) {
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER) log->buf = values[i];
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) {
      log->size = (size_t)(uintptr_t)values[i];
      log->size_slot = &values[i];
    }
  }
  return CUDA_SUCCESS;
}

void fk_jit_log_write(const fk_jit_log *log, CUresult rc) {
  if (rc == CUDA_SUCCESS || !log->buf || !log->size) return;
  const char *msg = fk_image_error();
  if (rc != CUDA_ERROR_INVALID_PTX && rc != CUDA_ERROR_NOT_SUPPORTED) return;
  size_t n = strlen(msg);
  if (n >= log->size) n = log->size - 1;
  memcpy(log->buf, msg, n);
  log->buf[n] = 0;
  if (log->size_slot) *log->size_slot = (void *)(uintptr_t)n; /* bytes written, as the driver answers */
}

CUresult fake_cuModuleLoadDataEx_2010(CUmodule *module, const void *image, unsigned int numOptions,
                                      CUjit_option *options, void **optionValues) {
  fk_jit_log log;
  fk_jit_log_find(numOptions, options, optionValues, &log);
  CUresult rc = fk_jit_options(numOptions, options, optionValues);
  if (rc) {
    fk_ctx *c;
    CUresult crc = need_ctx(&c);
    return crc ? crc : rc;
  }
  rc = load_bytes(module, image, 0);
  fk_jit_log_write(&log, rc);
  return rc;
}

CUresult fake_cuModuleLoad_2000(CUmodule *module, const char *fname) {
  fk_ctx *c;
  CUresult rc = need_ctx(&c);
  if (rc) return rc;
  if (!module || !fname) return CUDA_ERROR_INVALID_VALUE;
  void *bytes;
  size_t size;
  rc = fk_image_read_file(fname, &bytes, &size);
  if (rc) return rc;
  rc = size ? load_bytes(module, bytes, size) : CUDA_ERROR_INVALID_IMAGE;
  free(bytes);
  return rc;
}

/* A module argument (any context's). */
static CUresult module_arg(CUmodule h, module_impl **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_MODULE)) return CUDA_ERROR_INVALID_HANDLE;
  module_impl *m = (module_impl *)h;
  fk_ctx *c = m->pub.ctx;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  rc = __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
  if (rc) return rc;
  *out = m;
  return CUDA_SUCCESS;
}

CUresult fake_cuModuleUnload_2000(CUmodule hmod) {
  module_impl *m;
  CUresult rc = module_arg(hmod, &m);
  if (rc) return rc;
  /* A library's instance goes with its library (cuLibraryUnload). */
  if (m->lib) return CUDA_ERROR_NOT_PERMITTED;
  pthread_mutex_lock(&fk_modules_lock);
  unlink_locked(m);
  pthread_mutex_unlock(&fk_modules_lock);
  fk_handle_remove(m);
  /* Work already queued may still run the module's kernels. */
  fk_ctx_synchronize(m->pub.ctx);
  fk_module_free(m);
  return CUDA_SUCCESS;
}

CUresult fake_cuModuleGetLoadingMode_11070(CUmoduleLoadingMode *mode) {
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!mode) return CUDA_ERROR_INVALID_VALUE;
  /* Lazy is the driver's default since CUDA 12.2; CUDA_MODULE_LOADING picks. */
  const char *env = getenv("CUDA_MODULE_LOADING");
  *mode = env && strcmp(env, "EAGER") == 0 ? CU_MODULE_EAGER_LOADING : CU_MODULE_LAZY_LOADING;
  return CUDA_SUCCESS;
}

/* ---- API: module contents ----------------------------------------------------------- */

CUresult fake_cuModuleGetFunction_2000(CUfunction *hfunc, CUmodule hmod, const char *name) {
  module_impl *m;
  CUresult rc = module_arg(hmod, &m);
  if (rc) return rc;
  if (!hfunc || !name) return CUDA_ERROR_INVALID_VALUE;
  const fk_module_info *info = m->pub.info;
  for (int i = 0; i < info->nkernels; i++) {
    if (strcmp(kernel_at(m, i)->name, name) == 0) {
      *hfunc = (CUfunction)&m->funcs[i];
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_NOT_FOUND;
}

CUresult fake_cuModuleGetGlobal_3020(CUdeviceptr *dptr, size_t *bytes, CUmodule hmod,
                                     const char *name) {
  module_impl *m;
  CUresult rc = module_arg(hmod, &m);
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  const fk_module_info *info = m->pub.info;
  for (int i = 0; i < info->nglobals; i++) {
    const fk_global_info *g = &info->globals[i];
    if (strcmp(g->name, name) != 0) continue;
    if (dptr) *dptr = (CUdeviceptr)(uintptr_t)g->addr;
    if (bytes) *bytes = g->size;
    return CUDA_SUCCESS;
  }
  /* A kernel's name is known to the module, just not as a variable: NVIDIA's
   * driver (580) answers an invalid value, not "not found". */
  for (int i = 0; i < info->nkernels; i++)
    if (strcmp(kernel_at(m, i)->name, name) == 0) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_ERROR_NOT_FOUND;
}

CUresult fake_cuModuleGetFunctionCount_12040(unsigned int *count, CUmodule hmod) {
  module_impl *m;
  CUresult rc = module_arg(hmod, &m);
  if (rc) return rc;
  if (!count) return CUDA_ERROR_INVALID_VALUE;
  *count = (unsigned)m->pub.info->nkernels;
  return CUDA_SUCCESS;
}

CUresult fake_cuModuleEnumerateFunctions_12040(CUfunction *functions, unsigned int numFunctions,
                                               CUmodule mod) {
  module_impl *m;
  CUresult rc = module_arg(mod, &m);
  if (rc) return rc;
  if (!functions) return CUDA_ERROR_INVALID_VALUE;
  unsigned n = (unsigned)m->pub.info->nkernels;
  for (unsigned i = 0; i < n && i < numFunctions; i++) functions[i] = (CUfunction)&m->funcs[i];
  return CUDA_SUCCESS;
}

/* ---- API: functions ------------------------------------------------------------------ */

static CUresult func_arg(CUfunction h, func_impl **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  if (!fk_handle_valid(h, FK_FUNCTION)) return CUDA_ERROR_INVALID_HANDLE;
  func_impl *f = (func_impl *)h;
  fk_ctx *c = f->pub.mod->ctx;
  if (c->destroyed) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
  rc = __atomic_load_n(&c->sticky, __ATOMIC_ACQUIRE);
  if (rc) return rc;
  *out = f;
  return CUDA_SUCCESS;
}

CUresult fake_cuFuncGetAttribute_2020(int *pi, CUfunction_attribute attrib, CUfunction hfunc) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  if (fk_ptx_attr(f->pub.kernel, attrib, pi)) return CUDA_SUCCESS;
  return fk_func_attr_get(&f->attrs, attrib, pi);
}

CUresult fake_cuFuncSetAttribute_9000(CUfunction hfunc, CUfunction_attribute attrib, int value) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  rc = fk_func_attr_set(&f->attrs, attrib, value);
  if (rc == CUDA_SUCCESS) {
    __atomic_store_n(&f->pub.max_dynamic_shared, f->attrs.max_dynamic_shared, __ATOMIC_RELAXED);
  }
  return rc;
}

CUresult fake_cuFuncSetCacheConfig_3000(CUfunction hfunc, CUfunc_cache config) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  return cu_cache_config_rule(config);
}

CUresult fake_cuFuncSetSharedMemConfig_4020(CUfunction hfunc, CUsharedconfig config) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  return cu_shared_config_rule(config);
}

CUresult fake_cuFuncGetName_12030(const char **name, CUfunction hfunc) {
  func_impl *f;
  /* No function at all is an invalid value to the driver (cuda-bindings'
   * tests hold it to that), a stale or foreign one an invalid handle. */
  CUresult rc = hfunc ? func_arg(hfunc, &f) : fk_need_init();
  if (!rc && !hfunc) rc = CUDA_ERROR_INVALID_VALUE;
  if (rc) return rc;
  if (!name) return CUDA_ERROR_INVALID_VALUE;
  *name = f->pub.kernel->name;
  return CUDA_SUCCESS;
}

CUresult fake_cuFuncGetModule_11000(CUmodule *hmod, CUfunction hfunc) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  if (!hmod) return CUDA_ERROR_INVALID_VALUE;
  *hmod = (CUmodule)f->pub.mod;
  return CUDA_SUCCESS;
}

CUresult fake_cuFuncGetParamInfo_12040(CUfunction func, size_t paramIndex, size_t *paramOffset,
                                       size_t *paramSize) {
  func_impl *f;
  CUresult rc = func_arg(func, &f);
  if (rc) return rc;
  const fk_kernel_info *k = f->pub.kernel;
  if (!paramOffset || paramIndex >= (size_t)k->nparams) return CUDA_ERROR_INVALID_VALUE;
  *paramOffset = k->params[paramIndex].offset;
  if (paramSize) *paramSize = k->params[paramIndex].size;
  return CUDA_SUCCESS;
}

CUresult fake_cuFuncIsLoaded_12040(CUfunctionLoadingState *state, CUfunction hfunc) {
  func_impl *f;
  CUresult rc = func_arg(hfunc, &f);
  if (rc) return rc;
  if (!state) return CUDA_ERROR_INVALID_VALUE;
  *state = CU_FUNCTION_LOADING_STATE_LOADED; /* dlopen loaded everything */
  return CUDA_SUCCESS;
}

CUresult fake_cuFuncLoad_12040(CUfunction hfunc) {
  func_impl *f;
  return func_arg(hfunc, &f);
}
