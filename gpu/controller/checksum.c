/* cgc_checksum: CRC32C (Castagnoli), the checkpoint's checksum.
 *
 * With SSE4.2 the crc32 instruction does 8 bytes per instruction; its latency
 * is 3 cycles and its throughput 1 per cycle, so three independent streams
 * over three consecutive blocks keep it busy. The three partial CRCs are then
 * combined: the CRC register is linear over GF(2), so appending `n` zero
 * bytes to a register value is a fixed linear map (multiplication by
 * x^(8n) modulo the polynomial), applied here with four 256-entry tables.
 * Without SSE4.2: slicing-by-8 tables.
 *
 * The value is the usual CRC32C (initial value and final xor 0xffffffff,
 * reflected): CRC32C("123456789") = 0xe3069283. `seed` is a previous result,
 * so crc(A || B) == cgc_checksum(B, |B|, cgc_checksum(A, |A|, 0)).
 *
 * No driver, no controller: the CLI loads the library for this alone.
 */
#include "cgc_internal.h"

#include <string.h>

#define POLY 0x82f63b78u /* CRC32C, reflected */

/* Block lengths of the three-stream loop: long blocks for big buffers, short
 * ones for the tail. */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

static uint32_t sw_table[8][256];
static uint32_t long_shift[4][256], short_shift[4][256];
static int have_sse42;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

/* a * b modulo POLY, reflected (bit 31 is x^0). */
static uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  if (!a) return 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
  }
  return p;
}

/* x^(8 * n) modulo POLY: what appending n zero bytes multiplies by. */
static uint32_t x8nmodp(uint64_t n) {
  uint32_t p = 1u << 31;  /* x^0 */
  uint32_t sq = 1u << 30; /* x^1, squared k times: x^(2^k) */
  n *= 8;
  while (n) {
    if (n & 1) p = multmodp(sq, p);
    sq = multmodp(sq, sq);
    n >>= 1;
  }
  return p;
}

static void shift_table(uint32_t t[4][256], uint64_t zeros) {
  uint32_t op = x8nmodp(zeros);
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) t[k][b] = multmodp(b << (8 * k), op);
}

static inline uint32_t shift(const uint32_t t[4][256], uint32_t crc) {
  return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][crc >> 24];
}

static void init_tables(void) {
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = n;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
    sw_table[0][n] = c;
  }
  for (uint32_t n = 0; n < 256; n++) {
    uint32_t c = sw_table[0][n];
    for (int k = 1; k < 8; k++) {
      c = sw_table[0][c & 0xff] ^ (c >> 8);
      sw_table[k][n] = c;
    }
  }
  shift_table(long_shift, LONG_BLOCK);
  shift_table(short_shift, SHORT_BLOCK);
#if defined(__x86_64__)
  __builtin_cpu_init();
  have_sse42 = __builtin_cpu_supports("sse4.2") != 0;
#endif
}

/* ---- software: slicing by 8 ---------------------------------------------- */

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
  while (n && ((uintptr_t)p & 7)) {
    crc = sw_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    n--;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    w ^= crc;
    crc = sw_table[7][w & 0xff] ^ sw_table[6][(w >> 8) & 0xff] ^ sw_table[5][(w >> 16) & 0xff] ^
          sw_table[4][(w >> 24) & 0xff] ^ sw_table[3][(w >> 32) & 0xff] ^ sw_table[2][(w >> 40) & 0xff] ^
          sw_table[1][(w >> 48) & 0xff] ^ sw_table[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = sw_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

/* ---- SSE4.2 ---------------------------------------------------------------- */

#if defined(__x86_64__)
#define HW __attribute__((target("sse4.2")))

static inline HW uint64_t ld64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

/* Three streams over three consecutive blocks of `len` bytes each (a
 * multiple of 8), combined through the `t` shift tables. */
static inline HW uint32_t crc3(uint32_t crc, const uint8_t *p, size_t len, const uint32_t t[4][256]) {
  uint64_t c0 = crc, c1 = 0, c2 = 0;
  const uint8_t *a = p, *b = p + len, *c = p + 2 * len, *end = p + len;
  while (a < end) {
    c0 = __builtin_ia32_crc32di(c0, ld64(a));
    c1 = __builtin_ia32_crc32di(c1, ld64(b));
    c2 = __builtin_ia32_crc32di(c2, ld64(c));
    a += 8;
    b += 8;
    c += 8;
  }
  uint32_t r = shift(t, (uint32_t)c0) ^ (uint32_t)c1;
  return shift(t, r) ^ (uint32_t)c2;
}

static HW uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
  while (n && ((uintptr_t)p & 7)) {
    crc = __builtin_ia32_crc32qi(crc, *p++);
    n--;
  }
  while (n >= 3 * LONG_BLOCK) {
    crc = crc3(crc, p, LONG_BLOCK, long_shift);
    p += 3 * LONG_BLOCK;
    n -= 3 * LONG_BLOCK;
  }
  while (n >= 3 * SHORT_BLOCK) {
    crc = crc3(crc, p, SHORT_BLOCK, short_shift);
    p += 3 * SHORT_BLOCK;
    n -= 3 * SHORT_BLOCK;
  }
  uint64_t c64 = crc;
  while (n >= 8) {
    c64 = __builtin_ia32_crc32di(c64, ld64(p));
    p += 8;
    n -= 8;
  }
  crc = (uint32_t)c64;
  while (n--) crc = __builtin_ia32_crc32qi(crc, *p++);
  return crc;
}
#endif

/* The raw register update (no pre/post inversion). */
CGC_HIDDEN uint32_t cgc_crc32c_update(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&tables_once, init_tables);
#if defined(__x86_64__)
  if (have_sse42) return crc_hw(crc, buf, len);
#endif
  return crc_sw(crc, buf, len);
}

CGC_API uint64_t cgc_checksum(const void *buf, size_t len, uint64_t seed) {
  if (!buf || !len) return seed & 0xffffffffu;
  uint32_t crc = ~(uint32_t)seed;
  crc = cgc_crc32c_update(crc, buf, len);
  return (uint64_t)(uint32_t)~crc;
}

/* For tests and benchmarks: which implementation runs (1: SSE4.2). */
CGC_API int cgc_checksum_hardware(void) {
  pthread_once(&tables_once, init_tables);
  return have_sse42;
}
