//! Fast numerics' matmul for the legacy formats, IQ4_NL, IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K:
//! rows repacked at load time into groups of 16, one float multiply-add per (row, token, block
//! of 32; two for Q3_K's and Q6_K's blocks of 16), no horizontal sums.
//!
//! ```text
//! group g (rows 16g..16g+16), block b (values 32b..32b+32 of each row):
//!   Q4_0, IQ4_NL: | d: 16 × f16 |              | low: 4 × 64 B (nibbles) |
//!   Q4_1:         | d: 16 × f16 | m: 16 × f16  | low: 4 × 64 B (nibbles) |
//!   Q5_0:         | d: 16 × f16 |              | low: 4 × 64 B (nibbles) | high: 64 B (1 bit)  |
//!   Q5_1:         | d: 16 × f16 | m: 16 × f16  | low: 4 × 64 B (nibbles) | high: 64 B (1 bit)  |
//!   Q8_0:         | d: 16 × f16 |              | codes: 8 × 64 B (u8)    |
//!   IQ4_XS:       | d: 16 × f32 |              | low: 4 × 64 B (nibbles) |
//!   Q3_K:         | d: 16 × f32 | d2: 16 × f32 | low: 4 × 64 B (nibbles) |
//!   Q4_K:         | d: 16 × f32 | m: 16 × f32  | low: 4 × 64 B (nibbles) |
//!   Q5_K:         | d: 16 × f32 | m: 16 × f32  | low: 4 × 64 B (nibbles) | high: 64 B (1 bit)  |
//!   Q6_K:         | d: 16 × f32 | d2: 16 × f32 | low: 4 × 64 B (nibbles) | high: 128 B (2 bits)|
//! Q8_0's codes piece j holds, in 32-bit lane r, four bytes of row r: values 4j..4j+4. Every
//! other format keeps 4-bit codes: low piece j holds, in 32-bit lane r, values 4j..4j+4 of row
//! r in the low nibbles and 16+4j..16+4j+4 in the high nibbles. The kernels' operand 2j is
//! piece j's low nibbles, operand 2j+1 its high nibbles; where a code has more than 4 bits
//! (Q5_*: 5, Q6_K: 6), its bits 4.. are in the high plane, at the byte of the same position
//! as its nibble's: operand o's h bits (h = 1 or 2) are bits h·o % 8 .. of high piece h·o / 8
//! (one shift and a mask put them at bit 4). A code c stands for the unsigned quant u = c,
//! except for IQ4_NL and IQ4_XS, whose 4-bit code indexes the codebook: u = IQ4NL_VALUES[c] +
//! 128 (the kernel maps nibbles with a byte shuffle). u is the format's signed quant q plus an
//! offset (Q4_0 8, Q5_0 16, Q3_K 4, Q6_K 32, Q8_0 and the IQ4 codebook levels 128, else 0), so
//! every weight is an unsigned byte for vpdpbusd. So the legacy formats keep the file's bits
//! per value (Q5_0, Q5_1: exactly the file's bytes), and the K-quants their quants' bits plus
//! f32 scales. Rows past the matrix's last are zero (d = 0) and never written out. A K-quant
//! block of 32 is one sub-block of its 256-value super-block: `d = d_super · scale` and `m =
//! −dmin · min` (ggml's `d1` and `−m1`, exact products of an f16 and a 6-bit integer, kept as
//! f32), so its values are ggml's dequantized values; Q3_K's and Q6_K's block of 32 is two
//! sub-blocks of 16, `d` the first's scale and `d2` the second's (Q6_K: `d_super · scale`,
//! an f16 times an 8-bit integer, exact too).
//! ```
//!
//! The float order, per output cell (row r, token t), blocks b in order:
//!
//! ```text
//! isum = Σ_i q[r][b][i] · a[t][b][i]   (exact i32: Σ u·a − offset · Σ a)
//! acc  = fma(d[r][b] · da[t][b], isum as f32, acc)
//! Q4_1, Q5_1, Q4_K, Q5_K: acc = fma(m[r][b] · da[t][b], Σ_i a[t][b][i] as f32, acc)
//! Q3_K, Q6_K: the first line over i < 16 only, then
//!       acc = fma(d2[r][b] · da[t][b], Σ_{i ≥ 16} q·a as f32, acc)
//! ```
//!
//! with activations in Q8_0 blocks (`da` their f16 scale). Nothing in it depends on how many
//! tokens share a call or on which rows a thread takes, so the result is batch-invariant;
//! the AVX-512 kernel (16 rows in the lanes of one register, `vpdpbusd` on four weight bytes
//! of each row against four activation bytes broadcast) computes exactly the scalar `dot_scalar`'s
//! operations, bit for bit, and so does the AVX2 kernel (two halves of 8 rows, the same integer
//! sums by `vpmaddubsw` + `vpmaddwd`). It is not llama.cpp's order (that is the exact kernels', which
//! sum 8 lanes per block and reduce them at the end), so [`Numerics::Fast`] alone uses it,
//! and only at a level with its own kernel ([`accelerated`]).
//!
//! [`Numerics::Fast`]: crate::model::Numerics::Fast

