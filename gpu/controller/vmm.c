/* The job's own virtual memory management (cuMemAddressReserve, cuMemCreate,
 * cuMemMap, cuMemSetAccess, ...), inside the controller's address range.
 *
 * The controller owns the job's device address space: it reserved one range
 * at open and a restore reserves the same range again (memory.c). The job's
 * reservations are therefore stretches of that range taken from the same
 * free extents as the controller's own chunks, and its mappings are mapped
 * by the controller at exactly the addresses the job asked for, so pointers
 * into them mean the same bytes here, in kernels and after a restore.
 *
 * Each physical allocation the job creates is also mapped once at a private
 * "shadow" address of ours (another stretch of the range, never handed to
 * the job): the checkpoint reads and writes its bytes there, whether or not
 * the job has it mapped anywhere at that moment, and a restore re-creates it
 * at the same shadow address so the saved regions land in the right place.
 * On a GPU the shadow costs address space, not memory.
 *
 * The job's handle to a physical allocation is a number of ours (never the
 * driver's handle), saved in the checkpoint and bound to a new driver
 * allocation on restore. As with the driver, the memory lives until the job
 * has released the handle and unmapped every mapping of it.
 *
 * Threads: only the dispatcher changes these tables, under c->lock; it
 * reads them without the lock. The checkpoint reads them under c->lock.
 */
#include "cgc_internal.h"

#include <errno.h>
#include <stdlib.h>

static uint64_t round_up(uint64_t v, uint64_t g) { return (v + g - 1) / g * g; }

static bool grow(void **arr, int *cap, int n, size_t elem) {
  if (n < *cap) return true;
  int nc = *cap ? 2 * *cap : 16;
  void *g = realloc(*arr, (size_t)nc * elem);
  if (!g) return false;
  *arr = g;
  *cap = nc;
  return true;
}

static cgc_vphys *phys_of(cgc_t *c, uint64_t id) {
  for (int i = 0; i < c->nvphys; i++)
    if (c->vphys[i]->id == id) return c->vphys[i];
  return NULL;
}

/* The job's reservation holding all of [p, p+n), or -1. */
static int resv_holding(cgc_t *c, uint64_t p, uint64_t n) {
  for (int i = 0; i < c->nvresv; i++) {
    const cgc_vresv *r = &c->vresv[i];
    if (p >= r->addr && p - r->addr <= r->size && n <= r->size - (p - r->addr)) return i;
  }
  return -1;
}

/* The job's mapping holding address p, or -1. */
static int map_holding(cgc_t *c, uint64_t p) {
  for (int i = 0; i < c->nvmap; i++)
    if (p >= c->vmap[i].addr && p - c->vmap[i].addr < c->vmap[i].size) return i;
  return -1;
}

static bool any_access(const cgc_vmap *m) {
  for (int d = 0; d < CGS_MAX_DEVICES; d++)
    if (m->access[d]) return true;
  return false;
}

bool cgc_vmm_valid(cgc_t *c, uint64_t p, uint64_t len) {
  /* Mappings side by side make one range (a copy may cross the seam). */
  while (c->nvmap) {
    int i = map_holding(c, p);
    if (i < 0 || !any_access(&c->vmap[i])) return false;
    uint64_t left = c->vmap[i].addr + c->vmap[i].size - p;
    if (len <= left) return true;
    p += left;
    len -= left;
  }
  return false;
}

bool cgc_vmm_shadow_device(cgc_t *c, uint64_t p, uint64_t len, int *device) {
  for (int i = 0; i < c->nvphys; i++) {
    const cgc_vphys *v = c->vphys[i];
    if (p >= v->shadow && p - v->shadow <= v->size && len <= v->size - (p - v->shadow)) {
      *device = v->device;
      return true;
    }
  }
  return false;
}

