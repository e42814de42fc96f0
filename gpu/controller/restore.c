/* cgc_import_state: rebuild a job's GPU state from a checkpoint's
 * state.json (written by cgc_export_state) on a freshly opened controller.
 *
 * The job's memory (restored by CRIU) still holds the minted handles and the
 * device addresses it had: every chunk is mapped at its old address, and
 * every minted handle is bound to a new driver object made like the old one.
 * The document is read record by record through state_doc.c, which refuses
 * what its schema does not allow; here is what a record means for this
 * machine. Everything is checked before anything is mapped (format, version,
 * the whole top level, geometry, address range, devices, memory); what fails
 * later leaves what was built in the tables, where cgc_close releases it.
 */
#include "cgc_internal.h"
#include "cgc_state_doc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define ERR(...)                   \
  do {                             \
    cgc_set_error(c, __VA_ARGS__); \
    return -EINVAL;                \
  } while (0)

/* Read a whole file; NULL with the error set. */
static uint8_t *slurp(cgc_t *c, const char *dir, const char *name, uint64_t *len) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    cgc_set_error(c, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    cgc_set_error(c, "%s is not a regular file", path);
    close(fd);
    return NULL;
  }
  uint64_t n = (uint64_t)st.st_size;
  uint8_t *buf = malloc(n + 1);
  if (!buf) {
    cgc_set_error(c, "out of memory reading %s (%llu bytes)", path, (unsigned long long)n);
    close(fd);
    return NULL;
  }
  uint64_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got > (1u << 30) ? (1u << 30) : n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      cgc_set_error(c, "cannot read %s: %s", path, r < 0 ? strerror(errno) : "file shrank");
      free(buf);
      close(fd);
      return NULL;
    }
    got += (uint64_t)r;
  }
  close(fd);
  buf[n] = 0;
  *len = n;
  return buf;
}

static const char *gib(char *buf, size_t len, uint64_t bytes) {
  if (bytes >= ((uint64_t)1 << 30))
    snprintf(buf, len, "%.1f GiB", (double)bytes / (double)((uint64_t)1 << 30));
  else
    snprintf(buf, len, "%.1f MiB", (double)bytes / (double)((uint64_t)1 << 20));
  return buf;
}

/* ---- steps ---------------------------------------------------------------- */

static int check_fit(cgc_t *c, const cj *st, const sd_header *h) {
  const char *ours = strrchr(c->seg_path, '/');
  ours = ours ? ours + 1 : c->seg_path;
  if (strcmp(h->seg_name, ours) != 0)
    ERR("the checkpoint's segment is %s but this controller serves %s: open it with segment_name \"%s\"", h->seg_name,
        ours, h->seg_name);
  if (h->seg_size != c->segment_size || h->ring_slots != c->ring_slots || h->nchannels != c->nchannels ||
      h->staging_size != c->staging_size)
    ERR("the checkpoint's segment geometry (%llu bytes: %u slots, %u channels of %llu) differs from this "
        "controller's (%llu bytes: %u slots, %u channels of %llu): open it with the checkpoint's geometry",
        (unsigned long long)h->seg_size, h->ring_slots, h->nchannels, (unsigned long long)h->staging_size,
        (unsigned long long)c->segment_size, c->ring_slots, c->nchannels, (unsigned long long)c->staging_size);
  if (h->va_base != c->va_base || h->va_size > c->va_size)
    ERR("the checkpoint's device address range 0x%llx+0x%llx is not this controller's (0x%llx+0x%llx): open it "
        "with va_base 0x%llx and va_size 0x%llx",
        (unsigned long long)h->va_base, (unsigned long long)h->va_size, (unsigned long long)c->va_base,
        (unsigned long long)c->va_size, (unsigned long long)h->va_base, (unsigned long long)h->va_size);

  /* Devices and memory, before anything is mapped: what the chunks need. */
  const cj *chunks = sd_list(st, "chunks");
  uint64_t need[CGS_MAX_DEVICES] = {0};
  for (size_t i = 0; i < cj_len(chunks); i++) {
    sd_chunk ch;
    if (sd_get_chunk(c, cj_at(chunks, i), i, &ch)) return -EINVAL;
    if (ch.device >= c->device_count)
      ERR("the checkpoint needs device %d but this machine has %d device(s)", (int)ch.device, c->device_count);
    need[ch.device] = need[ch.device] + ch.size < need[ch.device] ? UINT64_MAX : need[ch.device] + ch.size;
  }
  for (int d = 0; d < c->device_count; d++) {
    if (!need[d]) continue;
    CUdevice dev;
    size_t total = 0, free_b = 0;
    char name_buf[256] = "";
    CUresult rc = c->drv.cuDeviceGet(&dev, d);
    if (!rc) rc = c->drv.cuDeviceTotalMem(&total, dev);
    if (rc) {
      cgc_set_error(c, "device %d: %s", d, cgc_cu_name(c, rc));
      return (int)rc;
    }
    c->drv.cuDeviceGetName(name_buf, sizeof name_buf - 1, dev);
    char b1[32], b2[32], b3[32];
    if (need[d] > total)
      ERR("device %d (%s) has %s, the checkpoint needs %s", d, name_buf, gib(b1, sizeof b1, total),
          gib(b2, sizeof b2, need[d]));
    /* cuMemGetInfo answers for the current context's device: ours is device 0's. */
    if (d == 0 && c->drv.cuMemGetInfo(&free_b, &total) == CUDA_SUCCESS && need[d] > free_b)
      ERR("device %d (%s) has %s free of %s, the checkpoint needs %s", d, name_buf, gib(b1, sizeof b1, free_b),
          gib(b2, sizeof b2, total), gib(b3, sizeof b3, need[d]));
  }
  return 0;
}

