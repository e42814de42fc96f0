/* The JIT linker (cuLink*) over PTX: what numba-cuda and cuda.core's Linker
 * call to turn their PTX into a loadable image.
 *
 * The fake driver runs PTX itself, so "linking" PTX inputs joins their texts
 * and checks the result (parsing it as a load would, so errors surface here
 * with the driver's codes) and hands it back as the image; cuModuleLoadData
 * and cuLibraryLoadData then take it like any PTX. Inputs that need a device
 * linker are refused: cubins, fatbins, objects and libraries.
 */
#include "module_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LINK_MAGIC 0x4c4e4b46u /* "FKNL" */

typedef struct fk_link {
  uint32_t magic;
  char *ptx; /* the one PTX input, NUL-terminated */
  size_t size;
  fk_jit_log log;
  struct fk_link *next; /* on the list of live link states */
} fk_link;

/* The live link states: a handle is looked up here before it is read, so a
 * destroyed one is an invalid handle, never a read of freed memory. */
static pthread_mutex_t links_lock = PTHREAD_MUTEX_INITIALIZER;
static fk_link *links;

static bool link_live(const fk_link *l) {
  pthread_mutex_lock(&links_lock);
  const fk_link *p = links;
  while (p && p != l) p = p->next;
  pthread_mutex_unlock(&links_lock);
  return p != NULL;
}

static CUresult link_arg(CUlinkState h, fk_link **out) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  CUresult rc = fk_need_init();
  if (rc) return rc;
  fk_link *l = (fk_link *)h;
  if (!l || !link_live(l) || l->magic != LINK_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *out = l;
  return CUDA_SUCCESS;
}

CUresult fake_cuLinkCreate_6050(unsigned int numOptions, CUjit_option *options, void **optionValues,
                                CUlinkState *stateOut) {
  if (fk_in_host_callback()) return CUDA_ERROR_NOT_PERMITTED;
  fk_ctx *c;
  CUresult rc = fk_need_ctx(&c);
  if (rc) return rc;
  if (!stateOut) return CUDA_ERROR_INVALID_VALUE;
  fk_jit_log log;
  rc = fk_jit_log_find(numOptions, options, optionValues, &log);
  if (rc) return rc;
  rc = fk_jit_options(numOptions, options, optionValues);
  if (rc) return rc;
  fk_link *l = calloc(1, sizeof *l);
  if (!l) return CUDA_ERROR_OUT_OF_MEMORY;
  l->magic = LINK_MAGIC;
  /* The create call's error log buffer gets the link's errors (the caller
   * keeps it for the link's lifetime); its size slot in the option array is
   * not written later, the array may be gone. */
  l->log = log;
  l->log.size_slot = NULL;
  pthread_mutex_lock(&links_lock);
  l->next = links;
  links = l;
  pthread_mutex_unlock(&links_lock);
  *stateOut = (CUlinkState)l;
  return CUDA_SUCCESS;
}

/* Several PTX inputs are linked by putting their texts one after another:
 * the parser takes .version/.target again anywhere, and resolves an .extern
 * .func declared in one input with its definition in another, as the device
 * linker does (numba-cuda links its kernel with its helper libraries so). */
static CUresult add_ptx(fk_link *l, const char *text, size_t size) {
  size_t n = strnlen(text, size);
  size_t have = l->ptx ? l->size - 1 : 0;
  char *joined = realloc(l->ptx, have + n + 2);
  if (!joined) return CUDA_ERROR_OUT_OF_MEMORY;
  memcpy(joined + have, text, n);
  joined[have + n] = '\n';
  joined[have + n + 1] = 0;
  l->ptx = joined;
  l->size = have + n + 2;
  return CUDA_SUCCESS;
}

static CUresult input_type(CUjitInputType type) {
  if (type == CU_JIT_INPUT_PTX) return CUDA_SUCCESS;
  if ((unsigned)type >= CU_JIT_NUM_INPUT_TYPES) return CUDA_ERROR_INVALID_VALUE;
  fk_log("the fake driver links PTX only (input type %d refused)", (int)type);
  return CUDA_ERROR_NOT_SUPPORTED;
}

CUresult fake_cuLinkAddData_6050(CUlinkState state, CUjitInputType type, void *data, size_t size,
                                 const char *name, unsigned int numOptions, CUjit_option *options,
                                 void **optionValues) {
  (void)name;
  fk_link *l;
  CUresult rc = link_arg(state, &l);
  if (rc) return rc;
  if (!data || !size) return CUDA_ERROR_INVALID_VALUE;
  rc = fk_jit_options(numOptions, options, optionValues);
  if (rc) return rc;
  rc = input_type(type);
  if (rc) return rc;
  return add_ptx(l, data, size);
}

CUresult fake_cuLinkAddFile_6050(CUlinkState state, CUjitInputType type, const char *path,
                                 unsigned int numOptions, CUjit_option *options,
                                 void **optionValues) {
  fk_link *l;
  CUresult rc = link_arg(state, &l);
  if (rc) return rc;
  if (!path) return CUDA_ERROR_INVALID_VALUE;
  rc = fk_jit_options(numOptions, options, optionValues);
  if (rc) return rc;
  rc = input_type(type);
  if (rc) return rc;
  void *bytes;
  size_t size;
  rc = fk_image_read_file(path, &bytes, &size);
  if (rc) return rc;
  rc = add_ptx(l, bytes, size + 1);
  free(bytes);
  return rc;
}

CUresult fake_cuLinkComplete_5050(CUlinkState state, void **cubinOut, size_t *sizeOut) {
  fk_link *l;
  CUresult rc = link_arg(state, &l);
  if (rc) return rc;
  if (!cubinOut || !sizeOut) return CUDA_ERROR_INVALID_VALUE;
  if (!l->ptx) return CUDA_ERROR_INVALID_VALUE; /* nothing was added */
  /* Check it now, as a link would: the same parse a load makes. */
  size_t size;
  rc = fk_image_check(l->ptx, l->size, &size);
  if (rc == CUDA_SUCCESS) {
    module_impl *m;
    rc = fk_image_load(NULL, l->ptx, size, &m);
    if (rc == CUDA_SUCCESS) fk_module_free(m);
  }
  fk_jit_log_write(&l->log, rc);
  if (rc) return rc;
  *cubinOut = l->ptx; /* owned by the link state, as the driver's output is */
  *sizeOut = l->size;
  return CUDA_SUCCESS;
}

CUresult fake_cuLinkDestroy_5050(CUlinkState state) {
  fk_link *l;
  CUresult rc = link_arg(state, &l);
  if (rc) return rc;
  pthread_mutex_lock(&links_lock);
  fk_link **p = &links;
  while (*p && *p != l) p = &(*p)->next;
  bool found = *p != NULL;
  if (found) *p = l->next;
  pthread_mutex_unlock(&links_lock);
  if (!found) return CUDA_ERROR_INVALID_HANDLE; /* destroyed by another thread meanwhile */
  l->magic = 0;
  free(l->ptx);
  free(l);
  return CUDA_SUCCESS;
}
