//! AVX-512 (F/BW/VL/DQ) + VNNI K-quant kernels.
//!
//! A super-block is 4 chunks of 64 values; a chunk's weights are decoded once per row into
//! one register of unsigned bytes and used by every token of the tile:
//!
//! ```text
//! zmm u = | values 64c .. 64c+32 | values 64c+32 .. 64c+64 |     (u8, 0..63)
//! zmm y = | Q8_K quants of the same 64 values |                   (i8)
//! p    = vpdpbusd(0, u, y)        16 i32: lane l = Σ of values 4l..4l+4 (|p| < 2^15)
//! sumi = vpdpwssd(sumi, p, pat)   pat: lane l = the scale of lane l's sub-block, zero-
//!                                 extended to 32 bits, so each word product is p·scale
//! after 4 chunks: lanes l and l + 8 added = llama.cpp's 8 integer lanes
//! ```
//!
//! then [`x86::finish`] (the float step) per cell. The lanes are exact integers, so the
//! results equal the scalar level's bit for bit.

use core::arch::x86_64::*;

use pagoda_core::quant::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, IQ4NL_VALUES,
};

use super::super::activations::Inputs;
use super::x86::{self, Cell, Fmt, Iq4Xs, Mode, Tile, Q2K, Q3K, Q4K, Q5K, Q6K};

/// The AVX-512 level (marker).
pub(super) struct Avx512;

/// A format's weight decoding at this level.
pub(super) trait Dec: Fmt {
    /// What a row's chunks share within a super-block.
    type P: Copy;
    /// # Safety
    /// AVX-512 F/BW enabled by the caller.
    unsafe fn prep(b: &Self::B) -> Self::P;
    /// Chunk `c`'s (`c < 4`) 64 quants in value order: unsigned bytes, `q + 4` for
    /// [`Mode::Offset4`], signed values for [`Mode::Sign`].
    ///
    /// # Safety
    /// AVX-512 F/BW enabled by the caller.
    unsafe fn chunk(b: &Self::B, p: &Self::P, c: usize) -> __m512i;
}

/// The 32 bytes at `p` in both halves of a register.
///
/// # Safety
/// 32 bytes readable at `p`; AVX-512 F enabled by the caller.
#[inline(always)]
unsafe fn both_halves(p: *const u8) -> __m512i {
    // SAFETY: per the contract.
    unsafe { _mm512_broadcast_i64x4(_mm256_loadu_si256(p as *const __m256i)) }
}

/// Q4_K chunk `c`: bytes `qs[32c..32c+32]`, low nibbles then high nibbles.
#[inline(always)]
unsafe fn q4_nibbles(qs: &[u8; 128], c: usize) -> __m512i {
    // SAFETY: c < 4, so 32 bytes at 32c lie in `qs`; features per the caller.
    unsafe {
        let z = both_halves(qs.as_ptr().add(32 * c));
        let z = _mm512_srlv_epi64(z, _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4));
        _mm512_and_si512(z, _mm512_set1_epi8(0x0F))
    }
}

impl Dec for Q4K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ4K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ4K, _: &(), c: usize) -> __m512i {
        // SAFETY: features per the caller.
        unsafe { q4_nibbles(&b.qs, c) }
    }
}

impl Dec for Q5K {
    /// `qh` in both halves.
    type P = __m512i;
    #[inline(always)]
    unsafe fn prep(b: &BlockQ5K) -> __m512i {
        // SAFETY: `qh` is 32 bytes; features per the caller.
        unsafe { both_halves(b.qh.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ5K, qh: &__m512i, c: usize) -> __m512i {
        // SAFETY: features per the caller (register operations and q4_nibbles).
        unsafe {
            let lo = q4_nibbles(&b.qs, c);
            // Value 32s + e's fifth bit is bit s of qh[e]: sub-block 2c in the low half,
            // 2c + 1 in the high half.
            let (s0, s1) = (2 * c as i64, 2 * c as i64 + 1);
            let h = _mm512_srlv_epi64(*qh, _mm512_setr_epi64(s0, s0, s0, s0, s1, s1, s1, s1));
            let k = _mm512_test_epi8_mask(h, _mm512_set1_epi8(1));
            _mm512_mask_add_epi8(lo, k, lo, _mm512_set1_epi8(16))
        }
    }
}

impl Dec for Q6K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ6K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ6K, _: &(), c: usize) -> __m512i {
        // SAFETY: c < 4: 64 bytes of `ql` at 64(c/2) and 32 of `qh` at 32(c/2) lie in the
        // block; features per the caller.
        unsafe {
            let j = c / 2;
            let ql = _mm512_loadu_si512(b.ql.as_ptr().add(64 * j) as *const __m512i);
            let ql = if c % 2 == 1 { _mm512_srli_epi16::<4>(ql) } else { ql };
            let lo = _mm512_and_si512(ql, _mm512_set1_epi8(0x0F));
            let qh = both_halves(b.qh.as_ptr().add(32 * j));
            // Two high bits to bits 4-5: even c takes qh bits 0-1 (low half) and 2-3
            // (high half), odd c bits 4-5 and 6-7.
            let hi = if c % 2 == 0 {
                _mm512_sllv_epi64(qh, _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2))
            } else {
                _mm512_srlv_epi64(qh, _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2))
            };
            _mm512_or_si512(lo, _mm512_and_si512(hi, _mm512_set1_epi8(0x30)))
        }
    }
}