/* Context by minted handle: 0 is ours (device 0's primary context). */
static cgc_context *ctx_of(cgc_t *c, uint64_t minted) {
  return minted ? cgc_hmap_get(&c->contexts, minted) : &c->own;
}

static int put(cgc_t *c, cgc_hmap *m, uint64_t key, void *val, const char *what) {
  pthread_mutex_lock(&c->lock);
  int rc = cgc_hmap_put(m, key, val);
  pthread_mutex_unlock(&c->lock);
  if (rc == -EEXIST) cgc_set_error(c, CGC_STATE_NAME ": %s 0x%llx appears twice", what, (unsigned long long)key);
  if (rc == -ENOMEM) cgc_set_error(c, "out of memory");
  return rc;
}

/* cgc_table_keep for a record's object, with the error set. */
static int keep(cgc_t *c, cgc_hmap *m, uint64_t key, const void *obj, size_t size, const char *what, cgc_dead real) {
  int rc = cgc_table_keep(c, m, key, obj, size, real);
  if (rc == -EEXIST) cgc_set_error(c, CGC_STATE_NAME ": %s 0x%llx appears twice", what, (unsigned long long)key);
  if (rc == -ENOMEM) cgc_set_error(c, "out of memory");
  return rc;
}

/* The context record i (a module, stream or event) names, or NULL with the
 * error set. */
static cgc_context *rec_ctx(cgc_t *c, const char *what, size_t i, uint64_t minted) {
  cgc_context *x = ctx_of(c, minted);
  if (!x)
    cgc_set_error(c, CGC_STATE_NAME ": %s %zu belongs to an unknown context 0x%llx", what, i,
                  (unsigned long long)minted);
  return x;
}

static int recreate_failed(cgc_t *c, const char *what, uint64_t minted, CUresult rc) {
  cgc_set_error(c, "cannot re-create %s 0x%llx: %s", what, (unsigned long long)minted, cgc_cu_name(c, rc));
  return (int)rc;
}

static int import_contexts(cgc_t *c, const cj *list) {
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_context rec;
    if (sd_get_context(c, cj_at(list, i), i, &rec)) return -EINVAL;
    uint64_t minted = rec.minted;
    uint32_t flags = rec.flags;
    int32_t device = rec.device;
    bool primary = rec.primary;
    if (device < 0 || device >= c->device_count)
      ERR("the checkpoint's context 0x%llx is on device %lld; this machine has %d device(s)",
          (unsigned long long)minted, (long long)device, c->device_count);
    CUdevice d;
    CUresult rc = c->drv.cuDeviceGet(&d, (int)device);
    cgc_context *x = calloc(1, sizeof *x);
    if (!x) ERR("out of memory");
    if (!rc) {
      if (primary) {
        rc = c->drv.cuDevicePrimaryCtxRetain(&x->real, d);
        if (!rc) {
          if (c->own_primary[device])
            c->drv.cuDevicePrimaryCtxRelease(d); /* we hold one already */
          else
            c->own_primary[device] = true;
        }
      } else {
        rc = c->drv.cuCtxCreate(&x->real, (unsigned)flags, d);
      }
    }
    if (rc) {
      free(x);
      cgc_set_error(c, "cannot re-create context 0x%llx on device %lld: %s", (unsigned long long)minted,
                    (long long)device, cgc_cu_name(c, rc));
      return (int)rc;
    }
    x->minted = minted;
    x->device = (int)device;
    x->flags = (unsigned)flags;
    x->primary = primary;
    x->refs = rec.refs;
    if (put(c, &c->contexts, minted, x, "context")) {
      if (!primary) c->drv.cuCtxDestroy(x->real);
      free(x);
      return -EINVAL;
    }
  }
  return 0;
}

