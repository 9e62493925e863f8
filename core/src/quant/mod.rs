//! ggml's quantized block formats, one file per format, with scalar reference kernels.
//!
//! Block layouts are ggml's, byte for byte, so GGUF tensor data can be viewed as
//! `&[Block…]` with `bytemuck::try_cast_slice`.

pub mod q4_0;
pub mod q4_1;
pub mod q8_0;
pub mod q8_1;

pub use crate::ggml_type::GgmlType;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;

/// Values per block of the 32-value formats (`QK4_0`, `QK4_1`, `QK8_0`, `QK8_1` in ggml).
pub const QK: usize = 32;
/// Values per super-block of the K-quants (`QK_K` in ggml).
pub const QK_K: usize = 256;
