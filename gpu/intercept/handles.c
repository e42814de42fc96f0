/* Minted handles: the job's names for contexts, streams, events, modules and
 * functions, made here without asking the controller.
 *
 * A handle is tag << 56 | pid << 32 | index. The tag (0xC0 | kind) keeps it
 * away from 0, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD and from any real
 * pointer (it is not a canonical address); the pid keeps the handles of the
 * job's processes apart in the one controller; the index finds the object.
 * Objects live in chunks that are never freed or moved, so a lookup needs no
 * lock, and a destroyed object stays recognisable (stale handles get the
 * driver's error codes, never a read of freed memory). Indices are never
 * reused: after a restore, the job's memory still holds the same counter.
 */
#include "ic.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BITS 12
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define NCHUNKS (1u << 16) /* 2^28 objects per process */
#define FIRST_INDEX 16     /* 1 + device: the primary contexts */

pthread_mutex_t ic_obj_lock = PTHREAD_MUTEX_INITIALIZER;
static ic_obj *chunks[NCHUNKS];
static uint32_t next_index = FIRST_INDEX; /* guarded by ic_obj_lock */
static unsigned long long next_ctx_id = 1;

static uint64_t make_handle(ic_kind kind, uint32_t index) {
  return (uint64_t)(0xC0u | (unsigned)kind) << 56 | (uint64_t)ic.pid24 << 32 | index;
}

/* Called with ic_obj_lock held. */
static ic_obj *slot(uint32_t index) {
  uint32_t c = index >> CHUNK_BITS;
  if (c >= NCHUNKS) return NULL;
  ic_obj *chunk = chunks[c];
  if (!chunk) {
    chunk = calloc(CHUNK_SIZE, sizeof *chunk);
    if (!chunk) return NULL;
    __atomic_store_n(&chunks[c], chunk, __ATOMIC_RELEASE);
  }
  return &chunk[index & (CHUNK_SIZE - 1)];
}

static ic_obj *fill(ic_obj *o, ic_kind kind, uint64_t handle, uint64_t ctx) {
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

ic_obj *ic_obj_new(ic_kind kind, uint64_t ctx) {
  pthread_mutex_lock(&ic_obj_lock);
  uint32_t index = next_index;
  ic_obj *o = slot(index);
  if (o) next_index++;
  pthread_mutex_unlock(&ic_obj_lock);
  return o ? fill(o, kind, make_handle(kind, index), ctx) : NULL;
}

ic_obj *ic_obj_peek(uint64_t handle, ic_kind kind) {
  if ((handle >> 56) != (0xC0u | (unsigned)kind) || ((handle >> 32) & 0xffffffu) != ic.pid24)
    return NULL;
  uint32_t index = (uint32_t)handle;
  if ((index >> CHUNK_BITS) >= NCHUNKS) return NULL;
  ic_obj *chunk = __atomic_load_n(&chunks[index >> CHUNK_BITS], __ATOMIC_ACQUIRE);
  if (!chunk) return NULL;
  ic_obj *o = &chunk[index & (CHUNK_SIZE - 1)];
  return __atomic_load_n(&o->handle, __ATOMIC_ACQUIRE) == handle ? o : NULL;
}

ic_obj *ic_primary(int device) {
  if (device < 0 || device >= CGS_MAX_DEVICES) return NULL;
  return ic_obj_peek(make_handle(IC_CTX, 1u + (uint32_t)device), IC_CTX);
}

void ic_handles_init(void) {
  pthread_mutex_lock(&ic_obj_lock);
  for (int d = 0; d < ic.device_count; d++) {
    ic_obj *o = slot(1u + (uint32_t)d);
    if (!o) continue; /* out of memory: that device's primary context is unusable */
    fill(o, IC_CTX, make_handle(IC_CTX, 1u + (uint32_t)d), 0);
    o->u.c.device = d;
    o->u.c.primary = 1;
  }
  pthread_mutex_unlock(&ic_obj_lock);
}

void ic_obj_drop_ctx(uint64_t ctx) {
  pthread_mutex_lock(&ic_obj_lock);
  uint32_t end = next_index;
  for (uint32_t i = FIRST_INDEX; i < end; i++) {
    ic_obj *chunk = chunks[i >> CHUNK_BITS];
    if (!chunk) continue;
    ic_obj *o = &chunk[i & (CHUNK_SIZE - 1)];
    if (o->kind != IC_CTX && o->ctx == ctx) __atomic_store_n(&o->state, IC_DESTROYED, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&ic_obj_lock);
}
