//! Fast paged attention: SIMD page kernels, GQA groups, rayon tasks and flash-decoding.
//!
//! Two kernels:
//! - [`paged_attention_f16`] (`f16_pages.rs`): f16 pages in llama.cpp's rounding, one key at
//!   a time, so that the model's logits equal llama.cpp's bit for bit (docs/numerics.md).
//!   The model uses it for its default f16 cache.
//! - [`paged_attention`] (below): any page format, a page of keys at a time with f32
//!   accumulation, and flash-decoding; the model uses it for f32, bf16, q8_0 and q4_0 pages.
//!
//! [`paged_attention`] computes exactly what `pagoda_core::attention::paged_prefill` (and,
//! for one query token, `paged_decode`) specifies, with the same argument checks and errors,
//! but fast:
//!
//! - **Tasks** are (chunk of up to [`TOKENS_PER_TASK`] query tokens) × (kv head) × (range of
//!   pages), run with rayon. A task serves all `n_heads / n_kv_heads` query heads of its GQA
//!   group for all its tokens, so every K/V page run is read once per task, not once per
//!   query head and token. When a kv head has few rows (decode) and there are page ranges
//!   enough for the threads, one rayon job runs a range's tasks for every kv head together,
//!   page by page (`Shared::run_heads`): a page's heads are adjacent, so it is read as one
//!   region. Every task prefetches the next page's run of a head (into L2, `prefetcht1`)
//!   just before it computes this page's same run, so that decode streams the cache at close
//!   to the read bandwidth instead of waiting on each page.
//! - **Per page**, keys and values are one contiguous `block_size × head_dim` run (see
//!   `pagoda_core::kv`): scores are `rows × block_size` dot products, the online softmax
//!   (running max and sum per row) is updated once per page, and the values are accumulated
//!   with broadcast FMAs. f16 pages are widened to f32 per page with F16C
//!   (`_mm256_cvtph_ps`) or AVX-512 (`_mm512_cvtph_ps`), q8_0 and q4_0 pages dequantized
//!   per page (AVX2 / AVX-512: sign- or zero-extend, convert, one multiply by the block's
//!   scale, the same f32 values as the block's `dequantize`) into a page-sized scratch that
//!   stays in L1; all math is f32. Tasks of few rows (decode) at AVX-512 read f16, q8_0 and
//!   q4_0 runs in place instead: each load widens or dequantizes 16 values (the copy's
//!   values, so the same bits) and serves every row of the task.
//! - **q8_0 pages at AVX-512** are scored in integers (`q8_0_scores.rs`): the task's query
//!   rows are quantized to q8_0 once, each key block's dot product is an exact `i32` from
//!   `vpdpbusd` with keys in vector lanes, and the blocks are folded in block order
//!   ([`quantizes_queries`]). Every row count takes this path, so it is batch-invariant;
//!   the values are accumulated in f32 as for the other formats.
//! - **Flash-decoding**: when a call has few tasks (decode of one sequence has `n_kv_heads`)
//!   and a long context, each task's pages are split into ranges run by different threads,
//!   and the partial `(max, sum, acc)` are merged with the log-sum-exp rule:
//!
//! ```text
//! M = max_s m_s     L = Σ_s l_s · exp(m_s - M)     out = Σ_s acc_s · exp(m_s - M) / L
//! ```
//!
//! The split rule ([`Split::Auto`]): split when `n_ctx ≥ SPLIT_MIN_CTX` and there are fewer
//! than `2 × threads` tasks, into `ceil(2 × threads / tasks)` ranges, but no range shorter
//! than [`SPLIT_MIN_TOKENS`] tokens. Under a sliding window (`AttnConfig::window`) `n_ctx`
//! here is the keys the call's first token sees, and the ranges cut only the visible pages:
//! a decode with a window of 512 at a context of 8192 splits the window's pages. Two tasks per thread keeps both threads busy when the
//! task count is odd (3 kv heads on 2 threads → 6 tasks), and 256-token ranges keep the
//! merge (one pass over `rows × head_dim`) under a few percent of the work.
//!
//! | level    | scores / accumulate                       | f16 widening        |
//! |----------|-------------------------------------------|---------------------|
//! | scalar   | plain Rust                                | `half`              |
//! | AVX2     | FMA, 4 keys per step, masked tails        | F16C `vcvtph2ps`    |
//! | AVX-512  | FMA on zmm, `k`-masked tails              | `vcvtph2ps` (zmm)   |
//! | NEON     | `vfmaq_f32`, 4 keys per step              | `half`              |

