//! Fast numerics' matmul for F16 and BF16 weights: rows repacked at load time into groups
//! of 16 (one 512-bit register of f32 lanes), weights widened exactly to f32, activations
//! kept in f32, one float multiply-add per (row, token, column), no horizontal sums.
//!
//! ```text
//! group g (rows 16g..16g+16), stored as cols × 16 values (2 bytes each, the file's bits):
//!   | column 0: W[16g][0] … W[16g+15][0] | column 1: W[16g][1] … W[16g+15][1] | … |
//! groups one after another: value (row 16g + i, column c) at index (g·cols + c)·16 + i.
//! ```
//!
//! Rows past the matrix's last are zero and never written out. One column of a group is 32
//! bytes, so with the copy 64-byte aligned no column load crosses a cache line.
//!
//! The float order, per output cell (row r, token t): one chain over the columns in order,
//!
//! ```text
//! acc = +0.0
//! for c in 0..cols:  acc = fma(widen(W[r][c]), x[t][c], acc)     (f32, one rounding each)
//! out[t][r] = acc
//! ```
//!
//! where `widen` is the exact f16 → f32 (F16) or bf16 → f32 (BF16, the bits shifted up by
//! 16) conversion and `x` is the f32 activation as given (not rounded to f16 or bf16 as the
//! exact kernels do, so no activation rounding error at all). Nothing in it depends on how
//! many tokens share a call, on the tiling or on which rows a thread takes: the result is
//! batch-invariant. The AVX-512 kernel keeps each cell's chain in one lane of a register
//! and computes exactly [`dot_scalar`]'s operations, bit for bit. A single token is not
//! held up by the 4-cycle latency of one dependent chain: the kernel runs the chains of
//! several groups side by side (and, for several tokens, of several tokens: up to 24
//! independent accumulators sharing each widened weight vector), which changes no cell's
//! order.
//!
//! BF16 weights widen exactly too (rather than `vdpbf16ps` on activations rounded to bf16,
//! llama.cpp's choice): that keeps fast numerics more accurate than exact, the same kernel
//! serves both formats, and one specification holds on every CPU (no emulation of the
//! instruction's rounding and flushing).
//!
//! It is not llama.cpp's order (that is the exact kernels', see `half_x86.rs`), so
//! [`Numerics::Fast`] alone uses it, and only where [`accelerated`] says the level has its
//! own kernel.
//!
//! [`Numerics::Fast`]: crate::model::Numerics::Fast
//! [`accelerated`]: super::repacked::accelerated

#[cfg(target_arch = "x86_64")]
mod avx512;

use half::{bf16, f16};
use pagoda_core::ggml_type::GgmlType;
use rayon::prelude::*;

use super::error::{check_len, KernelError};
use super::{Kernels, QuantMatrix, SimdLevel};

/// Rows per group: the lanes of one 512-bit register of f32.
pub const GROUP_ROWS: usize = 16;

/// Below this many weight bytes × tokens a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 32 * 1024;

/// 64 bytes of the repacked copy: the unit of its allocation, so that it is 64-byte aligned.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// An F16 or BF16 matrix in the repacked layout of the module docs.
#[derive(Clone, Debug)]
pub struct RepackedFloat {
    /// BF16 (else F16).
    bf16: bool,
    rows: usize,
    cols: usize,
    /// `groups · cols · 16` values (then zero padding to a whole line).
    data: Vec<Line>,
}

impl RepackedFloat {
    /// `m` repacked, or `None` when it is neither F16 nor BF16; `Err(bytes)` when the copy
    /// of `bytes` bytes cannot be allocated (or its size overflows: `usize::MAX`).
    pub fn new(m: &QuantMatrix<'_>) -> Result<Option<RepackedFloat>, usize> {
        let bf16 = match m.ty() {
            GgmlType::F16 => false,
            GgmlType::BF16 => true,
            _ => return Ok(None),
        };
        let (rows, cols) = (m.rows(), m.cols());
        let groups = rows.div_ceil(GROUP_ROWS);
        let values = groups.checked_mul(cols).and_then(|n| n.checked_mul(GROUP_ROWS));
        let lines = values.ok_or(usize::MAX)?.div_ceil(32);
        let bytes = lines.checked_mul(64).ok_or(usize::MAX)?;
        let mut data: Vec<Line> = Vec::new();
        data.try_reserve_exact(lines).map_err(|_| bytes)?;
        data.resize(lines, Line([0; 32]));
        let src = m.data();
        let out: &mut [u16] = bytemuck::cast_slice_mut(&mut data);
        for (g, group) in out.chunks_mut(cols * GROUP_ROWS).take(groups).enumerate() {
            let here = (rows - g * GROUP_ROWS).min(GROUP_ROWS);
            for i in 0..here {
                let row = &src[(g * GROUP_ROWS + i) * cols * 2..][..cols * 2];
                for (c, v) in row.chunks_exact(2).enumerate() {
                    group[c * GROUP_ROWS + i] = u16::from_le_bytes([v[0], v[1]]);
                }
            }
        }
        Ok(Some(RepackedFloat { bf16, rows, cols, data }))
    }