static int import_memory(cgc_t *c, const cj *st) {
  const cj *chunks = sd_list(st, "chunks");
  const cj *allocs = sd_list(st, "allocations");
  size_t n = cj_len(chunks);
  cgc_chunk **v = calloc(n ? n : 1, sizeof *v);
  if (!v) ERR("out of memory");
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    sd_chunk ch;
    rc = sd_get_chunk(c, cj_at(chunks, i), i, &ch);
    if (!rc) rc = cgc_mem_chunk_at(c, ch.addr, ch.size, ch.device, ch.slot_size, &v[i]);
  }
  for (size_t i = 0; i < cj_len(allocs) && !rc; i++) {
    sd_alloc a;
    if ((rc = sd_get_alloc(c, cj_at(allocs, i), i, &a))) break;
    if (a.chunk >= n) {
      cgc_set_error(c, CGC_STATE_NAME ": allocation %zu is in chunk %llu, which is not listed", i,
                    (unsigned long long)a.chunk);
      rc = -EINVAL;
      break;
    }
    if (a.context && !cgc_hmap_get(&c->contexts, a.context)) {
      cgc_set_error(c, CGC_STATE_NAME ": allocation 0x%llx belongs to an unknown context 0x%llx",
                    (unsigned long long)a.addr, (unsigned long long)a.context);
      rc = -EINVAL;
      break;
    }
    rc = cgc_mem_place(c, v[a.chunk], a.addr, a.size, a.context);
  }
  for (size_t i = 0; i < n; i++)
    if (v[i]) cgc_mem_chunk_done(c, v[i]);
  free(v);
  return rc;
}

static int import_modules(cgc_t *c, const char *dir, const cj *list) {
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_module rec;
    if (sd_get_module(c, cj_at(list, i), i, &rec)) return -EINVAL;
    const char *file = rec.file;
    cgc_module m = {.minted = rec.minted, .ctx = rec_ctx(c, "module", i, rec.context)};
    if (!m.ctx) return -EINVAL;
    uint64_t len = 0;
    uint8_t *img = slurp(c, dir, file, &len);
    if (!img) return -EIO;
    if (len != rec.size) {
      free(img);
      ERR("module %zu (%s): %llu bytes, the checkpoint says %llu: the checkpoint is damaged", i, file,
          (unsigned long long)len, (unsigned long long)rec.size);
    }
    if (cgc_checksum(img, len, 0) != rec.checksum) {
      free(img);
      ERR("module %zu (%s): checksum mismatch: the checkpoint is damaged", i, file);
    }
    CUresult rc = c->drv.cuCtxSetCurrent(m.ctx->real);
    if (!rc) rc = c->drv.cuModuleLoadData(&m.real, img);
    if (rc) {
      free(img);
      cgc_set_error(c, "module %zu (%s): cannot load it on this device: %s", i, file, cgc_cu_name(c, rc));
      return (int)rc;
    }
    m.image = img;
    m.image_size = len;
    if (keep(c, &c->modules, m.minted, &m, sizeof m, "module", (cgc_dead){CGC_DEAD_MODULE, m.real})) {
      free(img);
      return -EINVAL;
    }
  }
  return 0;
}

