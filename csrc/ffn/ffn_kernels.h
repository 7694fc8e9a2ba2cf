// Element-wise and row-wise kernels of the CUDA feed-forward path (part of fastattn._C):
//   bias_act            y = act(y + bias), in place, after a cuBLASLt GEMM whose epilogue cannot apply
//                       the requested activation (exact-erf GELU: cuBLASLt only has the tanh form)
//   residual_layernorm  y = LayerNorm(x + residual) * weight + bias (BERT's BertOutput), fp32 statistics
// Pointers, sizes, strides (in elements) and the stream arrive as integers from Python.
#pragma once
#include <cstdint>

namespace fastattn {

// Activation codes shared with Python (fastattn.ffn.problem.Activation): keep in sync.
enum class Activation : int { kNone = 0, kGeluErf = 1, kGeluTanh = 2 };

// y: (M, N) with row stride stride_ym and unit column stride; bias: (N,) contiguous or 0.
void bias_act(std::uintptr_t y, std::uintptr_t bias, int64_t M, int64_t N, int64_t stride_ym, int dtype,
              int activation, std::uintptr_t stream);

// x, residual (or 0), y: (M, N) with unit column strides; weight/bias: (N,) contiguous or 0.
void residual_layernorm(std::uintptr_t x, std::uintptr_t residual, std::uintptr_t weight, std::uintptr_t bias,
                        std::uintptr_t y, int64_t M, int64_t N, int64_t stride_xm, int64_t stride_rm,
                        int64_t stride_ym, double eps, int dtype, std::uintptr_t stream);

}  // namespace fastattn
