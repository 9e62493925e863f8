//! AVX-512 (F/BW/VL/DQ) + VNNI kernels: activation quantization and the integer matmul.
//!
//! Every function here is `unsafe` because of `#[target_feature]`; callers are the safe
//! dispatchers in this module's parent, which only call them for [`SimdLevel::Avx512`]
//! (a [`Kernels`](super::Kernels) at that level exists only after run-time detection).
//!
//! The matmul reads one group of 16 blocks' headers per few word permutes and up to four
//! tokens per decoded weight register. Q4 weights go one block per `vpdpbusd` in 256-bit
//! registers; Q8_0 weights two blocks per 512-bit `vpdpbusd` (each measured the faster):
//!
//! ```text
//! Q4:   ymm u = | lo nibbles b | hi nibbles b |     ymm y = | qs b (32 × i8) |
//!       vpdpbusd(-c·y lane sums, u, y) -> 8 exact i32 lane sums -> f32
//!       acc (ymm, 8 lanes) = fma(lanes, dx·dy of b, acc)
//! Q8_0: zmm u = | x+128 of b | x+128 of b+1 |       zmm y = | qs b | qs b+1 |
//!       -> 16 lane sums; acc = fma(lanes of b, …); acc = fma(lanes of b+1, …)
//! ```
//!
//! The float operations and their order are [`super::scalar::dot_q4_1`]'s (llama.cpp's),
//! so this level's results equal the scalar level's bit for bit.

use core::arch::x86_64::*;

use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

use pagoda_core::ggml_type::GgmlType;

use super::activations::{Acts, Inputs};
use super::scalar::scales;
use super::table::{f32_rows, row, soa_row, Activation, WeightKernels};
use super::SimdLevel;

/// Weight format selector for the generic kernel.
pub(crate) const Q4_0: u8 = 0;
/// Weight format selector for the generic kernel.
pub(crate) const Q4_1: u8 = 1;
/// Weight format selector for the generic kernel.
pub(crate) const Q8_0: u8 = 2;
/// Weight format selector for the generic kernel.
pub(crate) const Q5_0: u8 = 3;
/// Weight format selector for the generic kernel.
pub(crate) const Q5_1: u8 = 4;
/// Weight format selector for the generic kernel.
pub(crate) const IQ4_NL: u8 = 5;

/// IQ4_NL's codebook shifted to unsigned bytes (`level + 128`), for `vpshufb`.
pub(crate) const IQ4NL_U8: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (pagoda_core::quant::IQ4NL_VALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// Whether format `F` has a per-block minimum `m` (and so the `Σ m·s` term).
const fn has_min(f: u8) -> bool {
    f == Q4_1 || f == Q5_1
}

/// Whether format `F` has a fifth bit per quant (`qh`, the 4 bytes after the header).
const fn has_qh(f: u8) -> bool {
    f == Q5_0 || f == Q5_1
}

/// Quantize one 32-value block: returns `(d, sum(qs))` and writes the quants.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/DQ; `x` must be valid for 32 reads and `qs` for
/// 32 writes.
#[inline(always)]
unsafe fn quantize_block(x: *const f32, qs: *mut i8) -> (f32, i32) {
    // SAFETY: the caller guarantees 32 readable floats at `x`, 32 writable bytes at `qs`
    // and the AVX-512 features (this function inlines into a `target_feature` function).
    unsafe {
        let v0 = _mm512_loadu_ps(x);
        let v1 = _mm512_loadu_ps(x.add(16));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let (d, id) = scales(amax);
        let m = _mm512_set1_ps(id);
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let r0 = _mm512_roundscale_ps::<NEAREST>(_mm512_mul_ps(v0, m));
        let r1 = _mm512_roundscale_ps::<NEAREST>(_mm512_mul_ps(v1, m));
        let i0 = _mm512_cvtps_epi32(r0);
        let i1 = _mm512_cvtps_epi32(r1);
        _mm_storeu_si128(qs as *mut __m128i, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128(qs.add(16) as *mut __m128i, _mm512_cvtsepi32_epi8(i1));
        (d, _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)))
    }
}

