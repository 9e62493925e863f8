//! Q8_1: 32 values per block, signed 8-bit quants with a scale and the scaled sum
//! (the activation format paired with Q4_1 and Q5_1 weights).
//!
//! Note for SIMD ports: llama.cpp's x86 `quantize_row_q8_{0,1}` (AVX2/AVX-512) differ
//! from the `_ref` quantizer reproduced here in two ways: the multiplier is
//! `127 / amax` instead of `1 / (amax / 127)`, and rounding is ties-to-even
//! (`_mm256_round_ps`) instead of `roundf`. Results differ only in rare ulp/tie cases;
//! a kernel that must match llama.cpp's x86 logits bit for bit follows those rules.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, round_half_away};
use super::{BlockFormat, GgmlType, Quantize, QK};

/// ggml's `block_q8_1` (36 bytes): `x[i] = d * qs[i]`, `s = d * sum(qs)`.
///
/// ```text
/// byte  0..2    2..4    4 .................... 36
///       d (f16) s (f16) qs[0] qs[1] ... qs[31]     (i8)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    /// Scale (`amax / 127`).
    pub d: f16,
    /// `d * sum(qs[i])`, used to fold the weight minimum into the dot product.
    pub s: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);

impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK: usize = QK;

    /// `x[i] = d * qs[i]` (ggml has no `dequantize_row_q8_1`; `s` is redundant).
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            for (&q, y) in b.qs.iter().zip(y) {
                *y = q as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ8_1 {
    /// ggml's `quantize_row_q8_1_ref`: `d = amax / 127`, `qs = roundf(x * (1 / d))`,
    /// `s = f16(sum(qs) * d)` with the f32 `d` (before it is rounded to f16).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK);
        for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let mut sum = 0i32;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = round_half_away(v * id) as i8;
                sum += *q as i32;
            }
            b.s = f32_to_f16(sum as f32 * d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::{pseudo_random, round_trip_rmse};
    use bytemuck::Zeroable;

    #[test]
    fn round_trip_and_sum() {
        let x = pseudo_random(4 * QK, 7, 1.0);
        assert!(round_trip_rmse::<BlockQ8_1>(&x) < 0.006);
        let mut b = [BlockQ8_1::zeroed(); 4];
        BlockQ8_1::quantize(&x, &mut b);
        for b in &b {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            let want = f32_to_f16(sum as f32 * f16_to_f32(b.d));
            assert!((f16_to_f32(b.s) - f16_to_f32(want)).abs() <= 0.01 * f16_to_f32(want).abs());
        }
    }

    #[test]
    fn zero_block_has_zero_scale_and_quants() {
        let mut b = [BlockQ8_1::zeroed(); 1];
        BlockQ8_1::quantize(&[0.0; QK], &mut b);
        assert_eq!(b[0], BlockQ8_1::zeroed());
    }
}
