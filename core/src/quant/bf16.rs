//! BF16: bfloat16 values (one value per "block"): the high half of an `f32`.

use half::bf16;

use super::float::{bf16_to_f32, f32_to_bf16};
use super::{BlockFormat, GgmlType, Quantize, VecDot};

impl BlockFormat for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK: usize = 1;

    /// `GGML_BF16_TO_FP32` on every value (exact: a 16-bit shift).
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len());
        for (y, &x) in out.iter_mut().zip(blocks) {
            *y = bf16_to_f32(x);
        }
    }
}

impl Quantize for bf16 {
    /// `GGML_FP32_TO_BF16`: round to nearest even; NaN stays NaN (forced quiet).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len());
        for (y, &x) in out.iter_mut().zip(x) {
            *y = f32_to_bf16(x);
        }
    }
}

impl VecDot for bf16 {
    type Activation = f32;

    /// Products in f32, accumulated in f64 like ggml's scalar float dot products.
    ///
    /// llama.cpp rounds the activations to bf16 first (`vec_dot_type` of BF16 is BF16);
    /// pagoda keeps them in f32.
    fn vec_dot(w: &[Self], a: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        w.iter().zip(a).map(|(&x, &y)| f64::from(bf16_to_f32(x) * y)).sum::<f64>() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::check_format;

    #[test]
    fn round_trip_and_vec_dot() {
        // Relative precision 2^-8 on values in [-1, 1).
        check_format::<bf16>(3e-3);
    }
}