/// `x` to Q8_0 blocks; `x.len() == 32 * out.len()`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `xs` has 32 floats and `b.qs` 32 bytes; features per this fn's contract.
        let (d, _) = unsafe { quantize_block(xs.as_ptr(), b.qs.as_mut_ptr()) };
        b.d = half::f16::from_f32(d);
    }
}

/// `x` to Q8_1 blocks; `x.len() == 32 * out.len()`.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/DQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
pub(crate) unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        // SAFETY: `xs` has 32 floats and `b.qs` 32 bytes; features per this fn's contract.
        let (d, sum) = unsafe { quantize_block(xs.as_ptr(), b.qs.as_mut_ptr()) };
        b.d = half::f16::from_f32(d);
        b.s = half::f16::from_f32(d * sum as f32);
    }
}

/// `(bytes per block, offset of the quants in a block)` of a weight format.
const fn geometry(f: u8) -> (usize, usize) {
    match f {
        Q4_0 => (18, 2),
        Q4_1 => (20, 4),
        Q5_0 => (22, 6),
        Q5_1 => (24, 8),
        IQ4_NL => (18, 2),
        _ => (34, 2),
    }
}

/// Dot products of the weight rows in `w` (`row_bytes` each, format `F`) with every
/// token of `acts`: `outs[t][r] = row r · token t`.
///
/// Each (row, token) dot is one serial chain of fused multiply-adds (the float order is
/// fixed), so the kernel keeps several chains in flight: tiles of 4 rows × 1 token for
/// decode, 4 rows × up to 4 tokens otherwise (the weight decode is shared by the tokens).
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/DQ and VNNI. `row_bytes == acts.nb * geometry(F).0`,
/// `w.len()` a multiple of `row_bytes`, every `outs[t].len() == w.len() / row_bytes`, and
/// `acts` holds at least `outs.len()` tokens (`qs.len() >= n·nb·32`, `d`/`k` `>= n·nb`).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
// Index loops: each step fills column `r` of several tile rows.
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn matmul_chunk<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &Acts<'_>,
    outs: &mut [&mut [f32]],
) {
    let rows = w.len().checked_div(row_bytes).unwrap_or(0);
    let row = |r: usize| {
        // SAFETY: callers pass r < rows, so the row lies within `w`.
        unsafe { w.as_ptr().add(r * row_bytes) }
    };
    if outs.len() == 1 {
        let out = &mut *outs[0];
        let mut r = 0;
        while r + 4 <= rows {
            // SAFETY: rows r..r+4 exist and token 0 exists in `acts` (this fn's contract).
            let v = unsafe {
                tile_dot::<F, 4, 1>([row(r), row(r + 1), row(r + 2), row(r + 3)], acts, 0)
            };
            for i in 0..4 {
                out[r + i] = v[i][0];
            }
            r += 4;
        }
        while r < rows {
            // SAFETY: as above.
            out[r] = unsafe { tile_dot::<F, 1, 1>([row(r)], acts, 0) }[0][0];
            r += 1;
        }
        return;
    }
    // Tiles of ROWS rows × up to 4 tokens, written out per token as ROWS contiguous
    // floats: with many tokens, writing each dot straight to `outs[t][r]` would touch
    // one cache line per (row, token) of an output that may not fit in cache.
    const ROWS: usize = 64;
    let mut tile = [[0.0f32; ROWS]; 4];
    let mut r0 = 0;
    while r0 < rows {
        let rn = (rows - r0).min(ROWS);
        let mut t = 0;
        while t < outs.len() {
            let tn = (outs.len() - t).min(4);
            let mut r = 0;
            while r < rn {
                let four = r + 4 <= rn;
                // SAFETY: rows r0+r.. (4 of them when `four`) lie within `w` and tokens
                // t..t+tn exist in `acts` (this fn's contract); the callee's other
                // requirements are this fn's.
                unsafe {
                    macro_rules! tile {
                        ($tn:literal) => {
                            if four {
                                let rp = [
                                    row(r0 + r),
                                    row(r0 + r + 1),
                                    row(r0 + r + 2),
                                    row(r0 + r + 3),
                                ];
                                let v = tile_dot::<F, 4, $tn>(rp, acts, t);
                                for j in 0..4 {
                                    for i in 0..$tn {
                                        tile[i][r + j] = v[j][i];
                                    }
                                }
                            } else {
                                let v = tile_dot::<F, 1, $tn>([row(r0 + r)], acts, t);
                                for i in 0..$tn {
                                    tile[i][r] = v[0][i];
                                }
                            }
                        };
                    }
                    match tn {
                        4 => tile!(4),
                        3 => tile!(3),
                        2 => tile!(2),
                        _ => tile!(1),
                    }
                }
                r += if four { 4 } else { 1 };
            }
            for i in 0..tn {
                outs[t + i][r0..r0 + rn].copy_from_slice(&tile[i][..rn]);
            }
            t += tn;
        }
        r0 += rn;
    }
}

