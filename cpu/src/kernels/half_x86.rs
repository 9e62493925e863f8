//! F16 and BF16 weights on x86 (AVX2 and AVX-512), in the float order of the scalar rows
//! (`table::f16_chunk`, `scalar::dot_bf16`), bit for bit:
//!
//! ```text
//! F16:  per 64-element step, 4 accumulators × 16 lanes: sum[j][l] += w·x at 64i + 16j + l
//!       (products of f16 values are exact, so fma and mul-then-add agree);
//!       total = reduce16((s0 + s2) + (s1 + s3)), tail elements added in f64
//! BF16: per 64-element step, c1 (elements 0..32) and c2 (32..64), lane l takes the odd
//!       product 2l+1, then the even one 2l, each add rounded (`vdpbf16ps`);
//!       total = f64(reduce16(c1)) + f64(reduce16(c2)), tail elements in f64
//! ```
//!
//! A 16-lane accumulator is one zmm at AVX-512 and two ymm at AVX2. BF16 uses the CPU's
//! `vdpbf16ps` where it has AVX-512 BF16, else the same two rounded adds per lane, with
//! subnormals flushed as that instruction does.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::activations::Inputs;
use super::scalar::reduce16;

/// Tokens computed per weight-row pass.
const TILE: usize = 4;

/// The f64 tail of a row (elements past the last whole 64-step).
#[inline(always)]
fn tail_f16(w: &[f16], x: &[f32], from: usize) -> f64 {
    (from..w.len()).map(|e| f64::from(w[e].to_f32() * x[e])).sum()
}

/// F16 weight rows × every token, AVX-512.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn f16_chunk_avx512(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let np = cols / 64 * 64;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[f16] = bytemuck::cast_slice(row);
        let mut t0 = 0;
        while t0 < outs.len() {
            let tn = (outs.len() - t0).min(TILE);
            let mut acc = [[_mm512_setzero_ps(); 4]; TILE];
            let mut i = 0;
            while i < np {
                // SAFETY: i + 64 <= np <= cols: the row and each token's x hold 64 values
                // from i; AVX-512 F and F16C per this fn's contract.
                unsafe {
                    let wp = row.as_ptr().add(i) as *const __m256i;
                    let wv = [
                        _mm512_cvtph_ps(_mm256_loadu_si256(wp)),
                        _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(1))),
                        _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(2))),
                        _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(3))),
                    ];
                    for (t, a) in acc.iter_mut().enumerate().take(tn) {
                        let xp = inputs.f16.as_ptr().add((t0 + t) * cols + i);
                        for j in 0..4 {
                            a[j] = _mm512_fmadd_ps(wv[j], _mm512_loadu_ps(xp.add(16 * j)), a[j]);
                        }
                    }
                }
                i += 64;
            }
            for (t, a) in acc.iter().enumerate().take(tn) {
                let mut lanes = [0.0f32; 16];
                // SAFETY: a 16-float store into a 16-float array; AVX-512 F.
                unsafe {
                    let s = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
                    _mm512_storeu_ps(lanes.as_mut_ptr(), s);
                }
                let x = &inputs.f16[(t0 + t) * cols..(t0 + t + 1) * cols];
                let total = f64::from(reduce16(&lanes)) + tail_f16(row, x, np);
                outs[t0 + t][r] = total as f32;
            }
            t0 += tn;
        }
    }
}

/// F16 weight rows × every token, AVX2 (each 16-lane accumulator is two ymm).
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_chunk_avx2(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let np = cols / 64 * 64;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[f16] = bytemuck::cast_slice(row);
        let mut t0 = 0;
        while t0 < outs.len() {
            let tn = (outs.len() - t0).min(2);
            let mut acc = [[_mm256_setzero_ps(); 8]; 2];
            let mut i = 0;
            while i < np {
                // SAFETY: i + 64 <= np <= cols (row and x in bounds); AVX2/F16C/FMA.
                unsafe {
                    let wp = row.as_ptr().add(i) as *const __m128i;
                    let wv: [__m256; 8] =
                        core::array::from_fn(|h| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(h))));
                    for (t, a) in acc.iter_mut().enumerate().take(tn) {
                        let xp = inputs.f16.as_ptr().add((t0 + t) * cols + i);
                        for h in 0..8 {
                            a[h] = _mm256_fmadd_ps(wv[h], _mm256_loadu_ps(xp.add(8 * h)), a[h]);
                        }
                    }
                }
                i += 64;
            }
            for (t, a) in acc.iter().enumerate().take(tn) {
                // Accumulator j is the ymm pair (2j, 2j + 1).
                let mut lanes = [0.0f32; 16];
                // SAFETY: two 8-float stores into a 16-float array; AVX.
                unsafe {
                    let lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4]), _mm256_add_ps(a[2], a[6]));
                    let hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5]), _mm256_add_ps(a[3], a[7]));
                    _mm256_storeu_ps(lanes.as_mut_ptr(), lo);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), hi);
                }
                let x = &inputs.f16[(t0 + t) * cols..(t0 + t + 1) * cols];
                let total = f64::from(reduce16(&lanes)) + tail_f16(row, x, np);
                outs[t0 + t][r] = total as f32;
            }
            t0 += tn;
        }
    }
}

