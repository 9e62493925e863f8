//! The AVX-512 + VNNI kernel of the repacked matmul: 16 rows in the lanes of a register,
//! up to 4 tokens per decoded block (see the parent module for the layout and the order).

use core::arch::x86_64::*;

use super::{
    codebook, geometry, half_scales, has_min, high_at, high_bits, nibbles, offset, wide_scales,
    Acts, Repacked, IQ4_LEVELS,
};

/// [`super::dot_scalar`], bit for bit.
///
/// # Safety
/// The CPU supports AVX-512 F/BW/VL/DQ and VNNI; `g` is a group of `w`; every `outs[t]`
/// has the same length `≤ 16` (the group's rows that exist); `acts` holds at least
/// `outs.len()` tokens of `w.nb` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
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
    let mut t = 0;
    while t < outs.len() {
        let n = (outs.len() - t).min(4);
        // SAFETY: this fn's contract, for tokens t..t+n.
        unsafe {
            let v: [__m512; 4] = match n {
                4 => tile::<F, 4>(w, g, acts, t),
                3 => pad(tile::<F, 3>(w, g, acts, t)),
                2 => pad(tile::<F, 2>(w, g, acts, t)),
                _ => pad(tile::<F, 1>(w, g, acts, t)),
            };
            for i in 0..n {
                // The lanes of the rows that exist (`o.len() <= 16`).
                let o = &mut *outs[t + i];
                let mask = (1u32 << o.len()).wrapping_sub(1) as __mmask16;
                _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, v[i]);
            }
        }
        t += n;
    }
}

#[inline(always)]
fn pad<const T: usize>(v: [__m512; T]) -> [__m512; 4] {
    // SAFETY: all-zero bits are a valid __m512.
    let mut out = [unsafe { core::mem::zeroed::<__m512>() }; 4];
    out[..T].copy_from_slice(&v);
    out
}

/// Group `g` against tokens `t0..t0+T`: lane i of result t is row 16g+i · token t0+t.
///
/// # Safety
/// As [`dot_group`], for tokens `t0..t0+T`.
#[inline(always)]
// Index loops over the tile's parallel arrays (acc, tokens) read most clearly.
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const F: u8, const T: usize>(
    w: &Repacked,
    g: usize,
    acts: &Acts<'_>,
    t0: usize,
) -> [__m512; T] {
    let (gb, q0) = geometry(F);
    let nb = acts.nb;
    let group = w.group(g).as_ptr();
    // SAFETY (whole body): block b < nb of the group is `gb` bytes at `group + b*gb`, read
    // as 16 scales (f16, or f32 for the K-quants; then as many minimums where the format has
    // them) and 64-byte pieces of quants up to `gb`; token t0+t < tokens has blocks
    // (t0+t)*nb + b < blocks.len(), and sums (and, for a format with half scales, half sums)
    // of the same index; `IQ4_LEVELS` is 16 bytes; the features are this fn's caller's
    // `target_feature`.
    const { assert!(!half_scales(F) || nibbles(F), "half scales pair the two nibbles") };
    unsafe {
        let low4 = _mm512_set1_epi8(0x0F);
        // The IQ4 codebook's unsigned levels in each 128-bit lane: `vpshufb` maps codes.
        let levels = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_LEVELS.as_ptr() as *const __m128i));
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..nb {
            let blk = group.add(b * gb);
            // m: the minimums, or Q3_K's second scales.
            let (d, m) = if wide_scales(F) {
                (_mm512_loadu_ps(blk as *const f32), _mm512_loadu_ps(blk.add(64) as *const f32))
            } else {
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let m = if has_min(F) {
                    _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i))
                } else {
                    _mm512_setzero_ps()
                };
                (d, m)
            };
            // Operand p of the 8 `vpdpbusd` per token: lanes of weight bytes against the
            // activation dword `dword[p]` (values 4·dword..4·dword+4).
            let mut wq = [_mm512_setzero_si512(); 8];
            let dword: [usize; 8] =
                if nibbles(F) { [0, 4, 1, 5, 2, 6, 3, 7] } else { [0, 1, 2, 3, 4, 5, 6, 7] };
            if !nibbles(F) {
                for p in 0..8 {
                    wq[p] = _mm512_loadu_si512(blk.add(q0 + 64 * p) as *const __m512i);
                }
            } else {
                for j in 0..4 {
                    let q = _mm512_loadu_si512(blk.add(q0 + 64 * j) as *const __m512i);
                    wq[2 * j] = _mm512_and_si512(q, low4);
                    wq[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low4);
                }
                if high_bits(F) > 0 {
                    // Bits 4.. of each code from the high plane: operand o's at bit 4.
                    let plane = blk.add(q0 + 256);
                    let mask = _mm512_set1_epi8(if high_bits(F) == 1 { 0x10 } else { 0x30 });
                    let hp = [
                        _mm512_loadu_si512(plane as *const __m512i),
                        if high_bits(F) > 1 {
                            _mm512_loadu_si512(plane.add(64) as *const __m512i)
                        } else {
                            _mm512_setzero_si512()
                        },
                    ];
                    for (o, q) in wq.iter_mut().enumerate() {
                        let (piece, bit) = high_at(F, o);
                        // wq | (hp shifted & mask): vpternlogd's truth table 0xF8.
                        *q = _mm512_ternarylogic_epi32::<0xF8>(*q, to_bit4(hp[piece], bit), mask);
                    }
                }
                if codebook(F) {
                    for q in &mut wq {
                        *q = _mm512_shuffle_epi8(levels, *q);
                    }
                }
            }
            // One step per token, unrolled by hand so that `acc` stays in registers.
            let base = t0 * nb + b;
            acc[0] = token_block::<F>(&wq, &dword, d, m, acts, base, acc[0]);
            if T > 1 {
                acc[1] = token_block::<F>(&wq, &dword, d, m, acts, base + nb, acc[1]);
            }
            if T > 2 {
                acc[2] = token_block::<F>(&wq, &dword, d, m, acts, base + 2 * nb, acc[2]);
            }
            if T > 3 {
                acc[3] = token_block::<F>(&wq, &dword, d, m, acts, base + 3 * nb, acc[3]);
            }
        }
        acc
    }
}