static CUmemAllocationProp prop_of(int type, int loc_type, int device, uint32_t handle_types) {
  CUmemAllocationProp p;
  memset(&p, 0, sizeof p);
  p.type = (CUmemAllocationType)type;
  p.location.type = (CUmemLocationType)loc_type;
  p.location.id = device;
  p.requestedHandleTypes = (CUmemAllocationHandleType)handle_types;
  return p;
}

static CUresult set_access(cgc_t *c, uint64_t addr, uint64_t size, const uint8_t *access) {
  CUmemAccessDesc d[CGS_MAX_DEVICES];
  size_t n = 0;
  for (int k = 0; k < c->device_count && k < CGS_MAX_DEVICES; k++) {
    if (!access[k]) continue;
    memset(&d[n], 0, sizeof d[n]);
    d[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d[n].location.id = k;
    d[n].flags = (CUmemAccess_flags)access[k];
    n++;
  }
  return n ? c->drv.cuMemSetAccess(addr, size, d, n) : CUDA_SUCCESS;
}

/* Map physical allocation v at its shadow address, read-write for us. */
static CUresult map_shadow(cgc_t *c, cgc_vphys *v) {
  CUresult rc = c->drv.cuMemMap(v->shadow, v->size, 0, v->real, 0);
  if (rc) return rc;
  uint8_t acc[CGS_MAX_DEVICES] = {0};
  acc[v->device] = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  rc = set_access(c, v->shadow, v->size, acc);
  if (rc) c->drv.cuMemUnmap(v->shadow, v->size);
  return rc;
}

/* Drop a physical allocation nobody holds any more. */
static void phys_maybe_free(cgc_t *c, cgc_vphys *v) {
  if (!v->released || v->maps) return;
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < c->nvphys; i++)
    if (c->vphys[i] == v) {
      c->vphys[i] = c->vphys[--c->nvphys];
      break;
    }
  c->vphys_bytes -= v->size;
  pthread_mutex_unlock(&c->lock);
  if (c->drv.cuMemUnmap(v->shadow, v->size) == CUDA_SUCCESS) cgc_va_give(c, v->shadow, round_up(v->size, c->granularity));
  c->drv.cuMemRelease(v->real);
  free(v);
}

/* Work queued by the job may still use what is about to go away. */
static CUresult settle(cgc_t *c) { return c->drv.cuCtxSynchronize(); }

static CUresult reserve(cgc_t *c, cgs_vmm *r, uint64_t *out) {
  uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
  if (r->size == 0 || r->flags || r->size % ps || r->addr % ps || (r->alignment & (r->alignment - 1)))
    return CUDA_ERROR_INVALID_VALUE;
  /* Our extents stay granular: the range taken is rounded up, the job's
   * reservation is what it asked for. */
  uint64_t taken = round_up(r->size, c->granularity);
  if (taken < r->size) return CUDA_ERROR_INVALID_VALUE;
  uint64_t align = r->alignment > c->granularity ? r->alignment : c->granularity;
  if (!grow((void **)&c->vresv, &c->vresv_cap, c->nvresv, sizeof *c->vresv)) return CUDA_ERROR_OUT_OF_MEMORY;
  uint64_t at = 0;
  /* The address is a hint, as with the driver: honoured when free. */
  if (!(r->addr && r->addr % align == 0 && cgc_va_take_at(c, r->addr, taken) == 0 && (at = r->addr)))
    at = cgc_va_take(c, taken, align);
  if (!at) return CUDA_ERROR_OUT_OF_MEMORY;
  pthread_mutex_lock(&c->lock);
  c->vresv[c->nvresv++] = (cgc_vresv){at, r->size, taken};
  pthread_mutex_unlock(&c->lock);
  *out = at;
  return CUDA_SUCCESS;
}

static void unmap_at(cgc_t *c, int i) {
  cgc_vmap m = c->vmap[i];
  c->drv.cuMemUnmap(m.addr, m.size);
  pthread_mutex_lock(&c->lock);
  c->vmap[i] = c->vmap[--c->nvmap];
  pthread_mutex_unlock(&c->lock);
  cgc_vphys *v = phys_of(c, m.phys);
  if (v) {
    v->maps--;
    phys_maybe_free(c, v);
  }
}