mod expf;
mod f16_pages;
mod f16_tiled;
mod ops;
mod q8_0_scores;
mod scalar;
mod task;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

/// `ggml_vec_dot_f16`'s float order on widened values (also the F16 weight matmul's).
pub(crate) use f16_pages::dot_scalar as dot_f16_widened;
pub use f16_pages::{paged_attention_f16, SPLIT_MIN_KEYS};
pub use f16_tiled::{paged_attention_f16_tiled, TILED_MIN_ROWS};

use pagoda_core::attention::{check_prefill, AttnConfig, AttnError};
use pagoda_core::kv::{KvFormat, KvPages};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use crate::kernels::SimdLevel;
use ops::PageOps;
use task::{Partial, Shared, Task};

/// Query tokens per task in prefill: their rows share each K/V page read (16 tokens: at least
/// 16 rows, one AVX-512 vector of rows per query head of a GQA group).
pub const TOKENS_PER_TASK: usize = 16;
/// Contexts shorter than this are never split across threads ([`Split::Auto`]).
pub const SPLIT_MIN_CTX: usize = 1024;
/// The shortest page range [`Split::Auto`] creates, in tokens.
pub const SPLIT_MIN_TOKENS: usize = 256;

/// How the context of each task is split across threads (flash-decoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Split {
    /// The documented rule of the module docs (what [`paged_attention`] uses).
    Auto,
    /// Exactly this many page ranges per task (clamped to `1 ..= pages in the context`, or
    /// under a sliding window to the pages the call's first token sees); `Ranges(1)` never
    /// splits. For tests and benchmarks.
    Ranges(usize),
    /// Ranges of `pages` pages aligned at the sequence's page 0, whatever the chunk, the
    /// window or the thread count: every query row's keys are cut at the same places and its
    /// partials merged in the same order whether it runs alone, in a prompt chunk of any
    /// size, or on any number of threads (batch invariance: `Numerics::Fast`). The table's
    /// page 0 is the sequence's page `start_page` (a sliding-window table that gave back its
    /// front pages; 0 otherwise), so range `k` holds the sequence's pages
    /// `k·pages .. (k+1)·pages`, i.e. table pages from `k·pages - start_page`.
    Aligned {
        /// Pages per range (at least 1).
        pages: usize,
        /// The sequence page index of the table's page 0.
        start_page: usize,
    },
}

/// Causal paged attention for `n_new ≥ 1` query tokens that were just appended to one
/// sequence of `n_ctx` tokens: query `i` sits at position `p = n_ctx - n_new + i` and attends
/// to positions `0 ..= p` of `layer` (under a sliding window `W`, `max(0, p + 1 - W) ..= p`:
/// see `AttnConfig::window`; pages wholly before every query's window are not read). Decode
/// is `n_new = 1`.
///
/// Same contract as `pagoda_core::attention::paged_prefill`: `pages` is the sequence's
/// block table (`pages[i]` holds positions `i·block_size ..`, extra pages ignored); `q` and
/// `out` are `[token][head][head_dim]` f32s (`n_new × n_heads × head_dim`); the chunk's K/V
/// must already be written. Bad shapes return the same [`AttnError`] as core, nothing
/// panics. `level` picks the kernels (a level this CPU lacks runs the scalar ones); rayon's
/// current pool runs the tasks.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention<T: KvFormat, S: AsRef<[T]> + Sync>(
    level: SimdLevel,
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    paged_attention_split(level, kv, layer, pages, n_ctx, q, out, cfg, Split::Auto)
}