/// The f64 tail of a BF16 row.
#[inline(always)]
fn tail_bf16(w: &[bf16], x: &[bf16], from: usize) -> f64 {
    (from..w.len()).map(|e| f64::from(w[e].to_f32() * x[e].to_f32())).sum()
}

/// Whether this CPU has `vdpbf16ps` (checked once; std caches the detection).
pub(crate) fn has_avx512_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

/// BF16 weight rows × every token, AVX-512: `vdpbf16ps` if the CPU has it, else
/// [`bf16_chunk_avx512_emulated`].
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX-512 F/BW.
pub(crate) unsafe fn bf16_chunk_avx512(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    if has_avx512_bf16() {
        // SAFETY: AVX-512 BF16 was just detected; the rest is this fn's contract.
        unsafe { bf16_chunk_dpbf16(w, row_bytes, inputs, outs) }
    } else {
        // SAFETY: this fn's contract.
        unsafe { bf16_chunk_avx512_emulated(w, row_bytes, inputs, outs) }
    }
}

/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX-512 F/BW and BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2")]
unsafe fn bf16_chunk_dpbf16(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let np = cols / 64 * 64;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        let mut t0 = 0;
        while t0 < outs.len() {
            let tn = (outs.len() - t0).min(TILE);
            let mut acc = [[_mm512_setzero_ps(); 2]; TILE];
            let mut i = 0;
            while i < np {
                // SAFETY: i + 64 <= np <= cols (row and x in bounds); 32 bf16 = 64 bytes
                // per load; AVX-512 F/BF16 per this fn's contract. `__m512bh` is 32 bf16 in
                // a 512-bit register, the same bits as the integer vector loaded.
                unsafe {
                    let wp = row.as_ptr().add(i) as *const __m512i;
                    let w0: __m512bh = core::mem::transmute(_mm512_loadu_si512(wp));
                    let w1: __m512bh = core::mem::transmute(_mm512_loadu_si512(wp.add(1)));
                    for (t, a) in acc.iter_mut().enumerate().take(tn) {
                        let xp = inputs.bf16.as_ptr().add((t0 + t) * cols + i) as *const __m512i;
                        let x0: __m512bh = core::mem::transmute(_mm512_loadu_si512(xp));
                        let x1: __m512bh = core::mem::transmute(_mm512_loadu_si512(xp.add(1)));
                        a[0] = _mm512_dpbf16_ps(a[0], w0, x0);
                        a[1] = _mm512_dpbf16_ps(a[1], w1, x1);
                    }
                }
                i += 64;
            }
            for (t, a) in acc.iter().enumerate().take(tn) {
                let (mut c1, mut c2) = ([0.0f32; 16], [0.0f32; 16]);
                // SAFETY: 16-float stores into 16-float arrays; AVX-512 F.
                unsafe {
                    _mm512_storeu_ps(c1.as_mut_ptr(), a[0]);
                    _mm512_storeu_ps(c2.as_mut_ptr(), a[1]);
                }
                let x = &inputs.bf16[(t0 + t) * cols..(t0 + t + 1) * cols];
                let total = f64::from(reduce16(&c1)) + f64::from(reduce16(&c2));
                outs[t0 + t][r] = (total + tail_bf16(row, x, np)) as f32;
            }
            t0 += tn;
        }
    }
}

/// `x` with subnormal lanes replaced by zeros of their sign.
///
/// # Safety
/// AVX-512 F enabled by the caller.
#[inline(always)]
pub(crate) unsafe fn flush16(x: __m512) -> __m512 {
    // SAFETY: register-only AVX-512 F operations.
    unsafe {
        let abs = _mm512_abs_ps(x);
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(abs, _mm512_set1_ps(f32::MIN_POSITIVE));
        let sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0));
        _mm512_mask_mov_ps(x, tiny, sign)
    }
}