static CUresult address_free(cgc_t *c, cgs_vmm *r) {
  int i;
  for (i = 0; i < c->nvresv; i++)
    if (c->vresv[i].addr == r->addr && c->vresv[i].size == r->size) break;
  if (!r->addr || i == c->nvresv) return CUDA_ERROR_INVALID_VALUE;
  /* As the driver does, what is still mapped in it goes with it. */
  bool any = false;
  for (int k = 0; k < c->nvmap; k++)
    if (c->vmap[k].addr >= r->addr && c->vmap[k].addr - r->addr < r->size) any = true;
  if (any) settle(c);
  for (int k = c->nvmap - 1; k >= 0; k--)
    if (k < c->nvmap && c->vmap[k].addr >= r->addr && c->vmap[k].addr - r->addr < r->size) unmap_at(c, k);
  cgc_vresv gone = c->vresv[i];
  pthread_mutex_lock(&c->lock);
  c->vresv[i] = c->vresv[--c->nvresv];
  pthread_mutex_unlock(&c->lock);
  cgc_va_give(c, gone.addr, gone.taken);
  return CUDA_SUCCESS;
}

/* A physical allocation with its shadow mapping; id 0: a new id. */
static CUresult phys_new(cgc_t *c, uint64_t id, uint64_t size, int device, uint32_t handle_types, uint64_t shadow,
                         cgc_vphys **out) {
  if (!grow((void **)&c->vphys, &c->vphys_cap, c->nvphys, sizeof *c->vphys)) return CUDA_ERROR_OUT_OF_MEMORY;
  cgc_vphys *v = calloc(1, sizeof *v);
  if (!v) return CUDA_ERROR_OUT_OF_MEMORY;
  CUmemAllocationProp prop = prop_of(CU_MEM_ALLOCATION_TYPE_PINNED, CU_MEM_LOCATION_TYPE_DEVICE, device, handle_types);
  CUresult rc = c->drv.cuMemCreate(&v->real, size, &prop, 0);
  if (rc) {
    free(v);
    return rc;
  }
  uint64_t taken = round_up(size, c->granularity);
  if (shadow) {
    if (cgc_va_take_at(c, shadow, taken) != 0) rc = CUDA_ERROR_OUT_OF_MEMORY;
  } else if (!(shadow = cgc_va_take(c, taken, c->granularity))) {
    rc = CUDA_ERROR_OUT_OF_MEMORY;
  }
  if (!c->vmm_next_id) c->vmm_next_id = 1;
  v->id = id ? id : c->vmm_next_id++;
  v->size = size;
  v->device = device;
  v->handle_types = handle_types;
  v->shadow = shadow;
  if (!rc) {
    rc = map_shadow(c, v);
    if (rc) cgc_va_give(c, shadow, taken);
  }
  if (rc) {
    c->drv.cuMemRelease(v->real);
    free(v);
    return rc;
  }
  pthread_mutex_lock(&c->lock);
  c->vphys[c->nvphys++] = v;
  c->vphys_bytes += size;
  pthread_mutex_unlock(&c->lock);
  *out = v;
  return CUDA_SUCCESS;
}

