/* Minted handles: the job's names for contexts, streams, events, modules,
 * functions, libraries and kernels, made here without asking the controller.
 *
 * A handle is the address of the object's record, as NVIDIA's driver answers
 * pointers to its own objects: clients rely on that (cuda.core, and numba-cuda
 * through it, turn handles into signed pointer-sized integers, which a value
 * with bit 63 set overflows). The records live in regions of this process's
 * memory, so CRIU brings them back at the same addresses and a restored job's
 * handles still name the same records, which the new controller rebinds.
 *
 * The job's processes share one controller, which files objects under their
 * handles, so two processes must never mint the same value, although siblings
 * forked from one parent see the same address space. Each process therefore
 * claims region numbers from a counter in the segment (mint_regions) and maps
 * its records at the addresses those numbers name, in a window no other
 * process of the job is given; a region whose addresses are already taken in
 * this process is skipped. While the job is frozen the controller closes the
 * counter (CGS_MINT_CLOSED) and a claim waits, so the count a dump writes is
 * the count the job's memory holds; the restore puts it back.
 *
 * Records are never freed or reused, so a lookup needs no lock, and a
 * destroyed object stays recognisable (stale handles get the driver's error
 * codes, never a read of freed memory). A lookup dereferences a value only when
 * it is a record's address inside one of this process's regions.
 */
#include "ic.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* The window: user space (below 2^47), far below the stack, and inside the
 * application ranges of both AddressSanitizer and ThreadSanitizer, which
 * refuse fixed mappings elsewhere. Address space only: pages are touched as
 * records are made. A process takes another region when one is full. */
#define WINDOW_BASE 0x7e8000000000ull
#define REGION_SIZE (1ull << 28)
#define NREGIONS 4096u /* region numbers in the window, for all of a job's processes */
#define PER_REGION ((uint32_t)(REGION_SIZE / sizeof(ic_obj)))
#define MAX_OWN 256u /* regions of one process: 256 * PER_REGION records */

_Static_assert(WINDOW_BASE + (uint64_t)NREGIONS * REGION_SIZE <= 0x7f8000000000ull, "window below the stack");
_Static_assert(NREGIONS < CGS_MINT_CLOSED, "region numbers never reach the closed bit");
_Static_assert(sizeof(ic_obj) % 8 == 0, "records are pointer-aligned");

pthread_mutex_t ic_obj_lock = PTHREAD_MUTEX_INITIALIZER;
static ic_obj *regions[MAX_OWN]; /* this process's regions, in claim order */
static uint32_t nregions;        /* published with a release store after regions[i] */
static uint32_t nrecords;        /* records made; guarded by ic_obj_lock, read atomically */
static ic_obj *primaries[CGS_MAX_DEVICES];
static unsigned long long next_ctx_id = 1;

/* The next region number of the job, once the counter is open (it is closed
 * while the job is frozen); -1 when every number is taken or the controller
 * is gone. */
static int64_t next_region_number(cgs_header *h) {
  for (;;) {
    uint32_t v = __atomic_load_n(&h->mint_regions, __ATOMIC_SEQ_CST);
    if (v & CGS_MINT_CLOSED) {
      if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) == CGS_STATE_DEAD) return -1;
      cgs_futex_wait(&h->mint_regions, v, 100);
      continue;
    }
    if (v >= NREGIONS) return -1;
    if (__atomic_compare_exchange_n(&h->mint_regions, &v, v + 1, false, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return v;
  }
}

/* Claim a region number and map it; called with ic_obj_lock held. */
static ic_obj *claim_region(void) {
  cgs_header *h = ic.h;
  if (!h || nregions >= MAX_OWN) return NULL;
  for (;;) {
    int64_t k = next_region_number(h);
    if (k < 0) {
      ic_say("no handle region is left for this process (the job's processes took all %u)", NREGIONS);
      return NULL;
    }
    void *want = (void *)(uintptr_t)(WINDOW_BASE + (uint64_t)k * REGION_SIZE);
    void *p = mmap(want, REGION_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == want) {
      regions[nregions] = p;
      __atomic_store_n(&nregions, nregions + 1, __ATOMIC_RELEASE);
      return p;
    }
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
  uint32_t i = nrecords;
  if (i / PER_REGION >= nregions && !claim_region()) return NULL;
  ic_obj *o = &regions[i / PER_REGION][i % PER_REGION];
  __atomic_store_n(&nrecords, i + 1, __ATOMIC_RELEASE);
  return o;
}

ic_obj *ic_obj_new(ic_kind kind, uint64_t ctx) {
  pthread_mutex_lock(&ic_obj_lock);
  ic_obj *o = next_record();
  pthread_mutex_unlock(&ic_obj_lock);
  return o ? fill(o, kind, ctx) : NULL;
}

ic_obj *ic_obj_peek(uint64_t handle, ic_kind kind) {
  uint32_t n = __atomic_load_n(&nregions, __ATOMIC_ACQUIRE);
  for (uint32_t r = 0; r < n; r++) {
    uint64_t base = (uint64_t)(uintptr_t)regions[r];
    if (handle < base || handle - base >= (uint64_t)PER_REGION * sizeof(ic_obj)) continue;
    uint64_t off = handle - base;
    if (off % sizeof(ic_obj)) return NULL;
    ic_obj *o = &regions[r][off / sizeof(ic_obj)];
    /* A record not made yet holds 0 there; one made holds its own address. */
    if (__atomic_load_n(&o->handle, __ATOMIC_ACQUIRE) != handle) return NULL;
    return o->kind == (uint32_t)kind ? o : NULL;
  }
  return NULL;
}

ic_obj *ic_primary(int device) {
  if (device < 0 || device >= CGS_MAX_DEVICES) return NULL;
  return __atomic_load_n(&primaries[device], __ATOMIC_ACQUIRE);
}

/* At attach: the first region, and the primary contexts' records in it. */
void ic_handles_init(void) {
  pthread_mutex_lock(&ic_obj_lock);
  for (int d = 0; d < ic.device_count; d++) {
    ic_obj *o = next_record();
    if (!o) break; /* no region: the devices' primary contexts are unusable */
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
    ic_obj *o = &regions[i / PER_REGION][i % PER_REGION];
    /* A link state outlives its context, as the driver's: cuLinkDestroy
     * still frees it (its adds and link answer the context's error). */
    if (o->kind != IC_CTX && o->kind != IC_LINK && o->ctx == ctx)
      __atomic_store_n(&o->state, IC_DESTROYED, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&ic_obj_lock);
}
