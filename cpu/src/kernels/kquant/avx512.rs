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

/// The sub-block of each i32 lane of chunk `c` (`permutexvar` indices into the scales):
/// `4c + l/4` for 16-value sub-blocks, `2c + l/8` for 32-value ones.
const fn sub_idx(per: usize, lanes_per: usize) -> [[i32; 16]; 4] {
    let mut t = [[0i32; 16]; 4];
    let mut c = 0;
    while c < 4 {
        let mut l = 0;
        while l < 16 {
            t[c][l] = (per * c + l / lanes_per) as i32;
            l += 1;
        }
        c += 1;
    }
    t
}
static SUB16_IDX: [[i32; 16]; 4] = sub_idx(4, 4);
static SUB32_IDX: [[i32; 16]; 4] = sub_idx(2, 8);

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
            // T == 1: one cell per (row, token); T > 1: pairs of cells in `acc2` and
            // quads of cells' min lanes in `m4` (see below).
            let mut cells = [[Cell::zero(); T]; R];
            let mut acc2 = [[_mm512_setzero_ps(); 2]; R];
            let mut m4 = [_mm512_setzero_ps(); R];
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
                    let idx = _mm512_loadu_si512(
                        if F::SUB16 { &SUB16_IDX[c] } else { &SUB32_IDX[c] }.as_ptr()
                            as *const __m512i,
                    );
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
                if T == 1 {
                    for r in 0..R {
                        let s = sumi[r][0];
                        let s8 = _mm256_add_epi32(
                            _mm512_castsi512_si256(s),
                            _mm512_extracti64x4_epi64::<1>(s),
                        );
                        x86::finish::<F>(&hdr[r], &toks[0], s8, &mut cells[r][0]);
                    }
                    continue;
                }
                // Two cells (r, 2p), (r, 2p + 1) per 512-bit float register, the same
                // operations lane for lane as `x86::finish` (a missing odd token is zeros).
                let sign = _mm512_set1_ps(-0.0);
                let mut yd2 = [_mm512_setzero_ps(); 2];
                let mut bs2 = [zero; 2];
                for p in 0..T.div_ceil(2) {
                    let (a, b) = (2 * p, (2 * p + 1).min(T - 1));
                    let db = if 2 * p + 1 < T { toks[b].d } else { 0.0 };
                    yd2[p] = _mm512_insertf32x8::<1>(
                        _mm512_castps256_ps512(_mm256_set1_ps(toks[a].d)),
                        _mm256_set1_ps(db),
                    );
                    let bsb = if 2 * p + 1 < T { toks[b].bs } else { _mm256_setzero_si256() };
                    bs2[p] = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(toks[a].bs), bsb);
                }
                // Four cells' min lanes per register (Q4_K/Q5_K): token t in lanes 4t..4t+4.
                let tk = |t: usize| if t < T { t } else { T - 1 };
                let live = |t: usize| if t < T { 1.0f32 } else { 0.0 };
                let mut q8s4 = _mm512_castsi128_si512(toks[0].q8s);
                q8s4 = _mm512_inserti32x4::<1>(q8s4, toks[tk(1)].q8s);
                q8s4 = _mm512_inserti32x4::<2>(q8s4, toks[tk(2)].q8s);
                q8s4 = _mm512_inserti32x4::<3>(q8s4, toks[tk(3)].q8s);
                let yd4 = _mm_setr_ps(
                    toks[0].d,
                    toks[tk(1)].d * live(1),
                    toks[tk(2)].d * live(2),
                    toks[tk(3)].d * live(3),
                );
                let nyd4 = _mm512_xor_ps(
                    _mm512_permutexvar_ps(
                        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                        _mm512_castps128_ps512(yd4),
                    ),
                    sign,
                );
                for r in 0..R {
                    let h = &hdr[r];
                    let hd = _mm512_set1_ps(h.d);
                    let hdmin = _mm512_set1_ps(h.dmin);
                    for p in 0..T.div_ceil(2) {
                        let a = sumi[r][2 * p];
                        let b = if 2 * p + 1 < T { sumi[r][2 * p + 1] } else { zero };
                        let mut s16 = _mm512_add_epi32(
                            _mm512_shuffle_i64x2::<0x44>(a, b),
                            _mm512_shuffle_i64x2::<0xEE>(a, b),
                        );
                        match F::KIND {
                            x86::Kind::Q6K => {
                                let sc = _mm512_broadcast_i64x4(h.sc);
                                let sub = _mm512_slli_epi32::<5>(_mm512_madd_epi16(bs2[p], sc));
                                s16 = _mm512_sub_epi32(s16, sub);
                            }
                            x86::Kind::Q2K => {
                                let mn = _mm512_broadcast_i64x4(h.mn);
                                let prod = _mm512_cvtepi32_ps(_mm512_madd_epi16(mn, bs2[p]));
                                let dmin = _mm512_mul_ps(_mm512_xor_ps(yd2[p], sign), hdmin);
                                acc2[r][p] = _mm512_fmadd_ps(dmin, prod, acc2[r][p]);
                            }
                            _ => {}
                        }
                        let d = _mm512_mul_ps(yd2[p], hd);
                        acc2[r][p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s16), acc2[r][p]);
                    }
                    if matches!(F::KIND, x86::Kind::Q4K | x86::Kind::Q5K) {
                        let mn = _mm512_broadcast_i32x4(_mm256_castsi256_si128(h.mn));
                        let prod = _mm512_madd_epi16(mn, q8s4);
                        let dmin = _mm512_mul_ps(nyd4, hdmin);
                        let v = if F::KIND == x86::Kind::Q4K {
                            prod
                        } else {
                            // Q5_K: every lane of a token's quarter = Σ of its 4 lanes.
                            let s =
                                _mm512_add_epi32(prod, _mm512_shuffle_epi32::<0b01_00_11_10>(prod));
                            _mm512_add_epi32(s, _mm512_shuffle_epi32::<0b10_11_00_01>(s))
                        };
                        m4[r] = _mm512_fmadd_ps(dmin, _mm512_cvtepi32_ps(v), m4[r]);
                    }
                }
            }
            let mut out = [[0.0f32; T]; R];
            for r in 0..R {
                let mut m = [0.0f32; 16];
                _mm512_storeu_ps(m.as_mut_ptr(), m4[r]);
                for t in 0..T {
                    let cell = if T == 1 {
                        cells[r][0]
                    } else {
                        let mut a = [0.0f32; 16];
                        _mm512_storeu_ps(a.as_mut_ptr(), acc2[r][t / 2]);
                        Cell {
                            acc: _mm256_loadu_ps(a.as_ptr().add(8 * (t % 2))),
                            m: _mm_loadu_ps(m.as_ptr().add(4 * t)),
                        }
                    };
                    out[r][t] = x86::result::<F>(&cell);
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
