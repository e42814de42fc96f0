/* The `auto` GPU engine's hand-off: a job that asks for NVIDIA's runtime
 * export tables (cuGetExportTable) goes from the interposer to a driver it
 * loads itself, in its own process, and is checkpointed from then on by the
 * driver engine (NVIDIA's cuCheckpointProcess* API, which the fake driver
 * serves too).
 *
 * NVIDIA's runtime (libcudart, inside cuBLAS, PyTorch, cuda-bindings' runtime
 * module) asks for its export tables at initialisation, before it creates any
 * device state, and cannot run on anything but NVIDIA's driver (DESIGN.md).
 * So at the first cuGetExportTable, when the controller allows it
 * (CEDANA_GPU_ENGINE=auto) and says which driver it loaded
 * (CEDANA_GPU_HANDOFF_DRIVER, an absolute path):
 *   1. the driver is loaded by its absolute path, RTLD_LOCAL: with the
 *      interposer holding the SONAME libcuda.so.1 this is a second, separate
 *      object whose symbols do not collide with ours;
 *   2. the controller is told (ENGINE_HANDOFF). It refuses while the job
 *      holds device state there (a context, memory, a module, a stream...),
 *      which could not follow the job onto another driver: then the job gets
 *      one line naming `--gpu-engine driver` and the call fails, as it did
 *      before hand-offs existed (CUDA_ERROR_NOT_SUPPORTED);
 *   3. a job that already called cuInit here gets the new driver's cuInit;
 *   4. every export switches to the new driver's function of the same name
 *      (the passthrough generated in gpu/api/exports.c, CU_EXPORTS_FORWARD),
 *      cuGetProcAddress included, so pointers resolved before and after
 *      alike reach it; and this call is answered by it.
 * Without CEDANA_GPU_ENGINE=auto nothing changes: cuGetExportTable is not
 * supported by the interposer.
 */
#include "ic.h"

#include "impl_names.h"

#include <cudaTypedefs.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#define ENGINE_ENV "CEDANA_GPU_ENGINE"
#define DRIVER_ENV "CEDANA_GPU_HANDOFF_DRIVER"
#define USE_DRIVER_ENGINE "run it with --gpu-engine driver"

/* Ask the controller to let the job go to the driver engine. */
static CUresult tell_controller(void) {
  ic_thread *t = ic_self();
  if (!t) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = ic_enter(t);
  if (rc) return rc;
  cgs_symbol *r = (cgs_symbol *)t->req;
  memset(r, 0, sizeof *r);
  static const char engine[] = "driver";
  memcpy(r->name, engine, sizeof engine);
  ic_req(r, CGS_OP_ENGINE_HANDOFF, (uint32_t)(offsetof(cgs_symbol, name) + sizeof engine), 0);
  rc = ic_call(t, r, NULL);
  ic_leave();
  return rc;
}

static CUresult hand_off(void) {
  const char *engine = getenv(ENGINE_ENV);
  if (!engine || strcmp(engine, "auto") != 0) return ic_unsupported("cuGetExportTable");
  const char *path = getenv(DRIVER_ENV);
  if (!path || path[0] != '/') {
    ic_say("this program uses NVIDIA's CUDA runtime, and %s names no driver to hand it to: "
           USE_DRIVER_ENGINE, DRIVER_ENV);
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  CUresult rc = ic_attach();
  if (rc) return rc; /* said by ic_attach */
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    ic_say("this program uses NVIDIA's CUDA runtime, and the driver %s cannot be loaded (%s): "
           USE_DRIVER_ENGINE, path, dlerror());
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  rc = tell_controller();
  if (rc) {
    if (rc == CUDA_ERROR_ILLEGAL_STATE)
      ic_say("this program uses NVIDIA's CUDA runtime after it already holds GPU state through "
             "the interposer: " USE_DRIVER_ENGINE);
    else
      ic_say("this program uses NVIDIA's CUDA runtime, and the controller did not let it go "
             "(error %d): " USE_DRIVER_ENGINE, (int)rc);
    dlclose(dl);
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  if (__atomic_load_n(&ic_initialized, __ATOMIC_ACQUIRE)) {
    PFN_cuInit_v2000 init = (PFN_cuInit_v2000)dlsym(dl, "cuInit");
    CUresult irc = init ? init(0) : CUDA_ERROR_NOT_FOUND;
    if (irc) ic_say("cuInit on %s failed (error %d) after the hand-off", path, (int)irc);
  }
  ic_forward_to(dl);
  return CUDA_SUCCESS;
}

/* Once per process: every later call answers as the first did. */
static CUresult hand_off_once(void) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static bool tried;
  static CUresult result;
  pthread_mutex_lock(&lock);
  if (!tried) {
    result = hand_off();
    tried = true;
  }
  CUresult rc = result;
  pthread_mutex_unlock(&lock);
  return rc;
}

/* Reached only before the hand-off: afterwards the export itself forwards. */
CUresult ic_cuGetExportTable_3000(const void **ppExportTable, const CUuuid *pExportTableId) {
  CUresult rc = hand_off_once();
  if (rc) return rc;
  PFN_cuGetExportTable_v3000 real = (PFN_cuGetExportTable_v3000)ic_forwarded("cuGetExportTable");
  return real ? real(ppExportTable, pExportTableId) : CUDA_ERROR_NOT_SUPPORTED;
}
