//! Q5_K: 256-value super-blocks of eight 32-value sub-blocks, 5-bit quants with a
//! 6-bit scale and 6-bit min per sub-block.

use half::f16;

use super::float::f16_to_f32;
use super::kquant::get_scale_min_k4;
use super::q4_k::{k_dot_lanes, quantize_super_block, requantize, scale_table};
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_q5_K` (176 bytes). Value `i` of sub-block `j`:
/// `x = d * sc[j] * q - dmin * m[j]`, scales and mins packed as in
/// [`BlockQ4K`](super::BlockQ4K).
///
/// ```text
/// byte  0..2    2..4       4..16    16 ...... 48   48 ........ 176
///       d (f16) dmin (f16) scales   qh[0..32]      qs[0..128]
/// low 4 bits: as Q4_K (qs[32c + l] = sub-block 2c low nibble, 2c+1 high nibble)
/// bit 4 of value l of sub-block j: bit j of qh[l]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see [`get_scale_min_k4`]).
    pub scales: [u8; 12],
    /// Fifth bits: bit `j` of `qh[l]` belongs to value `l` of sub-block `j`.
    pub qh: [u8; 32],
    /// Low 4 bits, two sub-blocks per 32 bytes.
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    /// The 256 quants `0..32`, in value order.
    fn quants(&self) -> [u8; QK_K] {
        let mut a = [0u8; QK_K];
        for (c, (chunk, q)) in a.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)).enumerate() {
            let (lo, hi) = chunk.split_at_mut(32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for (((l, h), &q), &qh) in lo.iter_mut().zip(hi).zip(q).zip(&self.qh) {
                *l = (q & 0xF) + if qh & u1 != 0 { 16 } else { 0 };
                *h = (q >> 4) + if qh & u2 != 0 { 16 } else { 0 };
            }
        }
        a
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q5_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let min = f16_to_f32(b.dmin);
            let q = b.quants();
            for (j, (y, q)) in y.chunks_exact_mut(32).zip(q.chunks_exact(32)).enumerate() {
                let (sc, m) = get_scale_min_k4(j, &b.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                for (y, &q) in y.iter_mut().zip(q) {
                    *y = d1 * q as f32 - m1;
                }
            }
        }
    }
}

impl Quantize for BlockQ5K {
    /// ggml's `quantize_row_q5_K_ref` (no importance weights).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [[0u8; 32]; 8];
            let mut scales = [0.0f32; 8];
            let mut mins = [0.0f32; 8];
            quantize_super_block(x, &mut l, &mut scales, &mut mins, 31, -0.5, 0.1, 15);
            let (d, dmin, packed) = scale_table(&scales, &mins);
            b.d = d;
            b.dmin = dmin;
            b.scales = packed;
            requantize(x, &mut l, b.d, b.dmin, &b.scales, 31);
            b.qh = [0; 32];
            for (c, (q, pair)) in b.qs.chunks_exact_mut(32).zip(l.chunks_exact(2)).enumerate() {
                let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
                for (((q, qh), &l1), &l2) in q.iter_mut().zip(&mut b.qh).zip(&pair[0]).zip(&pair[1])
                {
                    let (mut l1, mut l2) = (l1, l2);
                    if l1 > 15 {
                        l1 -= 16;
                        *qh |= m1;
                    }
                    if l2 > 15 {
                        l2 -= 16;
                        *qh |= m2;
                    }
                    *q = l1 | (l2 << 4);
                }
            }
        }
    }
}

impl VecDot for BlockQ5K {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_q5_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sums = [0.0f32; 8];
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (aux32, sumi) = k_dot_lanes(&x.quants(), y, &x.scales, 32);
            let d = f16_to_f32(x.d) * y.d;
            for (s, &v) in sums.iter_mut().zip(&aux32) {
                *s += d * v as f32;
            }
            let dmin = f16_to_f32(x.dmin) * y.d;
            sumf -= dmin * sumi as f32;
        }
        for s in sums {
            sumf += s;
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
        check_format::<BlockQ5K>(0.025);
    }
}