/// `vdpbf16ps` emulated: `a` plus, per lane l, the odd product of the 32 bf16 pairs in `w`
/// and `x` (element 2l+1) then the even one (2l), each add rounded, subnormals flushed.
///
/// # Safety
/// AVX-512 F/BW enabled by the caller.
#[inline(always)]
pub(crate) unsafe fn dpbf16_emulated(a: __m512, w: __m512i, x: __m512i) -> __m512 {
    // SAFETY: register-only AVX-512 F/BW operations.
    unsafe {
        // Even elements: the low 16 bits of each dword, shifted up; odd: the high 16 bits,
        // masked.
        let hi = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        let we = flush16(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)));
        let wo = flush16(_mm512_castsi512_ps(_mm512_and_si512(w, hi)));
        let xe = flush16(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(x)));
        let xo = flush16(_mm512_castsi512_ps(_mm512_and_si512(x, hi)));
        let s = flush16(_mm512_add_ps(flush16(a), flush16(_mm512_mul_ps(wo, xo))));
        flush16(_mm512_add_ps(s, flush16(_mm512_mul_ps(we, xe))))
    }
}

/// BF16 rows without `vdpbf16ps`: the same odd-then-even rounded adds with subnormals
/// flushed, on bf16 values widened to f32 (a left shift by 16).
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn bf16_chunk_avx512_emulated(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let np = cols / 64 * 64;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        for (t, out) in outs.iter_mut().enumerate() {
            let xr = &inputs.bf16[t * cols..(t + 1) * cols];
            let mut acc = [_mm512_setzero_ps(); 2];
            let mut i = 0;
            while i < np {
                for (h, a) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 64 <= np <= cols: 32 bf16 (64 bytes) at i + 32h are in
                    // bounds of the row and of x; AVX-512 F/BW per the contract.
                    unsafe {
                        let wv = _mm512_loadu_si512(row.as_ptr().add(i + 32 * h) as *const _);
                        let xv = _mm512_loadu_si512(xr.as_ptr().add(i + 32 * h) as *const _);
                        *a = dpbf16_emulated(*a, wv, xv);
                    }
                }
                i += 64;
            }
            let (mut c1, mut c2) = ([0.0f32; 16], [0.0f32; 16]);
            // SAFETY: 16-float stores into 16-float arrays; AVX-512 F.
            unsafe {
                _mm512_storeu_ps(c1.as_mut_ptr(), acc[0]);
                _mm512_storeu_ps(c2.as_mut_ptr(), acc[1]);
            }
            let total = f64::from(reduce16(&c1)) + f64::from(reduce16(&c2));
            out[r] = (total + tail_bf16(row, xr, np)) as f32;
        }
    }
}

/// `x` with subnormal lanes replaced by zeros of their sign (AVX2: [`flush16`]'s twin).
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
unsafe fn flush8(x: __m256) -> __m256 {
    // SAFETY: register-only AVX operations.
    unsafe {
        let sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0));
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), x);
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(abs, _mm256_set1_ps(f32::MIN_POSITIVE));
        _mm256_blendv_ps(x, sign, tiny)
    }
}

/// [`dpbf16_emulated`] on 8 lanes: `a` plus, per lane l, the odd product of the 16 bf16 pairs
/// in `w` and `x` (element 2l+1) then the even one (2l), each add rounded, subnormals flushed.
///
/// # Safety
/// AVX2 enabled by the caller.
#[inline(always)]
pub(crate) unsafe fn dpbf16_emulated8(a: __m256, w: __m256i, x: __m256i) -> __m256 {
    // SAFETY: register-only AVX2 operations.
    unsafe {
        let hi = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        let we = flush8(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(w)));
        let wo = flush8(_mm256_castsi256_ps(_mm256_and_si256(w, hi)));
        let xe = flush8(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(x)));
        let xo = flush8(_mm256_castsi256_ps(_mm256_and_si256(x, hi)));
        let s = flush8(_mm256_add_ps(flush8(a), flush8(_mm256_mul_ps(wo, xo))));
        flush8(_mm256_add_ps(s, flush8(_mm256_mul_ps(we, xe))))
    }
}

/// 32 bf16 of `w` and `x` at `p` into a 16-lane accumulator held as two ymm (lanes 0..8:
/// elements 0..16).
///
/// # Safety
/// AVX2 enabled by the caller; 32 bf16 readable at `w` and `x`.
#[inline(always)]
pub(crate) unsafe fn dpbf16_emulated16(a: &mut [__m256; 2], w: *const bf16, x: *const bf16) {
    for (q, a) in a.iter_mut().enumerate() {
        // SAFETY: elements 16q..16q + 16 < 32 of both (the contract); AVX2 per the contract.
        unsafe {
            let wv = _mm256_loadu_si256(w.add(16 * q).cast());
            let xv = _mm256_loadu_si256(x.add(16 * q).cast());
            *a = dpbf16_emulated8(*a, wv, xv);
        }
    }
}

