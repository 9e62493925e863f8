//! `expf` exactly as glibc computes it on x86-64 CPUs with FMA (`__expf_fma`, ARM's
//! optimized-routines algorithm), so that attention's softmax weights are llama.cpp's (which
//! calls the C library's `expf`) on every platform, inlined instead of called per key.
//!
//! ```text
//! x·32/ln2 = k + r, |r| ≤ 1/2      k = fma(32/ln2, x, 0x1.8p52) - 0x1.8p52 (round to int)
//!                                  r = fma(32/ln2, x, -k)
//! 2^(k/32) = T[k mod 32] + (k << 47) as f64 bits
//! e^x ≈ 2^(k/32) · (fma(fma(C0, r, C1), r², fma(C2, r, 1)))      rounded once to f32
//! ```
//!
//! `T[i]` is the f64 nearest `2^(i/32)` minus `i << 47` (glibc's `__exp2f_data.tab`). The
//! fused multiply-adds are where GCC contracts the C source when building the FMA variant;
//! `exp_matches_the_c_library` compares against the C library over all floats in steps
//! (an exhaustive run over every float in [-103.5, 88) agreed on all 2,239,692,800).

const TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// 0x1.71547652b82fep+0 · 32 (32 / ln 2).
const INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
/// 0x1.8p52: adding it rounds to an integer.
const SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
/// 0x1.c6af84b912394p-5 / 32³.
const C0: f64 = f64::from_bits(0x3ebc_6af8_4b91_2394);
/// 0x1.ebfce50fac4f3p-3 / 32².
const C1: f64 = f64::from_bits(0x3f2e_bfce_50fa_c4f3);
/// 0x1.62e42ff0c52d6p-1 / 32.
const C2: f64 = f64::from_bits(0x3f96_2e42_ff0c_52d6);

/// `e^x`, bit-identical to glibc's x86-64 FMA `expf`. Callers that want speed inline it into
/// code compiled with FMA (elsewhere `mul_add` is a correct but slow library call).
#[inline(always)]
pub fn expf(x: f32) -> f32 {
    let abstop = (x.to_bits() >> 20) & 0x7ff;
    if abstop >= 0x42b {
        // |x| ≥ 88, or not finite.
        if x == f32::NEG_INFINITY {
            return 0.0;
        }
        if abstop >= 0x7f8 {
            return x + x;
        }
        if x > f32::from_bits(0x42b1_7217) {
            return f32::INFINITY;
        }
        if x < f32::from_bits(0xc2cf_f1b4) {
            return 0.0;
        }
    }
    let xd = f64::from(x);
    let kd = INV_LN2_N.mul_add(xd, SHIFT);
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = C0.mul_add(r, C1);
    let r2 = r * r;
    let y = C2.mul_add(r, 1.0);
    let y = z.mul_add(r2, y);
    (y * s) as f32
}

