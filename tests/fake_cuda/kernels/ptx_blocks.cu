// Kernels of the PTX tests that need what host modules cannot do: shared
// memory and barriers, warp shuffles and votes, dynamic shared memory,
// atomics from every thread at once, device functions, module variables.
// Compiled to PTX with NVRTC (tests/fake_cuda/ptx_build.py).

__device__ unsigned int launches;
__constant__ float coeffs[4] = {1.0f, 2.0f, 3.0f, 4.0f};
__device__ int table[8] = {1, 1, 2, 3, 5, 8, 13, 21};

extern "C" __global__ void saxpy(float a, const float *x, float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

// One partial sum per block: a tree reduction in shared memory.
extern "C" __global__ void block_sum(const float *in, float *out, int n) {
  __shared__ float buf[256];
  unsigned t = threadIdx.x;
  unsigned i = blockIdx.x * blockDim.x + t;
  buf[t] = i < (unsigned)n ? in[i] : 0.0f;
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}

#define TILE 16
// C = A * B for n x n matrices, TILE x TILE blocks.
extern "C" __global__ void matmul_tiled(const float *a, const float *b, float *c, int n) {
  __shared__ float as[TILE][TILE];
  __shared__ float bs[TILE][TILE];
  int row = blockIdx.y * TILE + threadIdx.y;
  int col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0.0f;
  for (int k0 = 0; k0 < n; k0 += TILE) {
    as[threadIdx.y][threadIdx.x] = row < n && k0 + threadIdx.x < n ? a[row * n + k0 + threadIdx.x] : 0.0f;
    bs[threadIdx.y][threadIdx.x] = col < n && k0 + threadIdx.y < n ? b[(k0 + threadIdx.y) * n + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < TILE; k++) acc += as[threadIdx.y][k] * bs[k][threadIdx.x];
    __syncthreads();
  }
  if (row < n && col < n) c[row * n + col] = acc;
}

// Reverse each block's slice through dynamic shared memory.
extern "C" __global__ void reverse_dynamic(const int *in, int *out) {
  extern __shared__ int s[];
  unsigned t = threadIdx.x, n = blockDim.x;
  s[t] = in[blockIdx.x * n + t];
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

// Every thread adds into a few bins, global and shared: contention.
extern "C" __global__ void histogram(const unsigned *in, unsigned *bins, int n, int nbins) {
  __shared__ unsigned local[64];
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[in[i] % nbins], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) atomicAdd(&bins[b], local[b]);
  if (threadIdx.x == 0 && blockIdx.x == 0) atomicAdd(&launches, 1u);
}

extern "C" __global__ void atomics_mixed(int *imax, int *imin, float *fsum, unsigned long long *u64,
                                         unsigned *cas_count, unsigned *inc) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  atomicMax(imax, i * 7 % 1001);
  atomicMin(imin, 500 - i);
  atomicAdd(fsum, 0.5f);
  atomicAdd(u64, 1ull << 33);
  // a lock-free counter through compare-and-swap
  unsigned old = *cas_count, seen;
  do {
    seen = old;
    old = atomicCAS(cas_count, seen, seen + 1);
  } while (old != seen);
  atomicInc(inc, 9u);
}

// Warp-level sums, ballots and broadcasts, one result set per warp.
extern "C" __global__ void warp_ops(const int *in, int *sums, unsigned *ballots, int *any_all,
                                    int *bcast, unsigned *active, int *scan) {
  unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  int lane = threadIdx.x % 32, w = t / 32;
  int v = in[t];
  int s = v;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  int x = v;
  for (int o = 1; o < 32; o <<= 1) x += __shfl_xor_sync(0xffffffffu, x, o) * 0;  // identity
  int up = v;
  for (int o = 1; o < 32; o <<= 1) {
    int n = __shfl_up_sync(0xffffffffu, up, o);
    if (lane >= o) up += n;
  }
  scan[t] = up + x - v;  // inclusive prefix sum
  unsigned b = __ballot_sync(0xffffffffu, v % 2 == 0);
  int any = __any_sync(0xffffffffu, v > 90);
  int all = __all_sync(0xffffffffu, v >= 0);
  int from3 = __shfl_sync(0xffffffffu, v, 3);
  unsigned am = 0;
  if (lane < 20) am = __activemask();
  if (lane == 0) {
    sums[w] = s;
    ballots[w] = b;
    any_all[2 * w] = any;
    any_all[2 * w + 1] = all;
    bcast[w] = from3;
  }
  if (lane == 5) active[w] = am;
}

__device__ __noinline__ float poly(float x, int k) {
  float r = 0.0f;
  for (int i = 3; i >= 0; i--) r = r * x + coeffs[i];
  return r + (float)table[k & 7];
}

extern "C" __global__ void call_device_fn(const float *x, float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = poly(x[i], i);
}

// Divergent loops that reconverge before a warp vote.
extern "C" __global__ void diverge(int *out) {
  int lane = threadIdx.x;
  int acc = 0;
  for (int i = 0; i < lane; i++) acc += i;
  if (lane & 1) acc = -acc;
  else acc *= 2;
  unsigned b = __ballot_sync(0xffffffffu, acc > 0);
  out[lane] = acc;
  if (lane == 0) out[32] = (int)b;
}

// 3D grid and block indices.
extern "C" __global__ void indices3d(int *out) {
  int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int nthreads = blockDim.x * blockDim.y * blockDim.z;
  int g = bx * nthreads + tx;
  out[g] = (blockIdx.z << 24) | (blockIdx.y << 16) | (blockIdx.x << 12) | (threadIdx.z << 8) |
           (threadIdx.y << 4) | threadIdx.x;
}

// Per-thread local arrays indexed at run time (local memory).
extern "C" __global__ void local_array(const int *idx, int *out) {
  int a[16];
  int t = threadIdx.x;
  for (int i = 0; i < 16; i++) a[i] = i * t;
  out[t] = a[idx[t] & 15];
}

// Barriers that reduce a predicate over the block (bar.red).
extern "C" __global__ void sync_reductions(const int *in, int *out) {
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  int count = __syncthreads_count(v > 10);
  int all = __syncthreads_and(v >= 0);
  int any = __syncthreads_or(v > 90);
  if (threadIdx.x == 0) {
    out[3 * blockIdx.x] = count;
    out[3 * blockIdx.x + 1] = all;
    out[3 * blockIdx.x + 2] = any;
  }
}

// Threads that wait for each other without a barrier, which needs Volta's
// independent thread scheduling: a lock taken by one lane of a warp while
// the others spin on it, and a flag one warp sets for another.
extern "C" __global__ void spin_lock_sum(int *lock, int *total, const int *in) {
  int v = in[blockIdx.x * blockDim.x + threadIdx.x];
  bool done = false;
  while (!done) {
    if (atomicCAS(lock, 0, 1) == 0) {
      int t = *(volatile int *)total;  // a non-atomic update under the lock
      *(volatile int *)total = t + v;
      __threadfence();
      atomicExch(lock, 0);
      done = true;
    }
  }
}

extern "C" __global__ void warp_handoff(int *out) {
  __shared__ volatile int flag;
  if (threadIdx.x == 0) flag = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    while (flag == 0) {
    }  // warp 0 waits for warp 1
    out[0] = flag;
  } else if (threadIdx.x == 32) {
    flag = 42;
  }
}
