//! IQ4_XS: 256-value super-blocks of eight 32-value sub-blocks, 4-bit indices into the
//! IQ4_NL codebook ([`IQ4NL_VALUES`](super::iq4_nl::IQ4NL_VALUES)) with a 6-bit signed
//! scale per sub-block.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, nearest_int};
use super::iq4_nl::{best_index, iq4_scale, level, pack_nibbles};
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_iq4_xs` (136 bytes). Value `i` of sub-block `j` (32 values each):
/// `x = d * (ls[j] - 32) * IQ4NL_VALUES[q]` with the 6-bit `ls[j]` (see
/// [`BlockIq4Xs::scale`]).
///
/// ```text
/// byte  0..2    2..4            4..8            8 ............. 136
///       d (f16) scales_h (u16)  scales_l[0..4]  qs[0..128]
/// ls[j] = (scales_l[j / 2] >> 4 (j % 2)) & 0xF  |  ((scales_h >> 2j) & 3) << 4
/// sub-block j: qs[16j + l] = q[32j + l] | q[32j + l + 16] << 4   (l < 16)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of the eight sub-block scales (bits `2j..2j + 2`).
    pub scales_h: u16,
    /// Low 4 bits of the sub-block scales, two per byte (even `j` in the low nibble).
    pub scales_l: [u8; 4],
    /// Codebook indices, 16 bytes per sub-block.
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    /// The 6-bit scale of sub-block `j` (`0..8`), still offset by 32 (`0..64`).
    /// `j >= 8` is a caller bug; it returns 0 rather than panicking.
    pub fn scale(&self, j: usize) -> u8 {
        if j >= 8 {
            return 0;
        }
        let lo = (self.scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
        let hi = ((self.scales_h >> (2 * j)) & 3) as u8;
        lo | (hi << 4)
    }
}

impl BlockFormat for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::IQ4_XS;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_iq4_xs`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            for (j, (y, qs)) in y.chunks_exact_mut(32).zip(b.qs.chunks_exact(16)).enumerate() {
                let dl = d * (b.scale(j) as i32 - 32) as f32;
                let (lo, hi) = y.split_at_mut(16);
                for ((&q, l), h) in qs.iter().zip(lo).zip(hi) {
                    *l = dl * level(q) as f32;
                    *h = dl * level(q >> 4) as f32;
                }
            }
        }
    }
}

impl Quantize for BlockIq4Xs {
    /// ggml's `quantize_iq4_xs` without importance weights (llama-quantize's path, and
    /// `quantize_row_iq4_xs_ref`): `quantize_row_iq4_nl_impl` with `ntry = 7` per
    /// sub-block, the eight scales quantized to 6 signed bits against
    /// `d = -max_scale / 32` (`max_scale` the scale of largest magnitude), then every
    /// index re-picked against its rounded sub-block scale. An all-zero super-block
    /// stores `d = -0.0` (f16 `0x8000`), scales 32 and indices 8, exactly like ggml.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut scales = [0.0f32; 8];
            let mut max_scale = 0.0f32;
            let mut amax_scale = 0.0f32;
            for (s, xb) in scales.iter_mut().zip(x.chunks_exact(32)) {
                *s = iq4_scale(xb, 7);
                if s.abs() > amax_scale {
                    amax_scale = s.abs();
                    max_scale = *s;
                }
            }
            let d = -max_scale / 32.0;
            b.d = f32_to_f16(d);
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.scales_h = 0;
            for (ib, ((xb, qs), &s)) in
                x.chunks_exact(32).zip(b.qs.chunks_exact_mut(16)).zip(&scales).enumerate()
            {
                let l = nearest_int(id * s).clamp(-32, 31);
                let dl = d * l as f32;
                let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
                let mut q = [0u8; 32];
                for (q, &v) in q.iter_mut().zip(xb) {
                    *q = best_index(idl * v);
                }
                pack_nibbles(&q, qs);
                let l = (l + 32) as u8;
                if ib % 2 == 0 {
                    b.scales_l[ib / 2] = l & 0xF;
                } else {
                    b.scales_l[ib / 2] |= (l & 0xF) << 4;
                }
                b.scales_h |= ((l >> 4) as u16) << (2 * ib);
            }
        }
    }
}

impl VecDot for BlockIq4Xs {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_iq4_xs_q8_K_generic`: an integer sum per sub-block, scaled
    /// and added to one float accumulator in sub-block order.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d4d8 = f16_to_f32(x.d) * y.d;
            for (j, (qs, q8)) in x.qs.chunks_exact(16).zip(y.qs.chunks_exact(32)).enumerate() {
                let dl = d4d8 * (x.scale(j) as i32 - 32) as f32;
                let (lo, hi) = q8.split_at(16);
                let mut sumi1 = 0i32;
                let mut sumi2 = 0i32;
                for ((&q, &y0), &y1) in qs.iter().zip(lo).zip(hi) {
                    sumi1 += y0 as i32 * level(q);
                    sumi2 += y1 as i32 * level(q >> 4);
                }
                sumf += dl * (sumi1 + sumi2) as f32;
            }
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
        check_format::<BlockIq4Xs>(0.08);
    }

    #[test]
    fn hand_checked_block() {
        let mut b = BlockIq4Xs::zeroed();
        b.d = f16::from_f32(0.25);
        // Sub-block 0: ls = 0x2 | 2 << 4 = 34 (scale 2); sub-block 5: ls = 0xC | 1 << 4
        // = 28 (scale -4).
        b.scales_l[0] = 0x2;
        b.scales_l[2] = 0xC << 4;
        b.scales_h = 2 | (1 << 10); // bits 0-1: sub-block 0; bits 10-11: sub-block 5
        assert_eq!((b.scale(0), b.scale(5), b.scale(1), b.scale(8)), (34, 28, 0, 0));
        b.qs[0] = 0x9F; // value 0: level 113, value 16: level 13
        b.qs[5 * 16 + 1] = 0x70; // value 161: level -127, value 177: level -10
        let mut y = [0.0f32; QK_K];
        BlockIq4Xs::dequantize(&[b], &mut y);
        assert_eq!((y[0], y[16]), (0.25 * 2.0 * 113.0, 0.25 * 2.0 * 13.0));
        assert_eq!((y[161], y[177]), (0.25 * -4.0 * -127.0, 0.25 * -4.0 * -10.0));
        let mut a = BlockQ8K::zeroed();
        a.d = 0.5;
        a.qs[0] = 2;
        a.qs[177] = -3;
        // 113 * 2 * 2 + (-10) * (-3) * (-4) = 452 - 120, times 0.25 * 0.5
        assert_eq!(BlockIq4Xs::vec_dot(&[b], &[a]), 332.0 * 0.125);
    }

    #[test]
    fn zero_block_matches_ggml() {
        let mut b = [BlockIq4Xs::zeroed(); 1];
        BlockIq4Xs::quantize(&[0.0; QK_K], &mut b);
        assert_eq!(b[0].d.to_bits(), 0x8000, "d = -0.0 / 32");
        assert_eq!(b[0].scales_h, 0xAAAA, "every ls = 32");
        assert_eq!(b[0].scales_l, [0; 4]);
        assert_eq!(b[0].qs, [0x88; 128]);
        let mut y = [1.0f32; QK_K];
        BlockIq4Xs::dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
