// Kernels of samples/gpu_loop.py: a state buffer rewritten every step from
// its own old values, so the final contents depend on every step having run
// exactly once and in order; a digest of it; and a kernel that only keeps
// the device busy (a job "stuck in a kernel" for the driver engine's lock).
// Every thread owns its words: the same run gives the same bits.

__device__ unsigned int loop_mix(unsigned int x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// buf[i] = hash(i, seed) for i < n; thread t fills words [t*per_thread, (t+1)*per_thread).
extern "C" __global__ void loop_fill(unsigned int *buf, unsigned long long n, unsigned long long per_thread,
                                     unsigned int seed) {
  unsigned long long t = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned long long begin = t * per_thread;
  unsigned long long end = begin + per_thread < n ? begin + per_thread : n;
  for (unsigned long long i = begin; i < end; i++) buf[i] = loop_mix((unsigned int)i ^ seed);
}

// Step `step`: thread j rewrites words j, j + count, j + 2*count, ... below n
// (a strided sweep of `count` threads over the whole buffer), each from its
// old value and its neighbour's within the thread's own words.
extern "C" __global__ void loop_step(unsigned int *buf, unsigned long long n, unsigned int count,
                                     unsigned int step) {
  unsigned int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= count) return;
  unsigned int carry = step * 0x9e3779b9u + j;
  for (unsigned long long i = j; i < n; i += count) {
    carry = loop_mix(buf[i] ^ carry);
    buf[i] = carry;
  }
}

// out[c] = a 64-bit hash of words [c*chunk, (c+1)*chunk) of buf.
extern "C" __global__ void loop_digest(const unsigned int *buf, unsigned long long n, unsigned long long chunk,
                                       unsigned long long *out, unsigned long long nchunks) {
  unsigned long long c = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= nchunks) return;
  unsigned long long begin = c * chunk;
  unsigned long long end = begin + chunk < n ? begin + chunk : n;
  unsigned long long h = 1469598103934665603ull;
  for (unsigned long long i = begin; i < end; i++) h = (h ^ buf[i]) * 1099511628211ull;
  out[c] = h;
}

// Keep one thread busy for `rounds` rounds of hashing; the result goes to
// *out so that the work cannot be skipped.
extern "C" __global__ void loop_spin(unsigned int *out, unsigned long long rounds) {
  unsigned int x = 1;
  for (unsigned long long r = 0; r < rounds; r++) x = loop_mix(x + (unsigned int)r);
  if (blockIdx.x == 0 && threadIdx.x == 0) *out = x;
}
