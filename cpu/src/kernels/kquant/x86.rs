//! What the x86 K-quant kernels share: the formats' headers, the per-super-block float
//! step (the only float work, llama.cpp's operations), and the tile driver.
//!
//! A level computes, per (row, token) cell and super-block, the 8 exact i32 lanes of
//! [`super::scalar::lanes`] in its own way (any grouping of exact integer sums gives the
//! same lanes); [`finish`] then applies the format's float operations in the scalar
//! order, and [`result`] the final reduction. So every level returns the scalar bits.
//!
//! ```text
//!   tiles of R rows × T tokens:  for each super-block: header of the R rows (scales,
//!   mins, d), then the level's integer work, then `finish` per cell;
//!   after the last one `result` per cell
//! ```

use core::arch::x86_64::*;

use bytemuck::Pod;
use pagoda_core::quant::{BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

use super::super::activations::Inputs;

/// What a format adds to the 8-lane accumulator and how its result ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Q4_K: a 4-lane min accumulator, reduced and added last.
    Q4K,
    /// Q5_K: a scalar min sum (`fma` per super-block), added last.
    Q5K,
    /// Q6_K: the `-32` offset through `bsums`, per lane.
    Q6K,
    /// Q2_K: 8 lanes of mins fma'd into `acc` before the scales.
    Q2K,
    /// Q3_K, IQ4_XS: only the scaled quants.
    Plain,
}

/// How a format's quants enter the integer products.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// As decoded: unsigned.
    Unsigned,
    /// Decoded as `q + 4` (Q3_K): the levels subtract `4·Σy`.
    Offset4,
    /// Signed codebook values (IQ4_XS): `|v|` times `y` with `v`'s sign (`vpsignb`).
    Sign,
}

/// A super-block's header, decoded once per row and super-block (in registers: no
/// scalar stores for the vector code to reload).
#[derive(Clone, Copy)]
pub(super) struct Hdr {
    /// `f16(x.d)`.
    pub d: f32,
    /// `f16(x.dmin)` (0 where the format has none).
    pub dmin: f32,
    /// Sub-block scales as 16 i16 words (8 for 32-value sub-blocks, in words 0..8).
    pub sc: __m256i,
    /// Sub-block mins as i16 words (Q4_K/Q5_K: 8 in words 0..8; Q2_K: 16).
    pub mn: __m256i,
}

/// A K-quant weight format, as the x86 kernels see it.
pub(super) trait Fmt {
    /// The block.
    type B: Pod;
    /// Which float steps apply.
    const KIND: Kind;
    /// Whether sub-blocks are 16 values (else 32).
    const SUB16: bool;
    /// How the decoded quants are multiplied.
    const MODE: Mode = Mode::Unsigned;
    /// The header.
    ///
    /// # Safety
    /// AVX2 and F16C enabled by the calling function.
    unsafe fn header(b: &Self::B) -> Hdr;
}

/// Q4_K (marker).
pub(super) struct Q4K;
/// Q5_K (marker).
pub(super) struct Q5K;
/// Q6_K (marker).
pub(super) struct Q6K;
/// Q2_K (marker).
pub(super) struct Q2K;
/// Q3_K (marker).
pub(super) struct Q3K;
/// IQ4_XS (marker).
pub(super) struct Iq4Xs;