    /// The weight type (F16 or BF16).
    pub fn ty(&self) -> GgmlType {
        if self.bf16 {
            GgmlType::BF16
        } else {
            GgmlType::F16
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

    /// Number of groups of 16 rows.
    fn groups(&self) -> usize {
        self.rows.div_ceil(GROUP_ROWS)
    }

    /// Every stored value, groups in order (module docs).
    fn values(&self) -> &[u16] {
        bytemuck::cast_slice(&self.data)
    }

    /// Row `16g + i`, column `c`, widened exactly to f32.
    fn weight(&self, g: usize, c: usize, i: usize) -> f32 {
        let bits = self.values()[(g * self.cols + c) * GROUP_ROWS + i];
        if self.bf16 {
            bf16::from_bits(bits).to_f32()
        } else {
            f16::from_bits(bits).to_f32()
        }
    }
}

/// `outs[t][j] = row 16·g0 + j · token t` for every token (`x`: `outs.len() × cols`,
/// token-major) and the `outs[t].len()` rows from group `g0` on, in the module's float
/// order: the specification.
pub(crate) fn dot_scalar(w: &RepackedFloat, g0: usize, x: &[f32], outs: &mut [&mut [f32]]) {
    let cols = w.cols;
    for (t, out) in outs.iter_mut().enumerate() {
        let xt = &x[t * cols..(t + 1) * cols];
        for (j, o) in out.iter_mut().enumerate() {
            let (g, i) = (g0 + j / GROUP_ROWS, j % GROUP_ROWS);
            let mut acc = 0.0f32;
            for (c, &xv) in xt.iter().enumerate() {
                acc = w.weight(g, c, i).mul_add(xv, acc);
            }
            *o = acc;
        }
    }
}

/// `out[t][r] = W[r] · x[t]` for `n_tokens` tokens (`x`: `n_tokens × w.cols()`, `out`:
/// `n_tokens × w.rows()`, row-major), in the module's float order, groups of rows split over
/// the current rayon pool. Errors if `x` or `out` do not match the shape.
pub(crate) fn matmul_repacked_float(
    k: &Kernels,
    w: &RepackedFloat,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_len("x", n_tokens.checked_mul(w.cols).ok_or(KernelError::Overflow)?, x.len())?;
    check_len("out", n_tokens.checked_mul(w.rows).ok_or(KernelError::Overflow)?, out.len())?;
    if n_tokens == 0 || w.rows == 0 {
        return Ok(());
    }
    let level = k.level();
    let run = |g0: usize, outs: &mut [&mut [f32]]| {
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx512 {
            // SAFETY: a `Kernels` at Avx512 exists only after run-time detection of AVX-512
            // F/BW/VL/DQ (and F16C, FMA); every `outs[t]` has the same length, rows of `w`
            // from group `g0` on, and `x` holds `outs.len()` tokens of `w.cols` values.
            unsafe { avx512::dot_groups(w, g0, x, outs) };
            return;
        }
        let _ = level;
        dot_scalar(w, g0, x, outs);
    };
    let groups = w.groups();
    let work = (w.data.len() * 64).saturating_mul(n_tokens.min(16));
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
    let task = |(g0, mut outs): (usize, Vec<&mut [f32]>)| run(g0, &mut outs);
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

    /// A random `rows × cols` matrix of `ty` (F16 or BF16) as 2-byte words: values of
    /// magnitude up to 0.5, a few of them tiny (subnormal in f16) or zero.
    fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u16> {
        (0..rows * cols)
            .map(|_| {
                let v = match rng.next() % 16 {
                    0 => 0.0,
                    1 => rng.unit() * 1e-6,
                    _ => rng.unit() * 0.5,
                };
                match ty {
                    GgmlType::BF16 => bf16::from_f32(v).to_bits(),
                    _ => f16::from_f32(v).to_bits(),
                }
            })
            .collect()
    }

    fn run(k: &Kernels, w: &RepackedFloat, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n * w.rows()];
        k.matmul_repacked_float(w, &x[..n * w.cols()], n, &mut out).unwrap();
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Every level that runs here equals the scalar specification bit for bit; a token's
    /// outputs do not depend on how many tokens share the call or on the thread count; and
    /// they are the dot products of the weights and activations (up to f32 rounding).
    #[test]
    fn levels_agree_batches_do_not_matter_and_dots_are_right() {
        let scalar = Kernels::new(SimdLevel::Scalar).unwrap();
        let most = 27; // two tiles of 12 and one of 2, then 1: every tile size
        for ty in [GgmlType::F16, GgmlType::BF16] {
            for (rows, cols) in
                [(16, 32), (37, 96), (64, 576), (200, 1536), (21, 512), (3, 7), (150, 577)]
            {
                let mut rng = Rng((rows * cols) as u64 + ty as u64);
                let wb = matrix(ty, rows, cols, &mut rng);
                let x: Vec<f32> = (0..most * cols).map(|_| rng.unit() * 2.0).collect();
                let m = QuantMatrix::new(ty, rows, cols, bytemuck::cast_slice(&wb)).unwrap();
                let w = RepackedFloat::new(&m).unwrap().unwrap();
                assert_eq!((w.ty(), w.rows(), w.cols()), (ty, rows, cols));
                let want = run(&scalar, &w, &x, most);
                for level in [SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Neon] {
                    let Ok(k) = Kernels::new(level) else { continue };
                    for n in [1, 2, 3, 4, 5, 8, 9, 12, 13, 20, most] {
                        let got = run(&k, &w, &x, n);
                        assert_eq!(
                            bits(&got),
                            bits(&want[..n * rows]),
                            "{ty} {rows}x{cols} {level:?} n {n}"
                        );
                    }
                    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
                    let got = one.install(|| run(&k, &w, &x, most));
                    assert_eq!(bits(&got), bits(&want), "{ty} {rows}x{cols} one thread");
                    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
                    let got = three.install(|| run(&k, &w, &x, most));
                    assert_eq!(bits(&got), bits(&want), "{ty} {rows}x{cols} three threads");
                }
                // Against f64 math on the file's values.
                let value = |bits: u16| match ty {
                    GgmlType::BF16 => f64::from(bf16::from_bits(bits).to_f32()),
                    _ => f64::from(f16::from_bits(bits).to_f32()),
                };
                for t in 0..most {
                    for r in 0..rows {
                        let (mut dot, mut mag) = (0.0f64, 0.0f64);
                        for c in 0..cols {
                            let p = value(wb[r * cols + c]) * f64::from(x[t * cols + c]);
                            dot += p;
                            mag += p.abs();
                        }
                        let got = f64::from(want[t * rows + r]);
                        assert!(
                            (got - dot).abs() <= 1e-6 * (cols as f64) * mag + 1e-30,
                            "{ty} {rows}x{cols} t {t} r {r}: {got} vs {dot}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn other_types_are_not_repacked_and_shapes_are_checked() {
        let data = vec![0u16; 9];
        let m = QuantMatrix::new(GgmlType::Q4_0, 1, 32, bytemuck::cast_slice(&data)).unwrap();
        assert!(RepackedFloat::new(&m).unwrap().is_none());
        let data = vec![0u16; 2 * 32];
        let m = QuantMatrix::new(GgmlType::F16, 2, 32, bytemuck::cast_slice(&data)).unwrap();
        let w = RepackedFloat::new(&m).unwrap().unwrap();
        let k = Kernels::detect();
        let mut out = [0.0f32; 2];
        let e = k.matmul_repacked_float(&w, &[0.0; 32], 2, &mut out);
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
        let mut out = [0.0f32; 4];
        let e = k.matmul_repacked_float(&w, &[0.0; 32], 2, &mut out);
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
        let e = k.matmul_repacked_float(&w, &[0.0; 64], 2, &mut out);
        assert!(e.is_ok(), "{e:?}");
    }
}
