//! SwiGLU's gate, `silu(g) · u`, with ggml's vectorized exponential, bit for bit.
//!
//! llama.cpp (AVX-512 build) computes `ggml_vec_swiglu_f32` as
//! `x / (1 + ggml_v_expf(0 - x)) · u`, where `ggml_v_expf` is a polynomial approximation
//! of `e^x` (ARM's optimized-routines `expf`, max error ≈ 1.45 ulp + 0.5):
//!
//! ```text
//! z = fma(x, log2(e), 0x1.8p23);  n = z - 0x1.8p23           n = round(x · log2 e)
//! b = fnma(n, 0x1.7f7d1cp-20, fnma(n, 0x1.62e4p-1, x))     b = x - n·ln2 (two-part ln2)
//! u = b·b
//! j = fma(fma(fma(c4, b, c3), u, fma(c2, b, c1)), u, fma(c0, b, 1))
//! e^x = scalef(j, n) = j · 2^n       (|n| > 192: 0 for n < 0, +inf for n > 0)
//! ```
//!
//! [`exp`] is that computation on one `f32`; the AVX-512 and AVX2 kernels run it 16 and 8
//! lanes at a time with the same operations (every one correctly rounded: fma, mul, sub,
//! and the exact power-of-two scale), so every level returns the same bits.

use crate::kernels::SimdLevel;

const SHIFT: f32 = f32::from_bits(0x4b40_0000); // 0x1.8p23
const LOG2E: f32 = f32::from_bits(0x3fb8_aa3b); // 0x1.715476p+0
const LN2_HI: f32 = f32::from_bits(0x3f31_7200); // 0x1.62e4p-1
const LN2_LO: f32 = f32::from_bits(0x35bf_be8e); // 0x1.7f7d1cp-20
const C0: f32 = f32::from_bits(0x3f7f_fff6); // 0x1.ffffecp-1
const C1: f32 = f32::from_bits(0x3eff_fedb); // 0x1.fffdb6p-2
const C2: f32 = f32::from_bits(0x3e2a_af33); // 0x1.555e66p-3
const C3: f32 = f32::from_bits(0x3d2b_9f17); // 0x1.573e2ep-5
const C4: f32 = f32::from_bits(0x3c07_2010); // 0x1.0e4020p-7

/// `e^x` exactly as ggml's AVX-512 `ggml_v_expf` computes it (see the module docs).
#[inline]
pub fn exp(x: f32) -> f32 {
    let z = x.mul_add(LOG2E, SHIFT);
    let n = z - SHIFT;
    let b = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let u = b * b;
    let j = C4.mul_add(b, C3).mul_add(u, C2.mul_add(b, C1)).mul_add(u, C0.mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_pow2(j, n)
}

/// `j · 2^n` rounded once (AVX-512 `vscalefps` for integral `n`, `|n| ≤ 192`; NaN
/// propagates). The product is exact in f64, so the cast is the only rounding.
#[inline]
fn scale_pow2(j: f32, n: f32) -> f32 {
    if n.is_nan() {
        return n;
    }
    // 2^n built from its bits (|n| ≤ 192, well inside f64's exponent range).
    let pow2 = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * pow2) as f32
}

/// `silu(x) · u` with [`exp`].
#[inline]
pub fn silu_mul_one(x: f32, u: f32) -> f32 {
    x / (1.0 + exp(0.0 - x)) * u
}

