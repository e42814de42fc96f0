/* The UUIDs of the fake GPUs, shared by the fake driver and the fake NVML so
 * that both report one device identity.
 *
 * Device i's UUID is the 15 bytes "cedana-fake-gpu" followed by the byte i.
 * FAKE_CUDA_UUID_SEED=<n> (0..4294967295) gives a process other GPUs, as if it
 * ran on another machine: "cedana-fake" (11 bytes), n as 4 bytes big-endian,
 * then the byte i. (Seed 0x2d677075, the bytes "-gpu", is the default.)
 * Anything else in the variable is ignored, with the default kept.
 */
#ifndef CEDANA_FAKE_UUID_H
#define CEDANA_FAKE_UUID_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_UUID_ENV "FAKE_CUDA_UUID_SEED"
#define FAKE_UUID_DEFAULT_SEED 0x2d677075UL /* "-gpu" */

/* The configured seed; false (and the default in *seed) when the variable is
 * set to something that is not a seed. */
static inline bool fake_uuid_seed(unsigned long *seed) {
  *seed = FAKE_UUID_DEFAULT_SEED;
  const char *v = getenv(FAKE_UUID_ENV);
  if (!v || !*v) return true;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 0);
  if (errno || *end || v[0] == '-' || x > 0xffffffffULL) return false;
  *seed = (unsigned long)x;
  return true;
}

/* The 16 bytes of device `ordinal`'s UUID under `seed`. */
static inline void fake_uuid_bytes(unsigned char out[16], unsigned long seed, unsigned ordinal) {
  memcpy(out, "cedana-fake", 11);
  out[11] = (unsigned char)(seed >> 24);
  out[12] = (unsigned char)(seed >> 16);
  out[13] = (unsigned char)(seed >> 8);
  out[14] = (unsigned char)seed;
  out[15] = (unsigned char)ordinal;
}

#endif
