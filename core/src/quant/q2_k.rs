//! Q2_K: 256-value super-blocks of sixteen 16-value sub-blocks, 2-bit quants with a
//! 4-bit scale and 4-bit min per sub-block.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, nearest_int};
use super::kquant::make_qkx2_quants;
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_q2_K` (84 bytes). Value `i` of sub-block `j` (16 values each):
/// `x = d * (scales[j] & 0xF) * q - dmin * (scales[j] >> 4)` with `q` in `0..4`.
///
/// ```text
/// byte  0 ........ 16   16 ........... 80   80..82   82..84
///       scales[0..16]   qs[0..64]          d (f16)  dmin (f16)
/// scales[j]: low nibble = scale of sub-block j, high nibble = its min
/// per 128-value half h (qs += 32h), for l < 32 and k < 4:
///   value 128h + 32k + l : bits 2k..2k+2 of qs[32h + l]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Sixteen 4-bit scales (low nibbles) and 4-bit mins (high nibbles).
    pub scales: [u8; 16],
    /// 2-bit quants, four per byte.
    pub qs: [u8; 64],
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

impl BlockQ2K {
    /// The 256 quants `0..4`, in value order.
    fn quants(&self) -> [u8; QK_K] {
        let mut a = [0u8; QK_K];
        for (half, q) in a.chunks_exact_mut(128).zip(self.qs.chunks_exact(32)) {
            for (k, part) in half.chunks_exact_mut(32).enumerate() {
                for (v, &q) in part.iter_mut().zip(q) {
                    *v = (q >> (2 * k)) & 3;
                }
            }
        }
        a
    }
}

impl BlockFormat for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q2_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let min = f16_to_f32(b.dmin);
            let q = b.quants();
            for ((y, q), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&b.scales) {
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                for (y, &q) in y.iter_mut().zip(q) {
                    *y = dl * q as f32 - ml;
                }
            }
        }
    }
}

impl Quantize for BlockQ2K {
    /// ggml's `quantize_row_q2_K_ref`, which is what `quantize_q2_K` (llama-quantize)
    /// runs without an importance matrix: per 16-value sub-block a `make_qkx2_quants`
    /// fit (weights `|x|`, absolute-error criterion, 16 candidate scales), the scales and
    /// mins quantized to 4 bits against their maxima, then the quants recomputed
    /// against the rounded scales.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [[0u8; 16]; 16];
            let mut scales = [0.0f32; 16];
            let mut mins = [0.0f32; 16];
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for (j, xs) in x.chunks_exact(16).enumerate() {
                let mut xb = [0.0f32; 16];
                xb.copy_from_slice(xs);
                let mut weights = [0.0f32; 16];
                for (w, &v) in weights.iter_mut().zip(&xb) {
                    *w = v.abs();
                }
                let (s, m) = make_qkx2_quants(3, &xb, &weights, &mut l[j], -0.5, 0.1, 15, true);
                scales[j] = s;
                mins[j] = m;
                if s > max_scale {
                    max_scale = s;
                }
                if m > max_min {
                    max_min = m;
                }
            }
            // ggml stores `nearest_int` results into `uint8_t` (wrapping conversions).
            if max_scale > 0.0 {
                let iscale = 15.0 / max_scale;
                for (q, &s) in b.scales.iter_mut().zip(&scales) {
                    *q = nearest_int(iscale * s) as u8;
                }
                b.d = f32_to_f16(max_scale / 15.0);
            } else {
                b.scales = [0; 16];
                b.d = f32_to_f16(0.0);
            }
            if max_min > 0.0 {
                let iscale = 15.0 / max_min;
                for (q, &m) in b.scales.iter_mut().zip(&mins) {
                    *q |= (nearest_int(iscale * m) << 4) as u8;
                }
                b.dmin = f32_to_f16(max_min / 15.0);
            } else {
                b.dmin = f32_to_f16(0.0);
            }
            for ((xs, lj), &sc) in x.chunks_exact(16).zip(l.iter_mut()).zip(&b.scales) {
                let d = f16_to_f32(b.d) * (sc & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = f16_to_f32(b.dmin) * (sc >> 4) as f32;
                for (q, &v) in lj.iter_mut().zip(xs) {
                    *q = nearest_int((v + dm) / d).clamp(0, 3) as u8;
                }
            }
            let flat: [u8; QK_K] = bytemuck::cast(l);
            for (q, lh) in b.qs.chunks_exact_mut(32).zip(flat.chunks_exact(128)) {
                for (i, q) in q.iter_mut().enumerate() {
                    *q = lh[i] | (lh[i + 32] << 2) | (lh[i + 64] << 4) | (lh[i + 96] << 6);
                }
            }
        }
    }
}

