//! Q4_0: 32 values per block, 4-bit unsigned quants with an implicit offset of 8.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16};
use super::{BlockFormat, BlockQ8_0, GgmlType, Quantize, VecDot, QK};

/// ggml's `block_q4_0` (18 bytes): `x[i] = d * (q[i] - 8)`.
///
/// `qs[j]` holds value `j` in its low nibble and value `j + 16` in its high nibble.
///
/// ```text
/// byte  0..2    2 ..................... 18
///       d (f16) qs[0] qs[1] ... qs[15]      qs[j] = q[j] | q[j+16] << 4
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: low = values 0..16, high = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK;

    /// ggml's `dequantize_row_q4_0`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let (lo, hi) = y.split_at_mut(QK / 2);
            for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
                *l = ((q & 0x0F) as i32 - 8) as f32 * d;
                *h = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
    }
}

impl Quantize for BlockQ4_0 {
    /// ggml's `quantize_row_q4_0_ref`: `d = max / -8` where `max` is the value of largest
    /// magnitude (so it maps to quant 0), quants `min(15, trunc(x / d + 8.5))`.
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
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = f32_to_f16(d);
            let (lo, hi) = x.split_at(QK / 2);
            for ((q, &x0), &x1) in b.qs.iter_mut().zip(lo).zip(hi) {
                let q0 = ((x0 * id + 8.5) as i8).min(15) as u8;
                let q1 = ((x1 * id + 8.5) as i8).min(15) as u8;
                *q = q0 | (q1 << 4);
            }
        }
    }
}

impl VecDot for BlockQ4_0 {
    type Activation = BlockQ8_0;

    /// ggml's `ggml_vec_dot_q4_0_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (ylo, yhi) = y.qs.split_at(QK / 2);
            let mut sumi0 = 0i32;
            let mut sumi1 = 0i32;
            for ((&q, &y0), &y1) in x.qs.iter().zip(ylo).zip(yhi) {
                sumi0 += ((q & 0x0F) as i32 - 8) * y0 as i32;
                sumi1 += ((q >> 4) as i32 - 8) * y1 as i32;
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * f16_to_f32(x.d) * f16_to_f32(y.d);
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
        check_format::<BlockQ4_0>(0.1);
    }
}
