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

use rayon::prelude::*;

use super::activations::{self, MatmulScratch};
use super::error::{check_len, KernelError};
use super::{table, Kernels, QuantMatrix};

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

/// Which kernel of a table row runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The row's own kernel at every batch size (`WeightKernels::chunk`).
    PerRow,
    /// llama.cpp's choice for the batch: `WeightKernels::tinyblas` (F16, BF16) from 2 tokens
    /// where the shapes fit it, `WeightKernels::tiled` (K-quants) from
    /// [`super::TILED_MIN_TOKENS`] tokens.
    Llama,
    /// llama.cpp's choice for matrices it repacks at load: `WeightKernels::llama_repacked`
    /// where the row has one, else as [`Order::Llama`].
    LlamaRepacked,
}

/// [`matmul_multi_in`] in [`Order::PerRow`].
pub(crate) fn matmul_multi(
    k: &Kernels,
    ws: &[QuantMatrix<'_>],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
) -> Result<(), KernelError> {
    matmul_multi_in(k, ws, x, n_tokens, outs, scratch, Order::PerRow)
}

/// Several matrices of one type and width against the same `x`: the activations are
/// converted once (to the format's [`table::Activation`]) and all rows of all matrices
/// share one parallel region, each chunk running the level's table kernel (chosen by
/// `order` and the token count, once for the whole call).
pub(crate) fn matmul_multi_in(
    k: &Kernels,
    ws: &[QuantMatrix<'_>],
    x: &[f32],
    n_tokens: usize,
    outs: &mut [&mut [f32]],
    scratch: &mut MatmulScratch,
    order: Order,
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
    let wk = table::lookup(k.level(), ty).ok_or(KernelError::UnsupportedType(ty))?;
    // llama.cpp's tinyBLAS takes the batch if every matrix fits its tiles.
    let tinyblas = wk.tinyblas.filter(|&(_, step)| {
        n_tokens >= 2
            && cols % step == 0
            && ws.iter().all(|w| w.rows() % super::tinyblas::ROW_MULTIPLE == 0)
    });
    let chunk_fn = match (order, tinyblas, wk.llama_repacked, wk.tiled) {
        (Order::PerRow, ..) => wk.chunk,
        (_, Some((f, _)), _, _) => f,
        (Order::LlamaRepacked, None, Some(repacked), _) => repacked,
        (_, None, _, Some(tiled)) if n_tokens >= super::TILED_MIN_TOKENS => tiled,
        _ => wk.chunk,
    };
    let inputs = activations::prepare(k, wk, x, cols, scratch)?;
    let inputs = &inputs;
    for_row_chunks(ws, n_tokens, outs, |m, r0, outs| {
        let n = outs[0].len();
        let row_bytes = ws[m].row_bytes();
        let wc = &ws[m].data()[r0 * row_bytes..(r0 + n) * row_bytes];
        // SAFETY: `wk` comes from the table of `k`'s level, and a `Kernels` exists at a
        // level only after run-time detection of its features. The shape contract holds:
        // `wc` is whole rows of `row_bytes` (QuantMatrix invariant, which also checked the
        // alignment `wk.align`), each `outs[t]` has one slot per row of `wc`
        // (for_row_chunks), and `inputs` holds `n_tokens` tokens of `cols` converted to
        // `wk.act` by `prepare`; `chunk_fn` is one of `wk`'s kernels, on the same inputs.
        unsafe { chunk_fn(wc, row_bytes, inputs, outs) }
    });
    Ok(())
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
