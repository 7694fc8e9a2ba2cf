// FA_HOST_DEVICE: small helpers shared by kernels and host code. Compiled by nvcc they are
// __host__ __device__ and inlined into kernels; compiled by a plain C++ compiler they are inline host
// functions, which is how tests/test_csrc_host.py tests the device-side rules on CPU.
#pragma once

#if defined(__CUDACC__)
#define FA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FA_HOST_DEVICE inline
#endif
