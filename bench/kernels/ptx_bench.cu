// Kernels of the PTX benchmark (bench/ptx.py): the same CUDA C runs as PTX
// (NVRTC) on the fake driver's interpreter and as a host module
// (gen_module.py), so the two can be compared instruction for instruction.

// Compute-bound: a long dependent chain of multiply-adds per thread.
extern "C" __global__ void fma_chain(float *out, int iters) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  float x = (float)i * 1e-3f, a = 0.999f, b = 1e-4f;
  for (int k = 0; k < iters; k++) {
    x = x * a + b;
    a = a * 0.9999f + 1e-5f;
  }
  out[i] = x + a;
}

// Memory-bound: STREAM's triad, c = a + s * b.
extern "C" __global__ void triad(const float *a, const float *b, float *c, float s, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + s * b[i];
}
