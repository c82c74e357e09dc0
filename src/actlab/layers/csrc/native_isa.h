// The op isa() of the layers' native libraries (kan_kernels.cpp, norm_polynorm.cpp): the ISA
// this build was compiled for, from the CPU_CAPABILITY_* flag actlab._ext passes.
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
