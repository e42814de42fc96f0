/* Minted handles: the job's names for contexts, streams, events, modules,
 * functions, libraries and kernels, made here without asking the controller.
 *
 * A handle is the address of the object's record, as NVIDIA's driver answers
 * pointers to its own objects: clients rely on that (cuda.core, and numba-cuda
 * through it, turn handles into signed pointer-sized integers, which a value
 * with bit 63 set overflows). The records live in one region of this process's
 * memory, so CRIU brings them back at the same addresses and a restored job's
 * handles still name the same records, which the new controller rebinds.
 *
 * The job's processes share one controller, which files objects under their
 * handles, so two processes must never mint the same value, although siblings
 * forked from one parent see the same address space. Each process therefore
 * claims a region number from a counter in the segment (mint_regions) and maps
 * its records at the address that number names, in a window no other process
 * of the job is given; the controller carries the counter across a restore.
 * A region whose addresses are already taken in this process is skipped.
 *
 * Records are never freed or reused, so a lookup needs no lock, and a
 * destroyed object stays recognisable (stale handles get the driver's error
 * codes, never a read of freed memory). A lookup dereferences a value only when
 * it is a record's address inside this process's region.
 */
#include "ic.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* The window: user space (below 2^47), and inside the application ranges of
 * both AddressSanitizer and ThreadSanitizer, which refuse fixed mappings
 * elsewhere. Address space only: pages are touched as records are made. */
#define WINDOW_BASE 0x7e8000000000ull
#define REGION_SIZE (1ull << 30)
#define NREGIONS 1024u
#define NRECORDS ((uint32_t)(REGION_SIZE / sizeof(ic_obj)))

_Static_assert(WINDOW_BASE + (uint64_t)NREGIONS * REGION_SIZE <= (1ull << 47), "window in user space");
_Static_assert(sizeof(ic_obj) % 8 == 0, "records are pointer-aligned");

pthread_mutex_t ic_obj_lock = PTHREAD_MUTEX_INITIALIZER;
static ic_obj *records;   /* this process's region; NULL until claimed */
static uint32_t nrecords; /* records made; guarded by ic_obj_lock, read atomically */
static ic_obj *primaries[CGS_MAX_DEVICES];
static unsigned long long next_ctx_id = 1;

/* Claim a region number and map it. Called while the controller cannot
 * freeze (a call counted in inflight while RUNNING), so a dump sees the
 * counter with this claim in it. */
static ic_obj *claim_region(cgs_header *h) {
  for (;;) {
    uint32_t k = __atomic_fetch_add(&h->mint_regions, 1, __ATOMIC_SEQ_CST);
    if (k >= NREGIONS) {
      ic_say("no handle region is left for this process (the job's processes claimed %u)", NREGIONS);
      return NULL;
    }
    void *want = (void *)(uintptr_t)(WINDOW_BASE + (uint64_t)k * REGION_SIZE);
    void *p = mmap(want, REGION_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == want) return p;
    if (p != MAP_FAILED) {
      munmap(p, REGION_SIZE); /* a kernel that took the address as a hint */
      continue;
    }
    if (errno != EEXIST) {
      ic_say("cannot map a handle region at %p: %s", want, strerror(errno));
      return NULL;
    }
  }
}

static ic_obj *fill(ic_obj *o, ic_kind kind, uint64_t ctx) {
  uint64_t handle = (uint64_t)(uintptr_t)o;
  o->kind = kind;
  o->ctx = kind == IC_CTX ? handle : ctx;
  memset(&o->u, 0, sizeof o->u);
  if (kind == IC_CTX) {
    o->u.c.id = __atomic_fetch_add(&next_ctx_id, 1, __ATOMIC_RELAXED);
    o->u.c.limits[CU_LIMIT_STACK_SIZE] = 1024;
    o->u.c.limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20;
    o->u.c.limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20;
    o->u.c.limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
    o->u.c.limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
    o->u.c.limits[CU_LIMIT_MAX_L2_FETCH_GRANULARITY] = 64;
  }
  __atomic_store_n(&o->state, IC_ALIVE, __ATOMIC_RELAXED);
  /* The handle goes in last: a reader that sees it sees the object filled. */
  __atomic_store_n(&o->handle, handle, __ATOMIC_RELEASE);
  return o;
}

/* Called with ic_obj_lock held. */
static ic_obj *next_record(void) {
  if (!records || nrecords >= NRECORDS) return NULL;
  ic_obj *o = &records[nrecords];
  __atomic_store_n(&nrecords, nrecords + 1, __ATOMIC_RELEASE);
  return o;
}

ic_obj *ic_obj_new(ic_kind kind, uint64_t ctx) {
  pthread_mutex_lock(&ic_obj_lock);
  ic_obj *o = next_record();
  pthread_mutex_unlock(&ic_obj_lock);
  return o ? fill(o, kind, ctx) : NULL;
}

ic_obj *ic_obj_peek(uint64_t handle, ic_kind kind) {
  ic_obj *base = __atomic_load_n(&records, __ATOMIC_ACQUIRE);
  if (!base || handle < (uint64_t)(uintptr_t)base) return NULL;
  uint64_t off = handle - (uint64_t)(uintptr_t)base;
  if (off % sizeof(ic_obj) || off / sizeof(ic_obj) >= __atomic_load_n(&nrecords, __ATOMIC_ACQUIRE)) return NULL;
  ic_obj *o = &base[off / sizeof(ic_obj)];
  if (__atomic_load_n(&o->handle, __ATOMIC_ACQUIRE) != handle) return NULL;
  return o->kind == (uint32_t)kind ? o : NULL;
}

ic_obj *ic_primary(int device) {
  if (device < 0 || device >= CGS_MAX_DEVICES) return NULL;
  return __atomic_load_n(&primaries[device], __ATOMIC_ACQUIRE);
}

/* At attach (no call in hand): claim this process's region while the
 * controller runs, as a call does (see ic_enter), so that no dump reads the
 * counter between this claim and the job's memory that holds it. */
void ic_handles_init(void) {
  cgs_header *h = ic.h;
  ic_obj *region = NULL;
  for (;;) {
    __atomic_fetch_add(&h->inflight, 1, __ATOMIC_SEQ_CST);
    uint32_t st = __atomic_load_n(&h->state, __ATOMIC_SEQ_CST);
    if (st == CGS_STATE_RUNNING) {
      region = claim_region(h);
      __atomic_fetch_sub(&h->inflight, 1, __ATOMIC_SEQ_CST);
      break;
    }
    __atomic_fetch_sub(&h->inflight, 1, __ATOMIC_SEQ_CST);
    cgs_futex_wake(&h->inflight);
    if (st == CGS_STATE_DEAD) break;
    cgs_futex_wait(&h->state, st, 100);
  }
  pthread_mutex_lock(&ic_obj_lock);
  __atomic_store_n(&records, region, __ATOMIC_RELEASE);
  for (int d = 0; d < ic.device_count; d++) {
    ic_obj *o = next_record();
    if (!o) continue; /* no region: that device's primary context is unusable */
    fill(o, IC_CTX, 0);
    o->u.c.device = d;
    o->u.c.primary = 1;
    __atomic_store_n(&primaries[d], o, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&ic_obj_lock);
}

void ic_obj_drop_ctx(uint64_t ctx) {
  pthread_mutex_lock(&ic_obj_lock);
  for (uint32_t i = 0; i < nrecords; i++) {
    ic_obj *o = &records[i];
    if (o->kind != IC_CTX && o->ctx == ctx) __atomic_store_n(&o->state, IC_DESTROYED, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&ic_obj_lock);
}
