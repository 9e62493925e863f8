//! The AVX2 kernel of the repacked matmul: a group's 16 rows as two halves of 8 rows in the
//! lanes of a 256-bit register, up to 4 tokens per decoded block (see the parent module for
//! the layout and the order).
//!
//! AVX2 has no `vpdpbusd`; the exact integer dot of four weight bytes against four activation
//! bytes is `vpmaddubsw` (unsigned × signed bytes → pairs summed into i16) then `vpmaddwd`
//! by ones (pairs of i16 → i32). `vpmaddubsw` saturates a pair sum beyond ±32767, so:
//! - formats whose unsigned quants stay below 64 (every format but Q8_0 and the IQ4 ones:
//!   4-bit codes, 5-bit for Q5_*, 6-bit for Q6_K) multiply `u` directly and subtract
//!   `offset · Σa` afterwards, as the AVX-512 kernel does (a pair is at most 63 · 127 · 2 =
//!   16002);
//! - Q8_0 and the IQ4 formats (offset 128) multiply the signed quant `q = u − 128` in the
//!   sign form `|q| · sign(a, q)` (a pair is at most 128 · 127 · 2 = 32512), which is `q · a`.
//!
//! Either way the integer sums are the scalar specification's, so the float steps that
//! follow (the same `mul`, `cvt` and `fma` per cell and block) give its bits.

use core::arch::x86_64::*;

use super::{
    codebook, geometry, half_scales, has_min, high_at, high_bits, nibbles, offset, wide_scales,
    Acts, Repacked, IQ4_LEVELS,
};

/// Tokens per tile: each decoded half block serves this many tokens.
const TILE: usize = 4;

/// Whether format `f` multiplies signed quants in the sign form (its `u` reach 255).
const fn signed(f: u8) -> bool {
    offset(f) == 128
}

/// [`super::dot_scalar`], bit for bit.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `g` is a group of `w`; every `outs[t]` has the same
/// length `≤ 16` (the group's rows that exist); `acts` holds at least `outs.len()` tokens of
/// `w.nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_group(w: &Repacked, g: usize, acts: &Acts<'_>, outs: &mut [&mut [f32]]) {
    // SAFETY: this fn's contract.
    unsafe { for_format!(w.format, dot_group_f(w, g, acts, outs)) }
}

/// [`dot_group`] for format `F` (`w.format == F`).
///
/// # Safety
/// As [`dot_group`].
#[inline(always)]
unsafe fn dot_group_f<const F: u8>(
    w: &Repacked,
    g: usize,
    acts: &Acts<'_>,
    outs: &mut [&mut [f32]],
) {
    let rows = outs.first().map_or(0, |o| o.len());
    for half in 0..2 {
        let r0 = 8 * half;
        if r0 >= rows {
            break;
        }
        let n_rows = (rows - r0).min(8);
        let mut t = 0;
        while t < outs.len() {
            let n = (outs.len() - t).min(TILE);
            // SAFETY: this fn's contract, for tokens t..t+n and rows r0..r0+n_rows.
            unsafe {
                let v: [__m256; TILE] = match n {
                    4 => tile::<F, 4>(w, g, half, acts, t),
                    3 => pad(tile::<F, 3>(w, g, half, acts, t)),
                    2 => pad(tile::<F, 2>(w, g, half, acts, t)),
                    _ => pad(tile::<F, 1>(w, g, half, acts, t)),
                };
                for i in 0..n {
                    let mut lanes = [0.0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), v[i]);
                    outs[t + i][r0..r0 + n_rows].copy_from_slice(&lanes[..n_rows]);
                }
            }
            t += n;
        }
    }
}

#[inline(always)]
fn pad<const T: usize>(v: [__m256; T]) -> [__m256; TILE] {
    // SAFETY: all-zero bits are a valid __m256.
    let mut out = [unsafe { core::mem::zeroed::<__m256>() }; TILE];
    out[..T].copy_from_slice(&v);
    out
}

