# Building CUDA C kernels (<set>.cu, plain CUDA C written once) for both
# drivers, shared by the samples, the benchmarks and the conformance tests:
# - for the fake driver: tools/gen_module.py writes a host C++ translation
#   unit around the .cu, built with the fake driver's compat headers into a
#   module <set>.fake.so;
# - for real GPUs, where nvcc works: <set>.ptx and <set>.fatbin (sm_90 code
#   plus compute_90 PTX); without nvcc, <set>.ptx from NVRTC where it works.
#   The fake driver runs the PTX too (gpu/fake/ptx/).
set(CEDANA_GEN_MODULE "${CMAKE_SOURCE_DIR}/tools/gen_module.py")
set(CEDANA_FAKE_INCLUDE "${CMAKE_SOURCE_DIR}/gpu/fake/include")
# Every module lands here in the build tree (and in _native/kernels when
# installed), so a program finds its kernels in ../kernels next to bin/.
set(CEDANA_KERNELS_OUT "${CMAKE_BINARY_DIR}/kernels")
file(MAKE_DIRECTORY "${CEDANA_KERNELS_OUT}")

option(CEDANA_BUILD_GPU_KERNELS "also build kernels for real GPUs when nvcc is found" ON)

# A found nvcc may still be unusable (e.g. no supported host compiler): try it
# once on a trivial kernel and build the GPU images only if that works.
set(CEDANA_NVCC_OK FALSE)
if(CEDANA_BUILD_GPU_KERNELS AND CEDANA_NVCC)
  set(_probe_dir "${CMAKE_BINARY_DIR}/nvcc_probe")
  file(MAKE_DIRECTORY "${_probe_dir}")
  file(WRITE "${_probe_dir}/probe.cu" "extern \"C\" __global__ void probe(int *p) { *p = 1; }\n")
  execute_process(
    COMMAND "${CEDANA_NVCC}" -ptx -arch=compute_90 -o "${_probe_dir}/probe.ptx" "${_probe_dir}/probe.cu"
    RESULT_VARIABLE _probe_rc OUTPUT_QUIET ERROR_VARIABLE _probe_err)
  if(_probe_rc EQUAL 0)
    set(CEDANA_NVCC_OK TRUE)
    message(STATUS "Kernels for GPUs: ${CEDANA_NVCC}")
  else()
    message(WARNING "nvcc (${CEDANA_NVCC}) cannot compile for compute_90; "
                    "kernels are built as host modules, and as PTX where NVRTC "
                    "works:\n${_probe_err}")
  endif()
endif()

# Without a working nvcc, the kernels are still built as PTX where NVRTC
# works (the nvidia-cuda-nvrtc wheel through cuda-bindings, tools/nvrtc_ptx.py):
# PTX is what the fake driver's interpreter and NVIDIA's driver both run.
# No fatbin then: that needs ptxas.
set(CEDANA_NVRTC_PTX "${CMAKE_SOURCE_DIR}/tools/nvrtc_ptx.py")
set(CEDANA_NVRTC_OK FALSE)
if(CEDANA_BUILD_GPU_KERNELS AND NOT CEDANA_NVCC_OK)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" "${CEDANA_NVRTC_PTX}" --probe
    RESULT_VARIABLE _nvrtc_rc OUTPUT_QUIET ERROR_QUIET)
  if(_nvrtc_rc EQUAL 0)
    set(CEDANA_NVRTC_OK TRUE)
    message(STATUS "Kernels as PTX: NVRTC (${Python_EXECUTABLE})")
  endif()
endif()

# cedana_fake_module(<target> <cu>): the fake driver's module <set>.fake.so of
# <cu>, built by <target>. -O2 always: these kernels run on the CPU, some of
# them spinning or timing loops.
function(cedana_fake_module target cu)
  get_filename_component(set_name "${cu}" NAME_WE)
  set(tu "${CMAKE_CURRENT_BINARY_DIR}/${set_name}.fake.cpp")
  add_custom_command(
    OUTPUT "${tu}"
    COMMAND "${Python_EXECUTABLE}" "${CEDANA_GEN_MODULE}" "${cu}" -o "${tu}"
    DEPENDS "${cu}" "${CEDANA_GEN_MODULE}"
    COMMENT "Generating the fake-driver module source for ${set_name}.cu"
    VERBATIM)
  add_library(${target} MODULE "${tu}")
  target_include_directories(${target} PRIVATE "${CEDANA_FAKE_INCLUDE}")
  target_compile_options(${target} PRIVATE -O2 -fvisibility=hidden)
  target_link_libraries(${target} PRIVATE m)
  set_target_properties(${target} PROPERTIES
    PREFIX "" OUTPUT_NAME "${set_name}.fake" SUFFIX ".so"
    LIBRARY_OUTPUT_DIRECTORY "${CEDANA_KERNELS_OUT}")
endfunction()

# cedana_gpu_images(<out_var> <cu>): where nvcc works, rules for <set>.ptx and
# <set>.fatbin of <cu>, else where NVRTC works a rule for <set>.ptx; their
# paths go to <out_var> (empty with neither). The caller adds a target that
# depends on them.
function(cedana_gpu_images out_var cu)
  set(images)
  if(CEDANA_NVCC_OK)
    get_filename_component(set_name "${cu}" NAME_WE)
    set(ptx "${CEDANA_KERNELS_OUT}/${set_name}.ptx")
    set(fatbin "${CEDANA_KERNELS_OUT}/${set_name}.fatbin")
    add_custom_command(
      OUTPUT "${ptx}"
      COMMAND "${CEDANA_NVCC}" -ptx -arch=compute_90 -o "${ptx}" "${cu}"
      DEPENDS "${cu}"
      COMMENT "nvcc: ${set_name}.ptx"
      VERBATIM)
    add_custom_command(
      OUTPUT "${fatbin}"
      COMMAND "${CEDANA_NVCC}" -fatbin -gencode arch=compute_90,code=sm_90
              -gencode arch=compute_90,code=compute_90 -o "${fatbin}" "${cu}"
      DEPENDS "${cu}"
      COMMENT "nvcc: ${set_name}.fatbin"
      VERBATIM)
    list(APPEND images "${ptx}" "${fatbin}")
  elseif(CEDANA_NVRTC_OK)
    get_filename_component(set_name "${cu}" NAME_WE)
    set(ptx "${CEDANA_KERNELS_OUT}/${set_name}.ptx")
    add_custom_command(
      OUTPUT "${ptx}"
      COMMAND "${Python_EXECUTABLE}" "${CEDANA_NVRTC_PTX}" "${cu}" -o "${ptx}"
      DEPENDS "${cu}" "${CEDANA_NVRTC_PTX}"
      COMMENT "NVRTC: ${set_name}.ptx"
      VERBATIM)
    list(APPEND images "${ptx}")
  endif()
  set(${out_var} ${images} PARENT_SCOPE)
endfunction()
