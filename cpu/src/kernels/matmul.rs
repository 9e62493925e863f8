//! The matmul driver: validate, quantize the activations once, split the weight rows
//! over rayon, run the level's row kernel on each chunk.
//!
//! ```text
//! x:   n_tokens × cols (row-major f32)        W: rows × cols (ggml blocks, row-major)
//! out: n_tokens × rows (row-major f32)        out[t][r] = W[r] · x[t]
//! ```
//!
//! Each rayon task owns a chunk of weight rows and computes them against *all* tokens,
//! so a weight block is read from memory once per call, whatever the batch size.

use pagoda_core::ggml_type::GgmlType;
use pagoda_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use rayon::prelude::*;

use super::activations::MatmulScratch;
#[cfg(target_arch = "x86_64")]
use super::activations::{self, Acts};
use super::error::{check_len, KernelError};

use super::{float, scalar, Kernels, QuantMatrix, SimdLevel};

/// Below this many weight bytes × tokens a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 32 * 1024;

/// `matmul_multi` over one matrix.
pub(crate) fn matmul(
    k: &Kernels,
    w: &QuantMatrix<'_>,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    matmul_multi(k, core::slice::from_ref(w), x, n_tokens, &mut [out], scratch)
}

/// Several matrices of one type and width against the same `x`: the activations are
/// quantized once and all rows of all matrices share one parallel region.
pub(crate) fn matmul_multi(
    k: &Kernels,
    ws: &[QuantMatrix<'_>],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    check_len("outs", ws.len(), outs.len())?;
    let Some(first) = ws.first() else { return Ok(()) };
    let (ty, cols) = (first.ty(), first.cols());
    for (w, out) in ws.iter().zip(outs.iter()) {
        if w.ty() != ty {
            return Err(KernelError::Incompatible { what: "weight type" });
        }
        if w.cols() != cols {
            return Err(KernelError::Incompatible { what: "cols" });
        }
        check_len("out", n_tokens.checked_mul(w.rows()).ok_or(KernelError::Overflow)?, out.len())?;
    }
    check_len("x", n_tokens.checked_mul(cols).ok_or(KernelError::Overflow)?, x.len())?;
    if n_tokens == 0 || ws.iter().all(|w| w.rows() == 0) {
        return Ok(());
    }
    if cols == 0 {
        outs.iter_mut().for_each(|o| o.fill(0.0));
        return Ok(());
    }
    let level = k.level();
    let nb = cols / QK;
    match ty {
        GgmlType::F32 => {
            let wf: Vec<&[f32]> = ws
                .iter()
                .map(|w| bytemuck::try_cast_slice(w.data()))
                .collect::<Result<_, _>>()
                .map_err(|_| KernelError::Misaligned { ty: GgmlType::F32, align: 4 })?;
            for_row_chunks(ws, n_tokens, outs, |m, r0, outs| {
                let n = outs[0].len();
                for r in 0..n {
                    let wr = &wf[m][(r0 + r) * cols..(r0 + r + 1) * cols];
                    for (t, o) in outs.iter_mut().enumerate() {
                        o[r] = float::run(
                            level,
                            float::Dot { a: wr, b: &x[t * cols..(t + 1) * cols] },
                        );
                    }
                }
            });
            return Ok(());
        }
        GgmlType::Q4_1 => {
            scratch.q8_1.resize(n_tokens * nb, BlockQ8_1::zeroed());
            k.quantize_q8_1(x, &mut scratch.q8_1)?;
        }
        GgmlType::Q4_0 | GgmlType::Q8_0 => {
            scratch.q8_0.resize(n_tokens * nb, BlockQ8_0::zeroed());
            k.quantize_q8_0(x, &mut scratch.q8_0)?;
        }
        other => return Err(KernelError::UnsupportedType(other)),
    }

    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx2 => {
            let acts = match ty {
                GgmlType::Q4_1 => activations::soa_from_q8_1(scratch, nb),
                _ => activations::soa_from_q8_0(scratch, nb),
            };
            let acts = &acts;
            for_row_chunks(ws, n_tokens, outs, |m, r0, outs| {
                let n = outs[0].len();
                let row_bytes = ws[m].row_bytes();
                let wc = &ws[m].data()[r0 * row_bytes..(r0 + n) * row_bytes];
                x86_chunk(level, ty, wc, row_bytes, acts, outs);
            });
        }
        _ => {
            // Scalar and NEON read ggml blocks directly. The casts cannot fail: the data
            // is 2-aligned (checked by QuantMatrix::new) and a whole number of blocks.
            let q8_0 = &scratch.q8_0;
            let q8_1 = &scratch.q8_1;
            for_row_chunks(ws, n_tokens, outs, |m, r0, outs| {
                let n = outs[0].len();
                let row_bytes = ws[m].row_bytes();
                let data = ws[m].data();
                for r in 0..n {
                    let wr = &data[(r0 + r) * row_bytes..(r0 + r + 1) * row_bytes];
                    for (t, o) in outs.iter_mut().enumerate() {
                        let a = t * nb..(t + 1) * nb;
                        o[r] = match ty {
                            GgmlType::Q4_1 => dot_q4_1(level, cast(wr), &q8_1[a]),
                            GgmlType::Q4_0 => dot_q4_0(level, cast(wr), &q8_0[a]),
                            _ => dot_q8_0(level, cast(wr), &q8_0[a]),
                        };
                    }
                }
            });
        }
    }
    Ok(())
}

