//! The AVX-512 kernel of the F16/BF16 repacked matmul: 16 rows in the lanes of a register,
//! tiles of `G` groups × `T` tokens of accumulators sharing each widened weight vector and
//! each broadcast activation (see the parent module for the layout and the order).

use core::arch::x86_64::*;

use half::bf16;

use super::{RepackedFloat, GROUP_ROWS};
use crate::kernels::half_x86::{flush16, has_avx512_bf16};

/// Bytes of weights a block of groups may span: the block stays in L2 while every token
/// tile passes over it.
const BLOCK_BYTES: usize = 256 * 1024;

/// Kernel kinds (`K` of the generic functions): F16 weights with f32 fma.
const F16: u8 = 0;
/// BF16 with the CPU's `vdpbf16ps`.
const BF16_DP: u8 = 1;
/// BF16 without it: the same rounded adds on widened values, subnormals flushed.
const BF16_EMULATED: u8 = 2;

/// [`super::dot_scalar`], bit for bit.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL and F16C/FMA; every `outs[t]` has the same length,
/// at most the rows of `w` from group `g0` on; `x` holds at least `outs.len()` tokens of
/// `w.cols` values and, for BF16, `xb` as many padded bf16 rows (`super::round_to_bf16`).
pub(super) unsafe fn dot_groups(
    w: &RepackedFloat,
    g0: usize,
    x: &[f32],
    xb: &[bf16],
    outs: &mut [&mut [f32]],
) {
    let at = At { w, x, xb, g0, g: g0, t: 0 };
    // SAFETY: this fn's contract; AVX-512 BF16 is checked before its kernel runs.
    unsafe {
        if !w.bf16 {
            dot_groups_f16(&at, outs)
        } else if has_avx512_bf16() {
            dot_groups_dp(&at, outs)
        } else {
            dot_groups_emulated(&at, outs)
        }
    }
}

/// [`dot_groups`] of F16 weights.
///
/// # Safety
/// As [`dot_groups`], with `at` its arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn dot_groups_f16(at: &At<'_>, outs: &mut [&mut [f32]]) {
    // SAFETY: this fn's contract.
    unsafe { dot_groups_k::<F16>(at, outs) }
}

/// [`dot_groups`] of BF16 weights with `vdpbf16ps`.
///
/// # Safety
/// As [`dot_groups`], with `at` its arguments; the CPU has AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn dot_groups_dp(at: &At<'_>, outs: &mut [&mut [f32]]) {
    // SAFETY: this fn's contract.
    unsafe { dot_groups_k::<BF16_DP>(at, outs) }
}

/// [`dot_groups`] of BF16 weights without `vdpbf16ps` (its rule emulated bit for bit).
///
/// # Safety
/// As [`dot_groups`], with `at` its arguments.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn dot_groups_emulated(at: &At<'_>, outs: &mut [&mut [f32]]) {
    // SAFETY: this fn's contract.
    unsafe { dot_groups_k::<BF16_EMULATED>(at, outs) }
}

/// Where a tile reads and writes: its weights from group `g` on, its activations from token
/// `t` on.
pub(super) struct At<'a> {
    pub w: &'a RepackedFloat,
    /// f32 activations, token-major (F16).
    pub x: &'a [f32],
    /// bf16 activations, padded rows (BF16).
    pub xb: &'a [bf16],
    /// The first group of `outs` (the call's `g0`).
    pub g0: usize,
    pub g: usize,
    pub t: usize,
}

