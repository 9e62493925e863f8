//! ggml's quantized block formats, one file per format, with scalar reference kernels.
//!
//! Block layouts are ggml's, byte for byte, so GGUF tensor data can be viewed as
//! `&[Block…]` with `bytemuck::try_cast_slice`. Every format implements
//! [`BlockFormat`] (geometry, `dequantize`) and [`Quantize`]; weight formats implement
//! [`VecDot`], whose associated [`VecDot::Activation`] type fixes the activation format
//! they are multiplied with:
//!
//! | format | block type    | values | bytes | activation |
//! |--------|---------------|--------|-------|------------|
//! | F32    | `f32`         | 1      | 4     | `f32`      |
//! | F16    | `half::f16`   | 1      | 2     | `f32`      |
//! | BF16   | `half::bf16`  | 1      | 2     | `f32`      |
//! | Q4_0   | [`BlockQ4_0`] | 32     | 18    | Q8_0       |
//! | Q4_1   | [`BlockQ4_1`] | 32     | 20    | Q8_1       |
//! | Q5_0   | [`BlockQ5_0`] | 32     | 22    | Q8_0       |
//! | Q5_1   | [`BlockQ5_1`] | 32     | 24    | Q8_1       |
//! | Q8_0   | [`BlockQ8_0`] | 32     | 34    | Q8_0       |
//! | Q8_1   | [`BlockQ8_1`] | 32     | 36    | (activation only) |
//! | IQ4_NL | [`BlockIq4Nl`] | 32    | 18    | Q8_0       |
//! | Q2_K   | [`BlockQ2K`]  | 256    | 84    | Q8_K       |
//! | Q3_K   | [`BlockQ3K`]  | 256    | 110   | Q8_K       |
//! | Q4_K   | [`BlockQ4K`]  | 256    | 144   | Q8_K       |
//! | Q5_K   | [`BlockQ5K`]  | 256    | 176   | Q8_K       |
//! | Q6_K   | [`BlockQ6K`]  | 256    | 210   | Q8_K       |
//! | Q8_K   | [`BlockQ8K`]  | 256    | 292   | (activation only) |
//! | IQ4_XS | [`BlockIq4Xs`] | 256   | 136   | Q8_K       |
//!
//! Every `Quantize` produces the bytes llama.cpp's `llama-quantize` writes for that type
//! without an importance matrix (`quantize_row_*_ref`; for IQ4_NL and IQ4_XS
//! `quantize_iq4_nl` / `quantize_iq4_xs`, which search 15 candidate scales).
//!
//! The scalar kernels here are the specification the SIMD kernels in `pagoda-cpu` are
//! tested against. They follow ggml's reference C (`ggml-quants.c`: the
//! `quantize_row_*_ref` quantizers and `dequantize_row_*`; `ggml-cpu/quants.c`: the
//! `ggml_vec_dot_*_generic` dot products) operation for operation, including C's
//! rounding rules (`roundf` ties away from zero in Q8_0/Q8_1, the ties-to-even
//! `nearest_int` in the K-quants) and the order of float accumulation, so results are
//! bit-identical to ggml's scalar path.
//!
//! [`dequantize_row`] and [`quantize_row`] are the run-time dispatch over [`GgmlType`]
//! (for loaders and quantizing tools), checked and never panicking.

mod bf16;
mod float;
mod format;
mod fp16;
mod fp32;
pub mod iq4_nl;
pub mod iq4_xs;
mod kquant;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
mod row;
#[cfg(test)]
mod test_util;

pub use crate::ggml_type::GgmlType;
pub use format::{BlockFormat, Quantize, VecDot};
pub use iq4_nl::{BlockIq4Nl, IQ4NL_VALUES};
pub use iq4_xs::BlockIq4Xs;
pub use kquant::get_scale_min_k4;
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q4_k::BlockQ4K;
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;
pub use q8_k::BlockQ8K;
pub use row::{dequantize_row, quantize_row, QuantError};

/// Values per block of the 32-value formats (`QK4_0`, `QK4_1`, `QK8_0`, `QK8_1` in ggml).
pub const QK: usize = 32;
/// Values per super-block of the K-quants (`QK_K` in ggml).
pub const QK_K: usize = 256;
