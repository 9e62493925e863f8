//! Q5_0: 32 values per block, 5-bit unsigned quants with an implicit offset of 16.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16};
use super::{BlockFormat, BlockQ8_0, GgmlType, Quantize, VecDot, QK};

/// ggml's `block_q5_0` (22 bytes): `x[i] = d * (q[i] - 16)`.
///
/// The low four bits of each quant are packed like Q4_0 (`qs[j]` = value `j` low,
/// value `j + 16` high); bit 4 of value `i` is bit `i` of the little-endian `u32` in `qh`.
///
/// ```text
/// byte  0..2    2..6        6 ..................... 22
///       d (f16) qh (u32 LE) qs[0] qs[1] ... qs[15]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits of the 32 quants, bit `i` = value `i` (little-endian `u32`).
    pub qh: [u8; 4],
    /// Low nibbles: low = values 0..16, high = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// The 5-bit quants `0..32` of value `j` and `j + 16`, for `j < 16`.
    #[inline]
    fn quant_pair(&self, qh: u32, j: usize, q: u8) -> (i32, i32) {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        (((q & 0x0F) as u32 | h0) as i32, ((q >> 4) as u32 | h1) as i32)
    }
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = QK;

    /// ggml's `dequantize_row_q5_0`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let qh = u32::from_le_bytes(b.qh);
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, ((&q, l), h)) in b.qs.iter().zip(lo).zip(hi).enumerate() {
                let (x0, x1) = b.quant_pair(qh, j, q);
                *l = (x0 - 16) as f32 * d;
                *h = (x1 - 16) as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ5_0 {
    /// ggml's `quantize_row_q5_0_ref`: `d = max / -16` (`max` = value of largest
    /// magnitude), quants `min(31, trunc(x / d + 16.5))`.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK);
        for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -16.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let mut qh = 0u32;
            let (lo, hi) = x.split_at(QK / 2);
            for (j, ((q, &x0), &x1)) in b.qs.iter_mut().zip(lo).zip(hi).enumerate() {
                let q0 = ((x0 * id + 16.5) as i8).min(31) as u8;
                let q1 = ((x1 * id + 16.5) as i8).min(31) as u8;
                *q = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
                qh |= (((q0 & 0x10) >> 4) as u32) << j;
                qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
            }
            b.qh = qh.to_le_bytes();
        }
    }
}

impl VecDot for BlockQ5_0 {
    type Activation = BlockQ8_0;

    /// ggml's `ggml_vec_dot_q5_0_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let (ylo, yhi) = y.qs.split_at(QK / 2);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for (j, ((&q, &y0), &y1)) in x.qs.iter().zip(ylo).zip(yhi).enumerate() {
                let (x0, x1) = x.quant_pair(qh, j, q);
                sumi0 += (x0 - 16) * y0 as i32;
                sumi1 += (x1 - 16) * y1 as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32;
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
        check_format::<BlockQ5_0>(0.05);
    }
}
