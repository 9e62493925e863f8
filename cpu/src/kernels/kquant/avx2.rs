//! AVX2 + FMA K-quant kernels: llama.cpp's own integer scheme, several tokens per decoded
//! weight register.
//!
//! A super-block is 8 chunks of 32 values; per chunk and (row, token) cell:
//!
//! ```text
//! ymm u = 32 quants (u8, 0..63)     ymm y = the Q8_K quants of the same values
//! p16  = vpmaddubsw(u, y)           16 i16: pairs (no saturation: |pair| ≤ 2·63·128)
//! sumi += vpmaddwd(p16, pat)        pat: words = the scale of each pair's sub-block,
//!                                   so lane l = scale · Σ of values 4l..4l+4
//! ```
//!
//! then [`x86::finish`] (the float step) per cell: the scalar level's bits.

use core::arch::x86_64::*;

use pagoda_core::quant::{
    BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, IQ4NL_VALUES,
};

use super::super::activations::Inputs;
use super::x86::{self, Cell, Fmt, Iq4Xs, Mode, Tile, Q2K, Q3K, Q4K, Q5K, Q6K};

/// The AVX2 level (marker).
pub(super) struct Avx2;

/// A format's weight decoding at this level.
pub(super) trait Dec: Fmt {
    /// What a row's chunks share within a super-block.
    type P: Copy;
    /// # Safety
    /// AVX2 enabled by the caller.
    unsafe fn prep(b: &Self::B) -> Self::P;
    /// Chunk `c`'s (`c < 8`) 32 quants in value order: unsigned bytes, `q + 4` for
    /// [`Mode::Offset4`], signed values for [`Mode::Sign`].
    ///
    /// # Safety
    /// AVX2 enabled by the caller.
    unsafe fn chunk(b: &Self::B, p: &Self::P, c: usize) -> __m256i;
}

/// Q4_K chunk `c`: the low (even c) or high (odd c) nibbles of `qs[32(c/2)..]`.
#[inline(always)]
unsafe fn q4_nibbles(qs: &[u8; 128], c: usize) -> __m256i {
    // SAFETY: c < 8, so 32 bytes at 32(c/2) lie in `qs`; features per the caller.
    unsafe {
        let q = _mm256_loadu_si256(qs.as_ptr().add(32 * (c / 2)) as *const __m256i);
        let q = if c % 2 == 1 { _mm256_srli_epi16::<4>(q) } else { q };
        _mm256_and_si256(q, _mm256_set1_epi8(0x0F))
    }
}

impl Dec for Q4K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ4K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ4K, _: &(), c: usize) -> __m256i {
        // SAFETY: features per the caller.
        unsafe { q4_nibbles(&b.qs, c) }
    }
}

impl Dec for Q5K {
    /// `qh`.
    type P = __m256i;
    #[inline(always)]
    unsafe fn prep(b: &BlockQ5K) -> __m256i {
        // SAFETY: `qh` is 32 bytes; features per the caller.
        unsafe { _mm256_loadu_si256(b.qh.as_ptr() as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ5K, qh: &__m256i, c: usize) -> __m256i {
        // SAFETY: features per the caller.
        unsafe {
            let lo = q4_nibbles(&b.qs, c);
            // Fifth bit of value 32c + e: bit c of qh[e].
            let bit = _mm256_set1_epi8((1u8 << c) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(*qh, bit), bit);
            _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(16)))
        }
    }
}

impl Dec for Q6K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ6K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ6K, _: &(), c: usize) -> __m256i {
        // SAFETY: c < 8: 32 bytes of `ql` at 64h + 32(w % 2) ≤ 96 and of `qh` at 32h ≤ 32
        // lie in the block; features per the caller.
        unsafe {
            let (h, w) = (c / 4, c % 4);
            let ql = _mm256_loadu_si256(b.ql.as_ptr().add(64 * h + 32 * (w % 2)) as *const __m256i);
            let ql = if w >= 2 { _mm256_srli_epi16::<4>(ql) } else { ql };
            let lo = _mm256_and_si256(ql, _mm256_set1_epi8(0x0F));
            let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * h) as *const __m256i);
            let hi = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * w as i32));
            let hi = _mm256_slli_epi16::<4>(_mm256_and_si256(hi, _mm256_set1_epi8(3)));
            _mm256_or_si256(lo, hi)
        }
    }
}

/// Bits `2k..2k+2` of the 32 bytes at `p`.
///
/// # Safety
/// 32 bytes readable at `p`; AVX2 enabled by the caller.
#[inline(always)]
unsafe fn crumbs(p: *const u8, k: usize) -> __m256i {
    // SAFETY: per the contract.
    unsafe {
        let q = _mm256_loadu_si256(p as *const __m256i);
        let q = _mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * k as i32));
        _mm256_and_si256(q, _mm256_set1_epi8(3))
    }
}

impl Dec for Q2K {
    type P = ();
    #[inline(always)]
    unsafe fn prep(_: &BlockQ2K) {}
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ2K, _: &(), c: usize) -> __m256i {
        // SAFETY: c < 8: 32 bytes at 32(c/4) lie in `qs`; features per the caller.
        unsafe { crumbs(b.qs.as_ptr().add(32 * (c / 4)), c % 4) }
    }
}