/// Rows `8·half .. 8·half + 8` of group `g` against tokens `t0..t0+T`: lane i of result t is
/// row 16g + 8·half + i · token t0 + t.
///
/// # Safety
/// As [`dot_group`], for tokens `t0..t0+T`; `half < 2`.
#[inline(always)]
unsafe fn tile<const F: u8, const T: usize>(
    w: &Repacked,
    g: usize,
    half: usize,
    acts: &Acts<'_>,
    t0: usize,
) -> [__m256; T] {
    let (gb, q0) = geometry(F);
    let nb = acts.nb;
    let group = w.group(g).as_ptr();
    // SAFETY (whole body): block b < nb of the group is `gb` bytes at `group + b*gb`: 16
    // scales (f16, or f32 for the K-quants) of which this half reads 8 at `8·half`, as many
    // minimums (or second scales) after them where the format has them, then 64-byte pieces
    // of codes up to `gb`, of which this half reads the 32 bytes at `32·half`; token t0+t <
    // tokens has blocks (t0+t)*nb + b, and sums, f32 sums, scales and half sums of the same
    // index; `IQ4_LEVELS` is 16 bytes; the features are this fn's caller's `target_feature`.
    const { assert!(!half_scales(F) || nibbles(F), "half scales pair the two nibbles") };
    unsafe {
        let low4 = _mm256_set1_epi8(0x0F);
        let flip = _mm256_set1_epi8(-128);
        let levels = _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4_LEVELS.as_ptr().cast()));
        let sb = if wide_scales(F) { 4 } else { 2 };
        let mut acc = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let blk = group.add(b * gb);
            let d = scale8::<F>(blk.add(8 * half * sb));
            let m = if has_min(F) || half_scales(F) {
                scale8::<F>(blk.add(16 * sb + 8 * half * sb))
            } else {
                _mm256_setzero_ps()
            };
            // Operand p: weight bytes of the half's 8 rows against activation dword
            // `dword[p]`; in the sign form, `wq` holds |q| and `ws` q (for the sign).
            let mut wq = [_mm256_setzero_si256(); 8];
            let dword: [usize; 8] =
                if nibbles(F) { [0, 4, 1, 5, 2, 6, 3, 7] } else { [0, 1, 2, 3, 4, 5, 6, 7] };
            if !nibbles(F) {
                for (p, q) in wq.iter_mut().enumerate() {
                    *q = _mm256_loadu_si256(blk.add(q0 + 64 * p + 32 * half).cast());
                }
            } else {
                for j in 0..4 {
                    let q = _mm256_loadu_si256(blk.add(q0 + 64 * j + 32 * half).cast());
                    wq[2 * j] = _mm256_and_si256(q, low4);
                    wq[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), low4);
                }
                if high_bits(F) > 0 {
                    // Bits 4.. of each code from the high plane: operand o's at bit 4.
                    let plane = blk.add(q0 + 256 + 32 * half);
                    let mask = _mm256_set1_epi8(if high_bits(F) == 1 { 0x10 } else { 0x30 });
                    let hp = [
                        _mm256_loadu_si256(plane.cast()),
                        if high_bits(F) > 1 {
                            _mm256_loadu_si256(plane.add(64).cast())
                        } else {
                            _mm256_setzero_si256()
                        },
                    ];
                    for (o, q) in wq.iter_mut().enumerate() {
                        let (piece, bit) = high_at(F, o);
                        let high = _mm256_and_si256(to_bit4(hp[piece], bit), mask);
                        *q = _mm256_or_si256(*q, high);
                    }
                }
                if codebook(F) {
                    for q in &mut wq {
                        *q = _mm256_shuffle_epi8(levels, *q);
                    }
                }
            }
            let mut ws = [_mm256_setzero_si256(); 8];
            if signed(F) {
                for p in 0..8 {
                    ws[p] = _mm256_xor_si256(wq[p], flip); // q = u − 128
                    wq[p] = _mm256_abs_epi8(ws[p]); // |q|, 128 read as unsigned
                }
            }
            let base = t0 * nb + b;
            acc[0] = token_block::<F>(&wq, &ws, &dword, d, m, acts, base, acc[0]);
            if T > 1 {
                acc[1] = token_block::<F>(&wq, &ws, &dword, d, m, acts, base + nb, acc[1]);
            }
            if T > 2 {
                acc[2] = token_block::<F>(&wq, &ws, &dword, d, m, acts, base + 2 * nb, acc[2]);
            }
            if T > 3 {
                acc[3] = token_block::<F>(&wq, &ws, &dword, d, m, acts, base + 3 * nb, acc[3]);
            }
        }
        acc
    }
}

