/* Device allocations inside the controller's reserved address range.
 *
 * Device memory is mapped in chunks: cuMemCreate'd physical allocations
 * mapped with cuMemMap at addresses we choose inside one range reserved at
 * open (cuMemAddressReserve). A restore reserves the same range and maps the
 * same chunks at the same addresses, so the device pointers the job holds
 * stay valid, also inside structs no translation could reach.
 *
 * Allocations larger than CGC_SMALL_MAX (512 KiB) get a chunk of their own,
 * unmapped when freed (so a kernel using one after its free faults, as on the
 * driver alone). Smaller ones are slots in slabs: a chunk of one size class
 * (256 B .. 512 KiB, steps of 1x and 1.5x powers of two, every slot 256-byte
 * aligned) cut into equal slots; like the driver's own small allocations, a
 * freed slot stays mapped. A job making 100,000 small allocations then costs a few hundred
 * mappings, not 100,000 (each mapping is a kernel VMA and, on the fake
 * driver, a memfd: vm.max_map_count and the file limit end far sooner), and
 * a checkpoint saves a few hundred regions.
 *
 * Placement of chunks is first fit over a sorted list of free extents. Range
 * lookups (is this copy inside one of the job's allocations?) go through a
 * table with one entry per granule of the range naming its chunk, then the
 * slot: O(1) per lookup.
 *
 * Threads: the dispatcher allocates and takes (MEM_FREE) allocations and is
 * the only writer of the lookup tables (under c->lock, which other threads
 * read them under). Releases (after the free's synchronize) may run on a
 * completion worker: they only give the slot back (under va_lock); a slab
 * that became empty is unmapped later by the dispatcher (cgc_mem_reap), so a
 * worker never changes what the dispatcher reads without a lock. One empty
 * slab per size class is kept, so a loop allocating and freeing one buffer
 * does not map and unmap a chunk every time.
 */
#include "cgc_internal.h"

#include <errno.h>
#include <stdlib.h>

static const uint32_t class_size[CGC_NCLASSES] = {
    256,    512,    768,    1024,   1536,   2048,   3072,   4096,   6144,   8192,   12288,  16384,
    24576,  32768,  49152,  65536,  98304,  131072, 196608, 262144, 393216, 524288,
};

static uint64_t round_up(uint64_t v, uint64_t g) { return (v + g - 1) / g * g; }

static int class_of(uint64_t size) {
  for (int i = 0; i < CGC_NCLASSES; i++)
    if (size <= class_size[i]) return i;
  return -1;
}

/* A slab holds at least 8 slots and is at least one granule. */
static uint64_t slab_size(cgc_t *c, int cls) {
  uint64_t want = 8 * (uint64_t)class_size[cls];
  return round_up(want < c->granularity ? c->granularity : want, c->granularity);
}

static CUmemAllocationProp alloc_prop(int device) {
  CUmemAllocationProp p;
  memset(&p, 0, sizeof p);
  p.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  p.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  p.location.id = device;
  return p;
}

int cgc_va_geometry(cgc_t *c) {
  CUmemAllocationProp prop = alloc_prop(c->dev0);
  size_t g = 0;
  CUresult rc = c->drv.cuMemGetAllocationGranularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  if (rc != CUDA_SUCCESS || g == 0 || (g & (g - 1))) {
    cgc_set_error(c, "cuMemGetAllocationGranularity failed: %s", cgc_cu_name(c, rc));
    return rc ? (int)rc : (int)CUDA_ERROR_UNKNOWN;
  }
  c->granularity = g;
  if (c->va_size == 0) {
    size_t total = 0;
    rc = c->drv.cuDeviceTotalMem(&total, c->dev0);
    if (rc != CUDA_SUCCESS) {
      cgc_set_error(c, "cuDeviceTotalMem failed: %s", cgc_cu_name(c, rc));
      return (int)rc;
    }
    c->va_size = 2 * (uint64_t)total;
  }
  c->va_size = round_up(c->va_size, g);
  if (c->va_base % g) {
    cgc_set_error(c, "device address 0x%llx is not aligned to the allocation granularity (%zu)",
                  (unsigned long long)c->va_base, g);
    return -EINVAL;
  }
  return 0;
}

