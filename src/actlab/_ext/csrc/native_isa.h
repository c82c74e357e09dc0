// The op isa() of actlab's native libraries (sparse_gemv.cpp, kan_kernels.cpp,
// norm_polynorm.cpp): the ISA this build was compiled for, from the CPU_CAPABILITY_* flag
// actlab._ext passes (tests check that ACTLAB_NATIVE_ISA took effect). actlab._ext puts this
// folder on every extension's include path and hashes its headers into every cache key.
#pragma once

#include <string>

namespace {  // internal linkage: every library (and every ISA build of it) answers for itself

std::string isa() {
#if defined(CPU_CAPABILITY_AVX512)
  return "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "AVX2";
#else
  return "DEFAULT";
#endif
}

}  // namespace
