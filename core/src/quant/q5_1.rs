//! Q5_1: 32 values per block, 5-bit unsigned quants with scale and minimum.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16};
use super::{BlockFormat, BlockQ8_1, GgmlType, Quantize, VecDot, QK};

/// ggml's `block_q5_1` (24 bytes): `x[i] = d * q[i] + m`.
///
/// Packed like [`BlockQ5_0`](super::BlockQ5_0), plus the minimum `m`.
///
/// ```text
/// byte  0..2    2..4    4..8        8 ..................... 24
///       d (f16) m (f16) qh (u32 LE) qs[0] qs[1] ... qs[15]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum (the value of quant 0).
    pub m: f16,
    /// Fifth bits of the 32 quants, bit `i` = value `i` (little-endian `u32`).
    pub qh: [u8; 4],
    /// Low nibbles: low = values 0..16, high = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

impl BlockQ5_1 {
    /// The 5-bit quants `0..32` of value `j` and `j + 16`, for `j < 16`.
    #[inline]
    fn quant_pair(&self, qh: u32, j: usize, q: u8) -> (i32, i32) {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        (((q & 0x0F) as u32 | h0) as i32, ((q >> 4) as u32 | h1) as i32)
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK: usize = QK;

    /// ggml's `dequantize_row_q5_1`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let m = f16_to_f32(b.m);
            let qh = u32::from_le_bytes(b.qh);
            let (lo, hi) = y.split_at_mut(QK / 2);
            for (j, ((&q, l), h)) in b.qs.iter().zip(lo).zip(hi).enumerate() {
                let (x0, x1) = b.quant_pair(qh, j, q);
                *l = x0 as f32 * d + m;
                *h = x1 as f32 * d + m;
            }
        }
    }
}

impl Quantize for BlockQ5_1 {
    /// ggml's `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`, quants
    /// `trunc((x - min) / d + 0.5)` (ggml does not clamp here: the maximum maps to 31).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK);
        for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let mut min = f32::MAX;
            let mut max = -f32::MAX;
            for &v in x {
                if v < min {
                    min = v;
                }
                if v > max {
                    max = v;
                }
            }
            let d = (max - min) / 31.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            b.m = f32_to_f16(min);
            let mut qh = 0u32;
            let (lo, hi) = x.split_at(QK / 2);
            for (j, ((q, &x0), &x1)) in b.qs.iter_mut().zip(lo).zip(hi).enumerate() {
                // ggml's `(uint8_t)(x + 0.5f)`; the clamp only matters for rounding
                // noise at the top, where numpy's reference clips to 31 as well.
                let q0 = (((x0 - min) * id + 0.5) as u8).min(31);
                let q1 = (((x1 - min) * id + 0.5) as u8).min(31);
                *q = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
                qh |= (((q0 & 0x10) >> 4) as u32) << j;
                qh |= (((q1 & 0x10) >> 4) as u32) << (j + QK / 2);
            }
            b.qh = qh.to_le_bytes();
        }
    }
}

impl VecDot for BlockQ5_1 {
    type Activation = BlockQ8_1;

    /// ggml's `ggml_vec_dot_q5_1_q8_1_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let (ylo, yhi) = y.qs.split_at(QK / 2);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for (j, ((&q, &y0), &y1)) in x.qs.iter().zip(ylo).zip(yhi).enumerate() {
                let (x0, x1) = x.quant_pair(qh, j, q);
                sumi0 += x0 * y0 as i32;
                sumi1 += x1 * y1 as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += (f16_to_f32(x.d) * f16_to_f32(y.d)) * sumi as f32
                + f16_to_f32(x.m) * f16_to_f32(y.s);
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
        check_format::<BlockQ5_1>(0.03);
    }
}