/// `$kernel::<F>(args)` with the format constant `F` equal to the run-time format `$format`:
/// the SIMD kernels' one dispatch from a matrix's format to their code for it.
#[cfg(target_arch = "x86_64")]
macro_rules! for_format {
    ($format:expr, $kernel:ident($($arg:expr),*)) => {{
        use $crate::kernels::repacked::{
            IQ4_NL, IQ4_XS, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0,
        };
        match $format {
            Q3_K => $kernel::<Q3_K>($($arg),*),
            Q6_K => $kernel::<Q6_K>($($arg),*),
            IQ4_XS => $kernel::<IQ4_XS>($($arg),*),
            Q4_K => $kernel::<Q4_K>($($arg),*),
            Q5_K => $kernel::<Q5_K>($($arg),*),
            Q4_0 => $kernel::<Q4_0>($($arg),*),
            Q4_1 => $kernel::<Q4_1>($($arg),*),
            Q5_0 => $kernel::<Q5_0>($($arg),*),
            Q5_1 => $kernel::<Q5_1>($($arg),*),
            IQ4_NL => $kernel::<IQ4_NL>($($arg),*),
            _ => $kernel::<Q8_0>($($arg),*),
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use half::f16;
use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{BlockQ8_0, QK};
use rayon::prelude::*;

use super::error::{check_len, KernelError};
use super::q8_rows::Q8Rows;
use super::{Kernels, QuantMatrix, SimdLevel};

/// Rows per group: the lanes of one 512-bit register of f32.
pub const GROUP_ROWS: usize = 16;

/// Below this many weight bytes × tokens a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 32 * 1024;

/// Whether `level` has its own repacked kernel (AVX-512 with VNNI, AVX2). Elsewhere only the
/// scalar specification runs it, slower than the exact kernels: fast numerics keep those.
pub fn accelerated(level: SimdLevel) -> bool {
    matches!(level, SimdLevel::Avx512 | SimdLevel::Avx2)
}

/// A repacked weight format (kernel selector: `F` of the SIMD kernels).
pub(crate) const Q4_0: u8 = 0;
/// See [`Q4_0`].
pub(crate) const Q4_1: u8 = 1;
/// See [`Q4_0`].
pub(crate) const Q8_0: u8 = 2;
/// See [`Q4_0`].
pub(crate) const Q5_0: u8 = 3;
/// See [`Q4_0`].
pub(crate) const Q5_1: u8 = 4;
/// See [`Q4_0`].
pub(crate) const IQ4_NL: u8 = 5;
/// See [`Q4_0`].
pub(crate) const Q4_K: u8 = 6;
/// See [`Q4_0`].
pub(crate) const Q5_K: u8 = 7;
/// See [`Q4_0`].
pub(crate) const IQ4_XS: u8 = 8;
/// See [`Q4_0`].
pub(crate) const Q3_K: u8 = 9;
/// See [`Q4_0`].
pub(crate) const Q6_K: u8 = 10;

/// Every format, with its ggml type.
const FORMATS: [(u8, GgmlType); 11] = [
    (Q4_0, GgmlType::Q4_0),
    (Q4_1, GgmlType::Q4_1),
    (Q8_0, GgmlType::Q8_0),
    (Q5_0, GgmlType::Q5_0),
    (Q5_1, GgmlType::Q5_1),
    (IQ4_NL, GgmlType::IQ4_NL),
    (Q4_K, GgmlType::Q4_K),
    (Q5_K, GgmlType::Q5_K),
    (IQ4_XS, GgmlType::IQ4_XS),
    (Q3_K, GgmlType::Q3_K),
    (Q6_K, GgmlType::Q6_K),
];

/// Whether format `f` keeps 4-bit codes (two values per byte, and [`high_bits`] more per
/// value in the high plane): all but Q8_0, which stores one byte per value.
const fn nibbles(f: u8) -> bool {
    f != Q8_0
}

/// Bits of each code above its nibble, kept in the high plane: 1 (Q5_0, Q5_1, Q5_K), 2
/// (Q6_K), else 0.
const fn high_bits(f: u8) -> usize {
    match f {
        Q5_0 | Q5_1 | Q5_K => 1,
        Q6_K => 2,
        _ => 0,
    }
}

/// Whether format `f`'s codes index the IQ4_NL codebook (IQ4_NL, IQ4_XS).
const fn codebook(f: u8) -> bool {
    f == IQ4_NL || f == IQ4_XS
}

/// Whether format `f` has a per-block minimum `m` (value = d·q + m).
const fn has_min(f: u8) -> bool {
    matches!(f, Q4_1 | Q5_1 | Q4_K | Q5_K)
}

/// Whether format `f` scales each half of a block of 32 on its own (`d` values 0..16, `d2`
/// values 16..32: Q3_K's and Q6_K's sub-blocks of 16). Such a format keeps nibbles (its
/// halves are the low and the high nibbles of the codes).
const fn half_scales(f: u8) -> bool {
    f == Q3_K || f == Q6_K
}

/// Whether format `f` is a K-quant (256-value super-blocks), whose scales and minimums are
/// kept as f32 (products of a super-block scale and a sub-block scale), not f16.
const fn wide_scales(f: u8) -> bool {
    matches!(f, Q4_K | Q5_K | IQ4_XS | Q3_K | Q6_K)
}

/// Bytes of one stored scale (or minimum) of format `f`: 2 (f16) or 4 (f32).
const fn scale_bytes(f: u8) -> usize {
    if wide_scales(f) {
        4
    } else {
        2
    }
}

/// `(bytes of one repacked group block, offset of the codes there)` of format `f`: 16
/// scales, 16 minimums (or second scales) where the format has them, then 4 pieces of 64
/// bytes of nibbles and [`high_bits`] pieces of the high plane (at `codes + 256`), or 8
/// pieces of 64 bytes (Q8_0).
const fn geometry(f: u8) -> (usize, usize) {
    let q0 = GROUP_ROWS * scale_bytes(f) * if has_min(f) || half_scales(f) { 2 } else { 1 };
    (q0 + if nibbles(f) { 256 + 64 * high_bits(f) } else { 512 }, q0)
}

/// Where operand `o`'s high bits are in the high plane: `(piece, bit)`.
const fn high_at(f: u8, o: usize) -> (usize, usize) {
    let at = high_bits(f) * o;
    (at / 8, at % 8)
}

/// What the unsigned quant `u` is above the format's signed quant `q` (`q = u − offset`):
/// the integer dot subtracts `offset · Σa` of each activation block (or half block).
const fn offset(f: u8) -> i32 {
    match f {
        Q4_0 => 8,
        Q5_0 => 16,
        Q3_K => 4,
        Q6_K => 32,
        Q8_0 | IQ4_NL | IQ4_XS => 128,
        _ => 0,
    }
}

/// The unsigned quants `u` of the 16 IQ4 codes: the codebook's levels + 128.
const IQ4_LEVELS: [u8; 16] = {
    let mut u = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        u[i] = (pagoda_core::quant::IQ4NL_VALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    u
};

/// The unsigned quant `u` a stored code `c` of format `f` stands for.
const fn level(f: u8, c: u8) -> u8 {
    if codebook(f) {
        IQ4_LEVELS[(c & 0x0F) as usize]
    } else {
        c
    }
}

/// Block `b` (values `32b..32b+32`) of the row `row` (ggml's bytes) of format `f` as `(d, m,
/// the 32 codes)`, `d` and `m` as stored ([`scale_bytes`] of the 4 bytes used; `m` is
/// Q3_K's `d2`): value i is `d·(level(code[i]) − offset(f)) + m`.
fn unpack_block(f: u8, row: &[u8], b: usize) -> ([u8; 4], [u8; 4], [u8; QK]) {
    if wide_scales(f) {
        let size = f_type(f).type_size().unwrap_or(0);
        return unpack_kquant(f, &row[(b / 8) * size..][..size], b % 8);
    }
    let block = f_type(f).type_size().unwrap_or(0);
    let (d, m, u) = unpack(f, &row[b * block..][..block]);
    ([d[0], d[1], 0, 0], [m[0], m[1], 0, 0], u)
}

/// The ggml type of format `f`.
fn f_type(f: u8) -> GgmlType {
    FORMATS.iter().find(|(g, _)| *g == f).map(|&(_, ty)| ty).unwrap_or(GgmlType::Q4_0)
}

/// Block `j` (values `32j..32j+32`) of the super-block `sb` (ggml's bytes) of a K-quant
/// format, as ggml's `dequantize_row_*` computes its scales, all exact in f32:
/// - Q4_K, Q5_K: `d = d_super · sc`, `m = −(dmin · min)`;
/// - IQ4_XS: `d = d_super · (ls − 32)`, codes the codebook indices;
/// - Q3_K: `d = d_super · (sc[2j] − 32)`, `d2 = d_super · (sc[2j+1] − 32)`, codes `q + 4`.
fn unpack_kquant(f: u8, sb: &[u8], j: usize) -> ([u8; 4], [u8; 4], [u8; QK]) {
    let mut u = [0u8; QK];
    if f == Q6_K {
        let blk: pagoda_core::quant::BlockQ6K = bytemuck::pod_read_unaligned(sb);
        let d = blk.d.to_f32();
        let dl = |s: usize| d * f32::from(blk.scales[s]);
        // ggml's dequantize_row_q6_K: values 32j..32j+32 = 128n + 32k + l take the nibble
        // k / 2 of ql[64n + 32(k % 2) + l] and bits 2k..2k+2 of qh[32n + l]; the scale of
        // values 16s..16s+16 is scales[s].
        let (n, k) = (j / 4, j % 4);
        for (l, u) in u.iter_mut().enumerate() {
            let ql = blk.ql[64 * n + 32 * (k % 2) + l];
            let low = if k < 2 { ql & 0x0F } else { ql >> 4 };
            let high = (blk.qh[32 * n + l] >> (2 * k)) & 3;
            *u = low | high << 4;
        }
        return (dl(2 * j).to_le_bytes(), dl(2 * j + 1).to_le_bytes(), u);
    }
    if f == Q3_K {
        let blk: pagoda_core::quant::BlockQ3K = bytemuck::pod_read_unaligned(sb);
        let d = blk.d.to_f32();
        let dl = |s: usize| d * (i32::from(blk.scale(s)) - 32) as f32;
        // Values 32j..32j+32 = 128h + 32k + l: two bits of qs[32h + l] at 2k, high bit
        // 4h + k of hmask[l] (set: q in 0..4, so the code q + 4 is 4..8).
        let (h, k) = (j / 4, j % 4);
        for (l, u) in u.iter_mut().enumerate() {
            let low = (blk.qs[32 * h + l] >> (2 * k)) & 3;
            let high = (blk.hmask[l] >> (4 * h + k)) & 1;
            *u = low + 4 * high;
        }
        return (dl(2 * j).to_le_bytes(), dl(2 * j + 1).to_le_bytes(), u);
    }
    let d = f16::from_le_bytes([sb[0], sb[1]]).to_f32();
    if f == IQ4_XS {
        let blk: pagoda_core::quant::BlockIq4Xs = bytemuck::pod_read_unaligned(sb);
        for (l, u) in u.iter_mut().enumerate() {
            let byte = blk.qs[16 * j + l % 16];
            *u = if l < 16 { byte & 0x0F } else { byte >> 4 };
        }
        let dl = d * (i32::from(blk.scale(j)) - 32) as f32;
        return (dl.to_le_bytes(), [0; 4], u);
    }
    let dmin = f16::from_le_bytes([sb[2], sb[3]]).to_f32();
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&sb[4..16]);
    let (sc, mn) = pagoda_core::quant::get_scale_min_k4(j, &scales);
    let (qh, qs) = if f == Q5_K { (&sb[16..48], &sb[48..176]) } else { (&sb[0..0], &sb[16..144]) };
    for (l, u) in u.iter_mut().enumerate() {
        let byte = qs[32 * (j / 2) + l];
        let nib = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
        *u = if f == Q5_K { nib | ((qh[l] >> j) & 1) << 4 } else { nib };
    }
    let dd = d * f32::from(sc);
    let mm = -(dmin * f32::from(mn));
    (dd.to_le_bytes(), mm.to_le_bytes(), u)
}

/// Block `blk` of a legacy format `f` (ggml's bytes) as `(d, m, the 32 codes)`: value i is
/// `d·(level(code[i]) − offset(f)) + m`.
fn unpack(f: u8, blk: &[u8]) -> ([u8; 2], [u8; 2], [u8; QK]) {
    let d = [blk[0], blk[1]];
    let mut u = [0u8; QK];
    let nib = |qs: &[u8], e: usize| if e < 16 { qs[e] & 0x0F } else { qs[e - 16] >> 4 };
    let (m, rest) = if has_min(f) { ([blk[2], blk[3]], &blk[4..]) } else { ([0, 0], &blk[2..]) };
    match f {
        Q8_0 => u.iter_mut().zip(rest).for_each(|(u, &q)| *u = q ^ 0x80),
        Q5_0 | Q5_1 => {
            let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            for (e, u) in u.iter_mut().enumerate() {
                *u = nib(&rest[4..], e) | (((qh >> e) & 1) as u8) << 4;
            }
        }
        _ => u.iter_mut().enumerate().for_each(|(e, u)| *u = nib(rest, e)),
    }
    (d, m, u)
}

/// A Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, Q3_K, Q4_K, Q5_K or Q6_K matrix in the
/// repacked layout of the module docs.
#[derive(Clone, Debug)]
pub struct Repacked {
    format: u8,
    rows: usize,
    cols: usize,
    /// Blocks per row.
    nb: usize,
    data: Vec<u8>,
}

impl Repacked {
    /// `m` repacked, or `None` when its type has no repacked format; `Err(bytes)` when the
    /// copy of `bytes` bytes cannot be allocated (or its size overflows: `usize::MAX`).
    pub fn new(m: &QuantMatrix<'_>) -> Result<Option<Repacked>, usize> {
        let Some(&(format, _)) = FORMATS.iter().find(|(_, ty)| *ty == m.ty()) else {
            return Ok(None);
        };
        let (gb, q0) = geometry(format);
        let (rows, cols, rb) = (m.rows(), m.cols(), m.row_bytes());
        let nb = cols / QK;
        let groups = rows.div_ceil(GROUP_ROWS);
        let len = groups.checked_mul(nb).and_then(|n| n.checked_mul(gb)).ok_or(usize::MAX)?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| len)?;
        data.resize(len, 0u8);
        let src = m.data();
        for (g, out) in data.chunks_exact_mut(nb * gb).enumerate() {
            for (b, o) in out.chunks_exact_mut(gb).enumerate() {
                for i in 0..GROUP_ROWS {
                    let r = g * GROUP_ROWS + i;
                    if r >= rows {
                        break; // zero rows: d = 0, m = 0
                    }
                    let (d, mn, u) = unpack_block(format, &src[r * rb..][..rb], b);
                    let sb = scale_bytes(format);
                    o[sb * i..sb * (i + 1)].copy_from_slice(&d[..sb]);
                    if has_min(format) || half_scales(format) {
                        let m0 = GROUP_ROWS * sb;
                        o[m0 + sb * i..m0 + sb * (i + 1)].copy_from_slice(&mn[..sb]);
                    }
                    if nibbles(format) {
                        // Piece j, lane i: values 4j..4j+4 low, 16+4j..16+4j+4 high.
                        for e in 0..16 {
                            let at = q0 + 64 * (e / 4) + 4 * i + e % 4;
                            o[at] = (u[e] & 0x0F) | (u[e + 16] & 0x0F) << 4;
                            // Operands 2j (value e) and 2j+1 (value e + 16): their bits
                            // above the nibble at the same byte of the high plane.
                            for (op, v) in [(2 * (e / 4), u[e]), (2 * (e / 4) + 1, u[e + 16])] {
                                if high_bits(format) > 0 {
                                    let (piece, bit) = high_at(format, op);
                                    o[at + 256 - 64 * (e / 4) + 64 * piece] |= (v >> 4) << bit;
                                }
                            }
                        }
                    } else {
                        for (e, &v) in u.iter().enumerate() {
                            o[q0 + 64 * (e / 4) + 4 * i + e % 4] = v;
                        }
                    }
                }
            }
        }
        Ok(Some(Repacked { format, rows, cols, nb, data }))
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        f_type(self.format)
    }

    /// Number of rows (outputs per token).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs per token).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Group `g`'s bytes: `nb` group blocks.
    fn group(&self, g: usize) -> &[u8] {
        let n = self.nb * geometry(self.format).0;
        &self.data[g * n..(g + 1) * n]
    }
}

/// A call's activations: Q8_0 blocks of every token, and each block's quant sums.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // some fields serve x86-64 kernels
pub(crate) struct Acts<'a> {
    /// `n_tokens × nb` blocks, token-major.
    pub blocks: &'a [BlockQ8_0],
    /// `Σ_i qs[i]` of each block.
    pub sums: &'a [i32],
    /// The same sums as f32 (exact: |sum| ≤ 32 · 127).
    pub float_sums: &'a [f32],
    /// Each block's scale `d` as f32.
    pub scales: &'a [f32],
    /// `Σ_{i < 16} qs[i]` of each block (for formats with [`half_scales`]; else empty).
    pub half_sums: &'a [i32],
    /// Blocks per token.
    pub nb: usize,
}

/// `out[t][i] = row 16g + i · token t` for the group's rows that exist (`out[t].len()` of
/// them), every token of `acts`, in the module's float order: the specification.
pub(crate) fn dot_scalar(w: &Repacked, g: usize, acts: &Acts<'_>, outs: &mut [&mut [f32]]) {
    let f = w.format;
    let (gb, q0) = geometry(f);
    let group = w.group(g);
    for (t, out) in outs.iter_mut().enumerate() {
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..acts.nb {
                let blk = &group[b * gb..(b + 1) * gb];
                let a = &acts.blocks[t * acts.nb + b];
                let da = a.d.to_f32();
                let sb = scale_bytes(f);
                let scale = |at: usize| match wide_scales(f) {
                    true => f32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]),
                    false => f16::from_le_bytes([blk[at], blk[at + 1]]).to_f32(),
                };
                let d = scale(sb * i);
                let second = scale(GROUP_ROWS * sb + sb * i); // m, or Q3_K's d2
                                                              // isum[0]: values 0..16, isum[1]: values 16..32.
                let mut isum = [0i32; 2];
                for e in 0..QK {
                    let code = if nibbles(f) {
                        let at = q0 + 64 * (e % 16 / 4) + 4 * i + e % 4;
                        let nibble = if e < 16 { blk[at] & 0x0F } else { blk[at] >> 4 };
                        let high = if high_bits(f) > 0 {
                            let (piece, bit) = high_at(f, 2 * (e % 16 / 4) + e / 16);
                            let mask = (1u8 << high_bits(f)) - 1;
                            (blk[q0 + 256 + 64 * piece + 4 * i + e % 4] >> bit) & mask
                        } else {
                            0
                        };
                        nibble | high << 4
                    } else {
                        blk[q0 + 64 * (e / 4) + 4 * i + e % 4]
                    };
                    let q = i32::from(level(f, code)) - offset(f);
                    isum[e / 16] += q * i32::from(a.qs[e]);
                }
                if half_scales(f) {
                    acc = (d * da).mul_add(isum[0] as f32, acc);
                    acc = (second * da).mul_add(isum[1] as f32, acc);
                    continue;
                }
                acc = (d * da).mul_add((isum[0] + isum[1]) as f32, acc);
                if has_min(f) {
                    acc = (second * da).mul_add(acts.sums[t * acts.nb + b] as f32, acc);
                }
            }
            *o = acc;
        }
    }
}

