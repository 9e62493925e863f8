//! The AVX-512 kernel of the F16/BF16 repacked matmul: 16 rows in the lanes of a register,
//! tiles of `G` groups × `T` tokens of accumulators sharing each widened weight vector and
//! each broadcast activation (see the parent module for the layout and the order).

use core::arch::x86_64::*;

use super::{RepackedFloat, GROUP_ROWS};

/// Bytes of weights a block of groups may span: the block stays in L2 while every token
/// tile passes over it.
const BLOCK_BYTES: usize = 256 * 1024;

/// [`super::dot_scalar`], bit for bit.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL and F16C/FMA; every `outs[t]` has the same length,
/// at most the rows of `w` from group `g0` on; `x` holds at least `outs.len()` tokens of
/// `w.cols` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn dot_groups(w: &RepackedFloat, g0: usize, x: &[f32], outs: &mut [&mut [f32]]) {
    // SAFETY: this fn's contract.
    unsafe {
        if w.bf16 {
            dot_groups_f::<true>(w, g0, x, outs)
        } else {
            dot_groups_f::<false>(w, g0, x, outs)
        }
    }
}

/// Where a tile reads and writes: its weights from group `g` on, its activations from token
/// `t` on.
struct At<'a> {
    w: &'a RepackedFloat,
    x: &'a [f32],
    /// The first group of `outs` (the call's `g0`).
    g0: usize,
    g: usize,
    t: usize,
}

/// [`dot_groups`] for one format (`BF == w.bf16`).
///
/// # Safety
/// As [`dot_groups`].
#[inline(always)]
unsafe fn dot_groups_f<const BF: bool>(
    w: &RepackedFloat,
    g0: usize,
    x: &[f32],
    outs: &mut [&mut [f32]],
) {
    let Some(len) = outs.first().map(|o| o.len()) else { return };
    let groups = len.div_ceil(GROUP_ROWS);
    let per_block = (BLOCK_BYTES / (w.cols * GROUP_ROWS * 2).max(1)).max(1);
    let mut b0 = 0;
    while b0 < groups {
        let b1 = (b0 + per_block).min(groups);
        let mut t = 0;
        while t < outs.len() {
            let left = outs.len() - t;
            let at = At { w, x, g0, g: g0 + b0, t };
            // SAFETY: this fn's contract, for tokens t..t+T ≤ outs.len() and groups b0..b1
            // of `outs`.
            let step = unsafe {
                match left {
                    12.. => pass::<BF, 2, 12>(&at, b1 - b0, outs),
                    8.. => pass::<BF, 3, 8>(&at, b1 - b0, outs),
                    4.. => pass::<BF, 4, 4>(&at, b1 - b0, outs),
                    2.. => pass::<BF, 4, 2>(&at, b1 - b0, outs),
                    _ => pass::<BF, 4, 1>(&at, b1 - b0, outs),
                }
            };
            t += step;
        }
        b0 = b1;
    }
}

/// Tokens `at.t..at.t+T` against the `n` groups from `at.g`: tiles of `G` groups, then the
/// rest one group at a time. Returns `T`.
///
/// # Safety
/// As [`dot_groups`]; tokens `at.t..at.t+T` exist in `outs` and `at.x`, groups
/// `at.g..at.g+n` are groups of `outs` (from `at.g0`).
#[inline(always)]
unsafe fn pass<const BF: bool, const G: usize, const T: usize>(
    at: &At<'_>,
    n: usize,
    outs: &mut [&mut [f32]],
) -> usize {
    let mut i = 0;
    // SAFETY: this fn's contract, for groups at.g+i.. that exist.
    unsafe {
        while i + G <= n {
            let acc = tile::<BF, G, T>(at, at.g + i);
            store(&acc, at.g + i - at.g0, at.t, outs);
            i += G;
        }
        while i < n {
            let acc = tile::<BF, 1, T>(at, at.g + i);
            store(&acc, at.g + i - at.g0, at.t, outs);
            i += 1;
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

/// Column `c` of group `g` (16 values) widened exactly to f32.
///
/// # Safety
/// AVX-512 F/BW and F16C; `p` points at 16 readable 2-byte values.
#[inline(always)]
unsafe fn widen<const BF: bool>(p: *const u16) -> __m512 {
    // SAFETY: a 32-byte read at `p`, per the contract; register operations of the enabled
    // features.
    unsafe {
        let h = _mm256_loadu_si256(p as *const __m256i);
        if BF {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    }
}

/// Groups `g..g+G` against tokens `at.t..at.t+T`: lane i of `acc[k][t]` is row 16(g+k)+i ·
/// token at.t+t, each one fma chain over the columns in order.
///
/// # Safety
/// As [`pass`], for groups `g..g+G`.
#[inline(always)]
// Index loops over the tile's parallel arrays (weights, accumulators) read most clearly.
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const BF: bool, const G: usize, const T: usize>(
    at: &At<'_>,
    g: usize,
) -> [[__m512; T]; G] {
    let cols = at.w.cols;
    let base = at.w.values().as_ptr();
    let x = at.x.as_ptr();
    // SAFETY (whole body): group g+k < the matrix's groups holds cols × 16 values from
    // (g+k)·cols·16 (module docs), so column c < cols of it is 16 values in bounds; token
    // at.t+t < the tokens of `x` has `cols` values from (at.t+t)·cols; the features are the
    // caller's `target_feature`.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); T]; G];
        let mut wp = [base; G];
        for k in 0..G {
            wp[k] = base.add((g + k) * cols * GROUP_ROWS);
        }
        let xp = x.add(at.t * cols);
        for c in 0..cols {
            let mut wv = [_mm512_setzero_ps(); G];
            for k in 0..G {
                wv[k] = widen::<BF>(wp[k].add(c * GROUP_ROWS));
            }
            for t in 0..T {
                let xv = _mm512_set1_ps(*xp.add(t * cols + c));
                for k in 0..G {
                    acc[k][t] = _mm512_fmadd_ps(wv[k], xv, acc[k][t]);
                }
            }
        }
        acc
    }
}
