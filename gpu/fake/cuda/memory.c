/* Device and pinned host memory: the registry of every allocation the driver
 * knows, the per-device address ranges, and the allocation API.
 *
 * Each device owns a large reserved address range (PROT_NONE, no memory
 * cost). Device allocations are carved from it and its pages are mapped
 * read-write only while something lives in them, so a use after free faults
 * like an illegal address on a GPU (for small allocations, once the 2 MiB
 * page they share is empty, as on a GPU). Pinned host memory is ordinary host
 * memory outside those ranges; under unified addressing its device pointer is
 * its host pointer. */
#include "fk_memory.h"
#include "memory_rules.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Device ranges start at 32 TiB, 4 TiB apart: far from the executable
 * (~85 TiB), the libraries and stack (~127 TiB) and the heap, and the same
 * in every process so addresses survive a restart of the owning process. */
#define VA_FIRST_BASE ((uintptr_t)0x200000000000ULL)
#define VA_STRIDE ((size_t)0x40000000000ULL)

static size_t page_size = 4096;

size_t fk_page_size(void) { return page_size; }

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* ---- registry ------------------------------------------------------------
 * A sorted array of entries under a rwlock: every copy looks its pointers up,
 * so lookups (binary search, shared lock) must be cheap; allocation and free
 * are rarer. Entries are recycled, never returned to malloc, so a pointer
 * handed out by fk_mem_find stays readable even if its allocation is freed
 * meanwhile. */
static pthread_rwlock_t reg_lock = PTHREAD_RWLOCK_INITIALIZER;
static fk_alloc **reg;
static size_t reg_n, reg_cap;
static fk_alloc *spare;
static unsigned long long next_id = 1;

unsigned long long fk_mem_new_id(void) {
  return __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
}

