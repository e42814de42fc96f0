/* The PTX inside a fatbin: nvcc's -fatbin output (and what
 * cuModuleLoadFatBinary's wrapper points to) holds entries of SASS (cubin)
 * and PTX; the fake driver runs the PTX of the newest architecture it
 * imitates or an older one, as the driver JIT-compiles a fatbin's PTX when
 * it has no SASS for the device.
 *
 * Layout (little-endian): a 16-byte header {u32 magic 0xBA55ED50, u16
 * version, u16 header size, u64 size of the entries}, then entries, each a
 * header {u16 kind (1 PTX, 2 ELF), u16 version, u32 header size, u64 payload
 * size, u32 compressed size, ..., u32 architecture at 28, u64 flags at 40,
 * u64 uncompressed size at 56} and its payload. Recent nvcc compresses PTX
 * with zstd (flag 0x8000): libzstd.so.1 is loaded when such an entry is met,
 * so the driver does not link against it. Other compressions are not read;
 * a fatbin without a PTX entry the fake can read is refused as the driver
 * refuses one without code for the device (CUDA_ERROR_NO_BINARY_FOR_GPU).
 */
#include "module_internal.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#define FATBIN_MAGIC 0xBA55ED50u
#define ENTRY_PTX 1
#define FLAG_ZSTD 0x8000u
#define FLAG_LZ4 0x2000u
#define MAX_TEXT ((size_t)1 << 30)

typedef size_t (*zstd_decompress_fn)(void *dst, size_t dst_cap, const void *src, size_t src_size);
typedef unsigned (*zstd_is_error_fn)(size_t code);

static zstd_decompress_fn zstd_decompress;
static zstd_is_error_fn zstd_is_error;
static pthread_once_t zstd_once = PTHREAD_ONCE_INIT;

static void zstd_load(void) {
  void *lib = dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return;
  zstd_decompress = (zstd_decompress_fn)dlsym(lib, "ZSTD_decompress");
  zstd_is_error = (zstd_is_error_fn)dlsym(lib, "ZSTD_isError");
}

static char *zstd_text(const unsigned char *src, size_t n, size_t out_size) {
  pthread_once(&zstd_once, zstd_load);
  if (!zstd_decompress || !zstd_is_error) {
    fk_log("a fatbin's PTX is zstd-compressed and libzstd.so.1 cannot be loaded");
    return NULL;
  }
  if (out_size == 0 || out_size > MAX_TEXT) return NULL;
  char *text = malloc(out_size + 1);
  if (!text) return NULL;
  size_t got = zstd_decompress(text, out_size, src, n);
  if (zstd_is_error(got) || got > out_size) {
    free(text);
    return NULL;
  }
  text[got] = 0;
  return text;
}

static uint64_t rd(const unsigned char *p, size_t n) {
  uint64_t v = 0;
  memcpy(&v, p, n);
  return v;
}

size_t fk_fatbin_size(const void *image, size_t known) {
  const unsigned char *b = image;
  if (known && known < 16) return 0;
  if ((uint32_t)rd(b, 4) != FATBIN_MAGIC) return 0;
  size_t total = (size_t)rd(b + 6, 2) + (size_t)rd(b + 8, 8);
  if (total < 16 || total > ((size_t)1 << 32) || (known && total > known)) return 0;
  return total;
}

char *fk_fatbin_ptx(const void *image, size_t size) {
  const unsigned char *b = image;
  size_t off = (size_t)rd(b + 6, 2);
  const unsigned char *best = NULL;
  uint32_t best_arch = 0;
  for (;;) {
    if (off + 64 > size) break;
    const unsigned char *e = b + off;
    uint32_t kind = (uint32_t)rd(e, 2), hsize = (uint32_t)rd(e + 4, 4);
    uint64_t psize = rd(e + 8, 8);
    if (hsize < 64 || psize > size || off + hsize + psize > size) break;
    uint32_t arch = (uint32_t)rd(e + 28, 4);
    if (kind == ENTRY_PTX && arch <= FK_ARCH_VERSION && (!best || arch > best_arch)) {
      best = e;
      best_arch = arch;
    }
    off += hsize + (size_t)psize;
  }
  if (!best) return NULL;
  uint32_t hsize = (uint32_t)rd(best + 4, 4);
  uint64_t psize = rd(best + 8, 8);
  uint64_t flags = rd(best + 40, 8);
  const unsigned char *payload = best + hsize;
  if (flags & FLAG_ZSTD) {
    size_t csize = (size_t)rd(best + 16, 4);
    if (!csize || csize > psize) csize = (size_t)psize;
    return zstd_text(payload, csize, (size_t)rd(best + 56, 8));
  }
  if (flags & FLAG_LZ4) {
    fk_log("a fatbin's PTX is compressed in a form the fake driver does not read");
    return NULL;
  }
  size_t n = strnlen((const char *)payload, (size_t)psize);
  char *text = malloc(n + 1);
  if (!text) return NULL;
  memcpy(text, payload, n);
  text[n] = 0;
  return text;
}