/// The 64 bytes at `p`, or only the first `len` of them (the rest zero) when `len < 64`.
///
/// # Safety
/// `min(len, 64)` bytes at `p` must be readable; AVX-512 BW enabled by the caller.
#[inline(always)]
unsafe fn load_upto(p: *const u8, len: usize) -> __m512i {
    // SAFETY: masked-off bytes are not accessed (AVX-512 masked loads suppress faults);
    // the rest is readable per the contract.
    unsafe {
        if len >= 64 {
            _mm512_loadu_si512(p as *const __m512i)
        } else {
            _mm512_maskz_loadu_epi8((1u64 << len) - 1, p as *const i8)
        }
    }
}

/// Word-permute tables that gather block headers out of 128-byte pieces of a group:
/// for piece `p`, `(index vector, lanes taken from this piece)`. Lane `l < 16` takes
/// the word holding block `l`'s `d`, lane `16 + l` the word after it (Q4_1's `m`).
#[inline(always)]
unsafe fn header_permute<const F: u8>(p: usize) -> (__m512i, __mmask32) {
    const fn table(stride: usize) -> [([u16; 32], u32); 5] {
        let mut t = [([0u16; 32], 0u32); 5];
        let mut lane = 0;
        while lane < 32 {
            let word = (lane % 16) * stride / 2 + lane / 16;
            let piece = word / 64;
            if piece < 5 {
                t[piece].0[lane] = (word % 64) as u16;
                t[piece].1 |= 1 << lane;
            }
            lane += 1;
        }
        t
    }
    static Q4_0_T: [([u16; 32], u32); 5] = table(geometry(Q4_0).0);
    static Q4_1_T: [([u16; 32], u32); 5] = table(geometry(Q4_1).0);
    static Q8_0_T: [([u16; 32], u32); 5] = table(geometry(Q8_0).0);
    static Q5_0_T: [([u16; 32], u32); 5] = table(geometry(Q5_0).0);
    static Q5_1_T: [([u16; 32], u32); 5] = table(geometry(Q5_1).0);
    let t = match F {
        Q4_0 | IQ4_NL => &Q4_0_T[p],
        Q4_1 => &Q4_1_T[p],
        Q5_0 => &Q5_0_T[p],
        Q5_1 => &Q5_1_T[p],
        _ => &Q8_0_T[p],
    };
    // SAFETY: a 64-byte read of a `[u16; 32]`; AVX-512 F enabled by the caller.
    unsafe { (_mm512_loadu_si512(t.0.as_ptr() as *const __m512i), t.1) }
}

