//! F32: plain `f32` values (one value per "block"), the activation format of the float
//! weight formats.

use super::{BlockFormat, GgmlType, Quantize, VecDot};

impl BlockFormat for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK: usize = 1;

    /// Copies `blocks` into `out`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len());
        for (y, &x) in out.iter_mut().zip(blocks) {
            *y = x;
        }
    }
}

impl Quantize for f32 {
    /// Copies `x` into `out`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len());
        for (y, &x) in out.iter_mut().zip(x) {
            *y = x;
        }
    }
}

impl VecDot for f32 {
    type Activation = f32;

    /// ggml's scalar `ggml_vec_dot_f32`: products in f32, accumulated in f64.
    fn vec_dot(w: &[Self], a: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        w.iter().zip(a).map(|(&x, &y)| f64::from(x * y)).sum::<f64>() as f32
    }
}

#[cfg(test)]
mod tests {
    use crate::quant::test_util::check_format;

    #[test]
    fn round_trip_is_exact_and_vec_dot_agrees() {
        // Exact: any positive budget is met with rmse 0.
        check_format::<f32>(f32::MIN_POSITIVE);
    }
}