/// 2-bit fields `k0` (low half) and `k0 + 1` (high half) of the 32 bytes at `p`.
///
/// # Safety
/// 32 bytes readable at `p`; AVX-512 F/BW enabled by the caller.
#[inline(always)]
unsafe fn crumbs(p: *const u8, k0: usize) -> __m512i {
    // SAFETY: per the contract.
    unsafe {
        let (a, b) = (2 * k0 as i64, 2 * k0 as i64 + 2);
        let z = _mm512_srlv_epi64(both_halves(p), _mm512_setr_epi64(a, a, a, a, b, b, b, b));
        _mm512_and_si512(z, _mm512_set1_epi8(3))
    }
}

impl Dec for Q2K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ2K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ2K, _: &(), c: usize) -> __m512i {
        // SAFETY: c < 4: 32 bytes at 32(c/2) lie in `qs`; features per the caller.
        unsafe { crumbs(b.qs.as_ptr().add(32 * (c / 2)), 2 * (c % 2)) }
    }
}

impl Dec for Q3K {
    /// `hmask` in both halves.
    type P = __m512i;
    #[inline(always)]
    unsafe fn prep(b: &BlockQ3K) -> __m512i {
        // SAFETY: `hmask` is 32 bytes; features per the caller.
        unsafe { both_halves(b.hmask.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ3K, hm: &__m512i, c: usize) -> __m512i {
        // SAFETY: c < 4: 32 bytes at 32(c/2) lie in `qs`; features per the caller.
        unsafe {
            let (j, k0) = (c / 2, 2 * (c % 2));
            let lo = crumbs(b.qs.as_ptr().add(32 * j), k0);
            // High bit of value 128j + 32k + e: bit 4j + k of hmask[e]; set means q = lo
            // (u = lo + 4), clear q = lo - 4 (u = lo).
            let (s0, s1) = ((4 * j + k0) as i64, (4 * j + k0 + 1) as i64);
            let h = _mm512_srlv_epi64(*hm, _mm512_setr_epi64(s0, s0, s0, s0, s1, s1, s1, s1));
            let k = _mm512_test_epi8_mask(h, _mm512_set1_epi8(1));
            _mm512_mask_add_epi8(lo, k, lo, _mm512_set1_epi8(4))
        }
    }
}

impl Dec for Iq4Xs {
    /// The codebook in each 128-bit lane.
    type P = __m512i;
    #[inline(always)]
    unsafe fn prep(_: &BlockIq4Xs) -> __m512i {
        // SAFETY: IQ4NL_VALUES is 16 bytes; features per the caller.
        unsafe { _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i)) }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockIq4Xs, book: &__m512i, c: usize) -> __m512i {
        // SAFETY: c < 4: 32 bytes at 32c lie in `qs`; features per the caller.
        unsafe {
            // Sub-blocks 2c, 2c + 1: | lo(A) | hi(A) | lo(B) | hi(B) |, A, B their 16 bytes.
            let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c) as *const __m256i);
            let z = _mm512_permutexvar_epi64(
                _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
                _mm512_castsi256_si512(q),
            );
            let z = _mm512_srlv_epi64(z, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
            _mm512_shuffle_epi8(*book, _mm512_and_si512(z, _mm512_set1_epi8(0x0F)))
        }
    }
}