/// Two f16 values (`lo`, `hi` of `bits`) as f32.
///
/// # Safety
/// F16C enabled by the calling function.
#[inline(always)]
unsafe fn f16x2(bits: u32) -> (f32, f32) {
    // SAFETY: register-only F16C/SSE operations; features per the caller.
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

/// Q4_K/Q5_K's packed scales and mins as 16 words `sc0..8, mn0..8` (llama.cpp's `utmp`
/// shuffle, the same as `get_scale_min_k4`).
///
/// # Safety
/// AVX2 enabled by the calling function.
#[inline(always)]
unsafe fn k4_scales(scales: &[u8; 12]) -> __m256i {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| {
        u32::from_le_bytes([scales[4 * i], scales[4 * i + 1], scales[4 * i + 2], scales[4 * i + 3]])
    };
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let m3 = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let m2 = u1 & KMASK1;
    let s1 = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let s0 = u0 & KMASK1;
    // SAFETY: register-only AVX2 operations; features per the caller.
    unsafe { _mm256_cvtepu8_epi16(_mm_setr_epi32(s0 as i32, s1 as i32, m2 as i32, m3 as i32)) }
}

impl Fmt for Q4K {
    type B = BlockQ4K;
    const KIND: Kind = Kind::Q4K;
    const SUB16: bool = false;
    #[inline(always)]
    unsafe fn header(b: &BlockQ4K) -> Hdr {
        // SAFETY: features per the caller.
        unsafe {
            let (d, dmin) = f16x2(u32::from(b.d.to_bits()) | u32::from(b.dmin.to_bits()) << 16);
            let w = k4_scales(&b.scales);
            Hdr { d, dmin, sc: w, mn: _mm256_permute2x128_si256::<0x11>(w, w) }
        }
    }
}

impl Fmt for Q5K {
    type B = BlockQ5K;
    const KIND: Kind = Kind::Q5K;
    const SUB16: bool = false;
    #[inline(always)]
    unsafe fn header(b: &BlockQ5K) -> Hdr {
        // SAFETY: features per the caller.
        unsafe {
            let (d, dmin) = f16x2(u32::from(b.d.to_bits()) | u32::from(b.dmin.to_bits()) << 16);
            let w = k4_scales(&b.scales);
            Hdr { d, dmin, sc: w, mn: _mm256_permute2x128_si256::<0x11>(w, w) }
        }
    }
}

impl Fmt for Q6K {
    type B = BlockQ6K;
    const KIND: Kind = Kind::Q6K;
    const SUB16: bool = true;
    #[inline(always)]
    unsafe fn header(b: &BlockQ6K) -> Hdr {
        // SAFETY: `scales` is 16 bytes; features per the caller.
        unsafe {
            let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.scales.as_ptr() as *const __m128i));
            Hdr { d: f16x2(u32::from(b.d.to_bits())).0, dmin: 0.0, sc, mn: sc }
        }
    }
}

impl Fmt for Q2K {
    type B = BlockQ2K;
    const KIND: Kind = Kind::Q2K;
    const SUB16: bool = true;
    #[inline(always)]
    unsafe fn header(b: &BlockQ2K) -> Hdr {
        // SAFETY: `scales` is 16 bytes; features per the caller.
        unsafe {
            let (d, dmin) = f16x2(u32::from(b.d.to_bits()) | u32::from(b.dmin.to_bits()) << 16);
            let v = _mm_loadu_si128(b.scales.as_ptr() as *const __m128i);
            let m4 = _mm_set1_epi8(0x0F);
            let sc = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
            let mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(v), m4));
            Hdr { d, dmin, sc, mn }
        }
    }
}

impl Fmt for Q3K {
    type B = BlockQ3K;
    const KIND: Kind = Kind::Plain;
    const SUB16: bool = true;
    const MODE: Mode = Mode::Offset4;
    #[inline(always)]
    unsafe fn header(b: &BlockQ3K) -> Hdr {
        // llama.cpp's `aux` shuffle (the same as `BlockQ3K::scale`), then - 32.
        const KMASK1: u32 = 0x0303_0303;
        const KMASK2: u32 = 0x0f0f_0f0f;
        let s = &b.scales;
        let a = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
        let (a0, a1, a2) = (a(0), a(1), a(2));
        let w0 = (a0 & KMASK2) | ((a2 & KMASK1) << 4);
        let w1 = (a1 & KMASK2) | (((a2 >> 2) & KMASK1) << 4);
        let w2 = ((a0 >> 4) & KMASK2) | (((a2 >> 4) & KMASK1) << 4);
        let w3 = ((a1 >> 4) & KMASK2) | (((a2 >> 6) & KMASK1) << 4);
        // SAFETY: register-only operations; features per the caller.
        unsafe {
            let v = _mm_setr_epi32(w0 as i32, w1 as i32, w2 as i32, w3 as i32);
            let sc = _mm256_cvtepi8_epi16(_mm_sub_epi8(v, _mm_set1_epi8(32)));
            Hdr { d: f16x2(u32::from(b.d.to_bits())).0, dmin: 0.0, sc, mn: sc }
        }
    }
}

