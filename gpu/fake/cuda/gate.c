/* The entry gate: every implemented API call goes through fk_gate_enter and
 * fk_gate_leave (gpu/api/exports.c brackets each export with them), so that
 * cuCheckpointProcessLock can hold new calls back and wait for the calls in
 * flight, as NVIDIA's driver does.
 *
 * The fast path is one atomic increment and one load on the way in, one
 * decrement on the way out. Entering and closing form a Dekker pair on
 * sequentially consistent atomics: a caller counts itself in, then looks at
 * the gate; the closer shuts the gate, then looks at the count. Either the
 * caller sees the gate shut (and counts itself out again, then sleeps until
 * it opens), or the closer sees the caller and waits for it to leave. A call
 * made from inside another call on the same thread (depth > 0) passes: it is
 * part of the outer call. A call made from a stream callback passes too: the
 * driver refuses those at once (CUDA_ERROR_NOT_PERMITTED), and holding one
 * back would keep the stream, and so a checkpoint's drain, from finishing.
 *
 * The words are futexes private to the process. Under CRIU a thread parked
 * on the gate is restored inside its futex wait on the same address, and the
 * restored service thread opens the gate on unlock as before.
 */
#include "fake.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int gate_closed;   /* 0 open, 1 closed */
static int gate_inflight; /* calls between enter and leave */
static __thread int gate_depth;

static void futex_wait_ms(int *word, int val, long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, ms >= 0 ? &ts : NULL, NULL, 0);
}

static void futex_wake_all(int *word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void fk_gate_enter(void) {
  if (gate_depth++) return;
  for (;;) {
    __atomic_add_fetch(&gate_inflight, 1, __ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&gate_closed, __ATOMIC_SEQ_CST) || fk_in_host_callback()) return;
    if (__atomic_sub_fetch(&gate_inflight, 1, __ATOMIC_SEQ_CST) == 0) futex_wake_all(&gate_inflight);
    while (__atomic_load_n(&gate_closed, __ATOMIC_SEQ_CST)) futex_wait_ms(&gate_closed, 1, -1);
  }
}

void fk_gate_leave(void) {
  if (--gate_depth) return;
  if (__atomic_sub_fetch(&gate_inflight, 1, __ATOMIC_SEQ_CST) == 0 &&
      __atomic_load_n(&gate_closed, __ATOMIC_SEQ_CST))
    futex_wake_all(&gate_inflight);
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

CUresult fk_gate_close(unsigned timeout_ms) {
  __atomic_store_n(&gate_closed, 1, __ATOMIC_SEQ_CST);
  long long deadline = now_ms() + timeout_ms;
  for (;;) {
    int n = __atomic_load_n(&gate_inflight, __ATOMIC_SEQ_CST);
    if (n == 0) return CUDA_SUCCESS;
    long wait = 50; /* a bound, in case a wake is missed */
    if (timeout_ms) {
      long long left = deadline - now_ms();
      if (left <= 0) {
        fk_gate_open();
        return CUDA_ERROR_NOT_READY;
      }
      if (left < wait) wait = (long)left;
    }
    futex_wait_ms(&gate_inflight, n, wait);
  }
}

void fk_gate_open(void) {
  __atomic_store_n(&gate_closed, 0, __ATOMIC_SEQ_CST);
  futex_wake_all(&gate_closed);
}

void fk_gate_reset_after_fork(void) {
  /* Only the forking thread lives on in the child, outside any call. */
  __atomic_store_n(&gate_closed, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&gate_inflight, 0, __ATOMIC_SEQ_CST);
  gate_depth = 0;
}