/// Whether [`paged_attention`] at `level` scores `T`'s pages against the query rows
/// quantized to q8_0 (`Kernels::quantize_q8_0` per 32 values, then exact integer dot
/// products per block: q8_0 pages at AVX-512, as llama.cpp scores a q8_0 cache). If so it
/// computes the attention of the queries `decode(quantize_q8_0(q))` rather than of `q`; the
/// formula and its bits are in `q8_0_scores.rs`.
pub fn quantizes_queries<T: KvFormat>(level: SimdLevel) -> bool {
    PageOps::new(level).quantizes_queries::<T>()
}

/// Keys per range of [`paged_attention_aligned`] (rounded down to whole pages, at least one):
/// long contexts are spread over threads by range, and a range's place depends on positions
/// only.
pub const ALIGNED_RANGE_TOKENS: usize = 256;

/// [`paged_attention`] split into ranges of [`ALIGNED_RANGE_TOKENS`] keys aligned at the
/// sequence's position 0: [`Split::Aligned`], the batch-invariant split of
/// `Numerics::Fast`. `start_page` is the sequence page index of `pages[0]`: the pages a
/// sliding window gave back from the table's front (0 for a table that holds its sequence
/// from the start), so that a windowed table and a full one masked to the window cut a row's
/// keys at the same positions.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_aligned<T: KvFormat, S: AsRef<[T]> + Sync>(
    level: SimdLevel,
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    start_page: usize,
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let range = (ALIGNED_RANGE_TOKENS / kv.config().block_size.max(1)).max(1);
    let split = Split::Aligned { pages: range, start_page };
    paged_attention_split(level, kv, layer, pages, n_ctx, q, out, cfg, split)
}

/// [`paged_attention`] with an explicit flash-decoding [`Split`].
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_split<T: KvFormat, S: AsRef<[T]> + Sync>(
    level: SimdLevel,
    kv: &KvPages<T, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
    split: Split,
) -> Result<(), AttnError> {
    let (pages, n_new) = check_prefill(kv, layer, pages, n_ctx, q, out, cfg)?;
    let n_kv = cfg.n_kv_heads;
    let n_chunks = n_new.div_ceil(TOKENS_PER_TASK);
    let (bs, first_pos) = (kv.config().block_size, n_ctx - n_new);
    // A chunk's pages start at the page of its first token's window start (page 0 without
    // a window); the call's first chunk sees the most keys and pages.
    let first_page = |t0: usize| cfg.first_visible(first_pos + t0) / bs;
    let keys = n_ctx - cfg.first_visible(first_pos);
    // Aligned: (pages per range, the table's page 0 within its first range).
    let aligned = match split {
        Split::Aligned { pages: p, start_page } => Some((p.max(1), start_page % p.max(1))),
        _ => None,
    };
    let n_ranges = match aligned {
        Some((p, phase)) => (pages.len() + phase).div_ceil(p).max(1),
        None => n_ranges(split, n_chunks * n_kv, keys, pages.len() - first_page(0)),
    };

    // Task index = (chunk · n_kv + kv_head) · n_ranges + range: the merge relies on it.
    let tasks: Vec<Task> = (0..n_chunks * n_kv * n_ranges)
        .map(|i| {
            let (range, rest) = (i % n_ranges, i / n_ranges);
            let (kv_head, chunk) = (rest % n_kv, rest / n_kv);
            let t0 = chunk * TOKENS_PER_TASK;
            // The chunk's visible pages lo..pages.len(), cut into n_ranges ranges (some
            // empty when a later chunk's window spans fewer pages: merged with weight 0).
            let lo = first_page(t0);
            let span = pages.len() - lo;
            let pages = match aligned {
                // The aligned range's part at or after the chunk's first visible page, in
                // table pages (the sequence's range `range·p ..` starts `phase` pages earlier).
                Some((p, phase)) => {
                    let (a, b) = ((range * p).saturating_sub(phase), ((range + 1) * p) - phase);
                    a.max(lo)..b.min(pages.len()).max(lo)
                }
                None => lo + span * range / n_ranges..lo + span * (range + 1) / n_ranges,
            };
            Task { tokens: t0..(t0 + TOKENS_PER_TASK).min(n_new), kv_head, pages }
        })
        .collect();
    let whole_pages = aligned.is_some();
    let shared =
        Shared { ops: PageOps::new(level), kv, layer, pages, first_pos, q, cfg, whole_pages };
    // Few rows per kv head (decode): one job walks a chunk's page range for every kv head,
    // reading each page as one region (its heads' runs are adjacent), when there are jobs
    // enough for every thread. Otherwise one job per task. The same bits either way.
    let threads = rayon::current_num_threads();
    let heads_together = (n_new.min(TOKENS_PER_TASK) * cfg.group_size() < 16)
        && n_kv > 1
        && n_chunks * n_ranges >= 2 * threads;
    let partials: Vec<Partial> = if heads_together {
        // Job (chunk, range) runs tasks (chunk · n_kv + h) · n_ranges + range, h < n_kv.
        let jobs: Vec<Vec<Partial>> = (0..n_chunks * n_ranges)
            .into_par_iter()
            .map(|job| {
                let (chunk, range) = (job / n_ranges, job % n_ranges);
                let group: Vec<Task> = (0..n_kv)
                    .map(|h| tasks[(chunk * n_kv + h) * n_ranges + range].clone())
                    .collect();
                shared.run_heads(&group)
            })
            .collect::<Result<_, AttnError>>()?;
        let mut slots: Vec<Option<Partial>> = (0..tasks.len()).map(|_| None).collect();
        for (job, parts) in jobs.into_iter().enumerate() {
            let (chunk, range) = (job / n_ranges, job % n_ranges);
            for (h, part) in parts.into_iter().enumerate() {
                slots[(chunk * n_kv + h) * n_ranges + range] = Some(part);
            }
        }
        slots.into_iter().map(|p| p.expect("every task ran in one job")).collect()
    } else {
        tasks.par_iter().map(|t| shared.run(t)).collect::<Result<_, AttnError>>()?
    };

    merge(&tasks, &partials, n_ranges, out, cfg);
    Ok(())
}