/// Weight rows `rows` against tokens `t0..t0+T`: `out[r][t]`, each in the float order of
/// [`super::scalar::dot_q4_1`] (8 lanes, block after block, `hsum8`, then `Σ m·s`).
///
/// # Safety
/// As [`matmul_chunk`]; every `rows[r]` points at a whole row of `acts.nb` blocks.
#[inline(always)]
// Index loops over the tile's parallel arrays read most clearly.
#[allow(clippy::needless_range_loop)]
unsafe fn tile_dot<const F: u8, const R: usize, const T: usize>(
    rows: [*const u8; R],
    acts: &Acts<'_>,
    t0: usize,
) -> [[f32; T]; R] {
    let (stride, qoff) = geometry(F);
    let nb = acts.nb;
    // SAFETY (whole body): every weight access stays inside its row (block b < nb is
    // `stride` bytes at `row + b*stride`; header loads are masked to the group's
    // n*stride bytes, the quant loads read bytes qoff..stride), every activation access
    // stays inside token t's nb blocks (the second block of a pair is loaded only when it
    // exists, else masked off), stack arrays are indexed below their sizes, and the
    // features are enabled by the caller's `target_feature`.
    unsafe {
        let nibble_shift = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
        let low4 = _mm512_set1_epi8(0x0F);
        let eight = _mm512_set1_epi8(8);
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        let zero = _mm512_setzero_si512();

        let mut acc = [[_mm256_setzero_ps(); T]; R];
        // IQ4_NL (llama.cpp's pairs of blocks): odd blocks go to `acc2`, and an odd last
        // block is kept as an exact integer sum `tail_i` with its scale `tail_d`, added
        // after the horizontal sum.
        let mut acc2 = [[_mm256_setzero_ps(); T]; R];
        let (mut tail_i, mut tail_d) = ([[0i32; T]; R], [[0.0f32; T]; R]);
        // Q4_1's Σ m·s: one lane per (row, token) cell, lane t·R + r (R·T ≤ 16). Each
        // product of two f16 values is exact in f32, so fma(m, s, acc) rounds exactly as
        // the scalar chain's `acc + m·s` does. The chain is serial in block order, so it
        // runs inside the block loop, where the pair work hides its latency.
        debug_assert!(R * T <= 16 && (R == 1 || R == 4));
        debug_assert!(T == 1 || t0 % 4 == 0);
        let mut summs = _mm512_setzero_ps();
        // Token quad → lanes t·4 + r (R == 4, T > 1): each token's s repeated per row.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        // Per-block m of the tile's rows: R == 4: `mt[i % 4][4·(i / 4)..]` holds block i's
        // m of rows 0..4 (a 4×16 transpose); R == 1: `mt[0][i]`.
        let mut mt = [[0.0f32; 16]; 4];
        // dx·dy of the group's 16 blocks per (row, token), for scalar broadcasts.
        let mut dd = [[[0.0f32; 16]; T]; R];
        let mut g = 0;
        while g < nb {
            let n = (nb - g).min(16);
            let m16: __mmask16 = if n == 16 { 0xFFFF } else { ((1u32 << n) - 1) as u16 };
            let mut dy = [_mm512_setzero_ps(); T];
            for t in 0..T {
                dy[t] = _mm512_maskz_loadu_ps(m16, acts.d.as_ptr().add((t0 + t) * nb + g));
            }
            let mut mv = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let base = rows[r].add(g * stride);
                // Headers of the group's blocks, picked out of the group's bytes (loaded
                // 128 at a time) with word permutes: f16 d of block i -> word i, Q4_1's m
                // of block i -> word 16 + i. (Cheaper on Zen 4 than a 16-lane gather.)
                let span = n * stride;
                let mut hdr = _mm512_setzero_si512();
                for p in 0..span.div_ceil(128) {
                    let a = load_upto(base.add(128 * p), span - 128 * p);
                    let b = load_upto(base.add(128 * p + 64), span.saturating_sub(128 * p + 64));
                    let (idx, mask) = header_permute::<F>(p);
                    hdr = _mm512_mask_blend_epi16(mask, hdr, _mm512_permutex2var_epi16(a, idx, b));
                }
                let dx = _mm512_cvtph_ps(_mm512_castsi512_si256(hdr));
                for t in 0..T {
                    _mm512_storeu_ps(dd[r][t].as_mut_ptr(), _mm512_mul_ps(dx, dy[t]));
                }
                if has_min(F) {
                    mv[r] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(hdr));
                }
            }
            if has_min(F) {
                if R == 4 {
                    // Quarter q of mt[i % 4] = block 4q + i % 4 of rows 0..4.
                    let m4 = [mv[0], mv[1.min(R - 1)], mv[2.min(R - 1)], mv[3.min(R - 1)]];
                    let a = _mm512_unpacklo_ps(m4[0], m4[1]);
                    let b = _mm512_unpackhi_ps(m4[0], m4[1]);
                    let c = _mm512_unpacklo_ps(m4[2], m4[3]);
                    let d = _mm512_unpackhi_ps(m4[2], m4[3]);
                    let (a, b, c, d) = (
                        _mm512_castps_pd(a),
                        _mm512_castps_pd(b),
                        _mm512_castps_pd(c),
                        _mm512_castps_pd(d),
                    );
                    _mm512_storeu_ps(
                        mt[0].as_mut_ptr(),
                        _mm512_castpd_ps(_mm512_unpacklo_pd(a, c)),
                    );
                    _mm512_storeu_ps(
                        mt[1].as_mut_ptr(),
                        _mm512_castpd_ps(_mm512_unpackhi_pd(a, c)),
                    );
                    _mm512_storeu_ps(
                        mt[2].as_mut_ptr(),
                        _mm512_castpd_ps(_mm512_unpacklo_pd(b, d)),
                    );
                    _mm512_storeu_ps(
                        mt[3].as_mut_ptr(),
                        _mm512_castpd_ps(_mm512_unpackhi_pd(b, d)),
                    );
                } else {
                    _mm512_storeu_ps(mt[0].as_mut_ptr(), mv[0]);
                }
            }
            // summs += m·s of block g + i, all cells at once.
            let add_ms = |summs: __m512, i: usize| -> __m512 {
                let m = if R == 4 {
                    _mm512_broadcast_f32x4(_mm_loadu_ps(mt[i % 4].as_ptr().add(4 * (i / 4))))
                } else {
                    _mm512_set1_ps(mt[0][i])
                };
                let s = if T == 1 {
                    _mm512_set1_ps(*acts.k.as_ptr().add(t0 * nb + g + i))
                } else {
                    let q = _mm_loadu_ps(acts.kq.as_ptr().add(((t0 / 4) * nb + g + i) * 4));
                    if R == 4 {
                        _mm512_permutexvar_ps(spread, _mm512_broadcast_f32x4(q))
                    } else {
                        _mm512_castps128_ps512(q)
                    }
                };
                _mm512_fmadd_ps(m, s, summs)
            };
            if F != Q8_0 {
                // Q4 formats: one block at a time in 256-bit registers. Per (row, token) cell
                // and block that is one vpdpbusd, one conversion and one fma, and no lane
                // extraction (22% faster than pairs of blocks in 512-bit registers at 4 and 16
                // tokens). Q8_0 keeps the pairs: its weight needs no decoding, and pairs
                // measured a little faster for it.
                let nibble_shift = _mm512_castsi512_si256(nibble_shift);
                let low4 = _mm512_castsi512_si256(low4);
                let eight = _mm512_castsi512_si256(eight);
                let sixteen = _mm256_set1_epi8(16);
                let fifth = _mm256_set1_epi8(0x10);
                let flip = _mm512_castsi512_si256(flip);
                let kv = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                    IQ4NL_U8.as_ptr() as *const __m128i
                ));
                let zero = _mm256_setzero_si256();
                for b in 0..n {
                    if has_min(F) {
                        summs = add_ms(summs, b);
                    }
                    let mut u = [zero; R];
                    for r in 0..R {
                        let blk = rows[r].add((g + b) * stride);
                        let z = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                            blk.add(qoff) as *const __m128i
                        ));
                        u[r] = _mm256_and_si256(_mm256_srlv_epi64(z, nibble_shift), low4);
                        if has_qh(F) {
                            // Fifth bits: bit e of qh → 0x10 in byte e (element e).
                            let qh = (blk.add(qoff - 4) as *const u32).read_unaligned();
                            u[r] = _mm256_or_si256(u[r], _mm256_maskz_mov_epi8(qh, fifth));
                        }
                        if F == IQ4_NL {
                            // Codebook levels as unsigned bytes `level + 128`.
                            u[r] = _mm256_shuffle_epi8(kv, u[r]);
                        }
                    }
                    for t in 0..T {
                        let yp = acts.qs.as_ptr().add(((t0 + t) * nb + g + b) * QK);
                        let y = _mm256_loadu_si256(yp as *const __m256i);
                        // Q4_0 used as unsigned `u = (nibble - 8) + 8`: the -8·y lane sums
                        // start the accumulation (as Q8_0's -128·y below).
                        // Q5_0 likewise with `u = (q5 - 16) + 16`.
                        let init = if F == Q4_0 {
                            _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, eight, y))
                        } else if F == Q5_0 {
                            _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, sixteen, y))
                        } else if F == IQ4_NL {
                            _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, flip, y))
                        } else {
                            zero
                        };
                        let gb = g + b;
                        for r in 0..R {
                            let s = _mm256_dpbusd_epi32(init, u[r], y);
                            if F == IQ4_NL && nb % 2 == 1 && gb == nb - 1 {
                                tail_i[r][t] = hsum_i32(s);
                                tail_d[r][t] = dd[r][t][b];
                                continue;
                            }
                            let f = _mm256_cvtepi32_ps(s);
                            let a = if F == IQ4_NL && gb % 2 == 1 {
                                &mut acc2[r][t]
                            } else {
                                &mut acc[r][t]
                            };
                            *a = _mm256_fmadd_ps(f, _mm256_set1_ps(dd[r][t][b]), *a);
                        }
                    }
                }
            } else {
                let mut b = 0;
                while b < n {
                    let two = b + 1 < n;
                    // `u`: each row's pair of weight blocks as unsigned bytes x + 128.
                    let mut u = [zero; R];
                    for r in 0..R {
                        let blk = rows[r].add((g + b) * stride);
                        let lo = _mm512_castsi256_si512(_mm256_loadu_si256(
                            blk.add(qoff) as *const __m256i
                        ));
                        let x = if two {
                            _mm512_inserti64x4::<1>(
                                lo,
                                _mm256_loadu_si256(blk.add(stride + qoff) as *const __m256i),
                            )
                        } else {
                            lo
                        };
                        u[r] = _mm512_xor_si512(x, flip);
                    }
                    let ymask: __mmask64 = if two { !0 } else { 0xFFFF_FFFF };
                    for t in 0..T {
                        let yp = acts.qs.as_ptr().add(((t0 + t) * nb + g + b) * QK);
                        let y = if two {
                            _mm512_loadu_si512(yp as *const __m512i)
                        } else {
                            _mm512_maskz_loadu_epi8(ymask, yp)
                        };
                        // Weights used as unsigned `u = x + 128`: x·y = u·y - 128·y, and
                        // -128·y's lane sums (shared by the rows) start the accumulation, so
                        // each lane sum is exact.
                        let init = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, flip, y));
                        for r in 0..R {
                            // Exact lane sums: lane j (of each block) = Σ of quants 4j..4j+4.
                            let s = _mm512_dpbusd_epi32(init, u[r], y);
                            let f = _mm512_cvtepi32_ps(s);
                            let d = &dd[r][t];
                            acc[r][t] = _mm256_fmadd_ps(
                                _mm512_castps512_ps256(f),
                                _mm256_set1_ps(d[b]),
                                acc[r][t],
                            );
                            if two {
                                acc[r][t] = _mm256_fmadd_ps(
                                    _mm512_extractf32x8_ps::<1>(f),
                                    _mm256_set1_ps(d[b + 1]),
                                    acc[r][t],
                                );
                            }
                        }
                    }
                    b += 2;
                }
            }
            g += 16;
        }
        let mut sm = [0.0f32; 16];
        _mm512_storeu_ps(sm.as_mut_ptr(), summs);
        let mut out = [[0.0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = if F == IQ4_NL {
                    let s = hsum8(_mm256_add_ps(acc[r][t], acc2[r][t]));
                    if nb % 2 == 1 {
                        tail_d[r][t].mul_add(tail_i[r][t] as f32, s)
                    } else {
                        s
                    }
                } else {
                    hsum8(acc[r][t]) + sm[t * R + r]
                };
            }
        }
        out
    }
}