/* Index of the last entry with base <= p, or -1. Caller holds reg_lock. */
static long floor_index(uintptr_t p) {
  long lo = 0, hi = (long)reg_n - 1, ans = -1;
  while (lo <= hi) {
    long mid = lo + (hi - lo) / 2;
    if (reg[mid]->base <= p) {
      ans = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return ans;
}

static bool holds(const fk_alloc *a, uintptr_t p) {
  return p >= a->base && (p - a->base < a->size || (a->size == 0 && p == a->base));
}

static bool writable(const fk_alloc *a) { return !(a->flags & FK_ALLOC_READONLY); }

fk_alloc *fk_mem_find(uintptr_t ptr, size_t len) {
  fk_alloc *found = NULL;
  pthread_rwlock_rdlock(&reg_lock);
  long i = floor_index(ptr);
  if (i >= 0 && holds(reg[i], ptr) && len <= reg[i]->size - (ptr - reg[i]->base)) found = reg[i];
  pthread_rwlock_unlock(&reg_lock);
  return found;
}

bool fk_mem_query(uintptr_t p, size_t n, fk_alloc *out, bool *covered, bool *can_write) {
  pthread_rwlock_rdlock(&reg_lock);
  long i = floor_index(p);
  if (i < 0 || !holds(reg[i], p)) {
    pthread_rwlock_unlock(&reg_lock);
    return false;
  }
  const fk_alloc *a = reg[i];
  *out = *a;
  bool ok = writable(a);
  size_t have = a->size - (p - a->base);
  /* A VMM range made of adjacent mappings is one stretch of device memory. */
  while (have < n && a->kind == FK_MEM_VMM && (size_t)i + 1 < reg_n) {
    const fk_alloc *b = reg[i + 1];
    if (b->kind != FK_MEM_VMM || b->base != a->base + a->size) break;
    ok = ok && writable(b);
    have += b->size;
    a = b;
    i++;
  }
  pthread_rwlock_unlock(&reg_lock);
  *covered = have >= n;
  if (can_write) *can_write = ok;
  return true;
}

CUresult fk_mem_check_device(CUdeviceptr ptr, size_t len) {
  fk_alloc a;
  bool covered;
  if (!fk_mem_query((uintptr_t)ptr, len, &a, &covered, NULL) || !covered)
    return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

bool fk_mem_overlaps(uintptr_t base, size_t size) {
  if (size == 0) return false;
  pthread_rwlock_rdlock(&reg_lock);
  long i = floor_index(base + size - 1);
  bool hit = i >= 0 && reg[i]->base + (reg[i]->size ? reg[i]->size : 1) > base;
  pthread_rwlock_unlock(&reg_lock);
  return hit;
}

CUresult fk_mem_add(uintptr_t base, size_t size, fk_mem_kind kind, fk_ctx *ctx, fk_device *dev,
                    unsigned flags, unsigned long long id) {
  pthread_rwlock_wrlock(&reg_lock);
  long i = floor_index(base + (size ? size - 1 : 0));
  if (i >= 0 && reg[i]->base + (reg[i]->size ? reg[i]->size : 1) > base) {
    pthread_rwlock_unlock(&reg_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (reg_n == reg_cap) {
    size_t cap = reg_cap ? reg_cap * 2 : 256;
    fk_alloc **grown = realloc(reg, cap * sizeof *grown);
    if (!grown) {
      pthread_rwlock_unlock(&reg_lock);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    reg = grown;
    reg_cap = cap;
  }
  fk_alloc *a = spare;
  if (a) {
    spare = a->next;
  } else if (!(a = malloc(sizeof *a))) {
    pthread_rwlock_unlock(&reg_lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *a = (fk_alloc){.base = base,
                  .size = size,
                  .kind = kind,
                  .ctx = ctx,
                  .dev = dev,
                  .flags = flags,
                  .buffer_id = id ? id : fk_mem_new_id()};
  size_t at = (size_t)(i + 1);
  memmove(&reg[at + 1], &reg[at], (reg_n - at) * sizeof *reg);
  reg[at] = a;
  reg_n++;
  pthread_rwlock_unlock(&reg_lock);
  return CUDA_SUCCESS;
}

/* Caller holds reg_lock for writing. */
static void remove_at(long i) {
  fk_alloc *a = reg[i];
  memmove(&reg[i], &reg[i + 1], (reg_n - (size_t)i - 1) * sizeof *reg);
  reg_n--;
  a->next = spare;
  spare = a;
}

bool fk_mem_take(uintptr_t base, unsigned kind_mask, fk_alloc *out) {
  pthread_rwlock_wrlock(&reg_lock);
  long i = floor_index(base);
  bool ok = i >= 0 && reg[i]->base == base && (kind_mask & (1u << reg[i]->kind));
  if (ok) {
    *out = *reg[i];
    remove_at(i);
  }
  pthread_rwlock_unlock(&reg_lock);
  return ok;
}

bool fk_mem_update_flags(uintptr_t p, unsigned set, unsigned clear) {
  pthread_rwlock_wrlock(&reg_lock);
  long i = floor_index(p);
  bool ok = i >= 0 && holds(reg[i], p);
  if (ok) reg[i]->flags = (reg[i]->flags & ~clear) | set;
  pthread_rwlock_unlock(&reg_lock);
  return ok;
}

void fk_mem_register(uintptr_t base, size_t size, fk_mem_kind kind, fk_ctx *ctx) {
  CUresult rc = fk_mem_add(base, size, kind, ctx, ctx ? ctx->dev : NULL, 0, 0);
  if (rc) fk_log("cannot register memory %#lx+%zu (error %d)", (unsigned long)base, size, rc);
}

void fk_mem_unregister(uintptr_t base) {
  fk_alloc gone;
  fk_mem_take(base, ~0u, &gone);
}

/* ---- device address ranges -----------------------------------------------
 * Each device's range is a sorted list of free gaps; allocation is first fit.
 * One mutex guards the gaps, the slabs and the memory counters of every
 * device. */
typedef struct gap {
  uintptr_t start, end;
} gap;

/* Allocations up to SLAB_MAX share 2 MiB slabs, one size class per slab
 * (powers of two from 512 bytes), as the real driver packs small allocations
 * into its large pages. Each allocation would otherwise need its own kernel
 * mapping, and a program freeing every other one would exhaust the process's
 * mapping limit (vm.max_map_count). */
#define SLAB_MIN ((size_t)512)
#define SLAB_MAX ((size_t)1 << 20)
#define SLAB_CLASSES 12
#define SLAB_WORDS (FK_GRANULARITY / SLAB_MIN / 64)

typedef struct slab {
  uintptr_t base; /* FK_GRANULARITY aligned and long */
  unsigned cls;   /* slot size SLAB_MIN << cls */
  unsigned nslots, nfree;
  struct slab *prev, *next; /* the class's list of slabs with a free slot */
  uint64_t used[SLAB_WORDS];
} slab;

typedef struct va_space {
  gap *gaps;
  size_t n, cap;
  slab *partial[SLAB_CLASSES];
  slab **slabs; /* every slab, by base */
  size_t nslabs, capslabs;
} va_space;

static pthread_mutex_t fk_mem_lock = PTHREAD_MUTEX_INITIALIZER;
static va_space spaces[FK_MAX_DEVICES];

fk_device *fk_mem_device_of(uintptr_t p) {
  for (int i = 0; i < fk_cfg.device_count; i++) {
    fk_device *d = &fk_cfg.devices[i];
    if (d->va_size && p >= d->va_base && p - d->va_base < d->va_size) return d;
  }
  return NULL;
}

static bool gap_insert(va_space *s, size_t at, gap g) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    gap *grown = realloc(s->gaps, cap * sizeof *grown);
    if (!grown) return false;
    s->gaps = grown;
    s->cap = cap;
  }
  memmove(&s->gaps[at + 1], &s->gaps[at], (s->n - at) * sizeof *s->gaps);
  s->gaps[at] = g;
  s->n++;
  return true;
}

static void gap_remove(va_space *s, size_t at) {
  memmove(&s->gaps[at], &s->gaps[at + 1], (s->n - at - 1) * sizeof *s->gaps);
  s->n--;
}

/* Cut [start, start+size) out of gap `at`, which holds it. */
static bool gap_cut(va_space *s, size_t at, uintptr_t start, size_t size) {
  gap g = s->gaps[at];
  uintptr_t end = start + size;
  if (g.start < start && end < g.end) {
    if (!gap_insert(s, at + 1, (gap){end, g.end})) return false;
    s->gaps[at].end = start;
  } else if (g.start < start) {
    s->gaps[at].end = start;
  } else if (end < g.end) {
    s->gaps[at].start = end;
  } else {
    gap_remove(s, at);
  }
  return true;
}

/* Caller holds fk_mem_lock. */
static CUresult va_take_locked(va_space *s, size_t size, size_t align, uintptr_t fixed,
                               uintptr_t *out) {
  for (size_t i = 0; i < s->n; i++) {
    gap g = s->gaps[i];
    uintptr_t start;
    if (fixed) {
      if (fixed < g.start || fixed >= g.end) continue;
      start = fixed;
    } else {
      start = (g.start + align - 1) & ~(uintptr_t)(align - 1);
      if (start < g.start) continue; /* wrapped */
    }
    if (start >= g.end || g.end - start < size) {
      if (fixed) break;
      continue;
    }
    if (!gap_cut(s, i, start, size)) return CUDA_ERROR_OUT_OF_MEMORY;
    *out = start;
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_OUT_OF_MEMORY;
}

CUresult fk_va_take(fk_device *dev, size_t size, size_t align, uintptr_t fixed, uintptr_t *out) {
  if (size == 0 || align == 0 || (align & (align - 1))) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&fk_mem_lock);
  CUresult rc = va_take_locked(&spaces[dev->ordinal], size, align, fixed, out);
  pthread_mutex_unlock(&fk_mem_lock);
  return rc;
}

/* Caller holds fk_mem_lock. */
static void va_give_locked(va_space *s, uintptr_t base, size_t size) {
  uintptr_t end = base + size;
  size_t lo = 0, hi = s->n;
  while (lo < hi) { /* first gap starting after base */
    size_t mid = lo + (hi - lo) / 2;
    if (s->gaps[mid].start <= base) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  size_t at = lo;
  bool join_prev = at > 0 && s->gaps[at - 1].end == base;
  bool join_next = at < s->n && s->gaps[at].start == end;
  if (join_prev && join_next) {
    s->gaps[at - 1].end = s->gaps[at].end;
    gap_remove(s, at);
  } else if (join_prev) {
    s->gaps[at - 1].end = end;
  } else if (join_next) {
    s->gaps[at].start = base;
  } else if (!gap_insert(s, at, (gap){base, end})) {
    fk_log("address range %#lx+%zu leaked (out of memory)", (unsigned long)base, size);
  }
}

void fk_va_give(fk_device *dev, uintptr_t base, size_t size) {
  pthread_mutex_lock(&fk_mem_lock);
  va_give_locked(&spaces[dev->ordinal], base, size);
  pthread_mutex_unlock(&fk_mem_lock);
}

void fk_va_protect_none(uintptr_t base, size_t size) {
  /* A fresh private mapping drops the old pages at once and merges with the
   * surrounding reservation, so the mapping count stays low. */
  if (mmap((void *)base, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
           -1, 0) == MAP_FAILED)
    fk_log("cannot return %#lx+%zu to the reserved range: %s", (unsigned long)base, size,
           strerror(errno));
}

/* Map [base, base+size) read-write with fresh zeroed pages. */
static bool map_rw(uintptr_t base, size_t size) {
  return mmap((void *)base, size, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) != MAP_FAILED;
}

static bool charge_locked(fk_device *dev, size_t n) {
  if (n > dev->total_mem - dev->used_mem) return false;
  dev->used_mem += n;
  return true;
}

static void uncharge_locked(fk_device *dev, size_t n) {
  dev->used_mem -= n < dev->used_mem ? n : dev->used_mem;
}

CUresult fk_mem_charge(fk_device *dev, size_t n) {
  pthread_mutex_lock(&fk_mem_lock);
  bool ok = charge_locked(dev, n);
  pthread_mutex_unlock(&fk_mem_lock);
  return ok ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

void fk_mem_uncharge(fk_device *dev, size_t n) {
  pthread_mutex_lock(&fk_mem_lock);
  uncharge_locked(dev, n);
  pthread_mutex_unlock(&fk_mem_lock);
}

CUresult fk_mem_init(void) {
  long ps = sysconf(_SC_PAGESIZE);
  if (ps > 0) page_size = (size_t)ps;
  for (int i = 0; i < fk_cfg.device_count; i++) {
    fk_device *d = &fk_cfg.devices[i];
    uintptr_t want = VA_FIRST_BASE + (uintptr_t)i * VA_STRIDE;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    size_t size = VA_STRIDE;
    void *p = mmap((void *)want, size, PROT_NONE, flags | MAP_FIXED_NOREPLACE, -1, 0);
    /* Where that is taken (sanitizers own most of the address space), any
     * place the kernel offers, as small as the device's memory if need be. */
    size_t least = d->total_mem > ((size_t)1 << 30) ? d->total_mem : ((size_t)1 << 30);
    while (p == MAP_FAILED && size / 2 >= least) {
      p = mmap(NULL, size, PROT_NONE, flags, -1, 0);
      if (p == MAP_FAILED) size /= 2;
    }
    if (p == MAP_FAILED) p = mmap(NULL, size = least + FK_GRANULARITY, PROT_NONE, flags, -1, 0);
    if (p == MAP_FAILED) {
      fk_log("cannot reserve the address range of device %d: %s", i, strerror(errno));
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if ((uintptr_t)p != want)
      fk_log("device %d memory lives at %p, not at the usual %#lx", i, p, (unsigned long)want);
    /* Allocations are 2 MiB aligned even where the kernel chose the range. */
    uintptr_t start = ((uintptr_t)p + FK_GRANULARITY - 1) & ~(uintptr_t)(FK_GRANULARITY - 1);
    d->va_base = (uintptr_t)p;
    d->va_size = size;
    va_space *s = &spaces[i];
    s->n = 0;
    if (!gap_insert(s, 0, (gap){start, (uintptr_t)p + size})) return CUDA_ERROR_OUT_OF_MEMORY;
  }
  return CUDA_SUCCESS;
}

/* ---- slabs ---------------------------------------------------------------*/
static unsigned slab_class(size_t n) {
  unsigned c = 0;
  while ((SLAB_MIN << c) < n) c++;
  return c;
}

static void partial_push(va_space *s, slab *b) {
  b->prev = NULL;
  b->next = s->partial[b->cls];
  if (b->next) b->next->prev = b;
  s->partial[b->cls] = b;
}

static void partial_unlink(va_space *s, slab *b) {
  if (b->prev) {
    b->prev->next = b->next;
  } else {
    s->partial[b->cls] = b->next;
  }
  if (b->next) b->next->prev = b->prev;
  b->prev = b->next = NULL;
}

/* Index of the first slab with base >= p. */
static size_t slab_lower(const va_space *s, uintptr_t p) {
  size_t lo = 0, hi = s->nslabs;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->slabs[mid]->base < p) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Caller holds fk_mem_lock. */
static slab *slab_new_locked(fk_device *dev, va_space *s, unsigned cls) {
  if (s->nslabs == s->capslabs) {
    size_t cap = s->capslabs ? s->capslabs * 2 : 64;
    slab **grown = realloc(s->slabs, cap * sizeof *grown);
    if (!grown) return NULL;
    s->slabs = grown;
    s->capslabs = cap;
  }
  slab *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  if (!charge_locked(dev, FK_GRANULARITY)) {
    free(b);
    return NULL;
  }
  if (va_take_locked(s, FK_GRANULARITY, FK_GRANULARITY, 0, &b->base) != CUDA_SUCCESS) {
    uncharge_locked(dev, FK_GRANULARITY);
    free(b);
    return NULL;
  }
  if (!map_rw(b->base, FK_GRANULARITY)) {
    va_give_locked(s, b->base, FK_GRANULARITY);
    uncharge_locked(dev, FK_GRANULARITY);
    free(b);
    return NULL;
  }
  b->cls = cls;
  b->nslots = b->nfree = (unsigned)(FK_GRANULARITY / (SLAB_MIN << cls));
  size_t at = slab_lower(s, b->base);
  memmove(&s->slabs[at + 1], &s->slabs[at], (s->nslabs - at) * sizeof *s->slabs);
  s->slabs[at] = b;
  s->nslabs++;
  partial_push(s, b);
  return b;
}

static CUresult slab_alloc(fk_device *dev, size_t size, uintptr_t *out) {
  va_space *s = &spaces[dev->ordinal];
  unsigned cls = slab_class(size);
  pthread_mutex_lock(&fk_mem_lock);
  slab *b = s->partial[cls];
  if (!b && !(b = slab_new_locked(dev, s, cls))) {
    pthread_mutex_unlock(&fk_mem_lock);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  unsigned slot = 0;
  for (unsigned w = 0; w * 64 < b->nslots; w++) {
    if (b->used[w] == ~(uint64_t)0) continue;
    slot = w * 64 + (unsigned)__builtin_ctzll(~b->used[w]);
    break;
  }
  b->used[slot / 64] |= (uint64_t)1 << (slot % 64);
  if (--b->nfree == 0) partial_unlink(s, b);
  *out = b->base + (uintptr_t)slot * (SLAB_MIN << cls);
  pthread_mutex_unlock(&fk_mem_lock);
  return CUDA_SUCCESS;
}

/* A slab whose last allocation goes is unmapped, so stale pointers into it
 * fault. */
static void slab_free(fk_device *dev, uintptr_t p) {
  va_space *s = &spaces[dev->ordinal];
  uintptr_t base = p & ~(uintptr_t)(FK_GRANULARITY - 1);
  pthread_mutex_lock(&fk_mem_lock);
  size_t at = slab_lower(s, base);
  if (at == s->nslabs || s->slabs[at]->base != base) {
    pthread_mutex_unlock(&fk_mem_lock);
    fk_log("freeing %#lx: no slab holds it", (unsigned long)p);
    return;
  }
  slab *b = s->slabs[at];
  unsigned slot = (unsigned)((p - base) / (SLAB_MIN << b->cls));
  b->used[slot / 64] &= ~((uint64_t)1 << (slot % 64));
  if (b->nfree++ == 0) partial_push(s, b);
  if (b->nfree == b->nslots) {
    partial_unlink(s, b);
    memmove(&s->slabs[at], &s->slabs[at + 1], (s->nslabs - at - 1) * sizeof *s->slabs);
    s->nslabs--;
    fk_va_protect_none(base, FK_GRANULARITY);
    va_give_locked(s, base, FK_GRANULARITY);
    uncharge_locked(dev, FK_GRANULARITY);
    free(b);
  }
  pthread_mutex_unlock(&fk_mem_lock);
}

/* ---- device allocations --------------------------------------------------
 * Small allocations live in slabs (512-byte aligned at least); larger ones
 * get their own 2 MiB-aligned mapping, unmapped at free so a use after free
 * faults like an illegal address on a GPU. Memory is counted in mapped 2 MiB
 * pages, as cuMemGetInfo reports on the real driver. */
static size_t dev_mapped(size_t n) { return round_up(n, FK_GRANULARITY); }

/* Give back a device allocation already taken out of the registry. */
static void dev_release(const fk_alloc *a) {
  if (a->size <= SLAB_MAX) {
    slab_free(a->dev, a->base);
    return;
  }
  size_t mapped = dev_mapped(a->size);
  fk_va_protect_none(a->base, mapped);
  fk_va_give(a->dev, a->base, mapped);
  fk_mem_uncharge(a->dev, mapped);
}

static CUresult dev_alloc(fk_ctx *ctx, size_t size, unsigned flags, CUdeviceptr *out) {
  if (size > ((size_t)1 << 62)) return CUDA_ERROR_OUT_OF_MEMORY;
  fk_device *dev = ctx->dev;
  uintptr_t base;
  CUresult rc;
  if (size <= SLAB_MAX) {
    rc = slab_alloc(dev, size, &base);
    if (rc) return rc;
  } else {
    size_t mapped = dev_mapped(size);
    rc = fk_mem_charge(dev, mapped);
    if (rc) return rc;
    rc = fk_va_take(dev, mapped, FK_GRANULARITY, 0, &base);
    if (rc) {
      fk_mem_uncharge(dev, mapped);
      return rc;
    }
    /* A fresh anonymous mapping is zero-filled, like the driver's new pages,
     * and merges with its neighbours. */
    if (!map_rw(base, mapped)) {
      fk_va_give(dev, base, mapped);
      fk_mem_uncharge(dev, mapped);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  rc = fk_mem_add(base, size, FK_MEM_DEVICE, ctx, dev, flags, 0);
  if (rc) {
    fk_alloc a = {.base = base, .size = size, .dev = dev};
    dev_release(&a);
    return rc;
  }
  *out = (CUdeviceptr)base;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemAlloc_3020(CUdeviceptr_v2 *dptr, size_t bytesize) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  if (!dptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  return dev_alloc(ctx, bytesize, 0, dptr);
}

CUresult fake_cuMemAllocPitch_3020(CUdeviceptr_v2 *dptr, size_t *pPitch, size_t WidthInBytes,
                                   size_t Height, unsigned int ElementSizeBytes) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  size_t pitch, bytes;
  rc = cu_mem_pitch_rule(dptr && pPitch, WidthInBytes, Height, ElementSizeBytes, &pitch, &bytes);
  if (rc) return rc;
  rc = dev_alloc(ctx, bytes, 0, dptr);
  if (rc) return rc;
  *pPitch = pitch;
  return CUDA_SUCCESS;
}

/* The allocation of `kind` a free names, taken out of the table for the
 * caller to release. NULL names none and is not an error (*a untouched):
 * free(NULL), as measured on the real driver. */
static CUresult take_for_free(uintptr_t p, int kind, fk_alloc *a) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc || !p) return rc;
  return fk_mem_take(p, 1u << kind, a) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult fake_cuMemFree_3020(CUdeviceptr_v2 dptr) {
  fk_alloc a;
  CUresult rc = take_for_free((uintptr_t)dptr, FK_MEM_DEVICE, &a);
  if (rc || !dptr) return rc;
  /* The driver synchronizes before freeing memory that queued work may still
   * touch (not for stream-ordered allocations, whose users must order
   * themselves). Unmapping under running work would crash the process. */
  if (!(a.flags & FK_ALLOC_ASYNC) && a.ctx && a.ctx->active) fk_ctx_synchronize(a.ctx);
  if (a.flags & FK_ALLOC_POOL)
    fk_pool_block_freed(&a, NULL); /* back to its pool */
  else
    dev_release(&a);
  return CUDA_SUCCESS;
}

CUresult fake_cuMemGetInfo_3020(size_t *free_bytes, size_t *total) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  /* NULL outputs are not written, and not an error (NVIDIA's driver 580). */
  pthread_mutex_lock(&fk_mem_lock);
  if (total) *total = ctx->dev->total_mem;
  if (free_bytes) *free_bytes = ctx->dev->total_mem - ctx->dev->used_mem;
  pthread_mutex_unlock(&fk_mem_lock);
  return CUDA_SUCCESS;
}

CUresult fake_cuMemGetAddressRange_3020(CUdeviceptr_v2 *pbase, size_t *psize, CUdeviceptr_v2 dptr) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  fk_alloc a;
  bool covered;
  if (!fk_mem_query((uintptr_t)dptr, 0, &a, &covered, NULL)) return CUDA_ERROR_NOT_FOUND;
  if (pbase) *pbase = (CUdeviceptr_v2)a.base;
  if (psize) *psize = a.size;
  return CUDA_SUCCESS;
}

/* Stream-ordered allocation (cuMemAllocAsync, cuMemFreeAsync) and memory
 * pools live in mempool.c, on top of these two. */
CUresult fk_dev_alloc(fk_ctx *ctx, size_t size, unsigned flags, CUdeviceptr *out) {
  return dev_alloc(ctx, size, flags, out);
}

void fk_dev_release(const fk_alloc *a) { dev_release(a); }

/* ---- pinned host memory --------------------------------------------------*/
static CUresult host_alloc(void **pp, size_t bytesize, unsigned flags) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  if (!pp) return CUDA_ERROR_INVALID_VALUE;
  if (flags & ~(unsigned)CU_MEMHOSTALLOC_KNOWN) return CUDA_ERROR_INVALID_VALUE;
  /* Measured on the real driver: zero bytes succeed with a NULL pointer. */
  if (bytesize == 0) {
    *pp = NULL;
    return CUDA_SUCCESS;
  }
  if (bytesize > ((size_t)1 << 62)) return CUDA_ERROR_OUT_OF_MEMORY;
  size_t mapped = round_up(bytesize, page_size);
  void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  rc = fk_mem_add((uintptr_t)p, bytesize, FK_MEM_HOST, ctx, ctx->dev, flags, 0);
  if (rc) {
    munmap(p, mapped);
    return rc == CUDA_ERROR_INVALID_VALUE ? CUDA_ERROR_OUT_OF_MEMORY : rc;
  }
  *pp = p;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemHostAlloc_2020(void **pp, size_t bytesize, unsigned int Flags) {
  return host_alloc(pp, bytesize, Flags);
}

CUresult fake_cuMemFreeHost_2000(void *p) {
  fk_alloc a;
  CUresult rc = take_for_free((uintptr_t)p, FK_MEM_HOST, &a);
  if (rc || !p) return rc;
  if (a.ctx && a.ctx->active) fk_ctx_synchronize(a.ctx);
  munmap((void *)a.base, round_up(a.size, page_size));
  return CUDA_SUCCESS;
}

/* Pinned or registered host memory holding p (any address inside it). */
static bool find_pinned(void *p, fk_alloc *a, unsigned kind_mask) {
  bool covered;
  return p && fk_mem_query((uintptr_t)p, 0, a, &covered, NULL) && (kind_mask & (1u << a->kind));
}

CUresult fake_cuMemHostGetDevicePointer_3020(CUdeviceptr_v2 *pdptr, void *p, unsigned int Flags) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  fk_alloc a;
  if (!pdptr || Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  /* Under unified addressing every pinned or registered range is mapped, and
   * its device address is its host address. */
  if (!find_pinned(p, &a, 1u << FK_MEM_HOST | 1u << FK_MEM_REGISTERED))
    return CUDA_ERROR_INVALID_VALUE;
  *pdptr = (CUdeviceptr_v2)(uintptr_t)p;
  return CUDA_SUCCESS;
}

CUresult fake_cuMemHostGetFlags_2030(unsigned int *pFlags, void *p) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  fk_alloc a;
  if (!pFlags || !find_pinned(p, &a, 1u << FK_MEM_HOST)) return CUDA_ERROR_INVALID_VALUE;
  /* Under unified addressing every pinned allocation is mapped: the real
   * driver reports DEVICEMAP whether or not it was asked for. */
  *pFlags = (a.flags & (CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_WRITECOMBINED)) |
            CU_MEMHOSTALLOC_DEVICEMAP;
  return CUDA_SUCCESS;
}

/* Whether every page of [p, p+n) is mapped in this process. */
static bool host_range_mapped(void *p, size_t n) {
  uintptr_t start = (uintptr_t)p & ~(uintptr_t)(page_size - 1);
  size_t len = round_up((uintptr_t)p + n - start, page_size);
  return msync((void *)start, len, MS_ASYNC) == 0;
}

CUresult fake_cuMemHostRegister_6050(void *p, size_t bytesize, unsigned int Flags) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  if (!p || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (Flags & ~(unsigned)(CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                          CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY))
    return CUDA_ERROR_INVALID_VALUE;
  if (Flags & CU_MEMHOSTREGISTER_IOMEMORY) return CUDA_ERROR_NOT_SUPPORTED;
  uintptr_t b = (uintptr_t)p;
  if (b + bytesize < b) return CUDA_ERROR_INVALID_VALUE;
  /* Device memory is not host memory, whatever its address. */
  if (fk_mem_device_of(b) || fk_mem_device_of(b + bytesize - 1)) return CUDA_ERROR_INVALID_VALUE;
  if (fk_mem_overlaps(b, bytesize)) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  if (!host_range_mapped(p, bytesize)) return CUDA_ERROR_INVALID_VALUE;
  unsigned flags = Flags | ((Flags & CU_MEMHOSTREGISTER_READ_ONLY) ? FK_ALLOC_READONLY : 0);
  rc = fk_mem_add(b, bytesize, FK_MEM_REGISTERED, ctx, ctx->dev, flags, 0);
  if (rc == CUDA_ERROR_INVALID_VALUE) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED; /* raced */
  return rc;
}

CUresult fake_cuMemHostUnregister_4000(void *p) {
  fk_ctx *ctx;
  CUresult rc = fk_mem_need_ctx(&ctx);
  if (rc) return rc;
  if (!p) return CUDA_ERROR_INVALID_VALUE;
  fk_alloc a;
  if (!fk_mem_take((uintptr_t)p, 1u << FK_MEM_REGISTERED, &a)) {
    /* Pinned memory from cuMemHostAlloc is not "not registered" but not
     * registrable at all (measured on the real driver). */
    bool pinned = fk_mem_query((uintptr_t)p, 0, &a, &(bool){false}, NULL) && a.kind == FK_MEM_HOST;
    return pinned ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  }
  /* Queued copies may still read or write the range. */
  if (a.ctx && a.ctx->active) fk_ctx_synchronize(a.ctx);
  return CUDA_SUCCESS;
}

/* ---- context teardown ----------------------------------------------------*/
void fk_mem_release_ctx(fk_ctx *ctx) {
  /* One pass under the lock picks the context's allocations out of the
   * table; the unmapping happens after, without the lock. */
  fk_alloc *doomed = NULL;
  pthread_rwlock_wrlock(&reg_lock);
  size_t kept = 0;
  for (size_t i = 0; i < reg_n; i++) {
    fk_alloc *e = reg[i];
    bool owned = e->ctx == ctx && (e->kind == FK_MEM_DEVICE || e->kind == FK_MEM_HOST ||
                                   e->kind == FK_MEM_REGISTERED);
    /* Mappings belong to the process, not to a context; module globals to
     * the module code. */
    if (e->ctx == ctx && e->kind == FK_MEM_VMM) e->ctx = NULL;
    if (owned) {
      e->next = doomed;
      doomed = e;
    } else {
      reg[kept++] = e;
    }
  }
  reg_n = kept;
  pthread_rwlock_unlock(&reg_lock);
  while (doomed) {
    fk_alloc a = *doomed;
    pthread_rwlock_wrlock(&reg_lock);
    doomed->next = spare;
    spare = doomed;
    pthread_rwlock_unlock(&reg_lock);
    doomed = a.next;
    if (a.kind == FK_MEM_DEVICE && (a.flags & FK_ALLOC_POOL)) fk_pool_block_freed(&a, NULL);
    else if (a.kind == FK_MEM_DEVICE) dev_release(&a);
    else if (a.kind == FK_MEM_HOST) munmap((void *)a.base, round_up(a.size, page_size));
  }
}

/* ---- process checkpoint (cuCheckpointProcessCheckpoint / Restore) ---------
 * A checkpoint copies every byte of device memory into host memory of this
 * process and gives the device ranges back to the system: nothing is left
 * mapped between a device's va_base and va_base + va_size, and no device
 * memory is counted, so a CPU checkpoint (CRIU) of the process holds the
 * bytes in its ordinary memory and nothing a restore would have to re-create.
 * The bookkeeping (registry, gaps, slabs, VMM tables) stays as it is: it
 * describes exactly what a restore maps again, at the same addresses.
 *
 * Device memory is made of the slabs (2 MiB each, small allocations), the
 * large allocations (their own 2 MiB-rounded mapping) and the VMM physical
 * allocations (memfds, vmm.c). The copies of the first two live in one
 * anonymous host mapping, `saved`, in the order of `saved_regions`. */
typedef struct saved_region {
  uintptr_t base;
  size_t size;
  size_t offset; /* in saved */
} saved_region;

static saved_region *saved_regions;
static size_t nsaved_regions;
static unsigned char *saved;
static size_t saved_size;
static size_t saved_used[FK_MAX_DEVICES]; /* each device's used_mem at the checkpoint */
static bool bytes_with_caller; /* custom storage holds them, not `saved` (fk_mem_to_files) */

static void saved_discard(void) {
  if (saved) munmap(saved, saved_size);
  free(saved_regions);
  saved = NULL;
  saved_size = 0;
  saved_regions = NULL;
  nsaved_regions = 0;
}

static bool add_region(saved_region **list, size_t *n, size_t *cap, uintptr_t base, size_t size) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 256;
    saved_region *grown = realloc(*list, c * sizeof *grown);
    if (!grown) return false;
    *list = grown;
    *cap = c;
  }
  (*list)[(*n)++] = (saved_region){.base = base, .size = size};
  return true;
}

/* The device regions to save: every slab and every large allocation.
 * Caller holds fk_mem_lock. */
static CUresult collect_regions(void) {
  size_t n = 0, cap = 0;
  saved_region *list = NULL;
  bool ok = true;
  for (int d = 0; d < fk_cfg.device_count && ok; d++) {
    va_space *s = &spaces[d];
    for (size_t i = 0; i < s->nslabs && ok; i++)
      ok = add_region(&list, &n, &cap, s->slabs[i]->base, FK_GRANULARITY);
  }
  pthread_rwlock_rdlock(&reg_lock);
  for (size_t i = 0; i < reg_n && ok; i++) {
    const fk_alloc *a = reg[i];
    if (a->kind == FK_MEM_DEVICE && a->size > SLAB_MAX)
      ok = add_region(&list, &n, &cap, a->base, dev_mapped(a->size));
  }
  pthread_rwlock_unlock(&reg_lock);
  if (!ok) {
    free(list);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    list[i].offset = off;
    off += list[i].size;
  }
  saved_regions = list;
  nsaved_regions = n;
  saved_size = off;
  return CUDA_SUCCESS;
}

/* The VMM memory is saved and released by vmm.c, outside fk_mem_lock: VMM
 * calls take vmm_lock before fk_mem_lock. */
CUresult fk_mem_checkpoint(void) {
  CUresult rc = fk_vmm_save();
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&fk_mem_lock);
  rc = collect_regions();
  if (rc == CUDA_SUCCESS && saved_size) {
    void *p = mmap(NULL, saved_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      rc = CUDA_ERROR_OUT_OF_MEMORY;
    } else {
      saved = p;
      for (size_t i = 0; i < nsaved_regions; i++)
        memcpy(saved + saved_regions[i].offset, (void *)saved_regions[i].base,
               saved_regions[i].size);
    }
  }
  if (rc != CUDA_SUCCESS) {
    saved_discard();
    pthread_mutex_unlock(&fk_mem_lock);
    fk_vmm_discard();
    return rc;
  }
  /* Everything is copied: give the device memory back. */
  for (int d = 0; d < fk_cfg.device_count; d++) {
    fk_device *dev = &fk_cfg.devices[d];
    if (munmap((void *)dev->va_base, dev->va_size) != 0)
      fk_log("cannot release the address range of device %d: %s", d, strerror(errno));
    saved_used[d] = dev->used_mem;
    dev->used_mem = 0;
  }
  pthread_mutex_unlock(&fk_mem_lock);
  fk_vmm_release();
  return CUDA_SUCCESS;
}

size_t fk_mem_checkpointed_bytes(int ordinal) {
  pthread_mutex_lock(&fk_mem_lock);
  size_t n = saved_used[ordinal];
  pthread_mutex_unlock(&fk_mem_lock);
  return n;
}

/* Give back the ranges of devices [0, upto) after a failed restore. */
static void unmap_ranges(int upto) {
  for (int d = 0; d < upto; d++) {
    fk_device *dev = &fk_cfg.devices[d];
    munmap((void *)dev->va_base, dev->va_size);
  }
}

CUresult fk_mem_restore(void) {
  pthread_mutex_lock(&fk_mem_lock);
  if (bytes_with_caller) { /* they went to custom storage (fk_mem_to_files) */
    pthread_mutex_unlock(&fk_mem_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  /* The reserved ranges first, exactly where they were: the process holds
   * their addresses (in its memory, in kernels' arguments). */
  for (int d = 0; d < fk_cfg.device_count; d++) {
    fk_device *dev = &fk_cfg.devices[d];
    void *p = mmap((void *)dev->va_base, dev->va_size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (p != (void *)dev->va_base) {
      if (p != MAP_FAILED) munmap(p, dev->va_size); /* a kernel without NOREPLACE */
      fk_log("cannot map device %d's address range at %#lx again: %s", d,
             (unsigned long)dev->va_base, p == MAP_FAILED ? strerror(errno) : "address taken");
      unmap_ranges(d);
      pthread_mutex_unlock(&fk_mem_lock);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  for (size_t i = 0; i < nsaved_regions; i++) {
    const saved_region *r = &saved_regions[i];
    if (!map_rw(r->base, r->size)) {
      unmap_ranges(fk_cfg.device_count);
      pthread_mutex_unlock(&fk_mem_lock);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
    memcpy((void *)r->base, saved + r->offset, r->size);
  }
  pthread_mutex_unlock(&fk_mem_lock);
  CUresult rc = fk_vmm_restore();
  pthread_mutex_lock(&fk_mem_lock);
  if (rc != CUDA_SUCCESS) {
    unmap_ranges(fk_cfg.device_count);
    pthread_mutex_unlock(&fk_mem_lock);
    return rc;
  }
  for (int d = 0; d < fk_cfg.device_count; d++) {
    fk_cfg.devices[d].used_mem = saved_used[d];
    saved_used[d] = 0;
  }
  saved_discard();
  pthread_mutex_unlock(&fk_mem_lock);
  fk_vmm_discard();
  return CUDA_SUCCESS;
}

/* ---- custom storage (cuCheckpointProcess* with customStorageInfo_out) -----
 * The caller copies the device memory itself: it gets one file per device
 * that holds any, the device's memory laid end to end (its slabs and large
 * allocations in address order, then its VMM allocations, vmm.c), which it
 * maps as device memory of its own. A checkpoint fills the files from the
 * host copies of fk_mem_checkpoint and drops those copies (the bytes are the
 * caller's now); a restore hands out empty files of the same layout and
 * takes the host copies back from them before fk_mem_restore. */
static int device_of_region(const saved_region *r) {
  fk_device *d = fk_mem_device_of(r->base);
  return d ? d->ordinal : -1;
}

/* Bytes of device `d` in the layout. Caller holds fk_mem_lock. */
static size_t layout_bytes(int d) {
  size_t n = 0;
  for (size_t i = 0; i < nsaved_regions; i++)
    if (device_of_region(&saved_regions[i]) == d) n += saved_regions[i].size;
  return n + fk_vmm_saved_bytes(d);
}

static bool io_all(int fd, unsigned char *buf, size_t n, off_t off, bool out) {
  for (size_t done = 0; done < n;) {
    ssize_t k = out ? pwrite(fd, buf + done, n - done, off + (off_t)done)
                    : pread(fd, buf + done, n - done, off + (off_t)done);
    if (k <= 0) return false;
    done += (size_t)k;
  }
  return true;
}

/* Copy device d's layout between the host copies and fd (out: to the file). */
static bool layout_io(int d, int fd, bool out) {
  off_t off = 0;
  for (size_t i = 0; i < nsaved_regions; i++) {
    const saved_region *r = &saved_regions[i];
    if (device_of_region(r) != d) continue;
    if (!io_all(fd, saved + r->offset, r->size, off, out)) return false;
    off += (off_t)r->size;
  }
  return fk_vmm_saved_io(d, fd, off, out);
}

static void close_files(int fds[FK_MAX_DEVICES]) {
  for (int d = 0; d < FK_MAX_DEVICES; d++) {
    if (fds[d] >= 0) close(fds[d]);
    fds[d] = -1;
  }
}

/* Empty files of the layout's sizes (fds[d] -1 and sizes[d] 0 for a device
 * without memory). Caller holds fk_mem_lock. */
static CUresult make_files(int fds[FK_MAX_DEVICES], size_t sizes[FK_MAX_DEVICES]) {
  for (int d = 0; d < FK_MAX_DEVICES; d++) {
    fds[d] = -1;
    sizes[d] = d < fk_cfg.device_count ? layout_bytes(d) : 0;
  }
  for (int d = 0; d < fk_cfg.device_count; d++) {
    if (!sizes[d]) continue;
    char name[64];
    snprintf(name, sizeof name, "cedana-fake-cuda-ckpt-dev%d", d);
    fds[d] = memfd_create(name, MFD_CLOEXEC);
    if (fds[d] < 0 || ftruncate(fds[d], (off_t)sizes[d]) != 0) {
      close_files(fds);
      return CUDA_ERROR_OUT_OF_MEMORY;
    }
  }
  return CUDA_SUCCESS;
}

CUresult fk_mem_to_files(int fds[FK_MAX_DEVICES], size_t sizes[FK_MAX_DEVICES]) {
  pthread_mutex_lock(&fk_mem_lock);
  CUresult rc = make_files(fds, sizes);
  for (int d = 0; d < fk_cfg.device_count && rc == CUDA_SUCCESS; d++)
    if (fds[d] >= 0 && !layout_io(d, fds[d], true)) rc = CUDA_ERROR_OUT_OF_MEMORY;
  if (rc == CUDA_SUCCESS) {
    if (saved) munmap(saved, saved_size); /* the layout (saved_regions) stays */
    saved = NULL;
    bytes_with_caller = true;
  } else {
    close_files(fds);
  }
  pthread_mutex_unlock(&fk_mem_lock);
  if (rc == CUDA_SUCCESS) fk_vmm_discard();
  return rc;
}

CUresult fk_mem_files_for_restore(int fds[FK_MAX_DEVICES], size_t sizes[FK_MAX_DEVICES]) {
  pthread_mutex_lock(&fk_mem_lock);
  CUresult rc = make_files(fds, sizes);
  pthread_mutex_unlock(&fk_mem_lock);
  return rc;
}

CUresult fk_mem_from_files(const int fds[FK_MAX_DEVICES]) {
  pthread_mutex_lock(&fk_mem_lock);
  CUresult rc = CUDA_SUCCESS;
  if (saved_size && !saved) {
    void *p = mmap(NULL, saved_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) rc = CUDA_ERROR_OUT_OF_MEMORY;
    else saved = p;
  }
  if (rc == CUDA_SUCCESS) rc = fk_vmm_saved_alloc();
  for (int d = 0; d < fk_cfg.device_count && rc == CUDA_SUCCESS; d++)
    if (fds[d] >= 0 && !layout_io(d, fds[d], false)) rc = CUDA_ERROR_OPERATING_SYSTEM;
  if (rc == CUDA_SUCCESS) bytes_with_caller = false;
  pthread_mutex_unlock(&fk_mem_lock);
  return rc;
}
