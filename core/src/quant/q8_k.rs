//! Q8_K: 256 values per super-block, signed 8-bit quants with an f32 scale and
//! per-16 sums (the activation format paired with every K-quant).

use bytemuck::Zeroable;

use super::float::nearest_int;
use super::{BlockFormat, GgmlType, Quantize, QK_K};

/// ggml's `block_q8_K` (292 bytes): `x[i] = d * qs[i]`; `bsums[j] = sum(qs[16j..16j+16])`.
///
/// ```text
/// byte  0..4    4 .......... 260   260 ............ 292
///       d (f32) qs[0..256] (i8)    bsums[0..16] (i16 LE)
/// ```
///
/// Unlike the other blocks it is 4-byte aligned (for `d`); it is an in-memory
/// activation format that never appears in model files.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale (`max / -127` where `max` is the value of largest magnitude, so that
    /// value quantizes to exactly -127).
    pub d: f32,
    /// Quants.
    pub qs: [i8; 256],
    /// Sums of the quants in groups of 16, used to fold the weight minimums.
    pub bsums: [i16; 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);

impl BlockFormat for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q8_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (&q, y) in b.qs.iter().zip(y) {
                *y = b.d * q as f32;
            }
        }
    }
}

impl Quantize for BlockQ8K {
    /// ggml's `quantize_row_q8_K_ref`: `iscale = -127 / max` (`max` = value of largest
    /// magnitude), `qs = min(127, nearest_int(iscale * x))` with ties to even,
    /// `d = 1 / iscale`. An all-zero block gets `d = 0` and zero quants and sums.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                // ggml leaves `bsums` unwritten here; zero is their true value.
                *b = Self::zeroed();
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in b.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                *s = g.iter().map(|&q| q as i16).sum();
            }
            b.d = 1.0 / iscale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::{pseudo_random, round_trip_rmse};

    #[test]
    fn round_trip_and_sums() {
        let x = pseudo_random(2 * QK_K, 11, 3.0);
        assert!(round_trip_rmse::<BlockQ8K>(&x) < 3.0 * 0.006);
        let mut b = [BlockQ8K::zeroed(); 2];
        BlockQ8K::quantize(&x, &mut b);
        for b in &b {
            assert!(b.qs.contains(&-127), "the largest-magnitude value maps to -127");
            for (j, &s) in b.bsums.iter().enumerate() {
                let want: i32 = b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum();
                assert_eq!(s as i32, want);
            }
        }
    }

    #[test]
    fn zero_block_is_all_zero() {
        let mut b = [BlockQ8K::zeroed(); 1];
        b[0].d = 5.0;
        b[0].bsums[3] = 7;
        BlockQ8K::quantize(&[0.0; QK_K], &mut b);
        assert_eq!(b[0], BlockQ8K::zeroed());
    }
}
