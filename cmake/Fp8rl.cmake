# fp8rl_library() / fp8rl_test(): the one way targets are declared in this project.
include_guard(GLOBAL)

# fp8rl_library(NAME SRCS ... [CUDA_SRCS ...] [DEPS ...] [PUBLIC_DEPS ...])
# CUDA_SRCS are compiled only when FP8RL_CUDA is on; the library then defines FP8RL_WITH_CUDA.
function(fp8rl_library name)
  cmake_parse_arguments(A "" "" "SRCS;CUDA_SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  set(srcs ${A_SRCS})
  if(FP8RL_CUDA)
    list(APPEND srcs ${A_CUDA_SRCS})
  endif()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${name} PUBLIC ${A_PUBLIC_DEPS} PRIVATE ${A_DEPS} fp8rl_warnings)
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

# fp8rl_test(NAME SRCS ... [DEPS ...] [LABELS ...])
# A Catch2 executable whose test cases ctest discovers one by one. Builds against Catch2 v2 (Debian 12)
# and v3 (Ubuntu 24.04) through tests/catch.h.
function(fp8rl_test name)
  if(NOT BUILD_TESTING)
    return()
  endif()
  cmake_parse_arguments(A "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${A_SRCS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} fp8rl_catch_main fp8rl_warnings)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  # The AddressSanitizer build runs the core and quant tests (file parsers, numerics kernels);
  # building only those keeps CI's second configuration short.
  if("core" IN_LIST A_LABELS OR "quant" IN_LIST A_LABELS)
    set_property(GLOBAL APPEND PROPERTY FP8RL_ASAN_TESTS ${name})
  endif()
  catch_discover_tests(${name}
    PROPERTIES LABELS "${A_LABELS}" SKIP_RETURN_CODE 77
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
endfunction()

# fp8rl_gpu_test(NAME SRCS ... [DEPS ...])
# A Catch2 executable that needs a CUDA device. It is one ctest entry; tests/gpu_main.cc prints
# "SKIPPED: ..." and exits 77 when no device is present, which ctest reports as skipped.
function(fp8rl_gpu_test name)
  if(NOT BUILD_TESTING OR NOT FP8RL_CUDA)
    return()
  endif()
  cmake_parse_arguments(A "" "" "SRCS;DEPS" ${ARGN})
  if(NOT TARGET fp8rl_gpu_main)  # compiled once: Catch2's session is slow to build
    add_library(fp8rl_gpu_main STATIC ${PROJECT_SOURCE_DIR}/tests/gpu_main.cc)
    target_link_libraries(fp8rl_gpu_main PUBLIC fp8rl_catch CUDA::cudart)
    target_include_directories(fp8rl_gpu_main PUBLIC ${PROJECT_SOURCE_DIR})
  endif()
  add_executable(${name} ${A_SRCS})
  target_link_libraries(${name} PRIVATE ${A_DEPS} fp8rl_gpu_main fp8rl_warnings)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)
endfunction()