impl VecDot for BlockQ2K {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_q2_K_q8_K_generic`: integer sums per super-block (exact),
    /// then `sumf += dall * isum - dmin * summs` in block order.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let mut summs = 0i32;
            for (&s, &sc) in y.bsums.iter().zip(&x.scales) {
                summs += s as i32 * (sc >> 4) as i32;
            }
            let dall = y.d * f16_to_f32(x.d);
            let dmin = y.d * f16_to_f32(x.dmin);
            let q = x.quants();
            let mut isum = 0i32;
            for ((q, q8), &sc) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.scales) {
                let mut isuml = 0i32;
                for (&q, &q8) in q.iter().zip(q8) {
                    isuml += q8 as i32 * q as i32;
                }
                isum += (sc & 0xF) as i32 * isuml;
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::test_util::check_format;
    use bytemuck::Zeroable;

    #[test]
    fn round_trip_and_vec_dot() {
        check_format::<BlockQ2K>(0.3);
    }

    /// A hand-built block: value layout, scale/min nibbles and the dot product.
    #[test]
    fn hand_checked_block() {
        let mut b = BlockQ2K::zeroed();
        b.d = f16::from_f32(0.5);
        b.dmin = f16::from_f32(0.25);
        b.scales[0] = 0x32; // sub-block 0: scale 2, min 3
        b.scales[2] = 0x01; // sub-block 2 (values 32..48): scale 1, min 0
        b.qs[0] = 0b11_10_01_11; // values 0, 32, 64, 96 get quants 3, 1, 2, 3
        let mut y = [0.0f32; QK_K];
        BlockQ2K::dequantize(&[b], &mut y);
        // value 0: 0.5 * 2 * 3 - 0.25 * 3; the rest of sub-block 0 is -0.75.
        assert_eq!(y[0], 2.25);
        assert_eq!(y[1], -0.75);
        assert_eq!(y[32], 0.5);
        assert_eq!(y[64], 0.0, "sub-block 4 has scale 0");
        assert!(y[16..32].iter().all(|&v| v == 0.0));

        let mut a = BlockQ8K::zeroed();
        a.d = 2.0;
        a.qs[0] = 10;
        a.qs[1] = -4;
        a.qs[32] = 7;
        a.bsums[0] = 6;
        a.bsums[2] = 7;
        // sum(w * a) = 2.25 * 20 + (-0.75) * (-8) + 0.5 * 14 = 58
        assert_eq!(BlockQ2K::vec_dot(&[b], &[a]), 58.0);
    }

    #[test]
    fn zero_and_constant_blocks() {
        let mut b = [BlockQ2K::zeroed(); 1];
        BlockQ2K::quantize(&[0.0; QK_K], &mut b);
        assert_eq!(b[0], BlockQ2K::zeroed());
        // A constant positive block: min 0, all quants equal, exact after rounding.
        BlockQ2K::quantize(&[1.5; QK_K], &mut b);
        let mut y = [0.0f32; QK_K];
        BlockQ2K::dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| (v - 1.5).abs() < 1e-3), "{:?}", &y[..4]);
    }
}