impl Fmt for Iq4Xs {
    type B = BlockIq4Xs;
    const KIND: Kind = Kind::Plain;
    const SUB16: bool = false;
    const MODE: Mode = Mode::Sign;
    #[inline(always)]
    unsafe fn header(b: &BlockIq4Xs) -> Hdr {
        // Byte j = (low nibble j of scales_l) | (bits 2j..2j+2 of scales_h) << 4, minus 32:
        // the nibbles by an unpack, the 2-bit fields spread to bytes by shifts and masks.
        let mut h = u64::from(b.scales_h);
        h = (h | h << 24) & 0x0000_00FF_0000_00FF;
        h = (h | h << 12) & 0x000F_000F_000F_000F;
        h = (h | h << 6) & 0x0303_0303_0303_0303;
        // SAFETY: register-only operations; features per the caller.
        unsafe {
            let l = _mm_cvtsi32_si128(i32::from_le_bytes(b.scales_l));
            let m4 = _mm_set1_epi8(0x0F);
            let nib =
                _mm_unpacklo_epi8(_mm_and_si128(l, m4), _mm_and_si128(_mm_srli_epi16::<4>(l), m4));
            let v = _mm_or_si128(nib, _mm_cvtsi64_si128((h << 4) as i64));
            let sc = _mm256_cvtepi8_epi16(_mm_sub_epi8(v, _mm_set1_epi8(32)));
            Hdr { d: f16x2(u32::from(b.d.to_bits())).0, dmin: 0.0, sc, mn: sc }
        }
    }
}

/// A token's super-block, as [`finish`] reads it (once per tile and token, shared by the
/// rows).
#[derive(Clone, Copy)]
pub(super) struct Tok {
    /// `y.d`.
    pub d: f32,
    /// `bsums` (16 words).
    pub bs: __m256i,
    /// Pair sums of `bsums` (8 wrapping words, llama.cpp's `_mm_hadd_epi16`).
    pub q8s: __m128i,
}

impl Tok {
    /// # Safety
    /// AVX2 enabled by the calling function.
    #[inline(always)]
    pub unsafe fn new(y: &BlockQ8K) -> Tok {
        // SAFETY: `bsums` is 32 bytes; features per the caller.
        unsafe {
            let bs = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            let q8s = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256::<1>(bs));
            Tok { d: y.d, bs, q8s }
        }
    }
}

/// One (row, token) cell's float state: `acc` (8 lanes) and the format's tail (Q4_K: 4
/// lanes; Q5_K: lane 0).
#[derive(Clone, Copy)]
pub(super) struct Cell {
    pub acc: __m256,
    pub m: __m128,
}

impl Cell {
    /// A zeroed cell.
    ///
    /// # Safety
    /// AVX enabled by the calling function.
    #[inline(always)]
    pub unsafe fn zero() -> Cell {
        // SAFETY: register-only AVX operations; features per the caller.
        unsafe { Cell { acc: _mm256_setzero_ps(), m: _mm_setzero_ps() } }
    }
}

/// One super-block's float step for one cell, given its 8 integer lanes `s8`
/// (the scalar function's order, see `super::scalar::dot_q4_k` etc.).
///
/// # Safety
/// AVX2 and FMA enabled by the calling function.
#[inline(always)]
pub(super) unsafe fn finish<F: Fmt>(h: &Hdr, y: &Tok, s8: __m256i, cell: &mut Cell) {
    // SAFETY: register-only operations; AVX2 + FMA per the caller.
    unsafe {
        let d = y.d * h.d;
        let mut s8 = s8;
        match F::KIND {
            Kind::Q4K | Kind::Q5K => {
                let dmin = -y.d * h.dmin;
                let prod = _mm_madd_epi16(_mm256_castsi256_si128(h.mn), y.q8s);
                if F::KIND == Kind::Q4K {
                    cell.m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), cell.m);
                } else {
                    let s = _mm_add_epi32(prod, _mm_unpackhi_epi64(prod, prod));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
                    let isum = _mm_cvtsi128_si32(s);
                    cell.m = _mm_fmadd_ss(_mm_set_ss(dmin), _mm_set_ss(isum as f32), cell.m);
                }
            }
            Kind::Q6K => {
                let sub = _mm256_slli_epi32::<5>(_mm256_madd_epi16(y.bs, h.sc));
                s8 = _mm256_sub_epi32(s8, sub);
            }
            Kind::Q2K => {
                let dmin = -y.d * h.dmin;
                let prod = _mm256_madd_epi16(h.mn, y.bs);
                cell.acc =
                    _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(prod), cell.acc);
            }
            Kind::Plain => {}
        }
        cell.acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s8), cell.acc);
    }
}