/// Eight stored scales (or minimums) of format `F` at `at`, as f32.
///
/// # Safety
/// The features of [`dot_group`]; `at` points at 8 readable scales.
#[inline(always)]
unsafe fn scale8<const F: u8>(at: *const u8) -> __m256 {
    // SAFETY: this fn's contract.
    unsafe {
        if wide_scales(F) {
            _mm256_loadu_ps(at.cast())
        } else {
            _mm256_cvtph_ps(_mm_loadu_si128(at.cast()))
        }
    }
}

/// `v` shifted (in 16-bit lanes) so that bit `bit` of each byte lands at bit 4; the bits
/// that cross into a neighbouring byte land outside bits 4..6, which the caller masks off.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn to_bit4(v: __m256i, bit: usize) -> __m256i {
    // SAFETY: this fn's contract.
    unsafe {
        match bit {
            0 => _mm256_slli_epi16::<4>(v),
            1 => _mm256_slli_epi16::<3>(v),
            2 => _mm256_slli_epi16::<2>(v),
            3 => _mm256_slli_epi16::<1>(v),
            4 => v,
            5 => _mm256_srli_epi16::<1>(v),
            6 => _mm256_srli_epi16::<2>(v),
            _ => _mm256_srli_epi16::<3>(v),
        }
    }
}

/// One token's block `idx` against a half block's decoded weights: `acc` plus the block's
/// terms, in the parent module's order.
///
/// # Safety
/// The features of [`dot_group`]; `idx` is a block of `acts` (and of its sums).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn token_block<const F: u8>(
    wq: &[__m256i; 8],
    ws: &[__m256i; 8],
    dword: &[usize; 8],
    d: __m256,
    m: __m256,
    acts: &Acts<'_>,
    idx: usize,
    mut acc: __m256,
) -> __m256 {
    // SAFETY: this fn's contract: `idx` indexes blocks, sums, f32 sums, scales (and half
    // sums where the format has half scales); each block's 32 quants are 8 readable dwords.
    unsafe {
        let qs = (*acts.blocks.as_ptr().add(idx)).qs.as_ptr() as *const i32;
        let da = _mm256_set1_ps(*acts.scales.as_ptr().add(idx));
        let ones = _mm256_set1_epi16(1);
        // Per operand: i32 lanes of four products (exact), summed per half of the block.
        let mut part = [_mm256_setzero_si256(); 2];
        for p in 0..8 {
            let mut x = _mm256_set1_epi32(qs.add(dword[p]).read_unaligned());
            if signed(F) {
                x = _mm256_sign_epi8(x, ws[p]);
            }
            let pairs = _mm256_maddubs_epi16(wq[p], x);
            // Nibbles: even operands are values 0..16, odd 16..32; bytes: p < 4 is 0..16.
            let h = if nibbles(F) { p % 2 } else { p / 4 };
            part[h] = _mm256_add_epi32(part[h], _mm256_madd_epi16(pairs, ones));
        }
        let sum = *acts.sums.as_ptr().add(idx);
        if half_scales(F) {
            let half = *acts.half_sums.as_ptr().add(idx);
            let off = offset(F);
            let lo = _mm256_sub_epi32(part[0], _mm256_set1_epi32(off * half));
            let hi = _mm256_sub_epi32(part[1], _mm256_set1_epi32(off * (sum - half)));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(lo), acc);
            return _mm256_fmadd_ps(_mm256_mul_ps(m, da), _mm256_cvtepi32_ps(hi), acc);
        }
        let mut dp = _mm256_add_epi32(part[0], part[1]);
        if offset(F) != 0 && !signed(F) {
            dp = _mm256_sub_epi32(dp, _mm256_set1_epi32(offset(F) * sum));
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(dp), acc);
        if has_min(F) {
            let fsum = _mm256_set1_ps(*acts.float_sums.as_ptr().add(idx));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(m, da), fsum, acc);
        }
        acc
    }
}
