//! The traits every block format implements.
//!
//! A weight format names its activation format in its type (`<BlockQ4_1 as VecDot>::Activation
//! == BlockQ8_1`), so a matmul is generic over the weight format and can never pair a weight
//! with the wrong activation blocks:
//!
//! ```text
//!   weights  (VecDot)      activation (Quantize)
//!   Q4_0, Q5_0, Q8_0, IQ4_NL               ·   Q8_0
//!   Q4_1, Q5_1                             ·   Q8_1
//!   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS   ·   Q8_K
//!   F32, F16, BF16                         ·   f32
//! ```
//!
//! # Lengths
//!
//! The slice functions work on whole blocks and never panic on a length mismatch:
//! they process the blocks that fit in *both* arguments (a `zip`) and leave the
//! rest of `out` untouched. A mismatch is a caller bug, so debug builds assert
//! `out.len() == blocks.len() * BLOCK` (or `w.len() == a.len()`). Use
//! [`dequantize_row`](super::dequantize_row) for checked, untyped input.

use super::GgmlType;

/// A ggml block format: `BLOCK` values stored in one `Pod` block of ggml's exact layout,
/// so tensor bytes can be viewed as `&[Self]` with `bytemuck::try_cast_slice`.
pub trait BlockFormat: bytemuck::Pod {
    /// The ggml type id of tensors stored in this format.
    const TYPE: GgmlType;
    /// Values per block (32 for the legacy formats, 256 for K-quants, 1 for floats).
    const BLOCK: usize;

    /// Expands `blocks` into `out`, `BLOCK` values per block, exactly as ggml's
    /// `dequantize_row_*` does.
    ///
    /// Precondition: `out.len() == blocks.len() * Self::BLOCK` (see the module docs).
    fn dequantize(blocks: &[Self], out: &mut [f32]);
}

/// A format pagoda can produce from `f32` values.
pub trait Quantize: BlockFormat {
    /// Quantizes `x` into `out`, byte for byte as llama.cpp's `llama-quantize` does
    /// without an importance matrix: ggml's `quantize_row_*_ref` (for IQ4_NL and IQ4_XS
    /// `quantize_iq4_nl` / `quantize_iq4_xs`), and, for the activation formats, as
    /// llama.cpp quantizes activations.
    ///
    /// Precondition: `x.len() == out.len() * Self::BLOCK` (see the module docs).
    fn quantize(x: &[f32], out: &mut [Self]);
}

/// A weight format with a dot product against its activation format.
pub trait VecDot: BlockFormat {
    /// The format activations are quantized to before the dot product.
    type Activation: Quantize;

    /// `sum_i w[i] * a[i]` over the dequantized values, computed as ggml's generic
    /// `ggml_vec_dot_*` does (integer block sums, then scaled).
    ///
    /// Every pairing has `Self::Activation::BLOCK == Self::BLOCK`, so the precondition is
    /// `w.len() == a.len()`: one activation block per weight block (see the module docs).
    fn vec_dot(w: &[Self], a: &[Self::Activation]) -> f32;
}