/// [`dot_groups`] for kernel kind `K` (matching `w.bf16`), from `at.g0` (`at.g == at.g0`,
/// `at.t == 0`).
///
/// # Safety
/// As [`dot_groups`], and the CPU has the features of kind `K`.
#[inline(always)]
unsafe fn dot_groups_k<const K: u8>(at: &At<'_>, outs: &mut [&mut [f32]]) {
    let Some(len) = outs.first().map(|o| o.len()) else { return };
    let w = at.w;
    let groups = len.div_ceil(GROUP_ROWS);
    // Whole decode tiles (4 groups) per block.
    let per_block = (BLOCK_BYTES / (w.group_values() * 2).max(1) / 4).max(1) * 4;
    let mut b0 = 0;
    while b0 < groups {
        let b1 = (b0 + per_block).min(groups);
        let mut t = 0;
        while t < outs.len() {
            let left = outs.len() - t;
            let at = At { g: at.g0 + b0, t, ..*at };
            // SAFETY: this fn's contract, for tokens t..t+T ≤ outs.len() and groups b0..b1
            // of `outs`.
            let step = unsafe {
                match left {
                    12.. => pass::<K, 2, 12>(&at, b1 - b0, outs),
                    8.. => pass::<K, 3, 8>(&at, b1 - b0, outs),
                    4.. => pass::<K, 4, 4>(&at, b1 - b0, outs),
                    2.. => pass::<K, 4, 2>(&at, b1 - b0, outs),
                    _ => pass::<K, 4, 1>(&at, b1 - b0, outs),
                }
            };
            t += step;
        }
        b0 = b1;
    }
}

/// Tokens `at.t..at.t+T` against the `n` groups from `at.g`: tiles of `G` groups, then the
/// rest in one tile. Returns `T`.
///
/// # Safety
/// As [`dot_groups`]; tokens `at.t..at.t+T` exist in `outs` and `at.x`, groups
/// `at.g..at.g+n` are groups of `outs` (from `at.g0`); `G ≤ 4`.
#[inline(always)]
unsafe fn pass<const K: u8, const G: usize, const T: usize>(
    at: &At<'_>,
    n: usize,
    outs: &mut [&mut [f32]],
) -> usize {
    let mut i = 0;
    // SAFETY: this fn's contract, for groups at.g+i.. that exist.
    unsafe {
        while i + G <= n {
            let acc = tile::<K, G, T>(at, at.g + i);
            store(&acc, at.g + i - at.g0, at.t, outs);
            i += G;
        }
        // The rest (fewer than G groups, at most 3) in one tile: side by side chains.
        match n - i {
            0 => {}
            1 => store(&tile::<K, 1, T>(at, at.g + i), at.g + i - at.g0, at.t, outs),
            2 => store(&tile::<K, 2, T>(at, at.g + i), at.g + i - at.g0, at.t, outs),
            _ => store(&tile::<K, 3, T>(at, at.g + i), at.g + i - at.g0, at.t, outs),
        }
    }
    T
}

/// Lane i of `acc[k][t]` into row `16·(j + k) + i` of `outs[t0 + t]`, for the rows that
/// exist (the last group of a matrix may have fewer than 16).
///
/// # Safety
/// AVX-512 F; tokens `t0..t0+T` exist in `outs`, and group `j` (counted from the first of
/// `outs`) starts inside it.
#[inline(always)]
unsafe fn store<const G: usize, const T: usize>(
    acc: &[[__m512; T]; G],
    j: usize,
    t0: usize,
    outs: &mut [&mut [f32]],
) {
    for (k, row) in acc.iter().enumerate() {
        let from = (j + k) * GROUP_ROWS;
        for (t, v) in row.iter().enumerate() {
            let o = &mut *outs[t0 + t];
            let here = (o.len() - from).min(GROUP_ROWS);
            // SAFETY: `here` ≤ 16 floats from `from` are inside `o`; AVX-512 F per the
            // contract. The masked store writes lanes below `here` only.
            unsafe {
                let p = o.as_mut_ptr().add(from);
                if here == GROUP_ROWS {
                    _mm512_storeu_ps(p, *v);
                } else {
                    _mm512_mask_storeu_ps(p, ((1u32 << here) - 1) as __mmask16, *v);
                }
            }
        }
    }
}

