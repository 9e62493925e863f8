//! Q3_K: 256-value super-blocks of sixteen 16-value sub-blocks, 3-bit signed quants
//! with a 6-bit signed scale per sub-block.

use half::f16;

use super::float::{f16_to_f32, f32_to_f16, nearest_int};
use super::kquant::GROUP_MAX_EPS;
use super::{BlockFormat, BlockQ8K, GgmlType, Quantize, VecDot, QK_K};

/// ggml's `block_q3_K` (110 bytes). Value `i` of sub-block `j` (16 values each):
/// `x = d * (sc[j] - 32) * (q - 4 * !h)` where `q` is 2 bits from `qs`, `h` one bit from
/// `hmask` and `sc[j]` a 6-bit scale (see [`BlockQ3K::scale`]).
///
/// ```text
/// byte  0 ....... 32   32 .......... 96   96 ........ 108   108..110
///       hmask[0..32]   qs[0..64]          scales (6-bit x16) d (f16)
/// value v = 128h + 32k + l (h < 2, k < 4, l < 32):
///   low 2 bits : bits 2k..2k+2 of qs[32h + l]
///   high bit   : bit 4h + k of hmask[l]   (set: q in 0..4; clear: q - 4 in -4..0)
/// scale j: low 4 bits = scales[j] & 0xF (j < 8) or scales[j - 8] >> 4 (j >= 8),
///          high 2 bits = bits 2(j / 4)..2(j / 4)+2 of scales[8 + j % 4]
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    /// High bit of each quant.
    pub hmask: [u8; 32],
    /// Low 2 bits of the quants, four per byte.
    pub qs: [u8; 64],
    /// Sixteen 6-bit scales, packed (offset by 32).
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The 6-bit scale of sub-block `j` (`0..16`), still offset by 32 (`0..64`).
    /// `j >= 16` is a caller bug; it returns 0 rather than panicking.
    pub fn scale(&self, j: usize) -> u8 {
        scale_6bit(&self.scales, j)
    }

    /// The 256 signed quants `-4..4`, in value order.
    fn quants(&self) -> [i8; QK_K] {
        let mut a = [0i8; QK_K];
        for (h, (half, q)) in a.chunks_exact_mut(128).zip(self.qs.chunks_exact(32)).enumerate() {
            for (k, part) in half.chunks_exact_mut(32).enumerate() {
                let m = 1u8 << (4 * h + k);
                for ((v, &q), &hm) in part.iter_mut().zip(q).zip(&self.hmask) {
                    *v = ((q >> (2 * k)) & 3) as i8 - if hm & m != 0 { 0 } else { 4 };
                }
            }
        }
        a
    }
}

