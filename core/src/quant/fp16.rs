//! F16: IEEE half-precision values (one value per "block").

use half::f16;

use super::float::{f16_to_f32, f32_to_f16};
use super::{BlockFormat, GgmlType, Quantize, VecDot};

impl BlockFormat for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK: usize = 1;

    /// `GGML_FP16_TO_FP32` on every value (exact).
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len());
        for (y, &x) in out.iter_mut().zip(blocks) {
            *y = f16_to_f32(x);
        }
    }
}

impl Quantize for f16 {
    /// `GGML_FP32_TO_FP16`: round to nearest even; out-of-range values become ±inf; NaN
    /// becomes ggml's canonical quiet NaN (`0x7E00` with the sign).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len());
        for (y, &x) in out.iter_mut().zip(x) {
            *y = f32_to_f16(x);
        }
    }
}

impl VecDot for f16 {
    type Activation = f32;

    /// Products in f32 (each weight widened exactly), accumulated in f64 like ggml's
    /// scalar float dot products.
    ///
    /// llama.cpp itself rounds the activations to f16 first (`vec_dot_type` of F16 is
    /// F16); pagoda keeps them in f32, which is at least as accurate.
    fn vec_dot(w: &[Self], a: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        w.iter().zip(a).map(|(&x, &y)| f64::from(f16_to_f32(x) * y)).sum::<f64>() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::check_format;

    #[test]
    fn round_trip_and_vec_dot() {
        // Relative precision 2^-11 on values in [-1, 1).
        check_format::<f16>(3e-4);
    }

    #[test]
    fn overflow_becomes_infinity() {
        let mut h = [f16::ZERO; 2];
        f16::quantize(&[1e6, -1e6], &mut h);
        assert_eq!(h, [f16::INFINITY, f16::NEG_INFINITY]);
    }
}
