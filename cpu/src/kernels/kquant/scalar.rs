//! The K-quant dot products (× Q8_K) written out in the float order of llama.cpp's x86
//! AVX2 `ggml_vec_dot_<fmt>_q8_K` (`ggml/src/ggml-cpu/arch/x86/quants.c`, the
//! `#if defined __AVX2__` branch, which an AVX-512 + VNNI build also compiles: no K-quant
//! has an `__AVX512F__` branch). This is the specification every SIMD level reproduces.
//!
//! Every format keeps 8 float lanes `acc`. Per super-block, its integer work is exact and
//! lands in 8 i32 lanes; lane `m` holds, for every 32-value chunk `c` of the super-block,
//! the scaled products of the chunk's values `4m..4m+4`:
//!
//! ```text
//! lane[m] = Σ_c  sc[sub(32c + 4m)] · Σ_{e = 4m..4m+4} q[32c + e] · y[32c + e]
//!           (sub(v) = v / 32 for Q4_K/Q5_K/IQ4_XS, v / 16 for Q2_K/Q3_K/Q6_K)
//! acc[m]  = fma(d, (float) lane[m], acc[m])         d = y.d · f16(x.d)   (an f32 product)
//! result  = hsum8(acc) (+ the format's tail)        hsum8 = ((a0+a4)+(a2+a6))+((a1+a5)+(a3+a7))
//! ```
//!
//! The mins (Q4_K, Q5_K, Q2_K) and Q6_K's offset use the Q8_K block sums `bsums`; each
//! function's comment gives where they enter. The integer identities hold for Q8_K quants
//! in `-127..=127` (what [`BlockQ8K`]'s quantizer produces: llama.cpp's `vpmaddubsw` can
//! saturate or its `vpsignb` wrap only for a quant of -128).

use pagoda_core::quant::{
    get_scale_min_k4, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K,
    IQ4NL_VALUES, QK_K,
};

/// llama.cpp's `hsum_float_8`.
#[inline]
pub(crate) fn hsum8(a: [f32; 8]) -> f32 {
    super::super::scalar::hsum8(a)
}

/// How the exact integer lanes of a super-block are computed (any way gives the same
/// integers: the portable loops here, NEON's widening multiplies).
pub(crate) trait Lanes {
    /// `lane[m] = Σ_c sc[(32c + 4m) / SUB] · Σ_{e=4m..4m+4} q[32c + e] · y[32c + e]`.
    fn lanes<const SUB: usize>(q: &[i8; QK_K], y: &[i8; QK_K], sc: &[i32]) -> [i32; 8];
}

/// The portable [`Lanes`].
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline]
    fn lanes<const SUB: usize>(q: &[i8; QK_K], y: &[i8; QK_K], sc: &[i32]) -> [i32; 8] {
        lanes::<SUB>(q, y, sc)
    }
}

/// The integer lanes of one super-block: `lane[m] = Σ_c sc[(32c + 4m) / SUB] ·
/// Σ_{e=4m..4m+4} q[32c + e] · y[32c + e]`.
#[inline]
pub(crate) fn lanes<const SUB: usize>(q: &[i8; QK_K], y: &[i8; QK_K], sc: &[i32]) -> [i32; 8] {
    let mut l = [0i32; 8];
    for (c, (qc, yc)) in q.chunks_exact(32).zip(y.chunks_exact(32)).enumerate() {
        let mut p = [0i32; 8];
        for (e, (&a, &b)) in qc.iter().zip(yc).enumerate() {
            p[e / 4] += i32::from(a) * i32::from(b);
        }
        for (m, (l, p)) in l.iter_mut().zip(p).enumerate() {
            *l += sc[(32 * c + 4 * m) / SUB] * p;
        }
    }
    l
}

#[inline]
fn lane_fma(acc: &mut [f32; 8], d: f32, l: [i32; 8]) {
    for (a, l) in acc.iter_mut().zip(l) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// The decoded header of a Q4_K/Q5_K super-block: 8 scales and 8 mins (6-bit).
#[inline]
pub(crate) fn scales_mins_k4(scales: &[u8; 12]) -> ([i32; 8], [i32; 8]) {
    let mut sc = [0i32; 8];
    let mut mn = [0i32; 8];
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, scales);
        sc[j] = i32::from(s);
        mn[j] = i32::from(m);
    }
    (sc, mn)
}