fn scale_6bit(scales: &[u8; 12], j: usize) -> u8 {
    if j >= 16 {
        return 0;
    }
    let lo = if j < 8 { scales[j] & 0xF } else { scales[j - 8] >> 4 };
    lo | (((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK: usize = QK_K;

    /// ggml's `dequantize_row_q3_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        debug_assert_eq!(out.len(), blocks.len() * QK_K);
        for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d_all = f16_to_f32(b.d);
            let q = b.quants();
            for (j, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
                let dl = d_all * (b.scale(j) as i32 - 32) as f32;
                for (y, &q) in y.iter_mut().zip(q) {
                    *y = dl * q as f32;
                }
            }
        }
    }
}

/// ggml's `make_q3_quants` for a 16-value group with `nmax = 4` and `do_rmse = true`
/// (the only use, in `quantize_row_q3_K_ref`): symmetric quants in `-4..4` from the
/// largest-magnitude value, then up to five passes of coordinate descent on the
/// `x^2`-weighted least-squares scale. Writes `L + 4` (`0..8`) and returns the scale;
/// an all-zero group (`max |x| < 1e-15`) gets `L = 0` and scale 0.
fn make_q3_quants(x: &[f32; 16], l: &mut [i8; 16]) -> f32 {
    const NMAX: i32 = 4;
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        *l = [0; 16];
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * xi).clamp(-NMAX, NMAX - 1);
        *li = q as i8;
        let w = xi * xi;
        let q = q as f32;
        sumlx += w * xi * q;
        suml2 += w * q * q;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (li, &xi) in l.iter_mut().zip(x) {
            let w = xi * xi;
            let cur = *li as f32;
            let mut slx = sumlx - w * xi * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != *li as i32 {
                    let nl = new_l as f32;
                    slx += w * xi * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l.iter_mut() {
        *li += NMAX as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

impl Quantize for BlockQ3K {
    /// ggml's `quantize_row_q3_K_ref`, which is what `quantize_q3_K` (llama-quantize)
    /// runs without an importance matrix: a `make_q3_quants` fit per sub-block, the
    /// scales quantized to 6 signed bits against the one of largest magnitude, then
    /// the quants recomputed against the rounded scales.
    fn quantize(x: &[f32], out: &mut [Self]) {
        debug_assert_eq!(x.len(), out.len() * QK_K);
        for (x, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            let mut l = [[0i8; 16]; 16];
            let mut scales = [0.0f32; 16];
            let mut max_scale = 0.0f32;
            let mut amax = 0.0f32;
            for ((xs, lj), s) in x.chunks_exact(16).zip(l.iter_mut()).zip(scales.iter_mut()) {
                let mut xb = [0.0f32; 16];
                xb.copy_from_slice(xs);
                *s = make_q3_quants(&xb, lj);
                if s.abs() > amax {
                    amax = s.abs();
                    max_scale = *s;
                }
            }
            b.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for (j, &s) in scales.iter().enumerate() {
                    // ggml stores `nearest_int` into an `int8_t` (wrapping), then clamps.
                    let q = (nearest_int(iscale * s) as i8).clamp(-32, 31) + 32;
                    let q = q as u8;
                    if j < 8 {
                        b.scales[j] = q & 0xF;
                    } else {
                        b.scales[j - 8] |= (q & 0xF) << 4;
                    }
                    b.scales[j % 4 + 8] |= (q >> 4) << (2 * (j / 4));
                }
                b.d = f32_to_f16(1.0 / iscale);
            } else {
                b.d = f32_to_f16(0.0);
            }
            for (j, (xs, lj)) in x.chunks_exact(16).zip(l.iter_mut()).enumerate() {
                let sc = scale_6bit(&b.scales, j) as i32 - 32;
                let d = f16_to_f32(b.d) * sc as f32;
                if d == 0.0 {
                    continue;
                }
                for (q, &v) in lj.iter_mut().zip(xs) {
                    *q = (nearest_int(v / d).clamp(-4, 3) + 4) as i8;
                }
            }
            let flat: [i8; QK_K] = bytemuck::cast(l);
            let mut flat: [u8; QK_K] = bytemuck::cast(flat);
            b.hmask = [0; 32];
            for (j, q) in flat.iter_mut().enumerate() {
                if *q > 3 {
                    b.hmask[j % 32] |= 1 << (j / 32);
                    *q -= 4;
                }
            }
            for (q, lh) in b.qs.chunks_exact_mut(32).zip(flat.chunks_exact(128)) {
                for (i, q) in q.iter_mut().enumerate() {
                    *q = lh[i] | (lh[i + 32] << 2) | (lh[i + 64] << 4) | (lh[i + 96] << 6);
                }
            }
        }
    }
}

impl VecDot for BlockQ3K {
    type Activation = BlockQ8K;

    /// ggml's `ggml_vec_dot_q3_K_q8_K_generic` (8 integer lanes per super-block, 8 float
    /// lanes across super-blocks, lanes summed last).
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        debug_assert_eq!(w.len(), a.len());
        let mut sums = [0.0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let q = x.quants();
            let mut aux32 = [0i32; 8];
            for (j, (a, q8)) in q.chunks_exact(16).zip(y.qs.chunks_exact(16)).enumerate() {
                let scale = x.scale(j) as i32 - 32;
                for (a8, q8) in a.chunks_exact(8).zip(q8.chunks_exact(8)) {
                    for ((acc, &a), &q) in aux32.iter_mut().zip(a8).zip(q8) {
                        *acc += scale * (q as i32 * a as i32);
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
    use bytemuck::Zeroable;

    #[test]
    fn round_trip_and_vec_dot() {
        check_format::<BlockQ3K>(0.15);
    }

    /// A hand-built block: the high-bit mask, the 6-bit scale packing and the dot product.
    #[test]
    fn hand_checked_block() {
        let mut b = BlockQ3K::zeroed();
        b.d = f16::from_f32(0.5);
        // Scale 0 = 32 + 2 (low nibble 2, high bits 2), scale 9 = 32 - 3 = 29 (0b01_1101).
        b.scales[0] = 0x2;
        b.scales[8] = 0b10; // scale 0 high bits
        b.scales[1] |= 0xD << 4; // scale 9 low nibble
        b.scales[9] = 0b01 << 4; // scale 9 high bits: scales[8 + 9 % 4] bits 4..6
        assert_eq!(b.scale(0), 34);
        assert_eq!(b.scale(9), 29);
        assert_eq!(b.scale(16), 0);
        b.hmask[0] = 0b0000_0001; // value 0 has its high bit: q = 3 → 3
        b.qs[0] = 0b11; // value 0 low bits 3; value 32 low bits 0 without high bit: -4
        b.hmask[16] = 0b0000_0010; // value 48 (k = 1, l = 16): q = 0 + high bit → 0
        let mut y = [0.0f32; QK_K];
        BlockQ3K::dequantize(&[b], &mut y);
        assert_eq!(y[0], 0.5 * 2.0 * 3.0);
        assert_eq!(y[1], 0.5 * 2.0 * -4.0);
        // value 144 = sub-block 9: 128 + 16 → h = 1, k = 0, l = 16: low bits of qs[48],
        // high bit 4 of hmask[16] (clear): 0 - 4.
        assert_eq!(y[144], 0.5 * -3.0 * -4.0);
        assert_eq!(y[48], 0.0, "high bit set, low bits 0: quant 0");
        let mut a = BlockQ8K::zeroed();
        a.d = 0.25;
        a.qs[0] = 8;
        a.qs[144] = -2;
        // 3 * 8 * 2 (scale 34 - 32) + (-4) * (-2) * (-3) = 48 - 24, times 0.5 * 0.25
        assert_eq!(BlockQ3K::vec_dot(&[b], &[a]), 24.0 * 0.125);
    }

    #[test]
    fn zero_block_is_zero() {
        let mut b = [BlockQ3K::zeroed(); 1];
        b[0].d = f16::ONE;
        BlockQ3K::quantize(&[0.0; QK_K], &mut b);
        assert_eq!(b[0], BlockQ3K::zeroed());
        let mut y = [1.0f32; QK_K];
        BlockQ3K::dequantize(&b, &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