static int import_functions(cgc_t *c, const cj *list) {
  for (size_t i = 0; i < cj_len(list); i++) {
    const cj *e = cj_at(list, i);
    sd_function rec;
    if (sd_get_function(c, e, i, &rec)) return -EINVAL;
    uint64_t minted = rec.minted, mod = rec.module, psize = rec.params_size;
    int32_t nparams = rec.nparams;
    const char *name = rec.name;
    cgc_module *m = cgc_hmap_get(&c->modules, mod);
    if (!m)
      ERR(CGC_STATE_NAME ": function %zu (%s) belongs to an unknown module 0x%llx", i, name, (unsigned long long)mod);
    if (psize > CGS_MAX_LAUNCH_ARGS)
      ERR(CGC_STATE_NAME ": function %zu (%s) has a bad parameter layout", i, name);
    CUfunction real;
    CUresult rc = c->drv.cuCtxSetCurrent(m->ctx->real);
    if (!rc) rc = c->drv.cuModuleGetFunction(&real, m->real, name);
    if (rc) {
      cgc_set_error(c, "function %s of module 0x%llx: not found after reloading the module: %s", name,
                    (unsigned long long)mod, cgc_cu_name(c, rc));
      return (int)rc;
    }
    cgc_function *f = calloc(1, sizeof *f);
    if (!f) ERR("out of memory");
    f->minted = minted;
    f->real = real;
    f->module = m;
    f->name = strdup(name);
    f->nparams = nparams;
    f->params_size = (uint32_t)psize;
    f->params = malloc((size_t)(nparams > 0 ? nparams : 1) * sizeof *f->params);
    if (!f->name || !f->params) {
      free(f->name);
      free(f->params);
      free(f);
      ERR("out of memory");
    }
    for (int32_t k = 0; k < nparams; k++) {
      cgs_param p;
      int bad = sd_get_param(c, e, i, &rec, k, &p);
      if (!bad && (uint64_t)p.offset + p.size > psize) {
        cgc_set_error(c, CGC_STATE_NAME ": function %zu (%s): parameter %d is not [offset, size] within %llu bytes",
                      i, name, (int)k, (unsigned long long)psize);
        bad = -EINVAL;
      }
      if (bad) {
        free(f->name);
        free(f->params);
        free(f);
        return -EINVAL;
      }
      f->params[k] = p;
    }
    /* Attributes the job set (dynamic shared memory size, carveout, ...). */
    for (int k = 0; k < 32; k++) {
      if (!(rec.attr_set & (1u << k))) continue;
      rc = c->drv.cuFuncSetAttribute ? c->drv.cuFuncSetAttribute(real, (CUfunction_attribute)k, rec.attrs[k])
                                     : CUDA_ERROR_NOT_SUPPORTED;
      f->attrs[k] = rec.attrs[k];
      f->attr_set |= 1u << k;
      if (rc) {
        cgc_set_error(c, "function %s: cannot set attribute %d again: %s", name, k, cgc_cu_name(c, rc));
        free(f->name);
        free(f->params);
        free(f);
        return (int)rc;
      }
    }
    if (put(c, &c->functions, minted, f, "function")) {
      free(f->name);
      free(f->params);
      free(f);
      return -EINVAL;
    }
    m->nfunctions++;
  }
  return 0;
}

static int add_global(cgc_t *c, uint64_t dptr, uint64_t size, cgc_module *m, const char *name, uint64_t old) {
  pthread_mutex_lock(&c->lock);
  int rc = 0;
  if (c->nglobals == c->gcap) {
    int cap = c->gcap ? 2 * c->gcap : 16;
    cgc_global *g = realloc(c->globals, (size_t)cap * sizeof *g);
    if (!g) rc = -ENOMEM;
    else {
      c->globals = g;
      c->gcap = cap;
    }
  }
  if (!rc) c->globals[c->nglobals++] = (cgc_global){dptr, size, m, strdup(name)};
  if (!rc && old != dptr) {
    cgc_remap *nr = realloc(c->remaps, ((size_t)c->nremaps + 1) * sizeof *nr);
    if (!nr) rc = -ENOMEM;
    else {
      c->remaps = nr;
      c->remaps[c->nremaps++] = (cgc_remap){old, dptr, size};
    }
  }
  pthread_mutex_unlock(&c->lock);
  if (rc) cgc_set_error(c, "out of memory");
  return rc;
}