/// [`expf`] of 16 lanes at once (AVX-512), bit for bit: the same f64 steps, 8 lanes per
/// register, the 32-entry table read with two-register permutes.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use core::arch::x86_64::*;

    use super::{C0, C1, C2, INV_LN2_N, SHIFT, TAB};

    /// `expf` of each lane of `x`.
    ///
    /// # Safety
    /// AVX-512F/DQ (the caller's `target_feature`).
    #[inline(always)]
    pub(crate) unsafe fn expf16(x: __m512) -> __m512 {
        // SAFETY: register-only AVX-512F/DQ operations, enabled by the caller.
        unsafe {
            let lo = expf8(_mm512_castps512_ps256(x));
            let hi = expf8(_mm512_extractf32x8_ps::<1>(x));
            let r = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
            // The scalar function's special cases: -inf and x < -0x1.9fe368p6 give 0,
            // +inf and x > 0x1.62e42ep6 give inf, NaN gives x + x.
            let small =
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(f32::from_bits(0xc2cf_f1b4)));
            let big =
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(f32::from_bits(0x42b1_7217)));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            let r = _mm512_mask_mov_ps(r, small, _mm512_setzero_ps());
            let r = _mm512_mask_mov_ps(r, big, _mm512_set1_ps(f32::INFINITY));
            _mm512_mask_add_ps(r, nan, x, x)
        }
    }

    /// The general path of [`super::expf`] for 8 lanes (no special cases).
    #[inline(always)]
    unsafe fn expf8(x: __m256) -> __m256 {
        // SAFETY: register-only AVX-512F/DQ operations (the table is a local array read
        // with unaligned loads of 8 entries at offsets 0, 8, 16, 24 of 32).
        unsafe {
            let c = |v: f64| _mm512_set1_pd(v);
            let xd = _mm512_cvtps_pd(x);
            let kd = _mm512_fmadd_pd(c(INV_LN2_N), xd, c(SHIFT));
            let ki = _mm512_castpd_si512(kd);
            let kd = _mm512_sub_pd(kd, c(SHIFT));
            let r = _mm512_fmsub_pd(c(INV_LN2_N), xd, kd);
            let tab = |i: usize| _mm512_loadu_si512(TAB.as_ptr().add(i) as *const __m512i);
            // Entries 0..16 and 16..32 by the index's low 4 bits, then bit 4 picks.
            let t_lo = _mm512_permutex2var_epi64(tab(0), ki, tab(8));
            let t_hi = _mm512_permutex2var_epi64(tab(16), ki, tab(24));
            let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
            let t = _mm512_mask_blend_epi64(upper, t_lo, t_hi);
            let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(c(C0), r, c(C1));
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(c(C2), r, c(1.0));
            let y = _mm512_fmadd_pd(z, r2, y);
            _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_the_documented_values() {
        assert_eq!(INV_LN2_N, std::f64::consts::LOG2_E * 32.0);
        assert_eq!(SHIFT, 6755399441055744.0);
        for (i, &t) in TAB.iter().enumerate() {
            let v = f64::from_bits(t.wrapping_add((i as u64) << 47));
            assert!((v - (i as f64 / 32.0).exp2()).abs() <= f64::EPSILON * v, "T[{i}]");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sixteen_lanes_equal_the_scalar_function() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq"))
        {
            eprintln!("no AVX-512 here: the 16-lane expf is not exercised");
            return;
        }
        #[target_feature(enable = "avx512f,avx512dq")]
        unsafe fn run(x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0.0f32; 16];
            // SAFETY: 16-float loads/stores of local arrays; AVX-512 detected above.
            unsafe {
                use core::arch::x86_64::*;
                let r = x86::expf16(_mm512_loadu_ps(x.as_ptr()));
                _mm512_storeu_ps(out.as_mut_ptr(), r);
            }
            out
        }
        let specials = [
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -103.9,
            -104.0,
            -87.5,
            -88.5,
            88.7,
            88.8,
            1e-30,
            -1e-30,
            0.5,
            -0.5,
            -10.0,
        ];
        let mut batches = vec![specials];
        // Every 997th float below zero down to -104.5 and above up to 89.
        for range in [0x8000_0000u32..0xc2d1_0000, 0..0x42b2_0000] {
            let xs: Vec<f32> = range.step_by(997).map(f32::from_bits).collect();
            for c in xs.chunks(16) {
                let mut b = [0.0f32; 16];
                b[..c.len()].copy_from_slice(c);
                batches.push(b);
            }
        }
        for x in &batches {
            // SAFETY: AVX-512F/DQ detected above.
            let got = unsafe { run(x) };
            for (l, (&g, &x)) in got.iter().zip(x).enumerate() {
                let want = expf(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "lane {l}: expf16({x:e}) = {g:e}, scalar {want:e}"
                );
            }
        }
    }

    #[test]
    fn special_values() {
        assert_eq!(expf(0.0), 1.0);
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(f32::INFINITY), f32::INFINITY);
        assert!(expf(f32::NAN).is_nan());
        assert_eq!(expf(-200.0), 0.0);
        assert_eq!(expf(100.0), f32::INFINITY);
        assert!(expf(-100.0) > 0.0, "subnormal results are kept");
    }

    /// The C library's `expf` (what `f32::exp` calls) is the reference where it is glibc's
    /// x86-64 FMA variant; elsewhere the two agree to within an ulp.
    #[test]
    fn exp_matches_the_c_library() {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        let exact = std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
        let exact = false;
        let (mut n, mut differ) = (0u64, 0u64);
        // Every 61st float below zero down to -103.5, and every 61st above up to 88.
        for range in [0x8000_0000u32..0xc2cf_0000, 0..0x42b0_0000] {
            for b in range.step_by(61) {
                let x = f32::from_bits(b);
                let (got, want) = (expf(x), x.exp());
                n += 1;
                if got.to_bits() != want.to_bits() {
                    differ += 1;
                    let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
                    assert!(!exact && ulps <= 1, "x = {x:e}: {got:e} vs the C library's {want:e}");
                }
            }
        }
        eprintln!("expf vs the C library: {differ} of {n} differ (exact expected: {exact})");
    }
}