/// A 16-lane accumulator held as two ymm, stored in lane order.
///
/// # Safety
/// AVX enabled by the caller.
#[inline(always)]
pub(crate) unsafe fn lanes16(a: [__m256; 2]) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    // SAFETY: two 8-float stores into a 16-float array; AVX per the contract.
    unsafe {
        _mm256_storeu_ps(out.as_mut_ptr(), a[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), a[1]);
    }
    out
}

/// BF16 weight rows × every token, AVX2: the rounded adds of `vdpbf16ps` with subnormals
/// flushed, 16 lanes as two ymm.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bf16_chunk_avx2(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let cols = row_bytes / 2;
    let np = cols / 64 * 64;
    for (r, row) in w.chunks_exact(row_bytes).enumerate() {
        let row: &[bf16] = bytemuck::cast_slice(row);
        for (t, out) in outs.iter_mut().enumerate() {
            let xr = &inputs.bf16[t * cols..(t + 1) * cols];
            let mut acc = [[_mm256_setzero_ps(); 2]; 2];
            for i in (0..np).step_by(64) {
                for (h, a) in acc.iter_mut().enumerate() {
                    // SAFETY: i + 64 <= np <= cols: 32 bf16 at i + 32h are in bounds of the
                    // row and of x; AVX2 per the contract.
                    unsafe {
                        dpbf16_emulated16(
                            a,
                            row.as_ptr().add(i + 32 * h),
                            xr.as_ptr().add(i + 32 * h),
                        )
                    };
                }
            }
            // SAFETY: AVX per the contract.
            let (c1, c2) = unsafe { (lanes16(acc[0]), lanes16(acc[1])) };
            let total = f64::from(reduce16(&c1)) + f64::from(reduce16(&c2));
            out[r] = (total + tail_bf16(row, xr, np)) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of bf16 values with normal, tiny (products underflow), subnormal and zero
    /// entries, 130 columns (two 64-steps and a tail).
    fn rows(seed: u64, n: usize) -> Vec<bf16> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let sign = (s >> 63) as u16 * 0x8000;
                let mant = (s >> 20) as u16 & 0x7F;
                let exp: u16 = match s % 5 {
                    0 => 0,                        // subnormal (or zero)
                    1 => 1 + (s >> 8) as u16 % 40, // tiny: products underflow
                    _ => 100 + (s >> 8) as u16 % 50,
                };
                bf16::from_bits(sign | (exp << 7) | mant)
            })
            .collect()
    }

    fn run(
        f: unsafe fn(&[u8], usize, &Inputs<'_>, &mut [&mut [f32]]),
        w: &[bf16],
        x: &[bf16],
        cols: usize,
    ) -> Vec<f32> {
        let rows = w.len() / cols;
        let tokens = x.len() / cols;
        let inputs = Inputs {
            f32: &[],
            f16: &[],
            bf16: x,
            q8_0: &[],
            q8_1: &[],
            q8k: &[],
            soa: super::super::activations::Acts { nb: 0, qs: &[], d: &[], k: &[], kq: &[] },
        };
        let mut out = vec![0.0f32; rows * tokens];
        {
            let mut outs: Vec<&mut [f32]> = out.chunks_mut(rows).collect();
            // SAFETY: checked AVX-512 F/BW below; whole rows, one output per row and token.
            unsafe { f(bytemuck::cast_slice(w), cols * 2, &inputs, &mut outs) };
        }
        out
    }

    #[test]
    fn bf16_emulations_and_vdpbf16ps_equal_the_scalar_rule_with_subnormals() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            eprintln!("no AVX-512: nothing to compare on this CPU");
            return;
        }
        let cols = 130;
        for seed in 1..40u64 {
            let w = rows(seed, 3 * cols);
            let x = rows(seed * 7919, 2 * cols);
            let want: Vec<f32> = (0..2)
                .flat_map(|t| {
                    let (w, x) = (&w, &x);
                    (0..3).map(move |r| {
                        super::super::scalar::dot_bf16(
                            &w[r * cols..(r + 1) * cols],
                            &x[t * cols..(t + 1) * cols],
                        )
                    })
                })
                .collect();
            // SAFETY: AVX2 comes with the AVX-512 checked above.
            let avx2 = run(bf16_chunk_avx2, &w, &x, cols);
            assert_eq!(
                avx2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "AVX2 emulation, seed {seed}"
            );
            let emulated = run(bf16_chunk_avx512_emulated, &w, &x, cols);
            assert_eq!(
                emulated.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "emulated, seed {seed}"
            );
            if has_avx512_bf16() {
                let hw = run(bf16_chunk_dpbf16, &w, &x, cols);
                assert_eq!(
                    hw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "vdpbf16ps, seed {seed}"
                );
            }
        }
    }
}
