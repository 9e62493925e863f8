//! Q8_0: 32 values per block, signed 8-bit quants with one scale.
//!
//! Note for SIMD ports: llama.cpp's x86 `quantize_row_q8_{0,1}` (AVX2/AVX-512) differ
//! from the `_ref` quantizer reproduced here in two ways: the multiplier is
//! `127 / amax` instead of `1 / (amax / 127)`, and rounding is ties-to-even
//! (`_mm256_round_ps`) instead of `roundf`. Results differ only in rare ulp/tie cases;
//! a kernel that must match llama.cpp's x86 logits bit for bit follows those rules.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, round_half_away};
use super::{BlockFormat, GgmlType, Quantize, VecDot, QK};

/// ggml's `block_q8_0` (34 bytes): `x[i] = d * qs[i]`.
///
/// ```text
/// byte  0..2    2 .................... 34
///       d (f16) qs[0] qs[1] ... qs[31]     (i8)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Scale (`amax / 127`).
    pub d: f16,
    /// Quants.
    pub qs: [i8; 32],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK;

    /// ggml's `dequantize_row_q8_0`.
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

impl Quantize for BlockQ8_0 {
    /// ggml's `quantize_row_q8_0_ref`: `d = amax / 127`, `qs = roundf(x / d)`
    /// (ties away from zero; `x / d` is computed as `x * (1 / d)` with the f32 `d`).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK);
        for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = round_half_away(v * id) as i8;
            }
        }
    }
}

impl VecDot for BlockQ8_0 {
    type Activation = BlockQ8_0;

    /// ggml's `ggml_vec_dot_q8_0_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let sumi: i32 = x.qs.iter().zip(&y.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
            sumf += sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
        }
        sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::check_format;

    #[test]
    fn round_trip_and_vec_dot() {
        check_format::<BlockQ8_0>(0.006);
    }
}
