//! Q6_K: 256-value super-blocks of sixteen 16-value sub-blocks, 6-bit quants with an
//! 8-bit signed scale per sub-block.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, nearest_int};
use super::kquant::{make_qx_quants, GROUP_MAX_EPS};
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_q6_K` (210 bytes): value `i` of sub-block `j` (16 values each) is
/// `x = d * scales[j] * (q - 32)` with `q` in `0..64`.
///
/// ```text
/// byte  0 ........ 128   128 ....... 192   192 ......... 208   208..210
///       ql[0..128]       qh[0..64]         scales (i8 x16)     d (f16)
/// per 128-value half h (ql += 64h, qh += 32h), for l < 32:
///   value l      : ql[l]      low  | (qh[l] bits 0-1) << 4
///   value l + 32 : ql[l + 32] low  | (qh[l] bits 2-3) << 4
///   value l + 64 : ql[l]      high | (qh[l] bits 4-5) << 4
///   value l + 96 : ql[l + 32] high | (qh[l] bits 6-7) << 4
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; 128],
    /// High 2 bits of the quants.
    pub qh: [u8; 64],
    /// Signed 8-bit sub-block scales.
    pub scales: [i8; 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// The 256 signed quants `-32..32`, in value order.
    fn quants(&self) -> [i8; QK_K] {
        let mut a = [0i8; QK_K];
        for ((a, ql), qh) in
            a.chunks_exact_mut(128).zip(self.ql.chunks_exact(64)).zip(self.qh.chunks_exact(32))
        {
            for (l, &h) in qh.iter().enumerate() {
                a[l] = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
                a[l + 32] = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        a
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q6_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = f16_to_f32(b.d);
            let q = b.quants();
            for ((y, q), &sc) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).zip(&b.scales) {
                for (y, &q) in y.iter_mut().zip(q) {
                    *y = d * sc as f32 * q as f32;
                }
            }
        }
    }
}

impl Quantize for BlockQ6K {
    /// ggml's `quantize_row_q6_K_ref` (no importance weights).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [[0u8; 16]; 16];
            let mut scales = [0.0f32; 16];
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            for ((xs, lj), s) in x.chunks_exact(16).zip(l.iter_mut()).zip(scales.iter_mut()) {
                let mut xb = [0.0f32; 16];
                xb.copy_from_slice(xs);
                *s = make_qx_quants(32, &xb, lj);
                if s.abs() > max_abs_scale {
                    max_abs_scale = s.abs();
                    max_scale = *s;
                }
            }
            if max_abs_scale < GROUP_MAX_EPS {
                *b = bytemuck::Zeroable::zeroed();
                continue;
            }
            let iscale = -128.0 / max_scale;
            b.d = f32_to_f16(1.0 / iscale);
            for (q, &s) in b.scales.iter_mut().zip(&scales) {
                *q = nearest_int(iscale * s).min(127) as i8;
            }
            let d = f16_to_f32(b.d);
            for ((xs, lj), &sc) in x.chunks_exact(16).zip(l.iter_mut()).zip(&b.scales) {
                let d = d * sc as f32;
                if d == 0.0 {
                    continue;
                }
                for (q, &v) in lj.iter_mut().zip(xs) {
                    *q = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
                }
            }
            let flat: [u8; QK_K] = bytemuck::cast(l);
            for ((ql, qh), lh) in
                b.ql.chunks_exact_mut(64).zip(b.qh.chunks_exact_mut(32)).zip(flat.chunks_exact(128))
            {
                for (i, h) in qh.iter_mut().enumerate() {
                    let (q1, q2, q3, q4) = (lh[i], lh[i + 32], lh[i + 64], lh[i + 96]);
                    ql[i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                    ql[i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                    *h = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                }
            }
        }
    }
}

impl VecDot for BlockQ6K {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_q6_K_q8_K_generic` (8 integer lanes per super-block, 8 float
    /// lanes across super-blocks, lanes summed last).
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sums = [0.0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let q = x.quants();
            let mut aux32 = [0i32; 8];
            for ((a, q8), &scale) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).zip(&x.scales) {
                for (a8, q8) in a.chunks_exact(8).zip(q8.chunks_exact(8)) {
                    for ((acc, &a), &q) in aux32.iter_mut().zip(a8).zip(q8) {
                        *acc += scale as i32 * (q as i32 * a as i32);
                    }
                }
            }
            let d = f16_to_f32(x.d) * y.d;
            for (s, &v) in sums.iter_mut().zip(&aux32) {
                *s += d * v as f32;
            }
        }
        let mut sumf = 0.0f32;
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
        check_format::<BlockQ6K>(0.015);
    }
}
