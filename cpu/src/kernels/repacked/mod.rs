//! Fast numerics' matmul for Q4_0, Q4_1 and Q8_0 weights: rows repacked at load time into
//! groups of 16, one float multiply-add per (row, token, block), no horizontal sums.
//!
//! ```text
//! group g (rows 16g..16g+16), block b, Q4_0: | d: 16 × f16 | qs: 4 × 64 bytes |
//!                                    Q4_1: | d: 16 × f16 | m: 16 × f16 | qs: 4 × 64 bytes |
//!                                    Q8_0: | d: 16 × f16 | qs + 128: 8 × 64 bytes |
//! qs piece j: row r's bytes 4j..4j+4 of the block at bytes 4r..4r+4, so a 512-bit load
//! holds, in 32-bit lane r, four bytes of row r: Q4, values 4j..4j+4 (low nibbles) and
//! 16+4j..16+4j+4 (high nibbles); Q8_0, values 4j..4j+4 plus 128 (unsigned, for vpdpbusd).
//! Rows past the matrix's last are zero (d = 0) and never written out.
//! ```
//!
//! The float order, per output cell (row r, token t), blocks b in order:
//!
//! ```text
//! isum = Σ_i q[r][b][i] · a[t][b][i]   (exact i32; Q4_0: q = nibble − 8, Q4_1: q = nibble,
//!                                       Q8_0: q = the stored i8)
//! acc  = fma(d[r][b] · da[t][b], isum as f32, acc)
//! Q4_1: acc = fma(m[r][b] · da[t][b], Σ_i a[t][b][i] as f32, acc)
//! ```
//!
//! with activations in Q8_0 blocks (`da` their f16 scale). Nothing in it depends on how many
//! tokens share a call or on which rows a thread takes, so the result is batch-invariant;
//! the AVX-512 kernel (16 rows in the lanes of one register, `vpdpbusd` on four weight bytes
//! of each row against four activation bytes broadcast) computes exactly [`dot_scalar`]'s
//! operations, bit for bit. It is not llama.cpp's order (that is the exact kernels', which
//! sum 8 lanes per block and reduce them at the end), so [`Numerics::Fast`] alone uses it,
//! and only at a level with its own kernel ([`accelerated`]).
//!
//! [`Numerics::Fast`]: crate::model::Numerics::Fast

#[cfg(target_arch = "x86_64")]
mod avx512;

use half::f16;
use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{BlockQ8_0, QK};
use rayon::prelude::*;

use super::error::{check_len, KernelError};
use super::{Kernels, QuantMatrix, SimdLevel};

/// Rows per group: the lanes of one 512-bit register of f32.
pub const GROUP_ROWS: usize = 16;

/// Below this many weight bytes × tokens a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 32 * 1024;

/// Whether `level` has its own repacked kernel (AVX-512 with VNNI). Elsewhere only the
/// scalar specification runs it, slower than the exact kernels: fast numerics keep those.
pub fn accelerated(level: SimdLevel) -> bool {
    level == SimdLevel::Avx512
}

/// A repacked weight format (kernel selector: `F` of the SIMD kernels).
pub(crate) const Q4_0: u8 = 0;
/// See [`Q4_0`].
pub(crate) const Q4_1: u8 = 1;
/// See [`Q4_0`].
pub(crate) const Q8_0: u8 = 2;

/// `(ggml block bytes, offset of its quants, bytes of one repacked group block, offset of
/// the quants there)` of format `f`.
const fn geometry(f: u8) -> (usize, usize, usize, usize) {
    match f {
        Q4_0 => (18, 2, 32 + 256, 32),
        Q4_1 => (20, 4, 64 + 256, 64),
        _ => (34, 2, 32 + 512, 32),
    }
}

/// What the integer dot of format `f` subtracts per unit of the activation block's quant sum
/// (the offset of its unsigned weights), and whether it has a minimum term.
const fn offset(f: u8) -> i32 {
    match f {
        Q4_0 => 8,
        Q4_1 => 0,
        _ => 128,
    }
}

/// A Q4_0, Q4_1 or Q8_0 matrix in the repacked layout of the module docs.
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
    /// `m` repacked, or `None` when its type is not Q4_0, Q4_1 or Q8_0.
    pub fn new(m: &QuantMatrix<'_>) -> Option<Repacked> {
        let format = match m.ty() {
            GgmlType::Q4_0 => Q4_0,
            GgmlType::Q4_1 => Q4_1,
            GgmlType::Q8_0 => Q8_0,
            _ => return None,
        };
        let (block, qoff, gb, gq) = geometry(format);
        let (rows, cols, rb) = (m.rows(), m.cols(), m.row_bytes());
        let nb = cols / QK;
        let groups = rows.div_ceil(GROUP_ROWS);
        let mut data = vec![0u8; groups * nb * gb];
        let src = m.data();
        for (g, out) in data.chunks_exact_mut(nb * gb).enumerate() {
            for (b, o) in out.chunks_exact_mut(gb).enumerate() {
                for i in 0..GROUP_ROWS {
                    let r = g * GROUP_ROWS + i;
                    if r >= rows {
                        break; // zero rows: d = 0, m = 0
                    }
                    let blk = &src[r * rb + b * block..][..block];
                    o[2 * i..2 * i + 2].copy_from_slice(&blk[0..2]);
                    if format == Q4_1 {
                        o[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk[2..4]);
                    }
                    let qs = &blk[qoff..];
                    for j in 0..qs.len() / 4 {
                        let at = gq + 64 * j + 4 * i;
                        o[at..at + 4].copy_from_slice(&qs[4 * j..4 * j + 4]);
                        if format == Q8_0 {
                            o[at..at + 4].iter_mut().for_each(|q| *q ^= 0x80); // i8 + 128
                        }
                    }
                }
            }
        }
        Some(Repacked { format, rows, cols, nb, data })
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        match self.format {
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            _ => GgmlType::Q8_0,
        }
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
        let n = self.nb * geometry(self.format).2;
        &self.data[g * n..(g + 1) * n]
    }
}

