// Main of the GPU test binaries: skips visibly (exit 77, ctest "Skipped") when no CUDA device exists.
#define CATCH_CONFIG_RUNNER
#include <cuda_runtime.h>

#include <cstdio>

#include "tests/catch.h"

int main(int argc, char** argv) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device (%s); GPU tests run on the GPU machine via tests/gpu/run.sh\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