/// Q4_K/Q5_K's min term of one super-block, as llama.cpp's `_mm_hadd_epi16` +
/// `_mm_madd_epi16` form it: 4 lanes `prod[k] = mn[2k]·(b[4k] + b[4k+1]) +
/// mn[2k+1]·(b[4k+2] + b[4k+3])` (the pair sums in wrapping i16).
#[inline]
pub(crate) fn min_prod4(mn: &[i32; 8], bsums: &[i16; 16]) -> [i32; 4] {
    let q8s: [i32; 8] =
        core::array::from_fn(|k| i32::from(bsums[2 * k].wrapping_add(bsums[2 * k + 1])));
    core::array::from_fn(|k| mn[2 * k] * q8s[2 * k] + mn[2 * k + 1] * q8s[2 * k + 1])
}

/// Q4_K's 256 quants `0..16` in value order.
#[inline]
pub(super) fn q4k_quants(x: &BlockQ4K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (a, q) in a.chunks_exact_mut(64).zip(x.qs.chunks_exact(32)) {
        for (l, &b) in q.iter().enumerate() {
            a[l] = (b & 0xF) as i8;
            a[l + 32] = (b >> 4) as i8;
        }
    }
    a
}

/// Q5_K's 256 quants `0..32` in value order (value `v`'s fifth bit: bit `v / 32` of
/// `qh[v % 32]`).
#[inline]
pub(super) fn q5k_quants(x: &BlockQ5K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (c, (a, q)) in a.chunks_exact_mut(64).zip(x.qs.chunks_exact(32)).enumerate() {
        for (l, (&b, &h)) in q.iter().zip(&x.qh).enumerate() {
            a[l] = ((b & 0xF) | (((h >> (2 * c)) & 1) << 4)) as i8;
            a[l + 32] = ((b >> 4) | (((h >> (2 * c + 1)) & 1) << 4)) as i8;
        }
    }
    a
}

/// Q6_K's 256 quants `0..64` (unsigned: the -32 is applied through `bsums`).
#[inline]
pub(super) fn q6k_quants(x: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for ((a, ql), qh) in
        a.chunks_exact_mut(128).zip(x.ql.chunks_exact(64)).zip(x.qh.chunks_exact(32))
    {
        for (l, &h) in qh.iter().enumerate() {
            a[l] = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8;
            a[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8;
            a[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8;
        }
    }
    a
}

/// Q4_K · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_q4_K_q8_K` (not the repacked `q4_K_8x8` GEMV/GEMM):
///
/// ```text
/// per super-block:  d = y.d · f16(x.d);  dmin = -y.d · f16(x.dmin)
///   acc_m[k] = fma(dmin, (float) prod[k], acc_m[k])    k < 4, prod: min_prod4
///   acc[m]   = fma(d, (float) lane[m], acc[m])          32-value sub-blocks
/// result = hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
/// ```
pub(crate) fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    dot_q4_k_in::<Portable>(w, a)
}

/// [`dot_q4_k`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_q4_k_in<L: Lanes>(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut acc_m = [0.0f32; 4];
    for (x, y) in w.iter().zip(a) {
        let d = y.d * x.d.to_f32();
        let dmin = -y.d * x.dmin.to_f32();
        let (sc, mn) = scales_mins_k4(&x.scales);
        for (m, p) in acc_m.iter_mut().zip(min_prod4(&mn, &y.bsums)) {
            *m = dmin.mul_add(p as f32, *m);
        }
        lane_fma(&mut acc, d, L::lanes::<32>(&q4k_quants(x), &y.qs, &sc));
    }
    hsum8(acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
}

/// Q5_K · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_q5_K_q8_K`:
///
/// ```text
/// per super-block:  d = y.d · f16(x.d);  dmin = -y.d · f16(x.dmin)
///   summs  = fma(dmin, (float) Σ_k prod[k], summs)     (GCC contracts `summs += dmin * i`)
///   acc[m] = fma(d, (float) lane[m], acc[m])            32-value sub-blocks, quants 0..32
/// result = hsum8(acc) + summs
/// ```
pub(crate) fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    dot_q5_k_in::<Portable>(w, a)
}

