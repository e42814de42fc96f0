"""The GPU controller: one process per job that owns the job's GPU state.

The job's CUDA calls arrive over shared memory (``shm_layout`` mirrors the
wire format of ``gpu/include/cedana_gpu_shm.h``) and are served by the native
dispatcher (``native``, ctypes over ``libcedana-gpu-controller.so``). Python
keeps control: the process and its steps (``process``), the control socket
(``control``) and the job's process in its namespaces (``jobspawn``).

Importing this package loads no driver: the driver must be chosen before
anything imports cuda-bindings.
"""
