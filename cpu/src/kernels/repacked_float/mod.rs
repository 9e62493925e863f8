//! Fast numerics' matmul for F16 and BF16 weights: rows repacked at load time into groups
//! of 16 (one 512-bit register of f32 lanes), one float multiply-add (F16) or one
//! `vdpbf16ps` pair step (BF16) per (row, token, column or pair of columns), no horizontal
//! sums.
//!
//! ```text
//! F16, group g (rows 16g..16g+16): cols columns of 16 values (2 bytes each, the file's bits)
//!   | column 0: W[16g][0] … W[16g+15][0] | column 1: W[16g][1] … W[16g+15][1] | … |
//!   value (row 16g + i, column c) at index (g·cols + c)·16 + i
//! BF16, group g: pairs = ⌈cols/2⌉ pairs of columns, 16 dwords each (64 bytes)
//!   | pair 0: W[16g][0] W[16g][1] … W[16g+15][0] W[16g+15][1] | pair 1: … columns 2, 3 | … |
//!   value (row 16g + i, column c) at index (g·pairs + c/2)·32 + 2i + c%2
//! groups one after another.
//! ```
//!
//! Rows past the matrix's last, and BF16's column past an odd last one, are zero and never
//! written out. A column (F16) or pair (BF16) of a group is 32 or 64 bytes, so with the copy
//! page-aligned no load crosses a cache line.
//!
//! The float order, per output cell (row r, token t), one chain over the columns in order:
//!
//! ```text
//! F16:   acc = +0.0
//!        for c in 0..cols:  acc = fma(f32(W[r][c]), x[t][c], acc)        (one rounding each)
//! BF16:  xb[c] = bf16(x[t][c]) (nearest even), F(v) = v with subnormals flushed to ±0,
//!        w[c] = F(f32(W[r][c])), a[c] = F(f32(xb[c])), both 0 at c = cols (odd cols)
//!        acc = +0.0
//!        for p in 0..pairs:  acc = F(F(acc) + F(w[2p+1]·a[2p+1]))          (odd first,
//!                            acc = F(acc + F(w[2p]·a[2p]))                  each add rounded)
//! out[t][r] = acc
//! ```
//!
//! F16 keeps the activations in f32 (the exact kernel rounds them to f16), so fast numerics
//! add no activation rounding at all, and f16 → f32 is exact. BF16 follows llama.cpp: the
//! activations are rounded to bf16 and each pair step is one `vdpbf16ps` (its rounding and
//! flushing are those of `scalar::dot_bf16`, the exact kernels' rule, which `half_x86.rs`
//! emulates bit for bit where a CPU lacks AVX-512 BF16; so does this module's kernel). One
//! instruction does two columns' products per lane, so BF16 prompts run about twice as fast
//! as with f32 fma after widening (measured on Zen 4, where one 512-bit fma issues per cycle),
//! at the accuracy of llama.cpp's and exact numerics' BF16.
//!
//! Nothing in either order depends on how many tokens share a call, on the tiling or on
//! which rows a thread takes: the result is batch-invariant. The AVX-512 kernel keeps each
//! cell's chain in one lane of a register and computes exactly `dot_scalar`'s operations,
//! bit for bit. A single token is not held up by the latency of one dependent chain: the
//! kernel runs the chains of 4 groups side by side (and, for several tokens, of several
//! tokens: up to 24 independent accumulators sharing each weight vector), which changes no
//! cell's order.
//!
//! It is not llama.cpp's order (that is the exact kernels', see `half_x86.rs`), so
//! [`Numerics::Fast`] alone uses it, and only where [`accelerated`] says the level has its
//! own kernel.
//!
//! [`Numerics::Fast`]: crate::model::Numerics::Fast

#[cfg(target_arch = "x86_64")]
mod avx512;

use std::sync::Arc;

use half::{bf16, f16};
use pagoda_core::ggml_type::GgmlType;
use rayon::prelude::*;

use super::error::{check_len, KernelError};
use super::scalar::flush;
use super::{Kernels, QuantMatrix, SimdLevel};

/// Whether `level` has its own F16/BF16 repacked kernel (AVX-512). Elsewhere only the scalar
/// specification runs it, slower than the exact kernels: fast numerics keep those.
pub fn accelerated(level: SimdLevel) -> bool {
    level == SimdLevel::Avx512
}

/// Rows per group: the lanes of one 512-bit register of f32.
pub const GROUP_ROWS: usize = 16;

/// Below this many weight bytes × tokens a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 32 * 1024;

