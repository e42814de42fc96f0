# Locate cuda.h and cudaTypedefs.h. A CUDA toolkit is optional: the
# nvidia-cuda-runtime wheel (a build requirement) ships both headers.
set(CEDANA_CUDA_INCLUDE_DIR "" CACHE PATH "directory holding cuda.h and cudaTypedefs.h")

if(NOT CEDANA_CUDA_INCLUDE_DIR)
  foreach(candidate "$ENV{CUDA_HOME}/include" /usr/local/cuda/include)
    if(EXISTS "${candidate}/cudaTypedefs.h" AND EXISTS "${candidate}/cuda.h")
      set(CEDANA_CUDA_INCLUDE_DIR "${candidate}")
      break()
    endif()
  endforeach()
endif()

if(NOT CEDANA_CUDA_INCLUDE_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CMAKE_CURRENT_LIST_DIR}/find_cuda_headers.py"
    OUTPUT_VARIABLE _wheel_inc OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _wheel_rc)
  if(_wheel_rc EQUAL 0 AND _wheel_inc)
    set(CEDANA_CUDA_INCLUDE_DIR "${_wheel_inc}")
  endif()
endif()

if(NOT CEDANA_CUDA_INCLUDE_DIR)
  message(FATAL_ERROR "cuda.h/cudaTypedefs.h not found: install the CUDA toolkit or "
                      "'pip install nvidia-cuda-runtime', or pass -DCEDANA_CUDA_INCLUDE_DIR=...")
endif()
message(STATUS "CUDA headers: ${CEDANA_CUDA_INCLUDE_DIR}")

# nvcc is optional too: with it, kernels are also built for real GPUs.
find_program(CEDANA_NVCC nvcc HINTS "$ENV{CUDA_HOME}/bin" /usr/local/cuda/bin)