fn cast<T: bytemuck::Pod>(b: &[u8]) -> &[T] {
    bytemuck::cast_slice(b)
}

use bytemuck::Zeroable;

fn dot_q4_1(level: SimdLevel, w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon {
        // SAFETY: a Kernels at the Neon level exists only after NEON was detected.
        return unsafe { super::neon::vec_dot_q4_1_q8_1(w, a) };
    }
    let _ = level;
    scalar::dot_q4_1(w, a)
}

fn dot_q4_0(level: SimdLevel, w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon {
        // SAFETY: a Kernels at the Neon level exists only after NEON was detected.
        return unsafe { super::neon::vec_dot_q4_0_q8_0(w, a) };
    }
    let _ = level;
    scalar::dot_q4_0(w, a)
}

fn dot_q8_0(level: SimdLevel, w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    #[cfg(target_arch = "aarch64")]
    if level == SimdLevel::Neon {
        // SAFETY: a Kernels at the Neon level exists only after NEON was detected.
        return unsafe { super::neon::vec_dot_q8_0_q8_0(w, a) };
    }
    let _ = level;
    scalar::dot_q8_0(w, a)
}

#[cfg(target_arch = "x86_64")]
fn x86_chunk(
    level: SimdLevel,
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    acts: &Acts<'_>,
    outs: &mut [&mut [f32]],
) {
    use super::{avx2, avx512};
    debug_assert!(outs.iter().all(|o| o.len() * row_bytes == w.len()));
    debug_assert!(acts.d.len() >= outs.len() * acts.nb);
    // SAFETY: `level` comes from a `Kernels`, which exists at Avx512/Avx2 only after
    // run-time detection of those features (`SimdLevel::is_available`). The shape
    // contract holds: `w` is whole rows of `row_bytes == nb * block bytes` (QuantMatrix
    // invariant), each `outs[t]` has one slot per row of `w` (for_row_chunks), and
    // `acts` holds `n_tokens * nb` blocks (quantized from `x` of `n_tokens * cols`).
    unsafe {
        match (level, ty) {
            (SimdLevel::Avx512, GgmlType::Q4_1) => {
                avx512::matmul_chunk::<{ avx512::Q4_1 }>(w, row_bytes, acts, outs)
            }
            (SimdLevel::Avx512, GgmlType::Q4_0) => {
                avx512::matmul_chunk::<{ avx512::Q4_0 }>(w, row_bytes, acts, outs)
            }
            (SimdLevel::Avx512, _) => {
                avx512::matmul_chunk::<{ avx512::Q8_0 }>(w, row_bytes, acts, outs)
            }
            (_, GgmlType::Q4_1) => avx2::matmul_chunk::<{ avx512::Q4_1 }>(w, row_bytes, acts, outs),
            (_, GgmlType::Q4_0) => avx2::matmul_chunk::<{ avx512::Q4_0 }>(w, row_bytes, acts, outs),
            _ => avx2::matmul_chunk::<{ avx512::Q8_0 }>(w, row_bytes, acts, outs),
        }
    }
}

/// Split each `outs[m]` (`n_tokens × ws[m].rows()`) into chunks of rows and run
/// `f(m, first_row, chunk_outs)` on each chunk, in parallel when the work is large
/// enough; `chunk_outs[t]` is token t's slice of the chunk's rows.
fn for_row_chunks<F>(ws: &[QuantMatrix<'_>], n_tokens: usize, outs: &mut [&mut [f32]], f: F)
where
    F: Fn(usize, usize, &mut [&mut [f32]]) + Sync,
{
    let total_rows: usize = ws.iter().map(|w| w.rows()).sum();
    let work: usize = ws
        .iter()
        .map(|w| w.rows().saturating_mul(w.row_bytes()))
        .fold(0usize, usize::saturating_add)
        .saturating_mul(n_tokens.min(16));
    let threads = rayon::current_num_threads();
    if work < PARALLEL_MIN_WORK || threads == 1 {
        for (m, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            if w.rows() > 0 {
                let mut per_token: Vec<&mut [f32]> = out.chunks_mut(w.rows()).collect();
                f(m, 0, &mut per_token);
            }
        }
        return;
    }
    // Several chunks per thread so that work stealing evens out uneven cores; a multiple
    // of 4 rows; at least 8 rows so per-chunk overhead stays small.
    let chunk = total_rows.div_ceil(threads * 8).max(8).next_multiple_of(4);
    if n_tokens == 1 && ws.len() == 1 {
        outs[0].par_chunks_mut(chunk).enumerate().for_each(|(c, o)| f(0, c * chunk, &mut [o]));
        return;
    }
    let mut tasks: Vec<(usize, usize, Vec<&mut [f32]>)> = Vec::new();
    for (m, (w, out)) in ws.iter().zip(outs.iter_mut()).enumerate() {
        let rows = w.rows();
        if rows == 0 {
            continue;
        }
        let first = tasks.len();
        for c in 0..rows.div_ceil(chunk) {
            tasks.push((m, c * chunk, Vec::with_capacity(n_tokens)));
        }
        for tok in out.chunks_mut(rows) {
            for (c, piece) in tok.chunks_mut(chunk).enumerate() {
                tasks[first + c].2.push(piece);
            }
        }
    }
    tasks.into_par_iter().for_each(|(m, r0, mut o)| f(m, r0, &mut o));
}
