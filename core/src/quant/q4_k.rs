//! Q4_K: 256-value super-blocks of eight 32-value sub-blocks, 4-bit quants with a
//! 6-bit scale and 6-bit min per sub-block.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, nearest_int};
use super::kquant::{get_scale_min_k4, pack_scale_min_k4, sub_block_scale_min};
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_q4_K` (144 bytes). Value `i` of sub-block `j`:
/// `x = d * sc[j] * q - dmin * m[j]` with `(sc[j], m[j]) = get_scale_min_k4(j, scales)`.
///
/// ```text
/// byte  0..2    2..4       4..16               16 .......... 144
///       d (f16) dmin (f16) scales (6-bit x16)  qs[0..128]
/// qs[32c + l]: low nibble = sub-block 2c, value l; high nibble = sub-block 2c+1, value l
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see [`get_scale_min_k4`]).
    pub scales: [u8; 12],
    /// 4-bit quants, two sub-blocks per 32 bytes.
    pub qs: [u8; 128],
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    /// The 256 quants `0..16`, in value order.
    fn quants(&self) -> [u8; QK_K] {
        let mut a = [0u8; QK_K];
        for (chunk, q) in a.chunks_exact_mut(64).zip(self.qs.chunks_exact(32)) {
            let (lo, hi) = chunk.split_at_mut(32);
            for ((l, h), &q) in lo.iter_mut().zip(hi).zip(q) {
                *l = q & 0xF;
                *h = q >> 4;
            }
        }
        a
    }
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q4_K`.
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

impl Quantize for BlockQ4K {
    /// ggml's `quantize_row_q4_K_ref` (no importance weights).
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [[0u8; 32]; 8];
            let mut scales = [0.0f32; 8];
            let mut mins = [0.0f32; 8];
            quantize_super_block(x, &mut l, &mut scales, &mut mins, 15, -1.0, 0.1, 20);
            let (d, dmin, packed) = scale_table(&scales, &mins);
            b.d = d;
            b.dmin = dmin;
            b.scales = packed;
            requantize(x, &mut l, b.d, b.dmin, &b.scales, 15);
            for (q, c) in b.qs.chunks_exact_mut(32).zip(l.chunks_exact(2)) {
                for ((q, &lo), &hi) in q.iter_mut().zip(&c[0]).zip(&c[1]) {
                    *q = lo | (hi << 4);
                }
            }
        }
    }
}

/// The per-sub-block scale search of `quantize_row_q{4,5}_K_ref`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_super_block(
    x: &[f32],
    l: &mut [[u8; 32]; 8],
    scales: &mut [f32; 8],
    mins: &mut [f32; 8],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) {
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let mut xb = [0.0f32; 32];
        xb.copy_from_slice(xs);
        let (s, m) = sub_block_scale_min(&xb, &mut l[j], nmax, rmin, rdelta, nstep);
        scales[j] = s;
        mins[j] = m;
    }
}

/// Quantizes the eight sub-block scales and mins to 6 bits against their maxima:
/// returns `(d, dmin, packed table)`.
pub(crate) fn scale_table(scales: &[f32; 8], mins: &[f32; 8]) -> (f16, f16, [u8; 12]) {
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for (&s, &m) in scales.iter().zip(mins) {
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores `nearest_int` into a `uint8_t` (wrapping) before clamping.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    (f32_to_f16(max_scale / 63.0), f32_to_f16(max_min / 63.0), pack_scale_min_k4(&ls, &lm))
}

/// Recomputes the quants against the rounded scales (sub-blocks whose scale rounded
/// to zero keep the search's quants, as in ggml).
pub(crate) fn requantize(
    x: &[f32],
    l: &mut [[u8; 32]; 8],
    d: f16,
    dmin: f16,
    scales: &[u8; 12],
    nmax: i32,
) {
    for (j, (xs, lj)) in x.chunks_exact(32).zip(l.iter_mut()).enumerate() {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = f16_to_f32(d) * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for (q, &v) in lj.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// The eight 6-bit scales and mins of a Q4_K/Q5_K super-block.
pub(crate) fn unpack_scales(scales: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..8 {
        (sc[j], mn[j]) = get_scale_min_k4(j, scales);
    }
    (sc, mn)
}

/// The shared body of ggml's `ggml_vec_dot_q{4,5}_K_q8_K_generic`, for one super-block
/// whose quants are `a`: returns `(per-lane integer sums, min correction)`.
///
/// ggml accumulates `scale * q8 * a` in 8 integer lanes (lane = index mod 8), then
/// `d * lane` into 8 float lanes across super-blocks, and sums the lanes last; the
/// float results are bit-identical only if that order is kept.
pub(crate) fn k_dot_lanes(
    a: &[u8; QK_K],
    y: &BlockQ8K,
    scales: &[u8; 12],
    sub_block: usize,
) -> ([i32; 8], i32) {
    let (sc, mn) = unpack_scales(scales);
    let mut sumi = 0i32;
    for (j, &s) in y.bsums.iter().enumerate() {
        sumi += s as i32 * mn[j / 2] as i32;
    }
    let mut aux32 = [0i32; 8];
    for ((a, q8), &scale) in
        a.chunks_exact(sub_block).zip(y.qs.chunks_exact(sub_block)).zip(sc.iter())
    {
        for (a8, q8) in a.chunks_exact(8).zip(q8.chunks_exact(8)) {
            for ((acc, &a), &q) in aux32.iter_mut().zip(a8).zip(q8) {
                *acc += scale as i32 * (q as i32 * a as i32);
            }
        }
    }
    (aux32, sumi)
}

impl VecDot for BlockQ4K {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_q4_K_q8_K_generic`.
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
        check_format::<BlockQ4K>(0.05);
    }
}