static int import_globals(cgc_t *c, const char *dir, const cj *list) {
  if (!cj_len(list)) return 0;
  uint64_t len = 0;
  uint8_t *bytes = slurp(c, dir, "globals.bin", &len);
  if (!bytes) return -EIO;
  int rc = 0;
  for (size_t i = 0; i < cj_len(list) && !rc; i++) {
    sd_global rec;
    if ((rc = sd_get_global(c, cj_at(list, i), i, &rec))) break;
    uint64_t old = rec.addr, size = rec.size, off = rec.offset, sum = rec.checksum;
    const char *name = rec.name;
    cgc_module *m = cgc_hmap_get(&c->modules, rec.module);
    if (!m) {
      cgc_set_error(c, CGC_STATE_NAME ": global %zu (%s) belongs to an unknown module", i, name);
      rc = -EINVAL;
      break;
    }
    if (off > len || size > len - off || cgc_checksum(bytes + off, size, 0) != sum) {
      cgc_set_error(c, "module global %s: its saved bytes are damaged (globals.bin)", name);
      rc = -EINVAL;
      break;
    }
    CUdeviceptr dptr = 0;
    size_t got = 0;
    CUresult cr = c->drv.cuCtxSetCurrent(m->ctx->real);
    if (!cr) cr = c->drv.cuModuleGetGlobal(&dptr, &got, m->real, name);
    if (!cr && got != size) {
      cgc_set_error(c, "module global %s: %zu bytes after reloading, %llu in the checkpoint", name, got,
                    (unsigned long long)size);
      rc = -EINVAL;
      break;
    }
    if (!cr && size)
      cr = c->drv.cuMemcpyHtoD ? c->drv.cuMemcpyHtoD(dptr, bytes + off, size) : CUDA_ERROR_NOT_SUPPORTED;
    if (cr) {
      cgc_set_error(c, "module global %s: %s", name, cgc_cu_name(c, cr));
      rc = (int)cr;
      break;
    }
    rc = add_global(c, dptr, size, m, name, old);
  }
  free(bytes);
  return rc;
}

static int import_streams_events(cgc_t *c, const cj *streams, const cj *events) {
  for (size_t i = 0; i < cj_len(streams); i++) {
    sd_stream rec;
    if (sd_get_stream(c, cj_at(streams, i), i, &rec)) return -EINVAL;
    cgc_stream s = {.minted = rec.minted, .flags = rec.flags, .priority = rec.priority};
    if (!(s.ctx = rec_ctx(c, "stream", i, rec.context))) return -EINVAL;
    CUresult rc = c->drv.cuCtxSetCurrent(s.ctx->real);
    if (!rc) rc = c->drv.cuStreamCreateWithPriority(&s.real, s.flags, s.priority);
    if (rc) return recreate_failed(c, "stream", s.minted, rc);
    if (keep(c, &c->streams, s.minted, &s, sizeof s, "stream", (cgc_dead){CGC_DEAD_STREAM, s.real})) return -EINVAL;
  }
  for (size_t i = 0; i < cj_len(events); i++) {
    sd_event rec;
    if (sd_get_event(c, cj_at(events, i), i, &rec)) return -EINVAL;
    cgc_event ev = {.minted = rec.minted, .flags = rec.flags};
    if (!(ev.ctx = rec_ctx(c, "event", i, rec.context))) return -EINVAL;
    CUresult rc = c->drv.cuCtxSetCurrent(ev.ctx->real);
    if (!rc) rc = c->drv.cuEventCreate(&ev.real, ev.flags);
    /* The job was frozen with every stream idle, so whatever the event had
     * recorded was complete: record it on the idle NULL stream to match
     * (queries and synchronizes succeed, elapsed times are measurable). */
    if (!rc) c->drv.cuEventRecord(ev.real, NULL);
    if (rc) return recreate_failed(c, "event", ev.minted, rc);
    if (keep(c, &c->events, ev.minted, &ev, sizeof ev, "event", (cgc_dead){CGC_DEAD_EVENT, ev.real})) return -EINVAL;
  }
  return 0;
}