/// Scratch of [`Kernels::matmul_repacked`]: the activations' blocks and sums, reused across calls.
#[derive(Debug, Default)]
pub struct RepackedScratch {
    q8: Q8Rows,
    float_sums: Vec<f32>,
    half_sums: Vec<i32>,
}

/// `out[t][r] = W[r] · x[t]` for `n_tokens` tokens (`x`: `n_tokens × w.cols()`, `out`:
/// `n_tokens × w.rows()`, row-major), in the module's float order, groups of rows split over
/// the current rayon pool. Errors if `x` or `out` do not match the shape.
pub(crate) fn matmul_repacked(
    k: &Kernels,
    w: &Repacked,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut RepackedScratch,
) -> Result<(), KernelError> {
    check_len("x", n_tokens.checked_mul(w.cols).ok_or(KernelError::Overflow)?, x.len())?;
    check_len("out", n_tokens.checked_mul(w.rows).ok_or(KernelError::Overflow)?, out.len())?;
    if n_tokens == 0 || w.rows == 0 {
        return Ok(());
    }
    let nb = w.nb;
    scratch.q8.quantize(k, x)?;
    let q8 = &scratch.q8;
    scratch.half_sums.clear();
    if half_scales(w.format) {
        scratch.half_sums.extend(
            q8.blocks.iter().map(|b| b.qs[..16].iter().map(|&q| i32::from(q)).sum::<i32>()),
        );
    }
    scratch.float_sums.clear();
    scratch.float_sums.extend(q8.sums.iter().map(|&s| s as f32));
    let acts = Acts {
        blocks: &q8.blocks,
        sums: &q8.sums,
        float_sums: &scratch.float_sums,
        scales: &q8.scales,
        half_sums: &scratch.half_sums,
        nb,
    };
    let level = k.level();
    let run = |g: usize, outs: &mut [&mut [f32]]| {
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx512 {
            // SAFETY: a `Kernels` at Avx512 exists only after run-time detection of AVX-512
            // F/BW/VL/DQ and VNNI; `g` is a group of `w`, every `outs[t]` has at most 16
            // rows and `acts` holds `outs.len()` tokens of `w.nb` blocks.
            unsafe { avx512::dot_group(w, g, &acts, outs) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx2 {
            // SAFETY: a `Kernels` at Avx2 exists only after run-time detection of AVX2, FMA
            // and F16C; the shapes as above.
            unsafe { avx2::dot_group(w, g, &acts, outs) };
            return;
        }
        let _ = level;
        dot_scalar(w, g, &acts, outs);
    };
    let groups = w.rows.div_ceil(GROUP_ROWS);
    let work = w.data.len().saturating_mul(n_tokens.min(16));
    let threads = rayon::current_num_threads();
    let chunk = if work < PARALLEL_MIN_WORK || threads == 1 {
        groups
    } else {
        groups.div_ceil(threads * 8).max(1)
    };
    let rows_per_chunk = chunk * GROUP_ROWS;
    let mut tasks: Vec<(usize, Vec<&mut [f32]>)> =
        (0..groups.div_ceil(chunk)).map(|c| (c * chunk, Vec::with_capacity(n_tokens))).collect();
    for tok in out.chunks_mut(w.rows) {
        for (c, piece) in tok.chunks_mut(rows_per_chunk).enumerate() {
            tasks[c].1.push(piece);
        }
    }
    let task = |(g0, mut outs): (usize, Vec<&mut [f32]>)| {
        let rows = outs[0].len();
        for (i, g) in (g0..g0 + rows.div_ceil(GROUP_ROWS)).enumerate() {
            let mut group_outs: Vec<&mut [f32]> = outs
                .iter_mut()
                .map(|o| {
                    let end = ((i + 1) * GROUP_ROWS).min(o.len());
                    &mut o[i * GROUP_ROWS..end]
                })
                .collect();
            run(g, &mut group_outs);
        }
    };
    if tasks.len() == 1 {
        tasks.into_iter().for_each(task);
    } else {
        tasks.into_par_iter().for_each(task);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rng::Rng;

    /// A random `rows × cols` matrix of `ty` (a repacked format), as 2-byte aligned bytes:
    /// random quants, small finite scales (and minimums).
    fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u16> {
        let (block, per_block) = (ty.type_size().unwrap(), ty.block_size().unwrap());
        let mut bytes = vec![0u8; rows * cols / per_block * block];
        let min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K);
        for blk in bytes.chunks_exact_mut(block) {
            blk.iter_mut().for_each(|q| *q = rng.next() as u8);
            let d = f16::from_f32(rng.unit() * 0.05).to_le_bytes();
            match ty {
                GgmlType::Q3_K => blk[108..110].copy_from_slice(&d), // d is last
                GgmlType::Q6_K => blk[208..210].copy_from_slice(&d),
                _ => blk[0..2].copy_from_slice(&d),
            }
            if min {
                blk[2..4].copy_from_slice(&f16::from_f32(rng.unit() * 0.3).to_le_bytes());
            }
        }
        bytes.chunks_exact(2).map(|p| u16::from_ne_bytes([p[0], p[1]])).collect()
    }

    fn case(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> (Vec<u16>, Vec<f32>) {
        let mut rng = Rng(seed);
        let w = matrix(ty, rows, cols, &mut rng);
        let x = (0..9 * cols).map(|_| rng.unit() * 2.0).collect();
        (w, x)
    }

    fn run(k: &Kernels, w: &Repacked, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n * w.rows()];
        k.matmul_repacked(w, &x[..n * w.cols()], n, &mut out, &mut Default::default()).unwrap();
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Every level that runs here equals the scalar specification bit for bit; a token's
    /// outputs do not depend on how many tokens share the call or on the thread count; and
    /// they are the dot products of the dequantized weights and activations (up to rounding).
    #[test]
    fn levels_agree_batches_do_not_matter_and_dots_are_right() {
        let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
        for &(_, ty) in &FORMATS {
            for (rows, cols) in [(16, 32), (37, 96), (64, 576), (200, 1536), (21, 512)] {
                if cols % ty.block_size().unwrap() != 0 {
                    continue; // K-quants: whole super-blocks of 256
                }
                let (wb, x) = case(ty, rows, cols, (rows * cols) as u64 + ty as u64);
                let m = QuantMatrix::new(ty, rows, cols, bytemuck::cast_slice(&wb)).unwrap();
                let w = Repacked::new(&m).unwrap().unwrap();
                let want = run(&scalar, &w, &x, 9);
                for level in [SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Neon] {
                    let Ok(k) = Kernels::new(level) else { continue };
                    for n in [1, 2, 3, 4, 5, 9] {
                        let got = run(&k, &w, &x, n);
                        assert_eq!(
                            bits(&got),
                            bits(&want[..n * rows]),
                            "{ty} {rows}x{cols} {level:?} n {n}"
                        );
                    }
                    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                    let got = one.install(|| run(&k, &w, &x, 9));
                    assert_eq!(bits(&got), bits(&want), "{ty} one thread");
                }
                // Against f32 math on the dequantized values.
                let mut deq = vec![0.0f32; rows * cols];
                pagoda_core::quant::dequantize_row(ty, m.data(), &mut deq).unwrap();
                let mut xq = vec![bytemuck::Zeroable::zeroed(); 9 * cols / QK];
                scalar.quantize_q8_0(&x, &mut xq).unwrap();
                for t in 0..9 {
                    for r in 0..rows {
                        let mut dot = 0.0f64;
                        for c in 0..cols {
                            let a: &BlockQ8_0 = &xq[(t * cols + c) / QK];
                            let av = a.d.to_f32() as f64 * a.qs[c % QK] as f64;
                            dot += deq[r * cols + c] as f64 * av;
                        }
                        let got = want[t * rows + r] as f64;
                        assert!(
                            (got - dot).abs() <= 1e-4 * (1.0 + dot.abs()),
                            "{ty} t {t} r {r}: {got} vs {dot}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_types_are_not_repacked_and_shapes_are_checked() {
        let data = vec![0u16; 42];
        let m = QuantMatrix::new(GgmlType::Q2_K, 1, 256, bytemuck::cast_slice(&data)).unwrap();
        assert!(Repacked::new(&m).unwrap().is_none());
        let data = vec![0u16; 9];
        let m = QuantMatrix::new(GgmlType::Q4_0, 1, 32, bytemuck::cast_slice(&data)).unwrap();
        let w = Repacked::new(&m).unwrap().unwrap();
        let k = Kernels::detect();
        let mut out = [0.0f32; 2];
        let e = k.matmul_repacked(&w, &[0.0; 32], 2, &mut out, &mut Default::default());
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
    }
}