/// A cell's result: `hsum8(acc)` plus the format's tail.
///
/// # Safety
/// AVX enabled by the calling function.
#[inline(always)]
pub(super) unsafe fn result<F: Fmt>(cell: &Cell) -> f32 {
    // SAFETY: register-only AVX operations; features per the caller.
    unsafe {
        let a = cell.acc;
        let s = _mm_add_ps(_mm256_extractf128_ps::<1>(a), _mm256_castps256_ps128(a));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let h = _mm_cvtss_f32(s);
        match F::KIND {
            Kind::Q4K => {
                let m = _mm_add_ps(cell.m, _mm_movehl_ps(cell.m, cell.m));
                let m = _mm_add_ss(m, _mm_movehdup_ps(m));
                h + _mm_cvtss_f32(m)
            }
            Kind::Q5K => h + _mm_cvtss_f32(cell.m),
            Kind::Q6K | Kind::Q2K | Kind::Plain => h,
        }
    }
}

/// A level's tile: rows `rows` (whole rows of `nb` blocks) against tokens
/// `t0..t0 + T` of `acts`, as `out[r][t]`.
pub(super) trait Tile<F: Fmt> {
    /// # Safety
    /// The level's features are enabled by the caller; every row has `nb` blocks and
    /// `acts` holds tokens `t0..t0 + T` (`nb` blocks each).
    unsafe fn tile<const R: usize, const T: usize>(
        rows: [&[F::B]; R],
        acts: &[BlockQ8K],
        nb: usize,
        t0: usize,
    ) -> [[f32; T]; R];
}

/// The [`ChunkFn`](super::super::table::ChunkFn) body: tiles of 4 rows × 1 token for
/// decode; otherwise 64-row blocks, each against token quads in tiles of 4 rows (the
/// block's weights stay in cache across the tokens; outputs are written per token as 64
/// contiguous floats).
///
/// # Safety
/// `L`'s features are enabled by the caller (a `target_feature` function this inlines
/// into); the `ChunkFn` contract.
#[inline(always)]
pub(super) unsafe fn drive<F: Fmt, L: Tile<F>>(
    w: &[u8],
    row_bytes: usize,
    inputs: &Inputs<'_>,
    outs: &mut [&mut [f32]],
) {
    let nb = row_bytes / size_of::<F::B>();
    let rows = w.len().checked_div(row_bytes).unwrap_or(0);
    // Cannot fail: rows are whole blocks, aligned for the block type (the contract).
    let blocks: &[F::B] = bytemuck::cast_slice(w);
    let row = |r: usize| &blocks[r * nb..(r + 1) * nb];
    let acts = inputs.q8k;
    if outs.len() == 1 {
        let out = &mut *outs[0];
        let mut r = 0;
        while r + 4 <= rows {
            // SAFETY: features per this fn's contract; the rows and token 0 exist.
            let v = unsafe {
                L::tile::<4, 1>([row(r), row(r + 1), row(r + 2), row(r + 3)], acts, nb, 0)
            };
            for i in 0..4 {
                out[r + i] = v[i][0];
            }
            r += 4;
        }
        while r < rows {
            // SAFETY: as above.
            out[r] = unsafe { L::tile::<1, 1>([row(r)], acts, nb, 0) }[0][0];
            r += 1;
        }
        return;
    }
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
                macro_rules! tile {
                    ($tn:literal) => {
                        if four {
                            let rp =
                                [row(r0 + r), row(r0 + r + 1), row(r0 + r + 2), row(r0 + r + 3)];
                            // SAFETY: features per this fn's contract; rows and tokens
                            // t..t+tn exist.
                            let v = unsafe { L::tile::<4, $tn>(rp, acts, nb, t) };
                            for j in 0..4 {
                                for i in 0..$tn {
                                    tile[i][r + j] = v[j][i];
                                }
                            }
                        } else {
                            // SAFETY: as above.
                            let v = unsafe { L::tile::<1, $tn>([row(r0 + r)], acts, nb, t) };
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