/// Page ranges per task under `split` (see the module docs for [`Split::Auto`]), for a call
/// whose rows see up to `keys` keys on `n_pages` pages (the whole context without a window).
fn n_ranges(split: Split, n_tasks: usize, keys: usize, n_pages: usize) -> usize {
    let wanted = match split {
        Split::Ranges(r) => r,
        Split::Aligned { .. } => 1, // counted by the caller
        Split::Auto => {
            let threads = rayon::current_num_threads();
            if keys >= SPLIT_MIN_CTX && n_tasks < 2 * threads {
                (2 * threads).div_ceil(n_tasks).min(keys / SPLIT_MIN_TOKENS)
            } else {
                1
            }
        }
    };
    wanted.clamp(1, n_pages.max(1))
}

/// Normalises the partials (merging a task's page ranges) into `out`.
fn merge(tasks: &[Task], partials: &[Partial], n_ranges: usize, out: &mut [f32], cfg: &AttnConfig) {
    let (hd, group) = (cfg.head_dim, cfg.group_size());
    let mut weights = vec![0.0f32; n_ranges];
    for (ts, ps) in tasks.chunks_exact(n_ranges).zip(partials.chunks_exact(n_ranges)) {
        let task = &ts[0];
        for (row, t) in task.tokens.clone().flat_map(|t| core::iter::repeat_n(t, group)).enumerate()
        {
            let head = t * cfg.n_heads + task.kv_head * group + row % group;
            let o = &mut out[head * hd..(head + 1) * hd];
            let m = ps.iter().map(|p| p.max[row]).fold(f32::NEG_INFINITY, f32::max);
            let mut l = 0.0;
            for (w, p) in weights.iter_mut().zip(ps) {
                // A range the row saw nothing of has max -inf and weight 0.
                *w = if p.max[row] == f32::NEG_INFINITY { 0.0 } else { (p.max[row] - m).exp() };
                l += p.sum[row] * *w;
            }
            let inv = 1.0 / l;
            o.fill(0.0);
            for (w, p) in weights.iter().zip(ps) {
                if *w != 0.0 {
                    let scale = w * inv;
                    o.iter_mut()
                        .zip(&p.acc[row * hd..(row + 1) * hd])
                        .for_each(|(o, a)| *o += a * scale);
                }
            }
        }
    }
}