impl<F: Dec> Tile<F> for Avx512 {
    #[inline(always)]
    // Index loops over the tile's parallel arrays read most clearly.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const T: usize>(
        rows: [&[F::B]; R],
        acts: &[BlockQ8K],
        nb: usize,
        t0: usize,
    ) -> [[f32; T]; R] {
        // SAFETY (whole body): slices are indexed within bounds (every row has nb blocks,
        // tokens t0..t0+T have nb blocks each: the caller's contract), the quant loads read
        // 64 bytes at 64c < 256 of a block's `qs`, and the features are the caller's.
        unsafe {
            let zero = _mm512_setzero_si512();
            let mut cells = [[Cell::zero(); T]; R];
            for i in 0..nb {
                let mut hdr = [F::header(&rows[0][i]); R];
                for r in 1..R {
                    hdr[r] = F::header(&rows[r][i]);
                }
                let mut sv = [zero; R];
                let mut pre = [F::prep(&rows[0][i]); R];
                for r in 0..R {
                    sv[r] = _mm512_cvtepu16_epi32(hdr[r].sc);
                    if F::MODE == Mode::Sign {
                        // vpmaddubsw pairs: both words of a lane take the scale.
                        sv[r] = _mm512_or_si512(sv[r], _mm512_slli_epi32::<16>(sv[r]));
                    }
                    if r > 0 {
                        pre[r] = F::prep(&rows[r][i]);
                    }
                }
                let ys: [&BlockQ8K; T] = core::array::from_fn(|t| &acts[(t0 + t) * nb + i]);
                let mut toks = [x86::Tok::new(ys[0]); T];
                for t in 1..T {
                    toks[t] = x86::Tok::new(ys[t]);
                }
                let mut sumi = [[zero; T]; R];
                for c in 0..4 {
                    // Lane l's sub-block: 4c + l/4 (16-value) or 2c + l/8 (32-value).
                    let idx = if F::SUB16 {
                        let b = 4 * c as i32;
                        _mm512_setr_epi32(
                            b,
                            b,
                            b,
                            b,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 2,
                            b + 2,
                            b + 2,
                            b + 2,
                            b + 3,
                            b + 3,
                            b + 3,
                            b + 3,
                        )
                    } else {
                        let b = 2 * c as i32;
                        _mm512_setr_epi32(
                            b,
                            b,
                            b,
                            b,
                            b,
                            b,
                            b,
                            b,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                            b + 1,
                        )
                    };
                    let mut u = [zero; R];
                    let mut neg = [0 as __mmask64; R];
                    let mut pat = [zero; R];
                    for r in 0..R {
                        u[r] = F::chunk(&rows[r][i], &pre[r], c);
                        if F::MODE == Mode::Sign {
                            neg[r] = _mm512_movepi8_mask(u[r]);
                            u[r] = _mm512_abs_epi8(u[r]);
                        }
                        pat[r] = _mm512_permutexvar_epi32(idx, sv[r]);
                    }
                    for t in 0..T {
                        let y = _mm512_loadu_si512(ys[t].qs.as_ptr().add(64 * c) as *const __m512i);
                        match F::MODE {
                            Mode::Sign => {
                                // llama.cpp's `mul_add_epi8`: |v| · (y with v's sign), in
                                // i16 pairs (|pair| ≤ 2·127·127), then · scale.
                                for r in 0..R {
                                    let sy = _mm512_mask_sub_epi8(y, neg[r], zero, y);
                                    let p = _mm512_maddubs_epi16(u[r], sy);
                                    sumi[r][t] = _mm512_dpwssd_epi32(sumi[r][t], p, pat[r]);
                                }
                            }
                            _ => {
                                // Offset4: u = q + 4, so the 4-value sums start at -4·Σy.
                                let init = if F::MODE == Mode::Offset4 {
                                    let four = _mm512_set1_epi8(4);
                                    _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, four, y))
                                } else {
                                    zero
                                };
                                for r in 0..R {
                                    let p = _mm512_dpbusd_epi32(init, u[r], y);
                                    sumi[r][t] = _mm512_dpwssd_epi32(sumi[r][t], p, pat[r]);
                                }
                            }
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        let s = sumi[r][t];
                        let s8 = _mm256_add_epi32(
                            _mm512_castsi512_si256(s),
                            _mm512_extracti64x4_epi64::<1>(s),
                        );
                        x86::finish::<F>(&hdr[r], &toks[t], s8, &mut cells[r][t]);
                    }
                }
            }
            let mut out = [[0.0f32; T]; R];
            for r in 0..R {
                for t in 0..T {
                    out[r][t] = x86::result::<F>(&cells[r][t]);
                }
            }
            out
        }
    }
}

/// The table kernel of format `F` at this level.
///
/// # Safety
/// [`ChunkFn`](super::super::table::ChunkFn)'s contract at this level.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn chunk<F: Dec>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    // SAFETY: the features are enabled here; the rest is the caller's contract.
    unsafe { x86::drive::<F, Avx512>(w, row_bytes, inputs, outs) }
}