/// An F16 or BF16 matrix in the repacked layout of the module docs.
///
/// The copy lives in anonymous memory asked for transparent huge pages (as the model file's
/// bytes are), shared by every matrix repacked in one [`new_all`](Self::new_all) call:
/// decode streams every weight once per token, and 2 MiB pages (which a single matrix of a
/// small model is too small to get) keep the hardware prefetchers running across what would
/// be 4 KiB page boundaries.
#[derive(Debug)]
pub struct RepackedFloat {
    /// BF16 (else F16).
    bf16: bool,
    rows: usize,
    cols: usize,
    /// The shared memory (page-aligned).
    map: Arc<memmap2::Mmap>,
    /// This matrix's `groups · values per group` values: bytes `start..start + len` of
    /// `map` (`start` a multiple of 64).
    start: usize,
    len: usize,
}

/// Where a matrix's copy goes: `(bf16, stride = values per group, bytes)`, or `None` when it
/// is neither F16 nor BF16; `Err(usize::MAX)` when its size overflows.
fn plan(m: &QuantMatrix<'_>) -> Result<Option<(bool, usize, usize)>, usize> {
    let bf16 = match m.ty() {
        GgmlType::F16 => false,
        GgmlType::BF16 => true,
        _ => return Ok(None),
    };
    let (rows, cols) = (m.rows(), m.cols());
    // Values per group: cols columns of 16 (F16), ⌈cols/2⌉ pairs of 32 (BF16).
    let stride = if bf16 { cols.div_ceil(2) * 2 } else { cols } * GROUP_ROWS;
    let values = rows.div_ceil(GROUP_ROWS).checked_mul(stride);
    let bytes = values.and_then(|n| n.checked_mul(2)).ok_or(usize::MAX)?;
    Ok(Some((bf16, stride, bytes)))
}

/// Writes `m`'s values into `out` (its copy, zeroed) in the module's layout.
fn fill(m: &QuantMatrix<'_>, bf16: bool, stride: usize, out: &mut [u16]) {
    let (rows, cols, src) = (m.rows(), m.cols(), m.data());
    let groups = rows.div_ceil(GROUP_ROWS);
    for (g, group) in out.chunks_mut(stride.max(1)).take(groups).enumerate() {
        let here = (rows - g * GROUP_ROWS).min(GROUP_ROWS);
        for i in 0..here {
            let row = &src[(g * GROUP_ROWS + i) * cols * 2..][..cols * 2];
            for (c, v) in row.chunks_exact(2).enumerate() {
                group[index_in_group(bf16, c, i)] = u16::from_le_bytes([v[0], v[1]]);
            }
        }
    }
}

impl RepackedFloat {
    /// `m` repacked, or `None` when it is neither F16 nor BF16; `Err(bytes)` when the copy
    /// of `bytes` bytes cannot be allocated (or its size overflows: `usize::MAX`).
    pub fn new(m: &QuantMatrix<'_>) -> Result<Option<RepackedFloat>, usize> {
        Ok(Self::new_all(core::slice::from_ref(m))?.pop().flatten())
    }