/// [`dot_q5_k`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_q5_k_in<L: Lanes>(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (x, y) in w.iter().zip(a) {
        let d = y.d * x.d.to_f32();
        let dmin = -y.d * x.dmin.to_f32();
        let (sc, mn) = scales_mins_k4(&x.scales);
        let p = min_prod4(&mn, &y.bsums);
        let isum = (p[0].wrapping_add(p[1])).wrapping_add(p[2].wrapping_add(p[3]));
        summs = dmin.mul_add(isum as f32, summs);
        lane_fma(&mut acc, d, L::lanes::<32>(&q5k_quants(x), &y.qs, &sc));
    }
    hsum8(acc) + summs
}

/// Q6_K's offset term: 8 lanes `32 · (b[2m]·sc[2m] + b[2m+1]·sc[2m+1])` (llama.cpp's
/// `q8sclsub`).
#[inline]
pub(crate) fn q6k_sclsub(sc: &[i32; 16], bsums: &[i16; 16]) -> [i32; 8] {
    core::array::from_fn(|m| {
        32 * (i32::from(bsums[2 * m]) * sc[2 * m] + i32::from(bsums[2 * m + 1]) * sc[2 * m + 1])
    })
}

/// Q6_K · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_q6_K_q8_K`:
///
/// ```text
/// per super-block:  d = y.d · f16(x.d)
///   acc[m] = fma(d, (float) (lane[m] - sclsub[m]), acc[m])   16-value sub-blocks,
///            quants 0..64, sclsub: q6k_sclsub (the -32 of every quant)
/// result = hsum8(acc)
/// ```
pub(crate) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    dot_q6_k_in::<Portable>(w, a)
}

/// [`dot_q6_k`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_q6_k_in<L: Lanes>(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let d = y.d * x.d.to_f32();
        let sc: [i32; 16] = core::array::from_fn(|j| i32::from(x.scales[j]));
        let l = L::lanes::<16>(&q6k_quants(x), &y.qs, &sc);
        let s = q6k_sclsub(&sc, &y.bsums);
        lane_fma(&mut acc, d, core::array::from_fn(|m| l[m] - s[m]));
    }
    hsum8(acc)
}

/// Q2_K's 256 quants `0..4` in value order (value `128h + 32k + l`: bits `2k..2k+2` of
/// `qs[32h + l]`).
#[inline]
pub(super) fn q2k_quants(x: &BlockQ2K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (half, q) in a.chunks_exact_mut(128).zip(x.qs.chunks_exact(32)) {
        for (k, part) in half.chunks_exact_mut(32).enumerate() {
            for (v, &q) in part.iter_mut().zip(q) {
                *v = ((q >> (2 * k)) & 3) as i8;
            }
        }
    }
    a
}

/// Q2_K's min term: 8 lanes `m[2l]·b[2l] + m[2l+1]·b[2l+1]` (`_mm256_madd_epi16`).
#[inline]
pub(crate) fn q2k_min_prod(x: &BlockQ2K, bsums: &[i16; 16]) -> [i32; 8] {
    core::array::from_fn(|l| {
        i32::from(x.scales[2 * l] >> 4) * i32::from(bsums[2 * l])
            + i32::from(x.scales[2 * l + 1] >> 4) * i32::from(bsums[2 * l + 1])
    })
}

/// Q2_K · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_q2_K_q8_K`: both terms go into the one accumulator, mins first:
///
/// ```text
/// per super-block:  d = y.d · f16(x.d);  dmin = -y.d · f16(x.dmin)
///   acc[l] = fma(dmin, (float) prod[l], acc[l])    prod: q2k_min_prod
///   acc[l] = fma(d, (float) lane[l], acc[l])       16-value sub-blocks, scales & 0xF
/// result = hsum8(acc)
/// ```
pub(crate) fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    dot_q2_k_in::<Portable>(w, a)
}

