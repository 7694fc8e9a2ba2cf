// Compile-time switches of the attention forward: run-time value -> constexpr name in scope of a lambda
// (FlashAttention's static_switch.h). The dtype and head-dim switches are generated from the one instance
// list (instances/list.h, by generate_instances.py); the bool switch is generic.
//
//   FA_DTYPE_SWITCH(dtype_code, kDType, [&] {
//     FA_HEADDIM_SWITCH(head_dim, kHeadDim, [&] {
//       FA_BOOL_SWITCH(is_causal, kIsCausal, [&] { run_attn_fwd_sm80<kDType, kHeadDim, kIsCausal>(p, s); });
//     });
//   });
#pragma once

#include "attention/instances/list.h"

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