static int import_pins(cgc_t *c, const cj *list) {
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_pin rec;
    if (sd_get_pin(c, cj_at(list, i), i, &rec)) return -EINVAL;
    uint32_t id = rec.id;
    uint64_t size = rec.size, app = rec.app_addr;
    bool same = rec.same_addr;
    cgc_pin *p;
    CUresult rc = c->drv.cuCtxSetCurrent(c->primary0);
    if (!rc) rc = cgc_pin_map(c, id, size, app, &p);
    if (rc) {
      cgc_set_error(c, "pinned host memory %s%llu (%llu bytes) cannot be mapped: re-create it with its saved "
                       "contents before the import (%s)",
                    c->pin_prefix, (unsigned long long)id, (unsigned long long)size, cgc_cu_name(c, rc));
      return (int)rc;
    }
    if (same && !p->same_addr)
      cgc_log(c, "pinned memory %llu could not be mapped at the job's address 0x%llx: device pointers into it will "
                 "not reach it here",
              (unsigned long long)id, (unsigned long long)app);
    if (put(c, &c->pins, id, p, "pinned file")) {
      cgc_pin_unmap(c, p);
      return -EINVAL;
    }
  }
  return 0;
}

/* The job's VMM objects: reservations, then physical allocations at their
 * shadow addresses (where the saved regions are written next), then the
 * job's mappings of them. */
static int import_vmm(cgc_t *c, const cj *st) {
  const cj *list = sd_list(st, "vmm_reservations");
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_vresv rec;
    if (sd_get_vresv(c, cj_at(list, i), i, &rec)) return -EINVAL;
    int rc = cgc_vmm_import_reservation(c, rec.addr, rec.size, rec.taken);
    if (rc) return rc;
  }
  list = sd_list(st, "vmm_physical");
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_vphys rec;
    if (sd_get_vphys(c, cj_at(list, i), i, &rec)) return -EINVAL;
    int rc = cgc_vmm_import_physical(c, rec.id, rec.size, rec.device, rec.shadow, rec.released);
    if (rc) return rc;
  }
  list = sd_list(st, "vmm_mappings");
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_vmap rec;
    if (sd_get_vmap(c, cj_at(list, i), i, &rec)) return -EINVAL;
    int rc = cgc_vmm_import_mapping(c, rec.addr, rec.size, rec.physical, rec.access);
    if (rc) return rc;
  }
  cgc_vmm_import_done(c);
  return 0;
}

/* The job's memory pools, then their blocks (allocations placed already). */
static int import_pools(cgc_t *c, const cj *st) {
  const cj *list = sd_list(st, "pools");
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_pool rec;
    if (sd_get_pool(c, cj_at(list, i), i, &rec)) return -EINVAL;
    if (rec.device < 0 || rec.device >= c->device_count || cgc_hmap_get(&c->pools, rec.minted))
      ERR(CGC_STATE_NAME ": memory pool %zu is on device %d of %d, or listed twice", i, rec.device, c->device_count);
    cgc_pool *p = calloc(1, sizeof *p);
    if (!p || cgc_hmap_put(&c->pools, rec.minted, p)) {
      free(p);
      ERR("out of memory");
    }
    p->minted = rec.minted;
    p->device = rec.device;
    p->is_default = rec.is_default;
    p->destroyed = rec.destroyed;
    p->max_size = rec.max_size;
    p->threshold = rec.threshold;
    p->reuse_follow = (rec.reuse & 1) != 0;
    p->reuse_opportunistic = (rec.reuse & 2) != 0;
    p->reuse_internal = (rec.reuse & 4) != 0;
    p->reserved_high = rec.reserved_high;
    p->used_high = rec.used_high;
  }
  list = sd_list(st, "pool_blocks");
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_pblock rec;
    if (sd_get_pblock(c, cj_at(list, i), i, &rec)) return -EINVAL;
    cgc_pool *p = cgc_hmap_get(&c->pools, rec.pool);
    cgc_alloc *a = cgc_mem_at(c, rec.addr);
    if (!p || !a || a->pool || a->ctx || rec.size < a->req_size || rec.size > a->size)
      ERR(CGC_STATE_NAME ": pool block %zu (0x%llx) is not an allocation of the job's, or its pool is not listed", i,
          (unsigned long long)rec.addr);
    a->pool = p;
    a->pool_size = rec.size;
    a->cached = rec.cached;
    a->freed_on = rec.freed_on;
    p->reserved += rec.size;
    if (rec.cached) {
      a->pnext = p->cache;
      p->cache = a;
    } else {
      p->used += rec.size;
    }
  }
  return 0;
}

