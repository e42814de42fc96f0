// Kernels of the streams and events sample (samples/streams_events.py).

// out = in * a + b
extern "C" __global__ void scale_shift(const float *in, float *out, float a, float b, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * a + b;
}

// total += part
extern "C" __global__ void accumulate(float *total, const float *part, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) total[i] += part[i];
}
