// Compile-time switches of the attention forward: runtime value -> constexpr name in scope of a lambda.
// Each switch lists exactly the instances that exist (instances/*.cu); a value with no instance throws
// std::invalid_argument, though the binding layer rejects it earlier with a message naming the argument.
//
//   FA_DTYPE_SWITCH(dtype_code, kDType, [&] {
//     FA_HEADDIM_SWITCH(head_dim, kHeadDim, [&] {
//       FA_BOOL_SWITCH(is_causal, kIsCausal, [&] { run_attn_fwd<kDType, kHeadDim, kIsCausal>(p, s); });
//     });
//   });
#pragma once

#include <stdexcept>
#include <string>

// dtype codes are fastattn::DType values (common.h): 0 = float16, 1 = bfloat16.
#define FA_DTYPE_SWITCH(CODE, CONST_NAME, ...)                                                    \
  [&] {                                                                                           \
    if ((CODE) == 0) {                                                                            \
      constexpr int CONST_NAME = 0;                                                               \
      return __VA_ARGS__();                                                                       \
    } else if ((CODE) == 1) {                                                                     \
      constexpr int CONST_NAME = 1;                                                               \
      return __VA_ARGS__();                                                                       \
    }                                                                                             \
    throw std::invalid_argument("attention_fwd: no kernel instance for dtype code " +            \
                                std::to_string(CODE));                                            \
  }()

#define FA_HEADDIM_CASE(VALUE, CONST_NAME, ...) \
  case VALUE: {                                 \
    constexpr int CONST_NAME = VALUE;           \
    return __VA_ARGS__();                       \
  }

// Keep in sync with kAttnFwdHeadDims (attn_fwd.h) and the instances/ files.
#define FA_HEADDIM_SWITCH(D, CONST_NAME, ...)                                                     \
  [&] {                                                                                           \
    switch (D) {                                                                                  \
      FA_HEADDIM_CASE(32, CONST_NAME, __VA_ARGS__)                                                \
      FA_HEADDIM_CASE(64, CONST_NAME, __VA_ARGS__)                                                \
      FA_HEADDIM_CASE(80, CONST_NAME, __VA_ARGS__)                                                \
      FA_HEADDIM_CASE(96, CONST_NAME, __VA_ARGS__)                                                \
      FA_HEADDIM_CASE(128, CONST_NAME, __VA_ARGS__)                                               \
      FA_HEADDIM_CASE(256, CONST_NAME, __VA_ARGS__)                                               \
      default:                                                                                    \
        break;                                                                                    \
    }                                                                                             \
    throw std::invalid_argument("attention_fwd: no kernel instance for head_dim " +              \
                                std::to_string(D));                                               \
  }()

#define FA_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                       \
    if (COND) {                               \
      constexpr bool CONST_NAME = true;       \
      return __VA_ARGS__();                   \
    } else {                                  \
      constexpr bool CONST_NAME = false;      \
      return __VA_ARGS__();                   \
    }                                         \
  }()