/// `v` shifted (in 16-bit lanes) so that bit `bit` of each byte lands at bit 4; the bits
/// that cross into a neighbouring byte land outside bits 4..6, which the caller masks off.
///
/// # Safety
/// The CPU supports AVX-512 BW.
#[inline(always)]
unsafe fn to_bit4(v: __m512i, bit: usize) -> __m512i {
    // SAFETY: this fn's contract.
    unsafe {
        match bit {
            0 => _mm512_slli_epi16::<4>(v),
            1 => _mm512_slli_epi16::<3>(v),
            2 => _mm512_slli_epi16::<2>(v),
            3 => _mm512_slli_epi16::<1>(v),
            4 => v,
            5 => _mm512_srli_epi16::<1>(v),
            6 => _mm512_srli_epi16::<2>(v),
            _ => _mm512_srli_epi16::<3>(v),
        }
    }
}

/// One token's block `idx` against the group block's decoded weights `wq` (operand p
/// against activation dword `dword[p]`), its scales `d` and minimums (or second scales)
/// `m`: `acc` plus the block's terms, in the parent module's order.
///
/// # Safety
/// The features of [`dot_group`]; `idx` is a block of `acts` (and of its sums).
#[inline(always)]
unsafe fn token_block<const F: u8>(
    wq: &[__m512i; 8],
    dword: &[usize; 8],
    d: __m512,
    m: __m512,
    acts: &Acts<'_>,
    idx: usize,
    mut acc: __m512,
) -> __m512 {
    // SAFETY: this fn's contract: `idx` indexes blocks, sums, scales (and half sums where
    // the format has half scales); each block's 32 quants are 8 readable dwords.
    unsafe {
        let qs = (*acts.blocks.as_ptr().add(idx)).qs.as_ptr() as *const i32;
        let da = _mm512_set1_ps(*acts.scales.as_ptr().add(idx));
        // Four independent chains (integer sums: any order gives the same value), so one
        // token's block is not one chain of eight dependent `vpdpbusd`.
        let mut dp = [_mm512_setzero_si512(); 4];
        for p in 0..8 {
            let x = _mm512_set1_epi32(qs.add(dword[p]).read_unaligned());
            dp[p % 4] = _mm512_dpbusd_epi32(dp[p % 4], wq[p], x);
        }
        let sum = *acts.sums.as_ptr().add(idx);
        if half_scales(F) {
            // Nibbles: even operands are the low nibbles (values 0..16), odd the high ones
            // (values 16..32): chains 0 and 2 against 1 and 3.
            let half = *acts.half_sums.as_ptr().add(idx);
            let off = offset(F);
            let lo =
                _mm512_sub_epi32(_mm512_add_epi32(dp[0], dp[2]), _mm512_set1_epi32(off * half));
            let hi = _mm512_sub_epi32(
                _mm512_add_epi32(dp[1], dp[3]),
                _mm512_set1_epi32(off * (sum - half)),
            );
            acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(lo), acc);
            return _mm512_fmadd_ps(_mm512_mul_ps(m, da), _mm512_cvtepi32_ps(hi), acc);
        }
        let mut dp =
            _mm512_add_epi32(_mm512_add_epi32(dp[0], dp[1]), _mm512_add_epi32(dp[2], dp[3]));
        if offset(F) != 0 {
            dp = _mm512_sub_epi32(dp, _mm512_set1_epi32(offset(F) * sum));
        }
        acc = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(dp), acc);
        if has_min(F) {
            let fsum = _mm512_set1_ps(*acts.float_sums.as_ptr().add(idx));
            acc = _mm512_fmadd_ps(_mm512_mul_ps(m, da), fsum, acc);
        }
        acc
    }
}