/// `gate[i] = silu(gate[i]) · up[i]` at `level` (same bits at every level); the shorter
/// length wins.
pub(crate) fn silu_mul(level: SimdLevel, gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    #[cfg(target_arch = "x86_64")]
    match level {
        // SAFETY: a `SimdLevel` from a `Kernels` is one this CPU was checked to run
        // (AVX-512F/DQ for Avx512; AVX2/FMA for Avx2); the slices have equal lengths.
        SimdLevel::Avx512 => return unsafe { x86::silu_mul_avx512(gate, up) },
        // SAFETY: as above.
        SimdLevel::Avx2 => return unsafe { x86::silu_mul_avx2(gate, up) },
        _ => {}
    }
    let _ = level;
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_mul_one(*g, u);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::*;

    /// # Safety
    /// The CPU has AVX-512 F and DQ; `gate.len() == up.len()`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn silu_mul_avx512(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let full = n / 16 * 16;
        // SAFETY: every load/store is 16 floats at an index < full ≤ len of both slices;
        // register-only operations otherwise; features per this fn's contract.
        unsafe {
            let mut i = 0;
            while i < full {
                let x = _mm512_loadu_ps(gate.as_ptr().add(i));
                let u = _mm512_loadu_ps(up.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let s = _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e));
                _mm512_storeu_ps(gate.as_mut_ptr().add(i), _mm512_mul_ps(s, u));
                i += 16;
            }
        }
        for (g, &u) in gate[full..].iter_mut().zip(&up[full..]) {
            *g = silu_mul_one(*g, u);
        }
    }

    /// ggml's `ggml_v_expf` (AVX-512), verbatim.
    #[inline(always)]
    unsafe fn exp16(x: __m512) -> __m512 {
        // SAFETY: register-only AVX-512 F/DQ operations, enabled by the caller.
        unsafe {
            let r = _mm512_set1_ps(SHIFT);
            let z = _mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), r);
            let n = _mm512_sub_ps(z, r);
            let b = _mm512_fnmadd_ps(
                n,
                _mm512_set1_ps(LN2_LO),
                _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x),
            );
            let d = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_abs_ps(n), _mm512_set1_ps(192.0));
            let u = _mm512_mul_ps(b, b);
            let j = _mm512_fmadd_ps(
                _mm512_fmadd_ps(
                    _mm512_fmadd_ps(_mm512_set1_ps(C4), b, _mm512_set1_ps(C3)),
                    u,
                    _mm512_fmadd_ps(_mm512_set1_ps(C2), b, _mm512_set1_ps(C1)),
                ),
                u,
                _mm512_fmadd_ps(_mm512_set1_ps(C0), b, _mm512_set1_ps(1.0)),
            );
            let res = _mm512_scalef_ps(j, n);
            if d == 0 {
                return res;
            }
            let zero = _mm512_setzero_ps();
            let alt = _mm512_mask_blend_ps(
                _mm512_cmp_ps_mask::<_CMP_LE_OQ>(n, zero),
                _mm512_set1_ps(f32::INFINITY),
                zero,
            );
            _mm512_mask_blend_ps(d, res, alt)
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA; `gate.len() == up.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let full = n / 8 * 8;
        // SAFETY: every load/store is 8 floats at an index < full ≤ len of both slices;
        // register-only operations otherwise; features per this fn's contract.
        unsafe {
            let mut i = 0;
            while i < full {
                let x = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let e = match exp8(_mm256_sub_ps(_mm256_setzero_ps(), x)) {
                    Some(e) => e,
                    None => {
                        // A lane needs a subnormal or infinite scale: the scalar path.
                        let mut l = [0.0f32; 8];
                        _mm256_storeu_ps(l.as_mut_ptr(), x);
                        let e: [f32; 8] = core::array::from_fn(|k| exp(0.0 - l[k]));
                        _mm256_loadu_ps(e.as_ptr())
                    }
                };
                let s = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
                _mm256_storeu_ps(gate.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
                i += 8;
            }
        }
        for (g, &u) in gate[full..].iter_mut().zip(&up[full..]) {
            *g = silu_mul_one(*g, u);
        }
    }

    /// The AVX-512 algorithm on 8 lanes; `None` if some lane's `n` is outside -126..=127
    /// (or NaN), where the power of two is not a normal float (the caller goes scalar).
    #[inline(always)]
    unsafe fn exp8(x: __m256) -> Option<__m256> {
        // SAFETY: register-only AVX2/FMA operations, enabled by the caller.
        unsafe {
            let r = _mm256_set1_ps(SHIFT);
            let z = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), r);
            let n = _mm256_sub_ps(z, r);
            let in_range = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GE_OQ>(n, _mm256_set1_ps(-126.0)),
                _mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_set1_ps(127.0)),
            );
            if _mm256_movemask_ps(in_range) != 0xFF {
                return None;
            }
            let b = _mm256_fnmadd_ps(
                n,
                _mm256_set1_ps(LN2_LO),
                _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x),
            );
            let u = _mm256_mul_ps(b, b);
            let j = _mm256_fmadd_ps(
                _mm256_fmadd_ps(
                    _mm256_fmadd_ps(_mm256_set1_ps(C4), b, _mm256_set1_ps(C3)),
                    u,
                    _mm256_fmadd_ps(_mm256_set1_ps(C2), b, _mm256_set1_ps(C1)),
                ),
                u,
                _mm256_fmadd_ps(_mm256_set1_ps(C0), b, _mm256_set1_ps(1.0)),
            );
            // 2^n as float bits ((n + 127) << 23), exact for normal n; j · 2^n rounds once.
            let p = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            Some(_mm256_mul_ps(j, _mm256_castsi256_ps(p)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_libm() {
        for i in -2000..2000 {
            let x = i as f32 * 0.043;
            let (a, b) = (exp(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "x {x}: {a} vs {b}");
        }
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(200.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        // Ragged lengths, huge and tiny gates (the scalar fallback of AVX2), NaN.
        let mut gate: Vec<f32> = (0..203).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.21).collect();
        gate[5] = 95.0;
        gate[17] = -95.0;
        gate[40] = 300.0;
        gate[41] = -300.0;
        gate[77] = f32::NAN;
        let up: Vec<f32> = (0..203).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut want = gate.clone();
        silu_mul(SimdLevel::Scalar, &mut want, &up);
        for level in SimdLevel::ALL {
            if !level.is_available() {
                continue;
            }
            let mut got = gate.clone();
            silu_mul(level, &mut got, &up);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(a.to_bits() == b.to_bits(), "{level:?} index {i}: {a} vs {b}");
            }
        }
    }
}