/// A call's activations: Q8_0 blocks of every token, and each block's quant sum.
pub(crate) struct Acts<'a> {
    /// `n_tokens × nb` blocks, token-major.
    pub blocks: &'a [BlockQ8_0],
    /// `Σ_i qs[i]` of each block.
    pub sums: &'a [i32],
    /// Blocks per token.
    pub nb: usize,
}

/// `out[t][i] = row 16g + i · token t` for the group's rows that exist (`out[t].len()` of
/// them), every token of `acts`, in the module's float order: the specification.
pub(crate) fn dot_scalar(w: &Repacked, g: usize, acts: &Acts<'_>, outs: &mut [&mut [f32]]) {
    let f = w.format;
    let (_, _, gb, q0) = geometry(f);
    let group = w.group(g);
    for (t, out) in outs.iter_mut().enumerate() {
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..acts.nb {
                let blk = &group[b * gb..(b + 1) * gb];
                let a = &acts.blocks[t * acts.nb + b];
                let da = a.d.to_f32();
                let d = f16::from_le_bytes([blk[2 * i], blk[2 * i + 1]]).to_f32();
                let mut isum = 0i32;
                for e in 0..QK {
                    // Element e: Q4, piece e % 16 / 4 byte e % 4, low nibble below 16;
                    // Q8_0, piece e / 4 byte e % 4.
                    let q = if f == Q8_0 {
                        i32::from(blk[q0 + 64 * (e / 4) + 4 * i + e % 4])
                    } else {
                        let byte = blk[q0 + 64 * (e % 16 / 4) + 4 * i + e % 4];
                        i32::from(if e < 16 { byte & 0x0F } else { byte >> 4 })
                    };
                    isum += (q - offset(f)) * i32::from(a.qs[e]);
                }
                acc = (d * da).mul_add(isum as f32, acc);
                if f == Q4_1 {
                    let m = f16::from_le_bytes([blk[32 + 2 * i], blk[32 + 2 * i + 1]]).to_f32();
                    acc = (m * da).mul_add(acts.sums[t * acts.nb + b] as f32, acc);
                }
            }
            *o = acc;
        }
    }
}

/// Scratch of [`matmul_repacked`]: the activations' blocks and sums, reused across calls.
#[derive(Debug, Default)]
pub struct RepackedScratch {
    blocks: Vec<BlockQ8_0>,
    sums: Vec<i32>,
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
    scratch.blocks.clear();
    scratch.blocks.resize(n_tokens * nb, bytemuck::Zeroable::zeroed());
    k.quantize_q8_0(x, &mut scratch.blocks)?;
    scratch.sums.clear();
    scratch
        .sums
        .extend(scratch.blocks.iter().map(|b| b.qs.iter().map(|&q| i32::from(q)).sum::<i32>()));
    let acts = Acts { blocks: &scratch.blocks, sums: &scratch.sums, nb };
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

    /// xorshift64: deterministic noise.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// A random `rows × cols` matrix of `ty` (Q4_0, Q4_1 or Q8_0), as 2-byte aligned bytes.
    fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u16> {
        let block = match ty {
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            _ => 18,
        };
        let mut bytes = vec![0u8; rows * cols / QK * block];
        for blk in bytes.chunks_exact_mut(block) {
            blk[0..2].copy_from_slice(&f16::from_f32(rng.unit() * 0.05).to_le_bytes());
            if ty == GgmlType::Q4_1 {
                blk[2..4].copy_from_slice(&f16::from_f32(rng.unit() * 0.3).to_le_bytes());
            }
            let q0 = if ty == GgmlType::Q8_0 { 2 } else { block - 16 };
            blk[q0..].iter_mut().for_each(|q| *q = rng.next() as u8);
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
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for (rows, cols) in [(16, 32), (37, 96), (64, 576), (200, 1536)] {
                let (wb, x) = case(ty, rows, cols, (rows * cols) as u64 + ty as u64);
                let m = QuantMatrix::new(ty, rows, cols, bytemuck::cast_slice(&wb)).unwrap();
                let w = Repacked::new(&m).unwrap();
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
        let data = vec![0u16; 11];
        let m = QuantMatrix::new(GgmlType::Q5_0, 1, 32, bytemuck::cast_slice(&data)).unwrap();
        assert!(Repacked::new(&m).is_none());
        let data = vec![0u16; 9];
        let m = QuantMatrix::new(GgmlType::Q4_0, 1, 32, bytemuck::cast_slice(&data)).unwrap();
        let w = Repacked::new(&m).unwrap();
        let k = Kernels::detect();
        let mut out = [0.0f32; 2];
        let e = k.matmul_repacked(&w, &[0.0; 32], 2, &mut out, &mut Default::default());
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
    }
}