static CUresult map(cgc_t *c, cgs_vmm *r, const uint8_t *access) {
  if (r->flags || r->offset || r->size == 0 || r->addr % c->granularity) return CUDA_ERROR_INVALID_VALUE;
  if (r->size % c->granularity) return CUDA_ERROR_NOT_SUPPORTED; /* as NVIDIA's driver (580) answers */
  cgc_vphys *v = phys_of(c, r->handle);
  if (!v || v->released || r->size > v->size) return CUDA_ERROR_INVALID_VALUE;
  /* Only inside the job's own reservations, never over another mapping. */
  if (resv_holding(c, r->addr, r->size) < 0) return CUDA_ERROR_INVALID_VALUE;
  for (int i = 0; i < c->nvmap; i++) {
    const cgc_vmap *m = &c->vmap[i];
    if (m->addr < r->addr + r->size && r->addr < m->addr + m->size) return CUDA_ERROR_INVALID_VALUE;
  }
  if (!grow((void **)&c->vmap, &c->vmap_cap, c->nvmap, sizeof *c->vmap)) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = c->drv.cuMemMap(r->addr, r->size, 0, v->real, 0);
  if (rc) return rc;
  cgc_vmap m = {.addr = r->addr, .size = r->size, .phys = v->id};
  if (access) {
    memcpy(m.access, access, sizeof m.access);
    rc = set_access(c, m.addr, m.size, m.access);
    if (rc) {
      c->drv.cuMemUnmap(m.addr, m.size);
      return rc;
    }
  }
  v->maps++;
  pthread_mutex_lock(&c->lock);
  c->vmap[c->nvmap++] = m;
  pthread_mutex_unlock(&c->lock);
  return CUDA_SUCCESS;
}

/* Mappings covering [p, p+n) with no hole; false if some byte is not mapped. */
static bool mapped_run(cgc_t *c, uint64_t p, uint64_t n) {
  if (!c->nvmap) return false;
  while (n) {
    int i = map_holding(c, p);
    if (i < 0) return false;
    uint64_t left = c->vmap[i].addr + c->vmap[i].size - p;
    if (n <= left) return true;
    p += left;
    n -= left;
  }
  return true;
}

static CUresult unmap(cgc_t *c, cgs_vmm *r) {
  if (!r->addr || r->size == 0 || !mapped_run(c, r->addr, r->size)) return CUDA_ERROR_INVALID_VALUE;
  /* Whole mappings only: the range starts and ends on mapping boundaries. */
  int first = map_holding(c, r->addr), last = map_holding(c, r->addr + r->size - 1);
  if (c->vmap[first].addr != r->addr || c->vmap[last].addr + c->vmap[last].size != r->addr + r->size)
    return CUDA_ERROR_INVALID_VALUE;
  settle(c);
  for (int k = c->nvmap - 1; k >= 0; k--)
    if (k < c->nvmap && c->vmap[k].addr >= r->addr && c->vmap[k].addr - r->addr < r->size) unmap_at(c, k);
  return CUDA_SUCCESS;
}