/// The sum of eight i32 lanes (exact: the lanes are small).
#[inline(always)]
unsafe fn hsum_i32(a: __m256i) -> i32 {
    // SAFETY: register-only AVX2 operations; features per the calling function.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// llama.cpp's `hsum_float_8`: `((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7))`.
#[inline(always)]
unsafe fn hsum8(a: __m256) -> f32 {
    // SAFETY: register-only AVX operations; features per the calling function.
    unsafe {
        let s = _mm_add_ps(_mm256_extractf128_ps::<1>(a), _mm256_castps256_ps128(a));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// This level's rows of the weight-format table (formats not listed run the scalar row).
pub(crate) static TABLE: [WeightKernels; 9] = [
    row(GgmlType::F32, Activation::F32, 4, f32_chunk),
    row(GgmlType::F16, Activation::F16, 2, super::half_x86::f16_chunk_avx512)
        .with_tinyblas(super::tinyblas::f16_chunk_avx512, super::tinyblas::F16_STEP),
    row(GgmlType::BF16, Activation::Bf16, 2, super::half_x86::bf16_chunk_avx512)
        .with_tinyblas(super::tinyblas::bf16_chunk_avx512, super::tinyblas::BF16_STEP),
    soa_row(GgmlType::Q4_0, Activation::Q8_0, soa_chunk::<{ Q4_0 }>),
    soa_row(GgmlType::Q4_1, Activation::Q8_1, soa_chunk::<{ Q4_1 }>),
    soa_row(GgmlType::Q5_0, Activation::Q8_0, soa_chunk::<{ Q5_0 }>),
    soa_row(GgmlType::Q5_1, Activation::Q8_1, soa_chunk::<{ Q5_1 }>),
    soa_row(GgmlType::Q8_0, Activation::Q8_0, soa_chunk::<{ Q8_0 }>),
    soa_row(GgmlType::IQ4_NL, Activation::Q8_0, soa_chunk::<{ IQ4_NL }>),
];

/// [`matmul_chunk`] as a table kernel.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract at this level.
unsafe fn soa_chunk<const F: u8>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    // SAFETY: the caller's contract is matmul_chunk's (the table row is `soa`, so
    // `inputs.soa` holds the tokens).
    unsafe { matmul_chunk::<F>(w, row_bytes, &inputs.soa, outs) }
}

/// F32 weights with pulp at this level.
///
/// # Safety
/// [`ChunkFn`](super::table::ChunkFn)'s contract at this level.
unsafe fn f32_chunk(w: &[u8], row_bytes: usize, inputs: &Inputs<'_>, outs: &mut [&mut [f32]]) {
    f32_rows(SimdLevel::Avx512, w, row_bytes, inputs, outs)
}
