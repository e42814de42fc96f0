// Element-wise kernels of the vector_add sample (samples/vector_add.c).
// Plain CUDA C: nvcc builds it for GPUs, gen_module.py for the fake driver.

// Set by the host through cuModuleGetGlobal before launching axpy.
__device__ float axpy_alpha = 1.0f;
// Counts the threads that ran axpy, to check atomics and globals together.
__device__ unsigned int axpy_threads = 0;

extern "C" __global__ void vector_add(const float *a, const float *b, float *c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

// y = axpy_alpha * x + y
extern "C" __global__ void axpy(const float *x, float *y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    y[i] = axpy_alpha * x[i] + y[i];
    atomicAdd(&axpy_threads, 1u);
  }
}