static int import_blobs(cgc_t *c, const char *dir, const cj *list) {
  for (size_t i = 0; i < cj_len(list); i++) {
    sd_blob rec;
    if (sd_get_blob(c, cj_at(list, i), i, &rec)) return -EINVAL;
    uint32_t ch = rec.channel;
    uint64_t total = rec.total, filled = rec.filled, sum = rec.checksum;
    const char *file = rec.file;
    if (ch >= c->nchannels || filled > total)
      ERR(CGC_STATE_NAME ": blob %zu is on channel %u of %u, or holds more than its total", i, ch, c->nchannels);
    uint64_t len = 0;
    uint8_t *b = slurp(c, dir, file, &len);
    if (!b) return -EIO;
    if (len != filled || cgc_checksum(b, len, 0) != sum) {
      free(b);
      ERR("%s: checksum mismatch: the checkpoint is damaged", file);
    }
    uint8_t *buf = calloc(1, total + 1);
    if (!buf) {
      free(b);
      ERR("out of memory");
    }
    memcpy(buf, b, len);
    free(b);
    free(c->blobs[ch].buf);
    c->blobs[ch].buf = buf;
    c->blobs[ch].total = total;
    c->blobs[ch].filled = filled;
  }
  return 0;
}

static int import(cgc_t *c, const char *dir, const cj *st) {
  sd_header h;
  int rc = sd_get_header(c, st, &h);
  if (!rc) rc = check_fit(c, st, &h);
  if (rc) return rc;
  if ((rc = import_contexts(c, sd_list(st, "contexts")))) return rc;
  if ((rc = c->drv.cuCtxSetCurrent(c->primary0))) {
    cgc_set_error(c, "cuCtxSetCurrent: %s", cgc_cu_name(c, (CUresult)rc));
    return rc;
  }
  if ((rc = import_memory(c, st))) return rc;
  if ((rc = import_vmm(c, st))) return rc;
  if ((rc = import_pools(c, st))) return rc;
  if ((rc = import_modules(c, dir, sd_list(st, "modules")))) return rc;
  if ((rc = import_functions(c, sd_list(st, "functions")))) return rc;
  if ((rc = import_globals(c, dir, sd_list(st, "globals")))) return rc;
  if ((rc = import_streams_events(c, sd_list(st, "streams"), sd_list(st, "events")))) return rc;
  if ((rc = import_pins(c, sd_list(st, "pins")))) return rc;
  if ((rc = import_blobs(c, dir, sd_list(st, "blobs")))) return rc;
  /* The job's own name for itself (its pinned files are named from it), and
   * the error it had not been told about yet. */
  snprintf(c->app_job_id, sizeof c->app_job_id, "%s", h.app_job_id);
  if (c->hdr) {
    memset(c->hdr->job_id, 0, sizeof c->hdr->job_id);
    memcpy(c->hdr->job_id, c->app_job_id, strlen(c->app_job_id));
    __atomic_store_n(&c->hdr->async_error, h.async_error, __ATOMIC_RELEASE);
    /* The restored processes hold their handle regions again: a process that
     * attaches later must claim past them. */
    __atomic_store_n(&c->hdr->mint_regions, h.mint_regions, __ATOMIC_RELEASE);
  }
  return 0;
}

CGC_API int cgc_import_state(cgc_t *c, const char *dir) {
  if (!c || !dir) return -EINVAL;
  if (c->started) {
    cgc_set_error(c, "cannot import GPU state into a controller that already serves a job (import before start)");
    return -EBUSY;
  }
  if (c->imported || c->alloc_live || c->contexts.len || c->modules.len || c->streams.len || c->events.len ||
      c->pins.len) {
    cgc_set_error(c, "cannot import GPU state: this controller already has GPU state");
    return -EBUSY;
  }
  uint64_t len = 0;
  char *text = (char *)slurp(c, dir, CGC_STATE_NAME, &len);
  if (!text) return -ENOENT;
  char why[160];
  cj_doc *doc = NULL;
  const cj *st = cj_parse(text, len, &doc, why, sizeof why);
  free(text);
  if (!st) {
    cgc_set_error(c, "%s/" CGC_STATE_NAME " is malformed: %s", dir, why);
    return -EINVAL;
  }
  CUcontext saved = NULL;
  c->drv.cuCtxGetCurrent(&saved);
  c->drv.cuCtxSetCurrent(c->primary0);
  int rc = import(c, dir, st);
  c->drv.cuCtxSetCurrent(saved);
  cj_free(doc);
  c->imported = true; /* also after a failure: what was built stays until close */
  return rc;
}
