//! IQ4_NL: 32 values per block, 4-bit indices into a fixed non-linear codebook
//! ([`IQ4NL_VALUES`]) with one f16 scale.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16};
use super::kquant::GROUP_MAX_EPS;
use super::{BlockFormat, BlockQ8_0, GgmlType, Quantize, VecDot, QK};

/// ggml's `kvalues_iq4nl`: the 16 levels an IQ4_NL / IQ4_XS index selects, sorted
/// ascending, denser near zero (where weights cluster) than a uniform 4-bit grid.
/// A value is `scale * IQ4NL_VALUES[index]`.
pub const IQ4NL_VALUES: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// ggml's `block_iq4_nl` (18 bytes): `x[i] = d * IQ4NL_VALUES[q[i]]`.
///
/// `qs[j]` holds the index of value `j` in its low nibble and of value `j + 16` in its
/// high nibble (the Q4_0 layout, with a codebook instead of `q - 8`).
///
/// ```text
/// byte  0..2    2 ..................... 18
///       d (f16) qs[0] qs[1] ... qs[15]      qs[j] = q[j] | q[j+16] << 4
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Codebook indices: low nibble = values 0..16, high nibble = values 16..32.
    pub qs: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<BlockIq4Nl>() == 18);

/// The codebook level of index `q & 0xF`, as `i32`.
#[inline]
pub(crate) fn level(q: u8) -> i32 {
    IQ4NL_VALUES[(q & 0xF) as usize] as i32
}

/// ggml's `best_index_int8` over [`IQ4NL_VALUES`]: the index of the nearest level
/// (binary search; a tie between two levels goes to the upper one). NaN maps to 15.
pub(crate) fn best_index(x: f32) -> u8 {
    let val = |i: usize| IQ4NL_VALUES[i] as f32;
    if x <= val(0) {
        return 0;
    }
    if x >= val(15) {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < val(mav) {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - val(mu - 1) < val(mu) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// The per-32-value scale search of ggml's `quantize_row_iq4_nl_impl` without
/// importance weights (weights `x^2`): a first scale from the largest-magnitude value,
/// refined by least squares, then `2 * ntry + 1` candidate scales around it. Returns the
/// scale; 0 for an all-zero group (`max |x| < 1e-15`).
pub(crate) fn iq4_scale(xb: &[f32], ntry: i32) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in xb {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let v0 = IQ4NL_VALUES[0] as f32;
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
        for &v in xb {
            let q = IQ4NL_VALUES[best_index(id * v) as usize] as f32;
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d = if ntry > 0 { -max / v0 } else { max / v0 };
    let (sumqx, sumq2) = sums(1.0 / d);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -ntry..=ntry {
        let id = (itry + IQ4NL_VALUES[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

/// Packs 32 indices as ggml does: `q[j] | q[j + 16] << 4`.
pub(crate) fn pack_nibbles(l: &[u8; 32], qs: &mut [u8]) {
    let (lo, hi) = l.split_at(16);
    for ((q, &a), &b) in qs.iter_mut().zip(lo).zip(hi) {
        *q = a | (b << 4);
    }
}

impl BlockFormat for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::IQ4_NL;
    const BLOCK: usize = QK;

    /// ggml's `dequantize_row_iq4_nl`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
            let d = f16_to_f32(b.d);
            let (lo, hi) = y.split_at_mut(QK / 2);
            for ((&q, l), h) in b.qs.iter().zip(lo).zip(hi) {
                *l = d * level(q) as f32;
                *h = d * level(q >> 4) as f32;
            }
        }
    }
}

impl Quantize for BlockIq4Nl {
    /// ggml's `quantize_iq4_nl` without importance weights, which is what llama-quantize
    /// writes (`quantize_row_iq4_nl_impl` with `ntry = 7`; note that ggml's
    /// `quantize_row_iq4_nl_ref` uses `ntry = -1` and gives different bytes): the scale
    /// from `iq4_scale`, stored as f16, and every index re-picked against the f32
    /// scale.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK);
        for (x, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
            let d = iq4_scale(x, 7);
            b.d = f32_to_f16(d);
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut l = [0u8; 32];
            for (l, &v) in l.iter_mut().zip(x) {
                *l = best_index(id * v);
            }
            pack_nibbles(&l, &mut b.qs);
        }
    }
}

impl VecDot for BlockIq4Nl {
    type Activation = BlockQ8_0;

    /// ggml's `ggml_vec_dot_iq4_nl_q8_0_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let d = f16_to_f32(y.d) * f16_to_f32(x.d);
            let (ylo, yhi) = y.qs.split_at(QK / 2);
            let mut sumi1 = 0i32;
            let mut sumi2 = 0i32;
            for ((&q, &y0), &y1) in x.qs.iter().zip(ylo).zip(yhi) {
                sumi1 += y0 as i32 * level(q);
                sumi2 += y1 as i32 * level(q >> 4);
            }
            sumf += d * (sumi1 + sumi2) as f32;
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
        check_format::<BlockIq4Nl>(0.08);
    }

    #[test]
    fn best_index_picks_the_nearest_level() {
        for (i, &v) in IQ4NL_VALUES.iter().enumerate() {
            assert_eq!(best_index(v as f32) as usize, i, "exact level {v}");
        }
        assert_eq!(best_index(-1000.0), 0);
        assert_eq!(best_index(1000.0), 15);
        assert_eq!(best_index(0.0), 8, "0 is nearer 1 than -10");
        assert_eq!(best_index(-4.5), 8, "tie between -10 and 1 goes up");
        assert_eq!(best_index(-4.6), 7);
        assert_eq!(best_index(101.0), 15, "tie between 89 and 113 goes up");
        assert_eq!(best_index(f32::NAN), 15);
        // Against a linear scan: the nearest level, ties upwards.
        for k in -1300..1300 {
            let x = k as f32 * 0.1;
            let want = (0..16)
                .min_by(|&a, &b| {
                    let da = (x - IQ4NL_VALUES[a] as f32).abs();
                    let db = (x - IQ4NL_VALUES[b] as f32).abs();
                    da.partial_cmp(&db).unwrap().then(b.cmp(&a))
                })
                .unwrap();
            assert_eq!(best_index(x) as usize, want, "x = {x}");
        }
    }

    #[test]
    fn hand_checked_block() {
        let mut b = BlockIq4Nl::zeroed();
        b.d = f16::from_f32(0.5);
        b.qs[0] = 0xF0; // value 0: level -127, value 16: level 113
        b.qs[3] = 0x88; // values 3 and 19: level 1
        let mut y = [0.0f32; 32];
        BlockIq4Nl::dequantize(&[b], &mut y);
        assert_eq!((y[0], y[16], y[3], y[19], y[1]), (-63.5, 56.5, 0.5, 0.5, -63.5));
        let mut a = BlockQ8_0::zeroed();
        a.d = f16::from_f32(2.0);
        a.qs[0] = 3;
        a.qs[16] = -1;
        a.qs[19] = 5;
        // (-127 * 3 + 113 * -1 + 1 * 5) * 0.5 * 2
        assert_eq!(BlockIq4Nl::vec_dot(&[b], &[a]), -489.0);
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let mut b = [BlockIq4Nl::zeroed(); 1];
        BlockIq4Nl::quantize(&[0.0; 32], &mut b);
        // Scale 0; every index is best_index(0) = 8 (level 1).
        assert_eq!(b[0].d.to_bits(), 0);
        assert_eq!(b[0].qs, [0x88; 16]);
    }
}