/// [`dot_q2_k`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_q2_k_in<L: Lanes>(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let d = y.d * x.d.to_f32();
        let dmin = -y.d * x.dmin.to_f32();
        lane_fma(&mut acc, dmin, q2k_min_prod(x, &y.bsums));
        let sc: [i32; 16] = core::array::from_fn(|j| i32::from(x.scales[j] & 0xF));
        lane_fma(&mut acc, d, L::lanes::<16>(&q2k_quants(x), &y.qs, &sc));
    }
    hsum8(acc)
}

/// Q3_K's 16 signed scales (`6-bit - 32`).
#[inline]
pub(crate) fn q3k_scales(x: &BlockQ3K) -> [i32; 16] {
    core::array::from_fn(|j| i32::from(x.scale(j)) - 32)
}

/// Q3_K's 256 signed quants `-4..4` in value order.
#[inline]
pub(super) fn q3k_quants(x: &BlockQ3K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (h, (half, q)) in a.chunks_exact_mut(128).zip(x.qs.chunks_exact(32)).enumerate() {
        for (k, part) in half.chunks_exact_mut(32).enumerate() {
            for ((v, &q), &hm) in part.iter_mut().zip(q).zip(&x.hmask) {
                let hi = ((hm >> (4 * h + k)) & 1) as i8;
                *v = ((q >> (2 * k)) & 3) as i8 - 4 * (1 - hi);
            }
        }
    }
    a
}

/// Q3_K · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_q3_K_q8_K`:
///
/// ```text
/// per super-block:  d = y.d · f16(x.d)
///   acc[l] = fma(d, (float) lane[l], acc[l])     16-value sub-blocks, signed scales and quants
/// result = hsum8(acc)
/// ```
pub(crate) fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    dot_q3_k_in::<Portable>(w, a)
}

/// [`dot_q3_k`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_q3_k_in<L: Lanes>(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let d = y.d * x.d.to_f32();
        lane_fma(&mut acc, d, L::lanes::<16>(&q3k_quants(x), &y.qs, &q3k_scales(x)));
    }
    hsum8(acc)
}

/// IQ4_XS's 8 signed scales (`6-bit - 32`).
#[inline]
pub(crate) fn iq4xs_scales(x: &BlockIq4Xs) -> [i32; 8] {
    core::array::from_fn(|j| i32::from(x.scale(j)) - 32)
}

/// IQ4_XS's 256 codebook values in value order (sub-block `j`: low nibbles of
/// `qs[16j..16j+16]` are values 0..16, high nibbles 16..32).
#[inline]
pub(super) fn iq4xs_values(x: &BlockIq4Xs) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for (a, q) in a.chunks_exact_mut(32).zip(x.qs.chunks_exact(16)) {
        for (l, &b) in q.iter().enumerate() {
            a[l] = IQ4NL_VALUES[usize::from(b & 0xF)];
            a[l + 16] = IQ4NL_VALUES[usize::from(b >> 4)];
        }
    }
    a
}

/// IQ4_XS · Q8_K over whole rows (`w.len() == a.len()`), llama.cpp's AVX2
/// `ggml_vec_dot_iq4_xs_q8_K`:
///
/// ```text
/// per super-block:  d = f16(x.d) · y.d
///   acc[l] = fma(d, (float) lane[l], acc[l])     32-value sub-blocks, signed scales
/// result = hsum8(acc)
/// ```
pub(crate) fn dot_iq4_xs(w: &[BlockIq4Xs], a: &[BlockQ8K]) -> f32 {
    dot_iq4_xs_in::<Portable>(w, a)
}

/// [`dot_iq4_xs`] with the integer lanes of `L`.
#[inline(always)]
pub(crate) fn dot_iq4_xs_in<L: Lanes>(w: &[BlockIq4Xs], a: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in w.iter().zip(a) {
        let d = x.d.to_f32() * y.d;
        lane_fma(&mut acc, d, L::lanes::<32>(&iq4xs_values(x), &y.qs, &iq4xs_scales(x)));
    }
    hsum8(acc)
}