/// Groups `g..g+G` against tokens `at.t..at.t+T`: lane i of `acc[k][t]` is row 16(g+k)+i ·
/// token at.t+t, each one chain over the columns in order (module docs).
///
/// # Safety
/// As [`pass`], for groups `g..g+G`.
#[inline(always)]
// Index loops over the tile's parallel arrays (weights, accumulators) read most clearly.
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const K: u8, const G: usize, const T: usize>(
    at: &At<'_>,
    g: usize,
) -> [[__m512; T]; G] {
    let cols = at.w.cols;
    let stride = at.w.group_values();
    let base = at.w.values().as_ptr();
    // SAFETY (whole body): group g+k < the matrix's groups holds `stride` values from
    // (g+k)·stride (module docs): column c < cols of F16 is 16 values at c·16, pair p <
    // ⌈cols/2⌉ of BF16 is 32 values at p·32. Token at.t+t < the tokens of the call has cols
    // f32 values from (at.t+t)·cols in `x` (F16), and 2·⌈cols/2⌉ bf16 values from
    // (at.t+t)·2·⌈cols/2⌉ in `xb` (BF16). The features are those of kind K, enabled by the
    // caller's `target_feature`. `__m512bh` is 32 bf16 in a 512-bit register: the same bits
    // as the integer vectors loaded or broadcast.
    unsafe {
        let high = _mm512_set1_epi32(0xFFFF_0000u32 as i32);
        let mut acc = [[_mm512_setzero_ps(); T]; G];
        let mut wp = [base; G];
        for k in 0..G {
            wp[k] = base.add((g + k) * stride);
        }
        if K == F16 {
            let xp = at.x.as_ptr().add(at.t * cols);
            for c in 0..cols {
                let mut wv = [_mm512_setzero_ps(); G];
                for k in 0..G {
                    let h = _mm256_loadu_si256(wp[k].add(c * GROUP_ROWS) as *const __m256i);
                    wv[k] = _mm512_cvtph_ps(h);
                }
                for t in 0..T {
                    let xv = _mm512_set1_ps(*xp.add(t * cols + c));
                    for k in 0..G {
                        acc[k][t] = _mm512_fmadd_ps(wv[k], xv, acc[k][t]);
                    }
                }
            }
            return acc;
        }
        let pairs = cols.div_ceil(2);
        let xp = at.xb.as_ptr().add(at.t * 2 * pairs) as *const i32;
        for p in 0..pairs {
            let mut wv = [_mm512_setzero_si512(); G];
            for k in 0..G {
                wv[k] = _mm512_loadu_si512(wp[k].add(p * 2 * GROUP_ROWS) as *const __m512i);
            }
            if K == BF16_DP {
                for t in 0..T {
                    let xv: __m512bh = core::mem::transmute(_mm512_set1_epi32(
                        xp.add(t * pairs + p).read_unaligned(),
                    ));
                    for k in 0..G {
                        let wk: __m512bh = core::mem::transmute(wv[k]);
                        acc[k][t] = _mm512_dpbf16_ps(acc[k][t], wk, xv);
                    }
                }
            } else {
                let (mut we, mut wo) = ([_mm512_setzero_ps(); G], [_mm512_setzero_ps(); G]);
                for k in 0..G {
                    we[k] = even(wv[k]);
                    wo[k] = odd(wv[k], high);
                }
                for t in 0..T {
                    let xv = _mm512_set1_epi32(xp.add(t * pairs + p).read_unaligned());
                    let (xe, xo) = (even(xv), odd(xv, high));
                    for k in 0..G {
                        let a = flush16(acc[k][t]);
                        let s = flush16(_mm512_add_ps(a, flush16(_mm512_mul_ps(wo[k], xo))));
                        acc[k][t] = flush16(_mm512_add_ps(s, flush16(_mm512_mul_ps(we[k], xe))));
                    }
                }
            }
        }
        acc
    }
}

/// The even bf16 of each dword (its low 16 bits) widened to f32, subnormals flushed as
/// `vdpbf16ps` does.
///
/// # Safety
/// AVX-512 F enabled by the caller.
#[inline(always)]
unsafe fn even(v: __m512i) -> __m512 {
    // SAFETY: register-only AVX-512 F operations.
    unsafe { flush16(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(v))) }
}

/// The odd bf16 of each dword (its high 16 bits; `high` is `0xFFFF0000` in every lane)
/// widened to f32, subnormals flushed.
///
/// # Safety
/// AVX-512 F enabled by the caller.
#[inline(always)]
unsafe fn odd(v: __m512i, high: __m512i) -> __m512 {
    // SAFETY: register-only AVX-512 F operations.
    unsafe { flush16(_mm512_castsi512_ps(_mm512_and_si512(v, high))) }
}