impl Dec for Q3K {
    /// `hmask`.
    type P = __m256i;
    #[inline(always)]
    unsafe fn prep(b: &BlockQ3K) -> __m256i {
        // SAFETY: `hmask` is 32 bytes; features per the caller.
        unsafe { _mm256_loadu_si256(b.hmask.as_ptr() as *const __m256i) }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockQ3K, hm: &__m256i, c: usize) -> __m256i {
        // SAFETY: c < 8: 32 bytes at 32(c/4) lie in `qs`; features per the caller.
        unsafe {
            let lo = crumbs(b.qs.as_ptr().add(32 * (c / 4)), c % 4);
            // High bit of value 32c + e (c = 4j + k): bit c of hmask[e]; set: u = lo + 4.
            let bit = _mm256_set1_epi8((1u8 << c) as i8);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(*hm, bit), bit);
            _mm256_or_si256(lo, _mm256_and_si256(set, _mm256_set1_epi8(4)))
        }
    }
}

impl Dec for Iq4Xs {
    /// The codebook in both 128-bit lanes.
    type P = __m256i;
    #[inline(always)]
    unsafe fn prep(_: &BlockIq4Xs) -> __m256i {
        // SAFETY: IQ4NL_VALUES is 16 bytes; features per the caller.
        unsafe {
            _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i))
        }
    }
    #[inline(always)]
    unsafe fn chunk(b: &BlockIq4Xs, book: &__m256i, c: usize) -> __m256i {
        // SAFETY: c < 8: 16 bytes at 16c lie in `qs`; features per the caller.
        unsafe {
            let q = _mm_loadu_si128(b.qs.as_ptr().add(16 * c) as *const __m128i);
            let z = _mm256_set_m128i(_mm_srli_epi16::<4>(q), q);
            _mm256_shuffle_epi8(*book, _mm256_and_si256(z, _mm256_set1_epi8(0x0F)))
        }
    }
}

impl<F: Dec> Tile<F> for Avx2 {
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
        // 32 bytes at 32c < 256 of a block's `qs`, and the features are the caller's.
        unsafe {
            if R == 4 {
                // Two tiles of 2 rows: 16 ymm registers do not hold 4 rows' accumulators,
                // weights and scale patterns without spilling.
                let a = <Avx2 as Tile<F>>::tile::<2, T>([rows[0], rows[1 % R]], acts, nb, t0);
                let b = <Avx2 as Tile<F>>::tile::<2, T>([rows[2 % R], rows[3 % R]], acts, nb, t0);
                return core::array::from_fn(|r| if r < 2 { a[r] } else { b[r - 2] });
            }
            let zero = _mm256_setzero_si256();
            let mut cells = [[Cell::zero(); T]; R];
            for i in 0..nb {
                let mut hdr = [F::header(&rows[0][i]); R];
                for r in 1..R {
                    hdr[r] = F::header(&rows[r][i]);
                }
                // Per row: the scales as i32 lanes `sc | sc << 16` (both words of a pair),
                // sub-blocks 0..8 and 8..16.
                let mut sv = [[zero; 2]; R];
                let mut pre = [F::prep(&rows[0][i]); R];
                for r in 0..R {
                    let s = hdr[r].sc;
                    let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(s));
                    let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(s));
                    sv[r] = [
                        _mm256_or_si256(lo, _mm256_slli_epi32::<16>(lo)),
                        _mm256_or_si256(hi, _mm256_slli_epi32::<16>(hi)),
                    ];
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
                for c in 0..8 {
                    // Lane l's sub-block: 2c + l/4 (16-value) or c (32-value).
                    let (src, idx) = if F::SUB16 {
                        let k = 2 * (c % 4) as i32;
                        (c / 4, _mm256_setr_epi32(k, k, k, k, k + 1, k + 1, k + 1, k + 1))
                    } else {
                        (0, _mm256_set1_epi32(c as i32))
                    };
                    let mut u = [zero; R];
                    let mut pat = [zero; R];
                    for r in 0..R {
                        u[r] = F::chunk(&rows[r][i], &pre[r], c);
                        pat[r] = _mm256_permutevar8x32_epi32(sv[r][src], idx);
                    }
                    for t in 0..T {
                        let y = _mm256_loadu_si256(ys[t].qs.as_ptr().add(32 * c) as *const __m256i);
                        // Offset4: u = q + 4, so the pair sums lose 4·(y pair) (exact i16).
                        let off = if F::MODE == Mode::Offset4 {
                            _mm256_maddubs_epi16(_mm256_set1_epi8(4), y)
                        } else {
                            zero
                        };
                        for r in 0..R {
                            let p16 = match F::MODE {
                                // llama.cpp's `mul_add_epi8`: |v| · (y with v's sign).
                                Mode::Sign => _mm256_maddubs_epi16(
                                    _mm256_sign_epi8(u[r], u[r]),
                                    _mm256_sign_epi8(y, u[r]),
                                ),
                                Mode::Offset4 => {
                                    _mm256_sub_epi16(_mm256_maddubs_epi16(u[r], y), off)
                                }
                                Mode::Unsigned => _mm256_maddubs_epi16(u[r], y),
                            };
                            sumi[r][t] =
                                _mm256_add_epi32(sumi[r][t], _mm256_madd_epi16(p16, pat[r]));
                        }
                    }
                }
                for r in 0..R {
                    for t in 0..T {
                        x86::finish::<F>(&hdr[r], &toks[t], sumi[r][t], &mut cells[r][t]);
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
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn chunk<F: Dec>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    // SAFETY: the features are enabled here; the rest is the caller's contract.
    unsafe { x86::drive::<F, Avx2>(w, row_bytes, inputs, outs) }
}
