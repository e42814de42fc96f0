/* Ring and doorbell discipline shared by the interposer and the controller.
 * Both sides must agree on it bit for bit, so it lives next to the layout.
 *
 * The ring is a bounded multi-producer queue (one consumer): a producer takes
 * tickets with one fetch-add on header.head, waits until each slot is free
 * (seq == ticket), fills it, and publishes it (seq = ticket + 1). The
 * controller consumes slots in ticket order and frees them (seq = ticket +
 * ring_slots). Producers ring the doorbell only when the controller said it
 * sleeps, so a busy controller costs a queued call no system call.
 */
#ifndef CEDANA_GPU_RING_H
#define CEDANA_GPU_RING_H

#include "cedana_gpu_shm.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline void cgs_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Futexes in the segment are shared between processes: no FUTEX_PRIVATE. */
static inline int cgs_futex_wait(uint32_t *word, uint32_t expected, int timeout_ms) {
  struct timespec ts, *tsp = NULL;
  if (timeout_ms >= 0) {
    ts.tv_sec = timeout_ms / 1000;
    ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    tsp = &ts;
  }
  return (int)syscall(SYS_futex, word, FUTEX_WAIT, expected, tsp, NULL, 0);
}

static inline void cgs_futex_wake(uint32_t *word) {
  syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline cgs_slot *cgs_ring(cgs_header *h, uint64_t ring_offset) {
  return (cgs_slot *)((char *)h + ring_offset);
}

static inline uint32_t cgs_slots_for(uint32_t length) {
  return (length + CGS_SLOT_DATA - 1) / CGS_SLOT_DATA;
}

/* Producer: reserve `n` consecutive tickets. */
static inline uint64_t cgs_reserve(cgs_header *h, uint32_t n) {
  return __atomic_fetch_add(&h->head, n, __ATOMIC_ACQ_REL);
}

/* Producer: wait until ticket t's slot is free (the ring may be full). */
static inline cgs_slot *cgs_wait_free(cgs_slot *ring, uint32_t mask, uint64_t t) {
  cgs_slot *s = &ring[t & mask];
  unsigned spins = 0;
  while (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != t) {
    if (++spins < 1024)
      cgs_cpu_relax();
    else
      sched_yield();
  }
  return s;
}

/* Producer: copy a request of `len` bytes into the tickets starting at t and
 * publish them. The first slot is published last, so the consumer never sees
 * a head slot whose continuation is still being written. */
static inline void cgs_write_request(cgs_header *h, cgs_slot *ring, uint32_t mask, uint64_t t,
                                     const void *req, uint32_t len) {
  uint32_t n = cgs_slots_for(len);
  const uint8_t *src = (const uint8_t *)req;
  for (uint32_t i = n; i-- > 0;) {
    cgs_slot *s = cgs_wait_free(ring, mask, t + i);
    uint32_t off = i * CGS_SLOT_DATA;
    uint32_t chunk = len - off < CGS_SLOT_DATA ? len - off : CGS_SLOT_DATA;
    memcpy(s->data, src + off, chunk);
    __atomic_store_n(&s->seq, t + i + 1, __ATOMIC_RELEASE);
  }
  (void)h;
}

/* Producer: wake the controller if it sleeps. The fence orders the slot
 * publication before the read of ctrl_sleeping (the controller orders its
 * store of ctrl_sleeping before its last look at the ring the same way). */
static inline void cgs_ring_doorbell(cgs_header *h) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (__atomic_load_n(&h->ctrl_sleeping, __ATOMIC_RELAXED)) {
    __atomic_fetch_add(&h->ctrl_doorbell, 1, __ATOMIC_RELEASE);
    cgs_futex_wake(&h->ctrl_doorbell);
  }
}

static inline cgs_channel *cgs_channel_at(cgs_header *h, uint64_t channels_offset, uint64_t stride,
                                          uint32_t i) {
  return (cgs_channel *)((char *)h + channels_offset + stride * i);
}

static inline uint8_t *cgs_staging(cgs_channel *c) { return (uint8_t *)c + CGS_CHANNEL_HEADER; }

#endif