int cgc_va_init(cgc_t *c, bool reserved) {
  uint64_t asked = c->va_size;
  int err = cgc_va_geometry(c);
  if (err) return err;
  CUdeviceptr got = 0;
  if (reserved) {
    /* cgc_reserve took exactly this range in this process: a size that needed
     * rounding or no base at all cannot have come from it. */
    if (!c->va_base || asked != c->va_size) {
      cgc_set_error(c, "the reserved device range 0x%llx+0x%llx is not one cgc_reserve returned",
                    (unsigned long long)c->va_base, (unsigned long long)asked);
      return -EINVAL;
    }
    got = c->va_base;
  } else {
    CUresult rc = c->drv.cuMemAddressReserve(&got, c->va_size, c->granularity, (CUdeviceptr)c->va_base, 0);
    if (rc != CUDA_SUCCESS) {
      if (c->va_base)
        cgc_set_error(c, "device address range 0x%llx+0x%llx is not available: cuMemAddressReserve: %s",
                      (unsigned long long)c->va_base, (unsigned long long)c->va_size, cgc_cu_name(c, rc));
      else
        cgc_set_error(c, "cuMemAddressReserve of 0x%llx bytes failed: %s", (unsigned long long)c->va_size,
                      cgc_cu_name(c, rc));
      return (int)rc;
    }
    /* The address is only a hint to the driver: a restore must get exactly
     * the range the job's pointers live in, or nothing. */
    if (c->va_base && got != c->va_base) {
      c->drv.cuMemAddressFree(got, c->va_size);
      cgc_set_error(c, "device address range 0x%llx+0x%llx is not available (the driver offered 0x%llx)",
                    (unsigned long long)c->va_base, (unsigned long long)c->va_size, (unsigned long long)got);
      return (int)CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  c->va_base = got;
  c->va_reserved = true;
  c->npages = c->va_size / c->granularity;
  c->pages = malloc(c->npages * sizeof *c->pages);
  c->ext_cap = 64;
  c->ext = malloc(c->ext_cap * sizeof *c->ext);
  if (!c->pages || !c->ext) {
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  for (uint64_t i = 0; i < c->npages; i++) c->pages[i] = -1;
  c->ext[0].start = c->va_base;
  c->ext[0].len = c->va_size;
  c->n_ext = 1;
  return 0;
}

/* ---- free address extents (va_lock) -------------------------------------- */

/* First fit; returns 0 if nothing is large enough. */
static uint64_t ext_take(cgc_t *c, uint64_t len) {
  for (size_t i = 0; i < c->n_ext; i++) {
    if (c->ext[i].len < len) continue;
    uint64_t at = c->ext[i].start;
    c->ext[i].start += len;
    c->ext[i].len -= len;
    if (c->ext[i].len == 0) {
      memmove(&c->ext[i], &c->ext[i + 1], (c->n_ext - i - 1) * sizeof *c->ext);
      c->n_ext--;
    }
    return at;
  }
  return 0;
}

/* Index of the first extent starting at or after `start`. */
static size_t ext_lower(cgc_t *c, uint64_t start) {
  size_t lo = 0, hi = c->n_ext;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c->ext[mid].start < start)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static bool ext_room(cgc_t *c) {
  if (c->n_ext < c->ext_cap) return true;
  cgc_extent *n = realloc(c->ext, 2 * c->ext_cap * sizeof *n);
  if (!n) return false;
  c->ext = n;
  c->ext_cap *= 2;
  return true;
}

/* Take exactly [at, at+len) if it is free (restore). */
static bool ext_take_at(cgc_t *c, uint64_t at, uint64_t len) {
  size_t i = ext_lower(c, at + 1);
  if (i == 0) return false;
  cgc_extent *e = &c->ext[i - 1];
  if (at < e->start || at + len > e->start + e->len) return false;
  uint64_t head = at - e->start, tail = e->start + e->len - (at + len);
  if (head && tail) {
    if (!ext_room(c)) return false;
    e = &c->ext[i - 1];
    memmove(&c->ext[i + 1], &c->ext[i], (c->n_ext - i) * sizeof *c->ext);
    c->n_ext++;
    c->ext[i].start = at + len;
    c->ext[i].len = tail;
    e->len = head;
  } else if (head) {
    e->len = head;
  } else if (tail) {
    e->start = at + len;
    e->len = tail;
  } else {
    memmove(&c->ext[i - 1], &c->ext[i], (c->n_ext - i) * sizeof *c->ext);
    c->n_ext--;
  }
  return true;
}

/* Give [start, start+len) back, merging with its neighbours. */
static void ext_give(cgc_t *c, uint64_t start, uint64_t len) {
  size_t lo = ext_lower(c, start);
  bool merge_prev = lo > 0 && c->ext[lo - 1].start + c->ext[lo - 1].len == start;
  bool merge_next = lo < c->n_ext && start + len == c->ext[lo].start;
  if (merge_prev && merge_next) {
    c->ext[lo - 1].len += len + c->ext[lo].len;
    memmove(&c->ext[lo], &c->ext[lo + 1], (c->n_ext - lo - 1) * sizeof *c->ext);
    c->n_ext--;
  } else if (merge_prev) {
    c->ext[lo - 1].len += len;
  } else if (merge_next) {
    c->ext[lo].start = start;
    c->ext[lo].len += len;
  } else {
    if (!ext_room(c)) return; /* the range leaks; nothing else breaks */
    memmove(&c->ext[lo + 1], &c->ext[lo], (c->n_ext - lo) * sizeof *c->ext);
    c->ext[lo].start = start;
    c->ext[lo].len = len;
    c->n_ext++;
  }
}

static void va_give(cgc_t *c, uint64_t start, uint64_t len) {
  pthread_mutex_lock(&c->va_lock);
  ext_give(c, start, len);
  pthread_mutex_unlock(&c->va_lock);
}

uint64_t cgc_va_take(cgc_t *c, uint64_t len, uint64_t align) {
  uint64_t got = 0;
  pthread_mutex_lock(&c->va_lock);
  for (size_t i = 0; i < c->n_ext && !got; i++) {
    uint64_t at = round_up(c->ext[i].start, align);
    if (at < c->ext[i].start || at - c->ext[i].start > c->ext[i].len || len > c->ext[i].len - (at - c->ext[i].start))
      continue;
    if (ext_take_at(c, at, len)) got = at;
  }
  pthread_mutex_unlock(&c->va_lock);
  return got;
}

int cgc_va_take_at(cgc_t *c, uint64_t at, uint64_t len) {
  pthread_mutex_lock(&c->va_lock);
  bool ok = at >= c->va_base && len && at + len > at && at + len <= c->va_base + c->va_size && ext_take_at(c, at, len);
  pthread_mutex_unlock(&c->va_lock);
  return ok ? 0 : -1;
}

void cgc_va_give(cgc_t *c, uint64_t start, uint64_t len) { va_give(c, start, len); }

/* ---- mapping ---------------------------------------------------------------*/

static CUresult map_range(cgc_t *c, uint64_t at, uint64_t len, int device, CUmemGenericAllocationHandle *out) {
  CUmemAllocationProp prop = alloc_prop(device);
  CUmemGenericAllocationHandle h = 0;
  CUresult rc = c->drv.cuMemCreate(&h, len, &prop, 0);
  if (rc != CUDA_SUCCESS) return rc;
  rc = c->drv.cuMemMap(at, len, 0, h, 0);
  if (rc != CUDA_SUCCESS) {
    c->drv.cuMemRelease(h);
    return rc;
  }
  CUmemAccessDesc acc;
  memset(&acc, 0, sizeof acc);
  acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  acc.location.id = device;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  rc = c->drv.cuMemSetAccess(at, len, &acc, 1);
  if (rc != CUDA_SUCCESS) {
    c->drv.cuMemUnmap(at, len);
    c->drv.cuMemRelease(h);
    return rc;
  }
  *out = h;
  return CUDA_SUCCESS;
}

/* ---- chunks ------------------------------------------------------------- */

static void chunk_free(cgc_chunk *ch) {
  if (!ch) return;
  free(ch->free_slots);
  free(ch->slots);
  free(ch);
}

static cgc_chunk *chunk_new(uint64_t base, uint64_t size, int device, int cls, uint32_t slot_size) {
  cgc_chunk *ch = calloc(1, sizeof *ch);
  if (!ch) return NULL;
  ch->base = base;
  ch->size = size;
  ch->device = device;
  ch->cls = cls;
  ch->slot_size = cls < 0 ? 0 : slot_size; /* a big chunk is one slot: the whole chunk */
  ch->nslots = cls < 0 ? 1 : (uint32_t)(size / slot_size);
  ch->index = -1;
  ch->slots = calloc(ch->nslots, sizeof *ch->slots);
  if (cls >= 0) ch->free_slots = malloc(ch->nslots * sizeof *ch->free_slots);
  if (!ch->slots || (cls >= 0 && !ch->free_slots)) {
    chunk_free(ch);
    return NULL;
  }
  return ch;
}

/* Enter a mapped chunk in the tables. Caller holds c->lock. */
static int chunk_register(cgc_t *c, cgc_chunk *ch) {
  int32_t idx;
  if (c->nfree_chunk_idx) {
    idx = c->free_chunk_idx[--c->nfree_chunk_idx];
  } else {
    if (c->nchunks == c->chunk_cap) {
      int32_t cap = c->chunk_cap ? 2 * c->chunk_cap : 64;
      cgc_chunk **a = realloc(c->chunks, (size_t)cap * sizeof *a);
      if (!a) return -ENOMEM;
      c->chunks = a;
      int32_t *f = realloc(c->free_chunk_idx, (size_t)cap * sizeof *f);
      if (!f) return -ENOMEM;
      c->free_chunk_idx = f;
      c->chunk_cap = cap;
    }
    idx = c->nchunks++;
  }
  ch->index = idx;
  c->chunks[idx] = ch;
  uint64_t first = (ch->base - c->va_base) / c->granularity, n = ch->size / c->granularity;
  for (uint64_t i = 0; i < n; i++) c->pages[first + i] = idx;
  c->chunk_live++;
  c->chunk_bytes += ch->size;
  return 0;
}

/* Take a chunk out of the tables. Caller holds c->lock. */
static void chunk_unregister(cgc_t *c, cgc_chunk *ch) {
  if (ch->index < 0) return;
  uint64_t first = (ch->base - c->va_base) / c->granularity, n = ch->size / c->granularity;
  for (uint64_t i = 0; i < n; i++) c->pages[first + i] = -1;
  c->chunks[ch->index] = NULL;
  c->free_chunk_idx[c->nfree_chunk_idx++] = ch->index;
  ch->index = -1;
  c->chunk_live--;
  c->chunk_bytes -= ch->size;
}

/* Partial lists (va_lock). */
static void partial_add(cgc_t *c, cgc_chunk *ch) {
  if (ch->partial) return;
  cgc_chunk **head = &c->partial[ch->device][ch->cls];
  ch->pprev = NULL;
  ch->pnext = *head;
  if (*head) (*head)->pprev = ch;
  *head = ch;
  ch->partial = true;
}

static void partial_remove(cgc_t *c, cgc_chunk *ch) {
  if (!ch->partial) return;
  if (ch->pprev)
    ch->pprev->pnext = ch->pnext;
  else
    c->partial[ch->device][ch->cls] = ch->pnext;
  if (ch->pnext) ch->pnext->pprev = ch->pprev;
  ch->pnext = ch->pprev = NULL;
  ch->partial = false;
}

static void unmap_chunk(cgc_t *c, cgc_chunk *ch) {
  CUresult rc = c->drv.cuMemUnmap(ch->base, ch->size);
  c->drv.cuMemRelease(ch->handle);
  /* Only a range that really was unmapped can be handed out again. */
  if (rc == CUDA_SUCCESS) va_give(c, ch->base, ch->size);
  chunk_free(ch);
}

void cgc_mem_reap(cgc_t *c) {
  if (!__atomic_load_n(&c->reap, __ATOMIC_ACQUIRE)) return;
  cgc_chunk *doomed = NULL;
  pthread_mutex_lock(&c->va_lock);
  cgc_chunk *list = c->reap;
  c->reap = NULL;
  while (list) {
    cgc_chunk *ch = list;
    list = ch->rnext;
    ch->reap_queued = false;
    if (ch->live) continue; /* allocated from again meanwhile */
    /* Keep one empty slab per class: the one at the head of its list. */
    cgc_chunk *head = c->partial[ch->device][ch->cls];
    bool other = (head && head != ch) || ch->pnext;
    if (!other) continue;
    partial_remove(c, ch);
    ch->rnext = doomed;
    doomed = ch;
  }
  pthread_mutex_unlock(&c->va_lock);
  while (doomed) {
    cgc_chunk *ch = doomed;
    doomed = ch->rnext;
    pthread_mutex_lock(&c->lock);
    chunk_unregister(c, ch);
    pthread_mutex_unlock(&c->lock);
    unmap_chunk(c, ch);
  }
}

/* ---- allocations -------------------------------------------------------- */

static int32_t alloc_slot(cgc_t *c) {
  if (c->nfree_idx) return c->free_alloc_idx[--c->nfree_idx];
  if (c->nallocs == c->alloc_cap) {
    int32_t cap = c->alloc_cap ? 2 * c->alloc_cap : 256;
    cgc_alloc **a = realloc(c->allocs, (size_t)cap * sizeof *a);
    if (!a) return -1;
    c->allocs = a;
    int32_t *f = realloc(c->free_alloc_idx, (size_t)cap * sizeof *f);
    if (!f) return -1;
    c->free_alloc_idx = f;
    c->alloc_cap = cap;
  }
  return c->nallocs++;
}

/* Enter allocation `a` (its chunk, slot and sizes set). Caller holds c->lock. */
static int alloc_register(cgc_t *c, cgc_alloc *a) {
  int32_t idx = alloc_slot(c);
  if (idx < 0) return -ENOMEM;
  a->index = idx;
  c->allocs[idx] = a;
  a->chunk->slots[a->slot] = a;
  a->chunk->used++;
  c->alloc_live++;
  c->alloc_bytes += a->size;
  return 0;
}

/* A new chunk for a big allocation of `len` bytes, or a slab of class cls. */
static CUresult chunk_create(cgc_t *c, uint64_t len, int device, int cls, cgc_chunk **out) {
  pthread_mutex_lock(&c->va_lock);
  uint64_t at = ext_take(c, len);
  pthread_mutex_unlock(&c->va_lock);
  if (!at) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_chunk *ch = chunk_new(at, len, device, cls, cls < 0 ? 0 : class_size[cls]);
  if (!ch) {
    va_give(c, at, len);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  CUresult rc = map_range(c, at, len, device, &ch->handle);
  if (rc != CUDA_SUCCESS) {
    va_give(c, at, len);
    chunk_free(ch);
    /* The driver says OUT_OF_MEMORY for a full device; keep its answer. */
    return rc;
  }
  pthread_mutex_lock(&c->lock);
  int r = chunk_register(c, ch);
  pthread_mutex_unlock(&c->lock);
  if (r) {
    unmap_chunk(c, ch);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *out = ch;
  return CUDA_SUCCESS;
}

static CUresult alloc_big(cgc_t *c, uint64_t size, int device, uint64_t ctx, uint64_t *dptr) {
  uint64_t len = round_up(size, c->granularity);
  cgc_alloc *a = calloc(1, sizeof *a);
  if (!a) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_chunk *ch;
  CUresult rc = chunk_create(c, len, device, -1, &ch);
  if (rc) {
    free(a);
    return rc;
  }
  a->dptr = ch->base;
  a->size = len;
  a->req_size = size;
  a->handle = ch->handle;
  a->device = device;
  a->ctx = ctx;
  a->chunk = ch;
  a->slot = 0;
  ch->live = 1;
  pthread_mutex_lock(&c->lock);
  int r = alloc_register(c, a);
  if (r) chunk_unregister(c, ch);
  pthread_mutex_unlock(&c->lock);
  if (r) {
    unmap_chunk(c, ch);
    free(a);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *dptr = a->dptr;
  return CUDA_SUCCESS;
}

/* Pop a free slot of class cls on device, or create a slab. */
static CUresult slot_take(cgc_t *c, int device, int cls, cgc_chunk **out, uint32_t *slot) {
  pthread_mutex_lock(&c->va_lock);
  cgc_chunk *ch = c->partial[device][cls];
  if (ch) {
    *slot = ch->free_slots[--ch->nfree];
    ch->live++;
    if (!ch->nfree) partial_remove(c, ch);
    pthread_mutex_unlock(&c->va_lock);
    *out = ch;
    return CUDA_SUCCESS;
  }
  pthread_mutex_unlock(&c->va_lock);
  CUresult rc = chunk_create(c, slab_size(c, cls), device, cls, &ch);
  if (rc) return rc;
  /* Lowest addresses first. */
  for (uint32_t i = 0; i < ch->nslots; i++) ch->free_slots[i] = ch->nslots - 1 - i;
  ch->nfree = ch->nslots;
  pthread_mutex_lock(&c->va_lock);
  *slot = ch->free_slots[--ch->nfree];
  ch->live++;
  if (ch->nfree) partial_add(c, ch);
  pthread_mutex_unlock(&c->va_lock);
  *out = ch;
  return CUDA_SUCCESS;
}

/* Give a slot back (any thread). */
static void slot_give(cgc_t *c, cgc_chunk *ch, uint32_t slot) {
  pthread_mutex_lock(&c->va_lock);
  ch->free_slots[ch->nfree++] = slot;
  ch->live--;
  partial_add(c, ch);
  if (!ch->live && !ch->reap_queued) {
    ch->reap_queued = true;
    ch->rnext = c->reap;
    __atomic_store_n(&c->reap, ch, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&c->va_lock);
}

CUresult cgc_mem_alloc(cgc_t *c, uint64_t size, int device, uint64_t ctx, uint64_t *dptr) {
  if (!c->va_reserved) return CUDA_ERROR_NOT_INITIALIZED;
  if (size == 0) return CUDA_ERROR_INVALID_VALUE;
  if (size > c->va_size) return CUDA_ERROR_OUT_OF_MEMORY;
  if (device < 0 || device >= CGS_MAX_DEVICES) return CUDA_ERROR_INVALID_DEVICE;
  cgc_mem_reap(c);
  int cls = size <= CGC_SMALL_MAX ? class_of(size) : -1;
  if (cls < 0) return alloc_big(c, size, device, ctx, dptr);
  cgc_alloc *a = calloc(1, sizeof *a);
  if (!a) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_chunk *ch;
  uint32_t slot;
  CUresult rc = slot_take(c, device, cls, &ch, &slot);
  if (rc) {
    free(a);
    return rc;
  }
  a->dptr = ch->base + (uint64_t)slot * ch->slot_size;
  a->size = ch->slot_size;
  a->req_size = size;
  a->handle = ch->handle;
  a->device = device;
  a->ctx = ctx;
  a->chunk = ch;
  a->slot = slot;
  pthread_mutex_lock(&c->lock);
  int r = alloc_register(c, a);
  pthread_mutex_unlock(&c->lock);
  if (r) {
    slot_give(c, ch, slot);
    free(a);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *dptr = a->dptr;
  return CUDA_SUCCESS;
}

static cgc_chunk *chunk_at(cgc_t *c, uint64_t p) {
  if (!c->va_reserved || p < c->va_base || p - c->va_base >= c->va_size) return NULL;
  int32_t idx = c->pages[(p - c->va_base) / c->granularity];
  return idx < 0 ? NULL : c->chunks[idx];
}

static cgc_alloc *alloc_at(cgc_t *c, uint64_t p) {
  cgc_chunk *ch = chunk_at(c, p);
  if (!ch) return NULL;
  if (ch->cls < 0) return ch->slots[0];
  uint64_t s = (p - ch->base) / ch->slot_size;
  return s < ch->nslots ? ch->slots[s] : NULL;
}

cgc_alloc *cgc_mem_at(cgc_t *c, uint64_t dptr) {
  cgc_alloc *a = c->va_reserved ? alloc_at(c, dptr) : NULL;
  return a && a->dptr == dptr ? a : NULL;
}

cgc_chunk *cgc_chunk_holding(cgc_t *c, uint64_t p, uint64_t len) {
  cgc_chunk *ch = chunk_at(c, p);
  if (!ch || len > ch->size - (p - ch->base)) return NULL;
  return ch;
}

cgc_alloc *cgc_mem_take(cgc_t *c, uint64_t dptr) {
  if (!c->va_reserved) return NULL;
  cgc_alloc *a = alloc_at(c, dptr);
  if (!a || a->dptr != dptr) return NULL;
  pthread_mutex_lock(&c->lock);
  cgc_chunk *ch = a->chunk;
  ch->slots[a->slot] = NULL;
  ch->used--;
  /* A big allocation's chunk goes with it; a slot stays taken until the
   * release gives it back. */
  if (ch->cls < 0) chunk_unregister(c, ch);
  c->allocs[a->index] = NULL;
  c->free_alloc_idx[c->nfree_idx++] = a->index;
  c->alloc_live--;
  c->alloc_bytes -= a->size;
  pthread_mutex_unlock(&c->lock);
  return a;
}

CUresult cgc_mem_release(cgc_t *c, cgc_alloc *a) {
  cgc_chunk *ch = a->chunk;
  CUresult rc = CUDA_SUCCESS;
  if (ch->cls < 0) {
    rc = c->drv.cuMemUnmap(ch->base, ch->size);
    CUresult rc2 = c->drv.cuMemRelease(ch->handle);
    if (rc == CUDA_SUCCESS) va_give(c, ch->base, ch->size);
    chunk_free(ch);
    if (!rc) rc = rc2;
  } else {
    slot_give(c, ch, a->slot);
  }
  free(a);
  return rc;
}

uint64_t cgc_global_remap(cgc_t *c, uint64_t p) {
  for (int i = 0; i < c->nremaps; i++) {
    const cgc_remap *r = &c->remaps[i];
    if (p >= r->old && p - r->old < r->size) return r->now + (p - r->old);
  }
  return p;
}

bool cgc_mem_valid(cgc_t *c, uint64_t p, uint64_t len) {
  if (p + len < p) return false;
  cgc_alloc *a = c->va_reserved ? alloc_at(c, p) : NULL;
  if (a) return p >= a->dptr && p + len <= a->dptr + a->size;
  for (int i = 0; i < c->nglobals; i++) {
    const cgc_global *g = &c->globals[i];
    if (p >= g->dptr && p - g->dptr <= g->size && len <= g->size - (p - g->dptr)) return true;
  }
  if (c->nvmap && cgc_vmm_valid(c, p, len)) return true;
  /* Pinned host memory mapped at the job's address: device-accessible. */
  CGC_HMAP_EACH(&c->pins, const cgc_pin *, pin) {
    uint64_t b = (uint64_t)(uintptr_t)pin->map;
    if (pin->same_addr && pin->registered && p >= b && p - b <= pin->size && len <= pin->size - (p - b))
      return true;
  }
  return false;
}

/* ---- restore ------------------------------------------------------------ */

int cgc_mem_chunk_at(cgc_t *c, uint64_t base, uint64_t size, int device, uint32_t slot_size, cgc_chunk **out) {
  *out = NULL;
  if (!c->va_reserved) {
    cgc_set_error(c, "no device address range reserved");
    return -EINVAL;
  }
  if (device < 0 || device >= c->device_count) {
    cgc_set_error(c, "chunk 0x%llx is on device %d; this machine has %d device(s)", (unsigned long long)base,
                  device, c->device_count);
    return (int)CUDA_ERROR_INVALID_DEVICE;
  }
  if (size == 0 || base % c->granularity || size % c->granularity || base < c->va_base ||
      base - c->va_base > c->va_size || size > c->va_size - (base - c->va_base)) {
    cgc_set_error(c, "chunk 0x%llx+0x%llx lies outside the device address range 0x%llx+0x%llx or is not aligned "
                  "to the granularity (0x%llx)",
                  (unsigned long long)base, (unsigned long long)size, (unsigned long long)c->va_base,
                  (unsigned long long)c->va_size, (unsigned long long)c->granularity);
    return -EINVAL;
  }
  int cls = -1;
  if (slot_size) {
    for (int i = 0; i < CGC_NCLASSES; i++)
      if (class_size[i] == slot_size) cls = i;
    if (cls < 0) {
      cgc_set_error(c, "chunk 0x%llx: slot size %u is not a size class of this controller",
                    (unsigned long long)base, slot_size);
      return -EINVAL;
    }
  }
  pthread_mutex_lock(&c->va_lock);
  bool ok = ext_take_at(c, base, size);
  pthread_mutex_unlock(&c->va_lock);
  if (!ok) {
    cgc_set_error(c, "device address range 0x%llx+0x%llx is not available (overlaps another chunk)",
                  (unsigned long long)base, (unsigned long long)size);
    return -EEXIST;
  }
  cgc_chunk *ch = chunk_new(base, size, device, cls, slot_size);
  if (!ch) {
    va_give(c, base, size);
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  CUresult rc = map_range(c, base, size, device, &ch->handle);
  if (rc != CUDA_SUCCESS) {
    va_give(c, base, size);
    chunk_free(ch);
    cgc_set_error(c, "cannot map device memory at 0x%llx+0x%llx on device %d: %s", (unsigned long long)base,
                  (unsigned long long)size, device, cgc_cu_name(c, rc));
    return (int)rc;
  }
  pthread_mutex_lock(&c->lock);
  int r = chunk_register(c, ch);
  pthread_mutex_unlock(&c->lock);
  if (r) {
    unmap_chunk(c, ch);
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  *out = ch;
  return 0;
}

int cgc_mem_place(cgc_t *c, cgc_chunk *ch, uint64_t dptr, uint64_t req_size, uint64_t ctx) {
  uint64_t slot, size;
  if (ch->cls < 0) {
    if (dptr != ch->base || req_size > ch->size || req_size == 0 || ch->slots[0]) goto bad;
    slot = 0;
    size = ch->size;
  } else {
    if (dptr < ch->base || (dptr - ch->base) % ch->slot_size || req_size == 0 || req_size > ch->slot_size)
      goto bad;
    slot = (dptr - ch->base) / ch->slot_size;
    if (slot >= ch->nslots || ch->slots[slot]) goto bad;
    size = ch->slot_size;
  }
  cgc_alloc *a = calloc(1, sizeof *a);
  if (!a) {
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  a->dptr = dptr;
  a->size = size;
  a->req_size = req_size;
  a->handle = ch->handle;
  a->device = ch->device;
  a->ctx = ctx;
  a->chunk = ch;
  a->slot = (uint32_t)slot;
  pthread_mutex_lock(&c->lock);
  int r = alloc_register(c, a);
  pthread_mutex_unlock(&c->lock);
  if (r) {
    free(a);
    cgc_set_error(c, "out of memory");
    return -ENOMEM;
  }
  pthread_mutex_lock(&c->va_lock);
  ch->live++;
  pthread_mutex_unlock(&c->va_lock);
  return 0;
bad:
  cgc_set_error(c, "allocation 0x%llx (%llu bytes) does not fit chunk 0x%llx+0x%llx (slot size %u) or overlaps "
                   "another allocation",
                (unsigned long long)dptr, (unsigned long long)req_size, (unsigned long long)ch->base,
                (unsigned long long)ch->size, ch->slot_size);
  return -EINVAL;
}

void cgc_mem_chunk_done(cgc_t *c, cgc_chunk *ch) {
  if (ch->cls < 0) return;
  pthread_mutex_lock(&c->va_lock);
  ch->nfree = 0;
  for (uint32_t i = ch->nslots; i-- > 0;)
    if (!ch->slots[i]) ch->free_slots[ch->nfree++] = i;
  if (ch->nfree) partial_add(c, ch);
  pthread_mutex_unlock(&c->va_lock);
}

/* ---- teardown ----------------------------------------------------------- */

void cgc_va_free_all(cgc_t *c) {
  cgc_vmm_free_all(c);
  for (int32_t i = 0; i < c->nallocs; i++) {
    free(c->allocs[i]);
    c->allocs[i] = NULL;
  }
  for (int32_t i = 0; i < c->nchunks; i++) {
    cgc_chunk *ch = c->chunks[i];
    if (!ch) continue;
    c->drv.cuMemUnmap(ch->base, ch->size);
    c->drv.cuMemRelease(ch->handle);
    chunk_free(ch);
    c->chunks[i] = NULL;
  }
  c->nallocs = c->alloc_live = 0;
  c->nfree_idx = 0;
  c->alloc_bytes = 0;
  c->nchunks = c->chunk_live = c->nfree_chunk_idx = 0;
  c->chunk_bytes = 0;
  memset(c->partial, 0, sizeof c->partial);
  c->reap = NULL;
  if (c->va_reserved) c->drv.cuMemAddressFree(c->va_base, c->va_size);
  c->va_reserved = false;
  free(c->pages);
  c->pages = NULL;
  free(c->ext);
  c->ext = NULL;
  free(c->allocs);
  c->allocs = NULL;
  free(c->free_alloc_idx);
  c->free_alloc_idx = NULL;
  c->alloc_cap = 0;
  free(c->chunks);
  c->chunks = NULL;
  free(c->free_chunk_idx);
  c->free_chunk_idx = NULL;
  c->chunk_cap = 0;
  free(c->remaps);
  c->remaps = NULL;
  c->nremaps = 0;
}
