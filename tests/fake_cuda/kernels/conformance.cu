// Kernels of the fake CUDA driver's conformance tests (tests/fake_cuda).
//
// The same source builds a module for the fake driver (gen_module.py, host
// C++) and for a real GPU (nvcc), so the tests can hold both drivers to the
// same behaviour. Each kernel exists to provoke one driver behaviour: a
// stream that really runs asynchronously, a fault, a parameter layout, a
// module global.

// nvcc defines __CUDACC__; the fake driver's build (g++ with
// fake_cuda_kernel.h) does not.
#ifndef __CUDACC__
#include <time.h>
#endif

// Nanoseconds on a clock shared by the whole device (and, on the fake
// driver, by the host), so a kernel can wait for wall-clock time.
__device__ static unsigned long long now_ns() {
#if defined(__CUDA_ARCH__)
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#elif !defined(__CUDACC__)
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
#else
  return 0;  // nvcc's host pass: device code never runs there
#endif
}

// A value in a module's global memory: cuModuleGetGlobal must find it with
// its initial value, and kernels must see what the host writes there.
__device__ int conformance_global = 42;
__device__ int conformance_table[16];

// A struct shaped like CUDA's int3: 12 bytes, 4-byte aligned.
struct triple {
  int x, y, z;
};

extern "C" __global__ void noop() {}

// Holds the stream until the host sets *flag (a pinned host word), then
// reports 1 in *out; gives up after timeout_ms and reports 2, so that a
// driver that runs work synchronously fails the test instead of hanging it.
extern "C" __global__ void wait_flag(const volatile int *flag, int *out,
                                     unsigned long long timeout_ms) {
  const unsigned long long deadline = now_ns() + timeout_ms * 1000000ull;
  int seen = 0;
  while (!(seen = *flag) && now_ns() < deadline) {
  }
  *out = seen ? 1 : 2;
}

// Busy for at least `ms` milliseconds, then sets *done (if given) to 1.
extern "C" __global__ void spin_ms(unsigned int ms, int *done) {
  const unsigned long long end = now_ns() + (unsigned long long)ms * 1000000ull;
  while (now_ns() < end) {
  }
  if (done) *done = 1;
}

// Writes v through p: the tool to provoke faults (freed or forged pointers)
// and to observe ordering.
extern "C" __global__ void write_value(int *p, int v) { *p = v; }

// dst[i] = src[i] + 1 over the grid: stream order (and its absence) shows in
// what it reads.
extern "C" __global__ void add_one(const int *src, int *dst, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i] + 1;
}

// Every thread of a 3D grid of 3D blocks writes its linear id at its linear
// id, and counts itself in *count: the whole grid ran, once.
extern "C" __global__ void fill_index(unsigned int *out, unsigned int *count) {
  const unsigned int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned int id = block * (blockDim.x * blockDim.y * blockDim.z) + thread;
  out[id] = id;
  atomicAdd(count, 1u);
}

// Parameters of every size and alignment, written back as doubles so the
// test can check the layout the driver used (kernelParams and `extra`).
// Layout: c@0 (1), d@8 (8), v@16 (12), s@28 (2), out@32 (8); 40 bytes.
extern "C" __global__ void mixed_params(char c, double d, triple v, short s, double *out) {
  out[0] = c;
  out[1] = d;
  out[2] = v.x;
  out[3] = v.y;
  out[4] = v.z;
  out[5] = s;
}

// Reads the module globals (written by the host through cuModuleGetGlobal).
extern "C" __global__ void read_global(int *out) {
  out[0] = conformance_global;
  out[1] = conformance_table[15];
}

// Writes the module global, for the host to read back.
extern "C" __global__ void write_global(int v) { conformance_global = v; }
