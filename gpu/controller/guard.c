/* Guarding the controller against files the job shrinks under it.
 *
 * The segment and the pinned-memory files are shared with the job, which can
 * ftruncate them: the controller's next access past the new end would raise
 * SIGBUS and kill it. A SIGBUS whose address lies in a guarded mapping is
 * answered by replacing that mapping with private zero pages (the access then
 * completes, reading zeros) and flagging the owner; the job has cut itself
 * off, the controller lives on. Other faults go to the handler that was
 * there before (the fake driver's, Python's faulthandler, or the default).
 */
#include "cgc_internal.h"

#include <signal.h>
#include <sys/mman.h>

#define CGC_GUARDS 1024

typedef struct guard {
  uintptr_t base; /* 0: free slot; published last */
  size_t len;
  int *flag; /* set to 1 when the mapping was replaced; may be NULL */
} guard;

static guard guards[CGC_GUARDS];
static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static __thread volatile sig_atomic_t chaining;

static void on_sigbus(int sig, siginfo_t *info, void *uctx) {
  uintptr_t a = info ? (uintptr_t)info->si_addr : 0;
  if (info && info->si_code > 0) {
    for (size_t i = 0; i < CGC_GUARDS; i++) {
      uintptr_t b = __atomic_load_n(&guards[i].base, __ATOMIC_ACQUIRE);
      if (!b || a < b || a - b >= guards[i].len) continue;
      /* mmap is a plain system call: safe here. */
      void *p = mmap((void *)b, guards[i].len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0);
      if (p != MAP_FAILED) {
        int *flag = guards[i].flag;
        if (flag) __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
        return; /* the access runs again, on zeros */
      }
    }
  }
  /* Another handler that chains may have been installed over ours with ours
   * as its predecessor while we chain to it: never go round twice. */
  if (!chaining) {
    chaining = 1;
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction) {
      previous.sa_sigaction(sig, info, uctx);
      chaining = 0;
      return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
      previous.sa_handler(sig);
      chaining = 0;
      return;
    }
    chaining = 0;
  }
  /* Default action: the faulting access runs again and kills the process. */
  signal(sig, SIG_DFL);
  if (!info || info->si_code <= 0) raise(sig);
}

static void install(void) {
  struct sigaction ours;
  memset(&ours, 0, sizeof ours);
  ours.sa_sigaction = on_sigbus;
  ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&ours.sa_mask);
  sigaction(SIGBUS, &ours, &previous);
}

void cgc_guard_add(void *base, size_t len, int *flag) {
  pthread_once(&install_once, install);
  for (size_t i = 0; i < CGC_GUARDS; i++) {
    if (__atomic_load_n(&guards[i].base, __ATOMIC_ACQUIRE)) continue;
    uintptr_t zero = 0;
    /* Claim with a placeholder, fill, then publish the real base. */
    if (!__atomic_compare_exchange_n(&guards[i].base, &zero, (uintptr_t)1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
      continue;
    guards[i].len = 0; /* the placeholder base 1 matches nothing meanwhile */
    guards[i].flag = flag;
    guards[i].len = len;
    __atomic_store_n(&guards[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
    return;
  }
  /* Table full: this mapping goes unguarded. */
}

void cgc_guard_remove(void *base) {
  for (size_t i = 0; i < CGC_GUARDS; i++) {
    if (__atomic_load_n(&guards[i].base, __ATOMIC_ACQUIRE) == (uintptr_t)base) {
      __atomic_store_n(&guards[i].base, 0, __ATOMIC_RELEASE);
      return;
    }
  }
}