    /// Every matrix of `ms` repacked ([`new`](Self::new) of each, in order), the copies one
    /// after another in one shared allocation; `Err(bytes)` when it cannot be allocated (or
    /// its size overflows: `usize::MAX`).
    pub fn new_all(ms: &[QuantMatrix<'_>]) -> Result<Vec<Option<RepackedFloat>>, usize> {
        let plans = ms.iter().map(plan).collect::<Result<Vec<_>, usize>>()?;
        let mut starts = Vec::with_capacity(plans.len());
        let mut total = 0usize;
        for p in &plans {
            starts.push(total);
            let bytes = p.map_or(0, |(_, _, bytes)| bytes);
            total = total.checked_add(bytes.next_multiple_of(64)).ok_or(usize::MAX)?;
        }
        if plans.iter().all(Option::is_none) {
            return Ok(plans.iter().map(|_| None).collect());
        }
        let size = total.max(64);
        let mut map = memmap2::MmapMut::map_anon(size).map_err(|_| size)?;
        #[cfg(target_os = "linux")]
        let _a_hint_only = map.advise(memmap2::Advice::HugePage);
        for ((m, p), &start) in ms.iter().zip(&plans).zip(&starts) {
            if let Some((bf16, stride, bytes)) = *p {
                fill(m, bf16, stride, bytemuck::cast_slice_mut(&mut map[start..start + bytes]));
            }
        }
        let map = Arc::new(map.make_read_only().map_err(|_| size)?);
        Ok(ms
            .iter()
            .zip(plans)
            .zip(starts)
            .map(|((m, p), start)| {
                p.map(|(bf16, _, len)| RepackedFloat {
                    bf16,
                    rows: m.rows(),
                    cols: m.cols(),
                    map: Arc::clone(&map),
                    start,
                    len,
                })
            })
            .collect())
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
        bytemuck::cast_slice(&self.map[self.start..self.start + self.len])
    }

    /// Values per group (module docs).
    fn group_values(&self) -> usize {
        if self.bf16 {
            self.cols.div_ceil(2) * 2 * GROUP_ROWS
        } else {
            self.cols * GROUP_ROWS
        }
    }

    /// The file's bits of row `16g + i`, column `c`.
    fn bits(&self, g: usize, c: usize, i: usize) -> u16 {
        self.values()[g * self.group_values() + index_in_group(self.bf16, c, i)]
    }
}

/// Where row `16g + i`, column `c` sits from its group's first value (module docs).
fn index_in_group(bf16: bool, c: usize, i: usize) -> usize {
    if bf16 {
        (c / 2) * 2 * GROUP_ROWS + 2 * i + c % 2
    } else {
        c * GROUP_ROWS + i
    }
}

/// The bf16 activations of a BF16 call: token t's `x` rounded to bf16 (nearest even) at
/// `[t·2·pairs ..]`, each row padded with a zero to an even length. Empty for F16.
fn round_to_bf16(w: &RepackedFloat, x: &[f32], n_tokens: usize, xb: &mut Vec<bf16>) {
    xb.clear();
    if !w.bf16 {
        return;
    }
    let padded = w.cols.div_ceil(2) * 2;
    xb.resize(n_tokens * padded, bf16::ZERO);
    for (row, xt) in xb.chunks_exact_mut(padded.max(1)).zip(x.chunks_exact(w.cols.max(1))) {
        for (b, &v) in row.iter_mut().zip(xt) {
            *b = bf16::from_f32(v);
        }
    }
}

/// `outs[t][j] = row 16·g0 + j · token t` for every token (`x`: `outs.len() × cols`,
/// token-major; `xb`: its bf16 rounding, [`round_to_bf16`], for BF16) and the
/// `outs[t].len()` rows from group `g0` on, in the module's float order: the specification.
pub(crate) fn dot_scalar(
    w: &RepackedFloat,
    g0: usize,
    x: &[f32],
    xb: &[bf16],
    outs: &mut [&mut [f32]],
) {
    let cols = w.cols;
    let padded = cols.div_ceil(2) * 2;
    for (t, out) in outs.iter_mut().enumerate() {
        for (j, o) in out.iter_mut().enumerate() {
            let (g, i) = (g0 + j / GROUP_ROWS, j % GROUP_ROWS);
            let mut acc = 0.0f32;
            if w.bf16 {
                let xt = &xb[t * padded..(t + 1) * padded];
                let f = |b: bf16| flush(b.to_f32());
                // Column `cols` (odd cols) is the zero padding of the layout and of `xb`.
                let wv =
                    |c: usize| if c < cols { f(bf16::from_bits(w.bits(g, c, i))) } else { 0.0 };
                for p in 0..padded / 2 {
                    let (e, o) = (2 * p, 2 * p + 1);
                    acc = flush(flush(acc) + flush(wv(o) * f(xt[o])));
                    acc = flush(acc + flush(wv(e) * f(xt[e])));
                }
            } else {
                for (c, &xv) in x[t * cols..(t + 1) * cols].iter().enumerate() {
                    acc = f16::from_bits(w.bits(g, c, i)).to_f32().mul_add(xv, acc);
                }
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
    xb: &mut Vec<bf16>,
) -> Result<(), KernelError> {
    matmul_repacked_float_multi(k, &[w], x, n_tokens, &mut [out], xb)
}

/// [`matmul_repacked_float`] of several matrices against the same `x` (`outs[m]` gets
/// `ws[m] · x`) in one parallel region: the activations are rounded once (BF16) and decode
/// pays one fork-join instead of one per matrix. Each output cell is the one
/// [`matmul_repacked_float`] computes. All matrices must have the same type and `cols`
/// ([`KernelError::Incompatible`] otherwise).
pub(crate) fn matmul_repacked_float_multi(
    k: &Kernels,
    ws: &[&RepackedFloat],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
    xb: &mut Vec<bf16>,
) -> Result<(), KernelError> {
    check_len("outs", ws.len(), outs.len())?;
    let Some(&first) = ws.first() else { return Ok(()) };
    if ws.iter().any(|w| w.bf16 != first.bf16) {
        return Err(KernelError::Incompatible { what: "weight type" });
    }
    if ws.iter().any(|w| w.cols != first.cols) {
        return Err(KernelError::Incompatible { what: "cols" });
    }
    check_len("x", n_tokens.checked_mul(first.cols).ok_or(KernelError::Overflow)?, x.len())?;
    for (w, out) in ws.iter().zip(outs.iter()) {
        check_len("out", n_tokens.checked_mul(w.rows).ok_or(KernelError::Overflow)?, out.len())?;
    }
    if n_tokens == 0 {
        return Ok(());
    }
    round_to_bf16(first, x, n_tokens, xb);
    let xb = &xb[..];
    let level = k.level();
    let run = |w: &RepackedFloat, g0: usize, outs: &mut [&mut [f32]]| {
        #[cfg(target_arch = "x86_64")]
        if level == SimdLevel::Avx512 {
            // SAFETY: a `Kernels` at Avx512 exists only after run-time detection of AVX-512
            // F/BW/VL/DQ (and F16C, FMA); every `outs[t]` has the same length, rows of `w`
            // from group `g0` on; `x` holds `outs.len()` tokens of `w.cols` values and, for
            // BF16, `xb` their padded bf16 rows.
            unsafe { avx512::dot_groups(w, g0, x, xb, outs) };
            return;
        }
        let _ = level;
        dot_scalar(w, g0, x, xb, outs);
    };
    let work = ws.iter().map(|w| w.len).sum::<usize>().saturating_mul(n_tokens.min(16));
    let threads = rayon::current_num_threads();
    let serial = work < PARALLEL_MIN_WORK || threads == 1;
    // Per matrix: tasks of a range of groups, every token's rows of those groups.
    let mut tasks: Vec<(&RepackedFloat, usize, Vec<&mut [f32]>)> = Vec::new();
    for (&w, out) in ws.iter().zip(outs.iter_mut()) {
        let groups = w.groups();
        if groups == 0 {
            continue;
        }
        // Tasks of whole tiles (the kernel's decode tile is 4 groups): no thread is left
        // with a lone group's single chain.
        let chunk = match serial {
            true => groups,
            false => groups.div_ceil(threads * 8).next_multiple_of(4).min(groups),
        };
        let first_task = tasks.len();
        for c in 0..groups.div_ceil(chunk) {
            tasks.push((w, c * chunk, Vec::with_capacity(n_tokens)));
        }
        for tok in out.chunks_mut(w.rows) {
            for (c, piece) in tok.chunks_mut(chunk * GROUP_ROWS).enumerate() {
                tasks[first_task + c].2.push(piece);
            }
        }
    }
    let task = |(w, g0, mut outs): (&RepackedFloat, usize, Vec<&mut [f32]>)| run(w, g0, &mut outs);
    if tasks.len() == 1 || serial {
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

    /// A random `rows × cols` matrix of `ty` (F16 or BF16) as 2-byte words: values of
    /// magnitude up to 0.5, a few of them tiny (subnormal in f16) or zero.
    fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u16> {
        (0..rows * cols)
            .map(|_| {
                let v = match rng.next() % 16 {
                    0 => 0.0,
                    1 => rng.unit() * 1e-6,
                    // bf16 only: subnormal, and small enough for products to underflow.
                    2 if ty == GgmlType::BF16 => rng.unit() * 1e-39,
                    3 if ty == GgmlType::BF16 => rng.unit() * 1e-25,
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
        k.matmul_repacked_float(w, &x[..n * w.cols()], n, &mut out, &mut Default::default())
            .unwrap();
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
                let x: Vec<f32> = (0..most * cols)
                    .map(|_| rng.unit() * if rng.next() % 16 == 0 { 1e-30 } else { 2.0 })
                    .collect();
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
                // Against f64 math on the file's values and the activations (BF16: rounded
                // to bf16, as the module docs say).
                let value = |bits: u16| match ty {
                    GgmlType::BF16 => f64::from(bf16::from_bits(bits).to_f32()),
                    _ => f64::from(f16::from_bits(bits).to_f32()),
                };
                let act = |v: f32| match ty {
                    GgmlType::BF16 => f64::from(bf16::from_f32(v).to_f32()),
                    _ => f64::from(v),
                };
                for t in 0..most {
                    for r in 0..rows {
                        let (mut dot, mut mag) = (0.0f64, 0.0f64);
                        for c in 0..cols {
                            let p = value(wb[r * cols + c]) * act(x[t * cols + c]);
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

    /// BF16 on an AVX-512 CPU without `vdpbf16ps`: the emulating kernel equals the
    /// specification too (on a CPU with the instruction, the test above ran the hardware's).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_without_vdpbf16ps_equals_the_specification() {
        if Kernels::new(SimdLevel::Avx512).is_err() {
            eprintln!("no AVX-512: nothing to compare on this CPU");
            return;
        }
        let n = 27;
        for (rows, cols) in [(37, 96), (21, 577), (64, 576), (3, 7)] {
            let mut rng = Rng((rows * cols) as u64 + 99);
            let wb = matrix(GgmlType::BF16, rows, cols, &mut rng);
            let x: Vec<f32> = (0..n * cols)
                .map(|_| rng.unit() * if rng.next() % 16 == 0 { 1e-30 } else { 2.0 })
                .collect();
            let m = QuantMatrix::new(GgmlType::BF16, rows, cols, bytemuck::cast_slice(&wb));
            let w = RepackedFloat::new(&m.unwrap()).unwrap().unwrap();
            let mut xb = Vec::new();
            round_to_bf16(&w, &x, n, &mut xb);
            let (mut want, mut got) = (vec![0.0f32; n * rows], vec![f32::NAN; n * rows]);
            dot_scalar(&w, 0, &x, &xb, &mut want.chunks_mut(rows).collect::<Vec<_>>());
            let mut outs: Vec<&mut [f32]> = got.chunks_mut(rows).collect();
            let at = avx512::At { w: &w, x: &x, xb: &xb, g0: 0, g: 0, t: 0 };
            // SAFETY: AVX-512 F/BW/VL was detected (the Avx512 level); every output row
            // holds the matrix's rows, from group 0; `x` and `xb` hold n tokens.
            unsafe { avx512::dot_groups_emulated(&at, &mut outs) };
            assert_eq!(bits(&got), bits(&want), "{rows}x{cols}");
        }
    }

    /// Several matrices in one call: each output is the one call of its own gives, bit for
    /// bit; mixed types or widths are refused.
    #[test]
    fn several_matrices_in_one_call_equal_one_call_each() {
        let k = Kernels::detect();
        let n = 5;
        for ty in [GgmlType::F16, GgmlType::BF16] {
            let mut rng = Rng(7 + ty as u64);
            let cols = 96;
            let words: Vec<Vec<u16>> =
                [40, 16, 200].iter().map(|&rows| matrix(ty, rows, cols, &mut rng)).collect();
            let ws: Vec<RepackedFloat> = words
                .iter()
                .map(|d| {
                    let m = QuantMatrix::new(ty, d.len() / cols, cols, bytemuck::cast_slice(d));
                    RepackedFloat::new(&m.unwrap()).unwrap().unwrap()
                })
                .collect();
            let x: Vec<f32> = (0..n * cols).map(|_| rng.unit()).collect();
            let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n * w.rows()]).collect();
            {
                let mut views: Vec<&mut [f32]> = outs.iter_mut().map(|o| &mut o[..]).collect();
                let refs: Vec<&RepackedFloat> = ws.iter().collect();
                k.matmul_repacked_float_multi(&refs, &x, n, &mut views, &mut Default::default())
                    .unwrap();
            }
            for (w, got) in ws.iter().zip(&outs) {
                assert_eq!(bits(got), bits(&run(&k, w, &x, n)), "{ty} {} rows", w.rows());
            }
        }
        let make = |ty, cols| {
            let d = vec![0u16; 16 * cols];
            let m = QuantMatrix::new(ty, 16, cols, bytemuck::cast_slice(&d)).unwrap();
            RepackedFloat::new(&m).unwrap().unwrap()
        };
        let (a, b, c) =
            (make(GgmlType::F16, 32), make(GgmlType::BF16, 32), make(GgmlType::F16, 64));
        let (mut o1, mut o2) = (vec![0.0f32; 16], vec![0.0f32; 16]);
        for (pair, what) in [([&a, &b], "weight type"), ([&a, &c], "cols")] {
            let e = k.matmul_repacked_float_multi(
                &pair,
                &[0.0; 32],
                1,
                &mut [&mut o1, &mut o2],
                &mut Default::default(),
            );
            assert!(matches!(e, Err(KernelError::Incompatible { what: w }) if w == what), "{e:?}");
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
        let e = k.matmul_repacked_float(&w, &[0.0; 32], 2, &mut out, &mut Default::default());
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
        let mut out = [0.0f32; 4];
        let e = k.matmul_repacked_float(&w, &[0.0; 32], 2, &mut out, &mut Default::default());
        assert!(matches!(e, Err(KernelError::Length { .. })), "{e:?}");
        let e = k.matmul_repacked_float(&w, &[0.0; 64], 2, &mut out, &mut Default::default());
        assert!(e.is_ok(), "{e:?}");
    }
}
