//! ggml's quantized block formats, one file per format, with scalar reference kernels.
//!
//! Block layouts are ggml's, byte for byte, so GGUF tensor data can be viewed as
//! `&[Block…]` with `bytemuck::try_cast_slice`. Every format implements
//! [`BlockFormat`] (geometry, `dequantize`); the ones pagoda can produce implement
//! [`Quantize`]; weight formats implement [`VecDot`], whose associated
//! [`VecDot::Activation`] type fixes the activation format they are multiplied with.
//!
//! The scalar kernels here are the specification the SIMD kernels in `pagoda-cpu` are
//! tested against; they follow ggml's reference C (`ggml-quants.c`, the `_ref`
//! quantizers and the `_generic` dot products) operation for operation, so results
//! match llama.cpp's bit for bit where ggml's own scalar path does.

mod float;
mod format;
pub mod q4_0;
pub mod q4_1;
pub mod q8_0;
pub mod q8_1;
#[cfg(test)]
mod test_util;

pub use crate::ggml_type::GgmlType;
pub use format::{BlockFormat, Quantize, VecDot};
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;

/// Values per block of the 32-value formats (`QK4_0`, `QK4_1`, `QK8_0`, `QK8_1` in ggml).
pub const QK: usize = 32;
/// Values per super-block of the K-quants (`QK_K` in ggml).
pub const QK_K: usize = 256;
