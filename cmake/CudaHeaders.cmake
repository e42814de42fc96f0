# Locate cuda.h and cudaTypedefs.h. A CUDA toolkit is optional: the
# nvidia-cuda-runtime wheel (a build requirement) ships both headers. Where
# several are found (a toolkit, the wheel) the newest by CUDA_VERSION wins
# (find_cuda_headers.py): the driver API table is generated from it, and the
# fake driver reports that version from cuDriverGetVersion.
set(CEDANA_CUDA_INCLUDE_DIR "" CACHE PATH "directory holding cuda.h and cudaTypedefs.h")

if(NOT CEDANA_CUDA_INCLUDE_DIR)
  set(_candidates "")
  if(DEFINED ENV{CUDA_HOME})
    list(APPEND _candidates "$ENV{CUDA_HOME}/include")
  endif()
  list(APPEND _candidates /usr/local/cuda/include)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/find_cuda_headers.py" ${_candidates}
    OUTPUT_VARIABLE _found_inc OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _found_rc)
  if(_found_rc EQUAL 0 AND _found_inc)
    set(CEDANA_CUDA_INCLUDE_DIR "${_found_inc}")
  endif()
endif()

if(NOT CEDANA_CUDA_INCLUDE_DIR)
  message(FATAL_ERROR "cuda.h/cudaTypedefs.h not found: install the CUDA toolkit or "
                      "'pip install nvidia-cuda-runtime', or pass -DCEDANA_CUDA_INCLUDE_DIR=...")
endif()
message(STATUS "CUDA headers: ${CEDANA_CUDA_INCLUDE_DIR}")

# nvcc is optional too: with it, kernels are also built for real GPUs.
find_program(CEDANA_NVCC nvcc HINTS "$ENV{CUDA_HOME}/bin" /usr/local/cuda/bin)