static CUresult access_set(cgc_t *c, cgs_vmm *r) {
  if (r->size == 0) return CUDA_ERROR_INVALID_VALUE;
  uint8_t want[CGS_MAX_DEVICES] = {0};
  bool touched[CGS_MAX_DEVICES] = {false};
  for (uint32_t k = 0; k < r->naccess; k++) {
    int d = r->access_device[k];
    uint32_t f = r->access_flags[k];
    if (d < 0 || d >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    if (f != CU_MEM_ACCESS_FLAGS_PROT_NONE && f != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        f != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
      return CUDA_ERROR_INVALID_VALUE;
    want[d] = (uint8_t)f;
    touched[d] = true;
  }
  if (!mapped_run(c, r->addr, r->size)) return CUDA_ERROR_INVALID_VALUE;
  /* Rights taken away: the work in flight finishes first. */
  settle(c);
  CUmemAccessDesc d[CGS_MAX_DEVICES];
  for (uint32_t k = 0; k < r->naccess; k++) {
    memset(&d[k], 0, sizeof d[k]);
    d[k].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    d[k].location.id = r->access_device[k];
    d[k].flags = (CUmemAccess_flags)r->access_flags[k];
  }
  CUresult rc = c->drv.cuMemSetAccess(r->addr, r->size, d, r->naccess);
  if (rc) return rc;
  /* Like the driver, the rights are the whole mapping's. */
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < c->nvmap; i++) {
    cgc_vmap *m = &c->vmap[i];
    if (m->addr >= r->addr + r->size || r->addr >= m->addr + m->size) continue;
    for (int k = 0; k < CGS_MAX_DEVICES; k++)
      if (touched[k]) m->access[k] = want[k];
  }
  pthread_mutex_unlock(&c->lock);
  return CUDA_SUCCESS;
}

int cgc_op_vmm(cgc_t *c, cgs_vmm *r, uint64_t *ret, int *nret) {
  if (!c->va_reserved) return CUDA_ERROR_NOT_INITIALIZED;
  cgc_context *x;
  CUresult rc = cgc_use_ctx(c, r->h.ctx, true, &x);
  if (rc) return rc;
  switch (r->h.op) {
  case CGS_OP_VMM_GRANULARITY: {
    if (r->location_type == CU_MEM_LOCATION_TYPE_DEVICE && (r->location_id < 0 || r->location_id >= c->device_count))
      return CUDA_ERROR_INVALID_DEVICE;
    CUmemAllocationProp p = prop_of((int)r->type, r->location_type, r->location_id, r->handle_types);
    size_t g = 0;
    rc = c->drv.cuMemGetAllocationGranularity(&g, &p, (CUmemAllocationGranularity_flags)r->option);
    /* Our mappings are placed at our granularity: never promise less. */
    if (!rc && g < c->granularity) g = c->granularity;
    ret[0] = g;
    *nret = 1;
    return rc;
  }
  case CGS_OP_VMM_RESERVE:
    rc = reserve(c, r, &ret[0]);
    *nret = 1;
    return rc;
  case CGS_OP_VMM_FREE:
    return address_free(c, r);
  case CGS_OP_VMM_CREATE: {
    if (r->flags || r->type != CU_MEM_ALLOCATION_TYPE_PINNED) return CUDA_ERROR_INVALID_VALUE;
    if (r->location_type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_NOT_SUPPORTED;
    if (r->location_id < 0 || r->location_id >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    /* Asking for a shareable handle type is fine; exporting one is not
     * forwarded (it would be the controller's file descriptor). */
    if (r->handle_types & ~(uint32_t)CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
    if (r->size == 0 || r->size % c->granularity) return CUDA_ERROR_INVALID_VALUE;
    cgc_vphys *v;
    rc = phys_new(c, 0, r->size, r->location_id, r->handle_types, 0, &v);
    ret[0] = rc ? 0 : v->id;
    *nret = 1;
    return rc;
  }
  case CGS_OP_VMM_RELEASE: {
    cgc_vphys *v = phys_of(c, r->handle);
    if (!v || v->released) return CUDA_ERROR_INVALID_VALUE;
    v->released = true;
    phys_maybe_free(c, v);
    return CUDA_SUCCESS;
  }
  case CGS_OP_VMM_MAP:
    return map(c, r, NULL);
  case CGS_OP_VMM_UNMAP:
    return unmap(c, r);
  case CGS_OP_VMM_SET_ACCESS:
    return access_set(c, r);
  case CGS_OP_VMM_GET_ACCESS: {
    if (r->location_type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
    if (r->location_id < 0 || r->location_id >= c->device_count) return CUDA_ERROR_INVALID_DEVICE;
    int i = map_holding(c, r->addr);
    if (i < 0) return CUDA_ERROR_INVALID_VALUE;
    ret[0] = c->vmap[i].access[r->location_id];
    *nret = 1;
    return CUDA_SUCCESS;
  }
  }
  return CUDA_ERROR_INVALID_VALUE;
}

/* ---- checkpoint ------------------------------------------------------------ */

size_t cgc_vmm_regions(cgc_t *c, uint64_t *pairs, size_t max_pairs) {
  for (int i = 0; i < c->nvphys && (size_t)i < max_pairs; i++) {
    pairs[2 * i] = c->vphys[i]->shadow;
    pairs[2 * i + 1] = c->vphys[i]->size;
  }
  return (size_t)c->nvphys;
}

int cgc_vmm_import_reservation(cgc_t *c, uint64_t addr, uint64_t size, uint64_t taken) {
  if (size == 0 || taken < size || taken % c->granularity || addr % c->granularity ||
      !grow((void **)&c->vresv, &c->vresv_cap, c->nvresv, sizeof *c->vresv) || cgc_va_take_at(c, addr, taken)) {
    cgc_set_error(c, "VMM reservation 0x%llx+0x%llx is not available in the device address range",
                  (unsigned long long)addr, (unsigned long long)taken);
    return -EINVAL;
  }
  c->vresv[c->nvresv++] = (cgc_vresv){addr, size, taken};
  return 0;
}

int cgc_vmm_import_physical(cgc_t *c, uint64_t id, uint64_t size, int device, uint64_t shadow, bool released) {
  if (id == 0 || phys_of(c, id) || device < 0 || device >= c->device_count || size == 0 ||
      size % c->granularity || shadow % c->granularity) {
    cgc_set_error(c, "VMM physical allocation %llu: bad id, size, device or address", (unsigned long long)id);
    return -EINVAL;
  }
  cgc_vphys *v;
  CUresult rc = phys_new(c, id, size, device, 0, shadow, &v);
  if (rc) {
    cgc_set_error(c, "cannot re-create VMM physical allocation %llu (%llu bytes on device %d at 0x%llx): %s",
                  (unsigned long long)id, (unsigned long long)size, device, (unsigned long long)shadow,
                  cgc_cu_name(c, rc));
    return (int)rc;
  }
  /* Released by the job: lives on through its mappings (mapped next). */
  v->released = released;
  if (id >= c->vmm_next_id) c->vmm_next_id = id + 1;
  return 0;
}

int cgc_vmm_import_mapping(cgc_t *c, uint64_t addr, uint64_t size, uint64_t phys, uint32_t access) {
  uint8_t acc[CGS_MAX_DEVICES];
  for (int d = 0; d < CGS_MAX_DEVICES; d++) acc[d] = (uint8_t)((access >> (2 * d)) & 3);
  cgs_vmm r;
  memset(&r, 0, sizeof r);
  r.addr = addr;
  r.size = size;
  r.handle = phys;
  cgc_vphys *v = phys_of(c, phys);
  bool released = v && v->released;
  if (v) v->released = false; /* map() takes only a live handle */
  CUresult rc = map(c, &r, acc);
  if (v) v->released = released;
  if (rc) {
    cgc_set_error(c, "cannot map VMM physical allocation %llu at 0x%llx+0x%llx again: %s", (unsigned long long)phys,
                  (unsigned long long)addr, (unsigned long long)size, cgc_cu_name(c, rc));
    return rc > 0 ? (int)rc : -EINVAL;
  }
  return 0;
}

/* Physical allocations released by the job and mapped nowhere any more
 * cannot be in a document; this drops any that a broken one implied. */
void cgc_vmm_import_done(cgc_t *c) {
  for (int i = c->nvphys - 1; i >= 0; i--)
    if (i < c->nvphys) phys_maybe_free(c, c->vphys[i]);
}

uint32_t cgc_vmm_access_bits(const cgc_vmap *m) {
  uint32_t bits = 0;
  for (int d = 0; d < CGS_MAX_DEVICES; d++) bits |= (uint32_t)(m->access[d] & 3) << (2 * d);
  return bits;
}

void cgc_vmm_free_all(cgc_t *c) {
  for (int i = 0; i < c->nvmap; i++) c->drv.cuMemUnmap(c->vmap[i].addr, c->vmap[i].size);
  for (int i = 0; i < c->nvphys; i++) {
    c->drv.cuMemUnmap(c->vphys[i]->shadow, c->vphys[i]->size);
    c->drv.cuMemRelease(c->vphys[i]->real);
    free(c->vphys[i]);
  }
  free(c->vmap);
  free(c->vphys);
  free(c->vresv);
  c->vmap = NULL;
  c->vphys = NULL;
  c->vresv = NULL;
  c->nvmap = c->nvphys = c->nvresv = 0;
  c->vmap_cap = c->vphys_cap = c->vresv_cap = 0;
  c->vphys_bytes = 0;
}
