//! Attention over f16 pages in llama.cpp's rounding: one key at a time, f16 query and
//! f16 running output, so that pagoda's logits equal llama.cpp's bit for bit.
//!
//! llama.cpp's CPU flash attention (`ggml_compute_forward_flash_attn_ext_f16_one_chunk`,
//! what it runs for f16 K/V with fewer than 64 query tokens per batch and at one thread)
//! computes, per query row:
//!
//! ```text
//! q16 = f16(q)                                  the query, rounded to f16
//! M = -inf, S = 0, acc16 = 0 (hd × f16)
//! for each visible key i, in position order:
//!     s = dot16(k_i, q16) · scale               ggml_vec_dot_f16 (see `dot`)
//!     if s > M:  ms = exp(M - s); M = s; acc16 = f16(acc16 · ms); vs = 1
//!     else:      ms = 1;          vs = exp(s - M)
//!     acc16 = f16(fma(v_i, vs, acc16))           (ggml_vec_mad_f16)
//!     S = fma(S, ms, vs)                         (GCC contracts `S*ms + vs`)
//! out = f32(acc16) · (1 / S)
//! ```
//!
//! `exp` is the C library's `expf` (glibc's algorithm, inlined: `super::expf`). Every row is independent of every other
//! row and of how the context is split into pages or the prompt into chunks, so results
//! do not depend on batching.
//!
//! Sliding window (`AttnConfig::window = Some(W)`): a row's visible keys are the last `W`
//! (table indices `max(0, p + 1 - W) ..= p`) and the loop above starts at the first of
//! them, in the same order. llama.cpp's loop skips a key whose mask is `-inf` before it
//! touches `M`, `S` or `acc16`, so this is its result too. Pages before every row's window
//! are not read.
//!
//! Long rows and threads: a row that sees at least [`SPLIT_MIN_KEYS`] keys, with `T > 1`
//! threads, runs the loop above over `T` page-aligned parts of its keys (of the pages that
//! hold its visible keys, under a window) and merges the
//! parts' `(M, S, acc)` as llama.cpp's split-KV decode does (`reduce_partials`:
//! `M = max(M, Mc)`, `V = V·e^(M_old−M) + Vc·e^(Mc−M)`, `S` likewise, then `V / S`). So
//! such rows depend on the thread count (llama.cpp's decode results do too), still not on
//! batching: a decode computes the parts in parallel tasks, a prompt one after another,
//! with the same bits. llama.cpp's parts are `⌈n_kv/T⌉` keys of its padded cache, pagoda's
//! whole pages, so the two agree exactly only at one thread. Work is split into tasks of (up to
//! [`TOKENS_PER_TASK`] tokens) × (query heads of one kv head's group): all of a task's rows
//! read each K/V page run while it is in L1 (the AVX-512 level reads the f16 runs in place,
//! widening in each load; the other levels widen each run to f32 once per page); when there are few tasks (decode) each
//! thread instead takes one contiguous run of query heads, which may span kv heads, so
//! both threads stay busy without splitting a row's context.
//!
//! The AVX-512 level computes the same operations in a vector-friendly order: the scores of
//! sixteen keys share one transposed reduction tree (each add pairs the same partial sums
//! as the per-key tree), the running maxima of a page are a prefix max across lanes, the
//! exponentials are sixteen glibc `expf`s at once in f64 lanes (`expf::x86::expf16`), and
//! `S` advances in the accumulate loop, where several rows' chains interleave.
//! It takes any head dim that is a multiple of 16: the accumulators of a head wider than
//! 128 (Gemma 3's 256) go through the page's keys in column blocks of 64 (each element's
//! chain of rounded operations is its own), and a dot over a head dim that is not a
//! multiple of 64 adds its last products in f64 after the tree, as the scalar dot does.
//! The AVX2 level (pages widened to f32 once per page) runs the same dot in 8-lane halves of
//! the 16-lane sums and the same accumulate in 8-lane column blocks of 16, up to 4 rows at a
//! time, for head dims that are multiples of 8.

use std::borrow::Cow;

use core::ops::Range;

use half::f16;
use pagoda_core::attention::{check_prefill, AttnConfig, AttnError};
use pagoda_core::kv::{KvHalf, KvPages};
use pagoda_core::pool::PageId;
use rayon::prelude::*;

use super::expf::expf;
use super::ops::PageOps;
use super::TOKENS_PER_TASK;
use crate::kernels::SimdLevel;

/// Causal paged attention over f16 pages, same contract and errors as
/// [`super::paged_attention`], with the rounding described in the module docs.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_f16<S: AsRef<[f16]> + Sync>(
    level: SimdLevel,
    kv: &KvPages<f16, S>,
    layer: usize,
    pages: &[PageId],
    n_ctx: usize,
    q: &[f32],
    out: &mut [f32],
    cfg: &AttnConfig,
) -> Result<(), AttnError> {
    let (pages, n_new) = check_prefill(kv, layer, pages, n_ctx, q, out, cfg)?;
    let (hd, group, n_kv) = (cfg.head_dim, cfg.group_size(), cfg.n_kv_heads);
    let n_chunks = n_new.div_ceil(TOKENS_PER_TASK);
    let n_heads = cfg.n_heads;
    // A task's rows are independent serial chains (one per query head), so several rows
    // per task hide each chain's latency, and rows of one kv head share its widened pages.
    // Normally a task is one kv head's group; with few such tasks (decode: one per kv
    // head) each chunk's query heads are cut into one contiguous run per thread instead,
    // which may span kv heads (3 kv heads × 3 on 2 threads: rows 0..5 and 5..9, four page
    // widenings instead of three, two tasks of 4–5 interleaved rows instead of 3 + 6 heads
    // unevenly split).
    let threads = rayon::current_num_threads();
    let bs = kv.config().block_size;
    let first_pos = n_ctx - n_new;
    // Decode over a long context (one new token seeing ≥ SPLIT_MIN_KEYS keys): each kv
    // head's group is one task per part of the context, as llama.cpp splits a decode's
    // keys over its threads; the parts' partial results merge afterwards.
    let decode_parts = if n_new == 1 {
        Parts::new(cfg.first_visible(first_pos), first_pos + 1, bs, threads).n
    } else {
        1
    };
    let few = n_chunks * n_kv < 2 * threads;
    let runs: Vec<Range<usize>> = if few && decode_parts == 1 {
        let parts = threads.div_ceil(n_chunks).clamp(1, n_heads);
        (0..parts).map(|p| p * n_heads / parts..(p + 1) * n_heads / parts).collect()
    } else {
        (0..n_kv).map(|kv| kv * group..(kv + 1) * group).collect()
    };
    let tasks: Vec<Task> = if decode_parts > 1 {
        runs.iter()
            .flat_map(|heads| {
                (0..decode_parts).map(move |k| Task {
                    tokens: 0..1,
                    heads: heads.clone(),
                    part: Some(k),
                })
            })
            .collect()
    } else {
        (0..n_chunks)
            .flat_map(|chunk| {
                let t0 = chunk * TOKENS_PER_TASK;
                let tokens = t0..(t0 + TOKENS_PER_TASK).min(n_new);
                runs.iter().map(move |heads| Task {
                    tokens: tokens.clone(),
                    heads: heads.clone(),
                    part: None,
                })
            })
            .collect()
    };
    let shared = Shared { level, kv, layer, pages, first_pos, q, cfg, threads };
    let results: Vec<Vec<Partial>> =
        tasks.par_iter().map(|t| shared.run(t)).collect::<Result<_, AttnError>>()?;
    // Rows of one part are final; split rows merge their parts in order (tasks are in part
    // order for each row, and a task lists a row's parts in order).
    let mut merging: Vec<Option<Merge>> = Vec::new();
    for (task, res) in tasks.iter().zip(results) {
        for p in res {
            let (t, h) = (p.row / n_heads, p.row % n_heads);
            debug_assert!(task.tokens.contains(&t) && task.heads.contains(&h));
            let o = &mut out[p.row * hd..(p.row + 1) * hd];
            if p.of == 1 {
                let inv = if p.sum == 0.0 { 0.0 } else { 1.0 / p.sum };
                o.iter_mut().zip(&p.acc).for_each(|(o, &a)| *o = a * inv);
                continue;
            }
            if merging.is_empty() {
                merging.resize_with(n_new * n_heads, || None);
            }
            let m = merging[p.row].get_or_insert_with(|| Merge::new(hd));
            m.add(&p);
            if p.part + 1 == p.of {
                m.finish(o);
            }
        }
    }
    Ok(())
}

/// Rows that see at least this many keys are split into one part per thread (llama.cpp:
/// `nek1 >= 512` for its split-KV decode), so their results depend on the thread count.
pub const SPLIT_MIN_KEYS: usize = 512;

/// How a row's keys `lo .. hi` (table indices; `lo > 0` only under a sliding window) split
/// into parts: one part unless `threads > 1` and it sees `hi - lo ≥ SPLIT_MIN_KEYS` keys,
/// else `min(threads, pages)` parts of the whole pages holding them, as even as pages allow
/// (part `k` starts at page [`Parts::start`]`(k)`; the pages before `lo`'s are in no part).
#[derive(Clone, Copy, Debug)]
struct Parts {
    /// The page of `lo`.
    first: usize,
    /// Pages from `first` to the page of `hi - 1`, inclusive.
    pages: usize,
    n: usize,
}

impl Parts {
    fn new(lo: usize, hi: usize, bs: usize, threads: usize) -> Self {
        let first = lo / bs;
        let pages = hi.div_ceil(bs) - first;
        let keys = hi - lo;
        let n = if threads > 1 && keys >= SPLIT_MIN_KEYS { threads.min(pages).max(1) } else { 1 };
        Parts { first, pages, n }
    }

    /// First page of part `k` (`k == n`: one past the last page).
    fn start(self, k: usize) -> usize {
        self.first + k * self.pages / self.n
    }
}

/// One part of one row: llama.cpp's partial `(M, S, VKQ)` with the f16 accumulator widened.
struct Partial {
    /// Output row `token · n_heads + head`.
    row: usize,
    part: usize,
    /// Parts of this row.
    of: usize,
    max: f32,
    sum: f32,
    acc: Vec<f32>,
}

/// `ggml_flash_attn_ext_reduce_partials`: partials folded in part order with the
/// log-sum-exp rule (`V = V·so + Vc·sn`, GCC contracting the first product), then `V / S`.
struct Merge {
    max: f32,
    sum: f32,
    acc: Vec<f32>,
}

impl Merge {
    fn new(hd: usize) -> Self {
        Merge { max: f32::NEG_INFINITY, sum: 0.0, acc: vec![0.0; hd] }
    }

    fn add(&mut self, p: &Partial) {
        if p.sum == 0.0 {
            return;
        }
        let max = self.max.max(p.max);
        let (so, sn) = (expf(self.max - max), expf(p.max - max));
        self.acc.iter_mut().zip(&p.acc).for_each(|(v, &c)| *v = v.mul_add(so, c * sn));
        self.sum = self.sum.mul_add(so, p.sum * sn);
        self.max = max;
    }

    fn finish(&self, out: &mut [f32]) {
        let inv = if self.sum == 0.0 { 0.0 } else { 1.0 / self.sum };
        out.iter_mut().zip(&self.acc).for_each(|(o, &a)| *o = a * inv);
    }
}

/// What one task covers.
struct Task {
    /// Query tokens (indices into the call's `n_new` tokens).
    tokens: Range<usize>,
    /// Query heads (`0..n_heads`; head `h` reads kv head `h / group`).
    heads: Range<usize>,
    /// `Some(k)`: only part `k` of the rows' keys (a decode split over threads); `None`:
    /// every part, one after the other.
    part: Option<usize>,
}

struct Shared<'a, S> {
    level: SimdLevel,
    kv: &'a KvPages<f16, S>,
    layer: usize,
    pages: &'a [PageId],
    first_pos: usize,
    q: &'a [f32],
    cfg: &'a AttnConfig,
    threads: usize,
}

/// One query row's running state.
pub(super) struct Row {
    q16: Vec<f32>,
    acc: Vec<f32>,
    max: f32,
    sum: f32,
    /// The table indices the row sees: `lo .. visible`.
    lo: usize,
    visible: usize,
    /// Which of the task's kv heads the row reads (index into its K/V runs).
    seg: usize,
    /// The row's first key in this page's runs (its `steps` are of keys `from ..`).
    from: usize,
    /// Output row index (`token · n_heads + head`).
    out_row: usize,
    /// How the row's keys split ([`Parts`]); `part`: the part being computed.
    parts: Parts,
    part: usize,
    /// This page's steps (one per key the row sees in it).
    steps: Vec<Step>,
}

impl<S: AsRef<[f16]>> Shared<'_, S> {
    /// The task's rows' partial results (`tokens × heads`, token-major, each row's parts
    /// in order).
    fn run(&self, task: &Task) -> Result<Vec<Partial>, AttnError> {
        let cfg = self.cfg;
        let (hd, group) = (cfg.head_dim, cfg.group_size());
        let bs = self.kv.config().block_size;
        let ops = PageOps::new(self.level);
        let kernel = Kernel::new(self.level, hd);
        // The kv heads the task's query heads read: kv0..kv0 + n_seg.
        let kv0 = task.heads.start / group;
        let n_seg = task.heads.end.saturating_sub(1) / group + 1 - kv0;
        let mut rows: Vec<Row> = Vec::new();
        for t in task.tokens.clone() {
            for h in task.heads.clone() {
                let head = t * cfg.n_heads + h;
                let q16 = self.q[head * hd..(head + 1) * hd]
                    .iter()
                    .map(|&x| f16::from_f32(x).to_f32())
                    .collect();
                let visible = self.first_pos + t + 1;
                let lo = cfg.first_visible(self.first_pos + t);
                rows.push(Row {
                    q16,
                    acc: vec![0.0; hd],
                    max: f32::NEG_INFINITY,
                    sum: 0.0,
                    lo,
                    visible,
                    seg: h / group - kv0,
                    from: 0,
                    out_row: head,
                    parts: Parts::new(lo, visible, bs, self.threads),
                    part: task.part.unwrap_or(0),
                    steps: Vec::with_capacity(bs),
                });
            }
        }
        let max_visible = self.first_pos + task.tokens.end;
        // The first index any row sees (`first_visible` grows with the position).
        let min_lo = cfg.first_visible(self.first_pos + task.tokens.start);
        // The task's pages: all those its rows see, or (a decode split) one part's.
        let (page_lo, page_hi) = match (task.part, rows.first()) {
            (Some(k), Some(r)) => (r.parts.start(k), r.parts.start(k + 1)),
            _ => (min_lo / bs, usize::MAX),
        };
        let mut partials = Vec::with_capacity(rows.len());
        let mut kbufs: Vec<Vec<f32>> = vec![Vec::new(); n_seg];
        let mut vbufs: Vec<Vec<f32>> = vec![Vec::new(); n_seg];
        // The page's f16 runs, where the kernel reads them directly.
        let direct = kernel.reads_f16();
        let mut kruns: Vec<&[f16]> = Vec::with_capacity(n_seg);
        let mut vruns: Vec<&[f16]> = Vec::with_capacity(n_seg);
        let mut scores = vec![0.0f32; bs];
        for (i, &page) in self.pages.iter().enumerate().take(page_hi).skip(page_lo) {
            let start = i * bs;
            if start >= max_visible {
                break;
            }
            // Rows whose next part starts at this page set the finished part aside.
            if task.part.is_none() {
                for row in rows.iter_mut() {
                    if row.part + 1 < row.parts.n && row.parts.start(row.part + 1) == i {
                        partials.push(row.take_part(vec![0.0; hd]));
                    }
                }
            }
            // Slots any row sees: s0..n. Later slots of the last page are unwritten; earlier
            // ones of the windows' first page are masked for every row, and not read.
            let n = (max_visible - start).min(bs);
            let s0 = min_lo.saturating_sub(start);
            if s0 >= n {
                continue;
            }
            // A later page's runs are on their way from memory while this one computes:
            // pages of one sequence lie a whole page of all layers apart, too far for the
            // hardware prefetchers, and one page of lead left the loads waiting (tg64 at
            // depth 4096, medians of 5: 43.7 t/s one page ahead, 44.6 two, 45.4 four; with
            // the lines going to L2, medians of 9: 54.6 two, 57.5 four, 55.5 six, 57.1 eight).
            const AHEAD: usize = 4;
            if let Some(&next) = self
                .pages
                .get(i + AHEAD)
                .filter(|_| start + AHEAD * bs < max_visible && i + AHEAD < page_hi)
            {
                for seg in 0..n_seg {
                    for half in [KvHalf::Key, KvHalf::Value] {
                        ops.prefetch(self.kv.head_run(self.layer, next, half, kv0 + seg)?);
                    }
                }
            }
            // Each kv head's K and V runs (slots `s0..n`, rows of `hd`): read in place, or
            // widened into its buffers.
            kruns.clear();
            vruns.clear();
            let slots = s0 * hd..n * hd;
            for (seg, (kbuf, vbuf)) in kbufs.iter_mut().zip(vbufs.iter_mut()).enumerate() {
                let k = &self.kv.head_run(self.layer, page, KvHalf::Key, kv0 + seg)?[slots.clone()];
                let v =
                    &self.kv.head_run(self.layer, page, KvHalf::Value, kv0 + seg)?[slots.clone()];
                if direct {
                    kruns.push(k);
                    vruns.push(v);
                } else {
                    ops.as_f32(k, kbuf);
                    ops.as_f32(v, vbuf);
                }
            }
            for row in rows.iter_mut() {
                // The row's keys in the runs: a..b, from its window's start (a > 0 only if
                // it starts later than the task's) to its causal end, in order.
                let b = row.visible.saturating_sub(start).min(n).saturating_sub(s0);
                let a = row.lo.saturating_sub(start + s0).min(b);
                row.from = a;
                row.steps.resize(b - a, Step::default());
                let s = &mut scores[..b - a];
                if direct {
                    kernel.scores(&kruns[row.seg][a * hd..b * hd], &row.q16, s);
                } else {
                    kernel.scores(&kbufs[row.seg][a * hd..b * hd], &row.q16, s);
                }
                kernel.softmax_steps(s, cfg.scale, &mut row.max, &mut row.steps);
            }
            // Several rows at once: their accumulators are independent serial chains.
            for chunk in rows.chunks_mut(4) {
                if direct {
                    kernel.accumulate(chunk, &vruns);
                } else {
                    kernel.accumulate(chunk, &vbufs);
                }
            }
        }
        for row in rows.iter_mut() {
            partials.push(row.take_part(Vec::new()));
        }
        // Token-major order, each row's parts in order (parts set aside mid-way came first).
        partials.sort_by_key(|p| (p.row, p.part));
        Ok(partials)
    }
}

impl Row {
    /// The value rows of the keys this row's steps are for (`from .. from + steps.len()`
    /// of its kv head's run).
    fn values<'v, T, V: AsRef<[T]>>(&self, values: &'v [V]) -> &'v [T] {
        let hd = self.acc.len();
        &values[self.seg].as_ref()[self.from * hd..(self.from + self.steps.len()) * hd]
    }

    /// The part computed so far as a [`Partial`]; the row starts its next part afresh with
    /// `acc` (zeros; empty after the last part).
    fn take_part(&mut self, acc: Vec<f32>) -> Partial {
        let p = Partial {
            row: self.out_row,
            part: self.part,
            of: self.parts.n,
            max: self.max,
            sum: self.sum,
            acc: core::mem::replace(&mut self.acc, acc),
        };
        self.max = f32::NEG_INFINITY;
        self.sum = 0.0;
        self.part += 1;
        p
    }
}

/// One key's effect on a row's accumulator and sum: `ms` and `vs` of llama.cpp's loop.
///
/// On a new maximum `ms = e^(old - new)` and `vs = 1`, else `ms = 1` and `vs = e^(s - max)`.
/// The accumulator is scaled by `ms` (rounded to f16) only when `ms != 1`: it always holds
/// f16 values, so scaling by exactly 1 would change nothing. `repr(C)`: the AVX-512 kernel
/// stores the two fields of sixteen steps as interleaved lanes.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(super) struct Step {
    ms: f32,
    vs: f32,
}

/// What the kernels read keys and values from: f32 rows (pages widened once per page), or
/// the f16 pages themselves, which the AVX-512 level widens in each load (`vcvtph2ps`,
/// exact): its loads then spread over the arithmetic instead of one widening pass per page
/// that waits on memory.
pub(super) trait Lanes: Copy {
    /// `run` as f32s: borrowed for f32, widened for f16 (the levels that do not read f16).
    fn f32s(run: &[Self]) -> Cow<'_, [f32]>;

    /// Sixteen values at `p` as f32s.
    ///
    /// # Safety
    /// Sixteen values readable at `p`; AVX-512F enabled by the caller.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> core::arch::x86_64::__m512;

    /// Eight values at `p` as f32s.
    ///
    /// # Safety
    /// Eight values readable at `p`; AVX and F16C enabled by the caller.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256;
}

impl Lanes for f32 {
    fn f32s(run: &[f32]) -> Cow<'_, [f32]> {
        Cow::Borrowed(run)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> core::arch::x86_64::__m512 {
        // SAFETY: the caller's contract.
        unsafe { core::arch::x86_64::_mm512_loadu_ps(p) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> core::arch::x86_64::__m256 {
        // SAFETY: the caller's contract.
        unsafe { core::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl Lanes for f16 {
    fn f32s(run: &[f16]) -> Cow<'_, [f32]> {
        Cow::Owned(run.iter().map(|x| x.to_f32()).collect())
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> core::arch::x86_64::__m512 {
        use core::arch::x86_64::{_mm256_loadu_si256, _mm512_cvtph_ps};
        // SAFETY: the caller's contract; `f16` is `repr(transparent)` over `u16`.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::{_mm256_cvtph_ps, _mm_loadu_si128};
        // SAFETY: the caller's contract; `f16` is `repr(transparent)` over `u16`.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// The per-key arithmetic at one level (see [`dot_scalar`] and [`accumulate_scalar`] for
/// the semantics every level reproduces).
#[derive(Clone, Copy, Debug)]
// Only the x86 kernels read the level (elsewhere every level is the portable code).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Kernel {
    level: SimdLevel,
}

impl Kernel {
    fn new(level: SimdLevel, hd: usize) -> Self {
        // The AVX-512 kernel handles whole 16-element vectors only.
        let level = if level.is_available() && (level != SimdLevel::Avx512 || hd % 16 == 0) {
            level
        } else {
            SimdLevel::Scalar
        };
        Kernel { level }
    }

    /// Whether this level reads f16 pages directly ([`Lanes`]) instead of widened copies.
    #[inline]
    fn reads_f16(self) -> bool {
        cfg!(target_arch = "x86_64") && self.level == SimdLevel::Avx512
    }

    /// `scores[j] = dot(keys[j], q)` ([`dot_scalar`]) for every key row of `keys`.
    #[inline]
    fn scores<T: Lanes>(self, keys: &[T], q: &[f32], scores: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx512 {
            // SAFETY: `new` checked AVX-512 and `hd % 16 == 0`; `q` is `hd` long, `keys`
            // holds `scores.len()` rows of `hd`.
            return unsafe { x86::scores_avx512(keys, q, scores) };
        }
        let keys = T::f32s(keys);
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx2 {
            // SAFETY: `new` checked the AVX2 level (AVX2 + FMA + F16C).
            return unsafe { x86::scores_avx2(&keys, q, scores) };
        }
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
            *s = dot_scalar(k, q);
        }
    }

    /// The online-softmax bookkeeping of one page's scores, in key order.
    #[inline]
    fn softmax_steps(self, scores: &[f32], scale: f32, max: &mut f32, steps: &mut [Step]) {
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx512 {
            // SAFETY: `new` checked AVX-512 (which implies FMA here: the level requires
            // it); `scores` and `steps` have the same length.
            return unsafe { x86::softmax_steps_avx512(scores, scale, max, steps) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx2 {
            // SAFETY: both levels exist only after FMA was detected.
            return unsafe { x86::softmax_steps_fma(scores, scale, max, steps) };
        }
        softmax_steps(scores, scale, max, steps)
    }

    /// Each row's accumulator ← the page's value rows by that row's steps, in order
    /// (`rows.len() ≤ 4`).
    #[inline]
    fn accumulate<T: Lanes, V: AsRef<[T]>>(self, rows: &mut [Row], values: &[V]) {
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx512 {
            // SAFETY: `new` checked AVX-512 and `hd % 16 == 0`; `values[row.seg]` holds
            // at least `from + steps.len()` rows of `hd` for every row (the page's slots
            // the task's rows see).
            return unsafe { x86::accumulate_avx512(rows, values) };
        }
        #[cfg(target_arch = "x86_64")]
        if self.level == SimdLevel::Avx2 {
            // SAFETY: `new` checked the AVX2 level (AVX2 + FMA + F16C); `values[row.seg]`
            // holds at least `from + steps.len()` rows of `hd` for every row.
            return unsafe { x86::accumulate_avx2(rows, values) };
        }
        for row in rows {
            let v = T::f32s(row.values(values));
            accumulate_scalar(&mut row.acc, &mut row.sum, &v, &row.steps)
        }
    }
}

/// `ggml_vec_dot_f16(k, q)` of an AVX-512 build, on values already widened to f32:
/// 64-element steps into four 16-lane accumulators (`sum[j][l] += k·q` at element
/// `64i + 16j + l`), combined `(s0 + s2) + (s1 + s3)` lane by lane, then GCC's
/// `_mm512_reduce_add_ps` order ([`reduce16`]); elements past the last whole step are
/// added one by one in f64. (Products of two f16 values are exact in f32, so fused and
/// unfused multiply-adds agree here.)
pub(crate) fn dot_scalar(k: &[f32], q: &[f32]) -> f32 {
    let n = k.len().min(q.len());
    let np = n / 64 * 64;
    let mut sum = [[0.0f32; 16]; 4];
    for i in (0..np).step_by(64) {
        for (j, s) in sum.iter_mut().enumerate() {
            for (l, s) in s.iter_mut().enumerate() {
                let e = i + 16 * j + l;
                *s += k[e] * q[e];
            }
        }
    }
    let x: [f32; 16] = core::array::from_fn(|l| (sum[0][l] + sum[2][l]) + (sum[1][l] + sum[3][l]));
    let mut total = f64::from(reduce16(&x));
    for e in np..n {
        total += f64::from(k[e] * q[e]);
    }
    total as f32
}

/// GCC's `_mm512_reduce_add_ps`: halves, then quarters, then `(t0 + t2) + (t1 + t3)`.
pub(super) fn reduce16(x: &[f32; 16]) -> f32 {
    let t8: [f32; 8] = core::array::from_fn(|i| x[i] + x[i + 8]);
    let t4: [f32; 4] = core::array::from_fn(|i| t8[i] + t8[i + 4]);
    (t4[0] + t4[2]) + (t4[1] + t4[3])
}

/// For each score: scale it, then llama.cpp's online-softmax update of `max`, recording
/// what the accumulator and the sum must do (the exponentials are glibc's `expf`, inlined:
/// [`expf`]). The sum `S = fma(S, ms, vs)` runs in the accumulate step, where several rows'
/// chains interleave.
#[inline(always)]
pub(super) fn softmax_steps(scores: &[f32], scale: f32, max: &mut f32, steps: &mut [Step]) {
    for (step, &s) in steps.iter_mut().zip(scores) {
        let s = s * scale;
        // A new maximum: the accumulator is scaled by e^(old - new) (the first key:
        // e^-inf = 0 clears it) and the key's weight is 1; else the weight is e^(s - max).
        *step = if s > *max {
            let ms = expf(*max - s);
            *max = s;
            Step { ms, vs: 1.0 }
        } else {
            Step { ms: 1.0, vs: expf(s - *max) }
        };
    }
}

/// Per step, in order: `ggml_vec_scale_f16` (on a new maximum) then `ggml_vec_mad_f16`;
/// every operation rounds the accumulator to f16. The row's sum follows the same steps:
/// `S = fma(S, ms, vs)` (GCC contracts llama.cpp's `S*ms + vs`).
#[inline(always)]
pub(super) fn accumulate_scalar(acc: &mut [f32], sum: &mut f32, values: &[f32], steps: &[Step]) {
    for (step, v) in steps.iter().zip(values.chunks_exact(acc.len())) {
        *sum = sum.mul_add(step.ms, step.vs);
        if step.ms != 1.0 {
            acc.iter_mut().for_each(|a| *a = round16(*a * step.ms));
        }
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = round16(x.mul_add(step.vs, *a));
        }
    }
}

#[inline(always)]
fn round16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::super::expf::x86::expf16;
    use super::{accumulate_scalar, softmax_steps, Lanes, Row, Step};

    /// [`super::softmax_steps`] with FMA instructions.
    ///
    /// # Safety
    /// FMA.
    #[target_feature(enable = "fma")]
    pub(super) unsafe fn softmax_steps_fma(
        scores: &[f32],
        scale: f32,
        max: &mut f32,
        steps: &mut [Step],
    ) {
        softmax_steps(scores, scale, max, steps)
    }

    /// One key's 16-lane vector before the horizontal sum, `(s0 + s2) + (s1 + s3)` of
    /// [`super::dot_scalar`]. Products of f16 values are exact, so the first step's
    /// `s_c = k·q` and `fma(k0, q0, k2·q2)` (one rounding of an exact sum) equal ggml's
    /// separate products and adds.
    ///
    /// # Safety
    /// `hd` (a multiple of 64, at least 64) floats readable at `k` and `q`; `q4` holds `q[..64]`;
    /// AVX-512F enabled by the caller.
    #[inline(always)]
    unsafe fn key_lanes<T: Lanes>(
        k: *const T,
        q: *const f32,
        q4: &[__m512; 4],
        hd: usize,
    ) -> __m512 {
        // SAFETY: loads at offsets < hd per the contract; register-only otherwise.
        unsafe {
            if hd == 64 {
                let [k0, k1, k2, k3] = [0, 16, 32, 48].map(|o| T::load16(k.add(o)));
                let [q0, q1, q2, q3] = *q4;
                let a = _mm512_fmadd_ps(k0, q0, _mm512_mul_ps(k2, q2));
                let b = _mm512_fmadd_ps(k1, q1, _mm512_mul_ps(k3, q3));
                return _mm512_add_ps(a, b);
            }
            let kq = |o: usize| (T::load16(k.add(o)), _mm512_loadu_ps(q.add(o)));
            let mut s = [_mm512_setzero_ps(); 4];
            for (c, s) in s.iter_mut().enumerate() {
                let (kv, qv) = kq(16 * c);
                *s = _mm512_mul_ps(kv, qv);
            }
            let mut i = 64;
            while i < hd {
                for (c, s) in s.iter_mut().enumerate() {
                    let (kv, qv) = kq(i + 16 * c);
                    *s = _mm512_fmadd_ps(kv, qv, *s);
                }
                i += 64;
            }
            _mm512_add_ps(_mm512_add_ps(s[0], s[2]), _mm512_add_ps(s[1], s[3]))
        }
    }

    /// [`super::softmax_steps`] sixteen keys at a time: the running maximum as a prefix
    /// max across lanes, the sixteen exponentials at once ([`expf16`]), then the steps.
    /// Same values, bit for bit (maxima are exact; NaN scores never become the maximum
    /// and give NaN weights, as in the scalar loop).
    ///
    /// # Safety
    /// AVX-512F/DQ and FMA; `scores.len() ≥ steps.len()`.
    #[target_feature(enable = "avx512f,avx512dq,fma")]
    pub(super) unsafe fn softmax_steps_avx512(
        scores: &[f32],
        scale: f32,
        max: &mut f32,
        steps: &mut [Step],
    ) {
        let n = steps.len();
        debug_assert!(scores.len() >= n);
        // SAFETY: masked loads below `n ≤ scores.len()`; masked stores of `2·m` floats at
        // `steps[j0..j0 + m]` (in bounds: `j0 + m ≤ n = steps.len()`; `Step` is two
        // `repr(C)` f32s); stores to local arrays; register-only AVX-512F/DQ otherwise,
        // enabled by this fn's contract.
        unsafe {
            let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
            // Lanes up by k: lane i takes lane i - k of `x`, lanes < k take `fill`'s.
            macro_rules! up {
                ($k:literal, $x:expr, $fill:expr) => {
                    _mm512_castsi512_ps(_mm512_alignr_epi32::<{ 16 - $k }>(
                        _mm512_castps_si512($x),
                        _mm512_castps_si512($fill),
                    ))
                };
            }
            let mut j0 = 0;
            while j0 < n {
                let m = (n - j0).min(16);
                let k = ((1u32 << m) - 1) as u16;
                let s = _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(k, scores.as_ptr().add(j0)),
                    _mm512_set1_ps(scale),
                );
                let ord = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(s, s) & k;
                let mut x = _mm512_mask_blend_ps(ord, ninf, s);
                x = _mm512_max_ps(x, up!(1, x, ninf));
                x = _mm512_max_ps(x, up!(2, x, ninf));
                x = _mm512_max_ps(x, up!(4, x, ninf));
                x = _mm512_max_ps(x, up!(8, x, ninf));
                let m0 = _mm512_set1_ps(*max);
                let incl = _mm512_max_ps(x, m0);
                let prev = up!(1, incl, m0);
                let new = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, prev) & k;
                let arg = _mm512_mask_blend_ps(new, _mm512_sub_ps(s, prev), _mm512_sub_ps(prev, s));
                let e = expf16(arg);
                let one = _mm512_set1_ps(1.0);
                let ms = _mm512_mask_blend_ps(new, one, e);
                let vs = _mm512_mask_blend_ps(new, e, one);
                // Interleave to (ms, vs) pairs in key order: unpack within 128-bit lanes,
                // then put the lanes back in order.
                let lo = _mm512_unpacklo_ps(ms, vs);
                let hi = _mm512_unpackhi_ps(ms, vs);
                let first =
                    _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
                let second =
                    _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
                let out = steps.as_mut_ptr().add(j0).cast::<f32>();
                let pairs = 2 * m;
                let k0 = ((1u32 << pairs.min(16)) - 1) as u16;
                let k1 = ((1u32 << pairs.saturating_sub(16)) - 1) as u16;
                _mm512_mask_storeu_ps(out, k0, _mm512_permutex2var_ps(lo, first, hi));
                _mm512_mask_storeu_ps(out.add(16), k1, _mm512_permutex2var_ps(lo, second, hi));
                let mut maxima = [0.0f32; 16];
                _mm512_storeu_ps(maxima.as_mut_ptr(), incl);
                *max = maxima[m - 1];
                j0 += m;
            }
        }
    }

    /// `scores[j] =` [`super::dot_scalar`]`(keys[j], q)`, `q.len()` a multiple of 16.
    ///
    /// Sixteen keys at a time: each key's 16-lane vector `(s0 + s2) + (s1 + s3)`, then the
    /// sixteen [`super::reduce16`] trees side by side — every add of the transposed tree
    /// below pairs the same two partial sums as the per-key tree, so the results are the
    /// same bits, for about a quarter of the shuffles:
    ///
    /// ```text
    /// keys (a, b):     [a0..7 + a8..15 | b0..7 + b8..15]           halves      (8 adds)
    /// pairs (ab, cd):  [t8 a0..3 + t8 a4..7 | … b | … c | … d]     quarters    (4 adds)
    /// quads:           lanes 0+2 and 1+3 of every key's t4         (2 adds)
    /// last:            (t4 0+2) + (t4 1+3)                         (1 add, lanes 4·(j%4) + j/4)
    /// ```
    ///
    /// A head dim that is not a multiple of 64 adds each key's last `hd % 64` products one
    /// by one in f64 after the tree, as [`super::dot_scalar`] does ([`tail`]; only the
    /// tail if `hd < 64`).
    ///
    /// # Safety
    /// AVX-512F; `q.len()` a multiple of 16; `keys.len() ≥ scores.len() · q.len()`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn scores_avx512<T: Lanes>(keys: &[T], q: &[f32], scores: &mut [f32]) {
        let hd = q.len();
        // The whole 64-element steps.
        let np = hd / 64 * 64;
        debug_assert!(hd % 16 == 0 && keys.len() >= scores.len() * hd);
        // SAFETY: loads at offsets < hd (q) and < scores.len()·hd (keys), stores below
        // scores.len(); AVX-512F per the contract.
        unsafe {
            let (kp, qp) = (keys.as_ptr(), q.as_ptr());
            let mut q4 = [_mm512_setzero_ps(); 4];
            if np > 0 {
                for (c, q4) in q4.iter_mut().enumerate() {
                    *q4 = _mm512_loadu_ps(qp.add(16 * c));
                }
            }
            // The key's 16-lane vector before the horizontal sum; products of f16 values
            // are exact, so the first step's `s_c = k·q` and `fma(k0, q0, k2·q2)` (one
            // rounding of an exact sum) equal ggml's separate products and adds.
            let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
            let mut j0 = 0;
            while j0 < scores.len() {
                let m = (scores.len() - j0).min(16);
                if np == 0 {
                    for (j, s) in scores[j0..j0 + m].iter_mut().enumerate() {
                        *s = tail(kp.add((j0 + j) * hd), qp, 0, hd, 0.0);
                    }
                    j0 += m;
                    continue;
                }
                // Plain loops (closures passed to `array::from_fn` may stay out of line,
                // without this function's target features).
                let mut x = [_mm512_setzero_ps(); 16];
                for (j, x) in x.iter_mut().enumerate().take(m) {
                    *x = key_lanes(kp.add((j0 + j) * hd), qp, &q4, np);
                }
                let mut y = [_mm512_setzero_ps(); 8];
                for (p, y) in y.iter_mut().enumerate() {
                    let (a, b) = (x[2 * p], x[2 * p + 1]);
                    *y = _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
                        _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
                    );
                }
                let mut z = [_mm512_setzero_ps(); 4];
                for (p, z) in z.iter_mut().enumerate() {
                    let (a, b) = (y[2 * p], y[2 * p + 1]);
                    *z = _mm512_add_ps(
                        _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                        _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
                    );
                }
                let mut w = [_mm512_setzero_ps(); 2];
                for (p, w) in w.iter_mut().enumerate() {
                    let (a, b) = (z[2 * p], z[2 * p + 1]);
                    *w = _mm512_add_ps(
                        _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
                        _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
                    );
                }
                let f = _mm512_add_ps(
                    _mm512_shuffle_ps::<0b10_00_10_00>(w[0], w[1]),
                    _mm512_shuffle_ps::<0b11_01_11_01>(w[0], w[1]),
                );
                let f = _mm512_permutexvar_ps(order, f);
                _mm512_mask_storeu_ps(scores.as_mut_ptr().add(j0), ((1u32 << m) - 1) as u16, f);
                if np < hd {
                    for (j, s) in scores[j0..j0 + m].iter_mut().enumerate() {
                        *s = tail(kp.add((j0 + j) * hd), qp, np, hd, *s);
                    }
                }
                j0 += m;
            }
        }
    }

    /// [`super::dot_scalar`]'s last step: `head` (the tree's sum of elements `..np`) plus
    /// the products of elements `np..hd`, one by one in f64, rounded to f32.
    ///
    /// # Safety
    /// `hd` values readable at `k` and `q`; `hd - np` a multiple of 16; AVX-512F enabled
    /// by the caller.
    #[inline(always)]
    unsafe fn tail<T: Lanes>(k: *const T, q: *const f32, np: usize, hd: usize, head: f32) -> f32 {
        let mut total = f64::from(head);
        let mut e = np;
        // SAFETY: loads of 16 values at offsets e < hd, e + 16 ≤ hd; stores to a local.
        unsafe {
            while e < hd {
                let p = _mm512_mul_ps(T::load16(k.add(e)), _mm512_loadu_ps(q.add(e)));
                let mut x = [0.0f32; 16];
                _mm512_storeu_ps(x.as_mut_ptr(), p);
                for x in x {
                    total += f64::from(x);
                }
                e += 16;
            }
        }
        total as f32
    }

    /// [`super::accumulate_scalar`] for up to 4 rows at once, their accumulators in
    /// registers for the page (independent chains hide the conversions' latency).
    ///
    /// Every element of a row's accumulator goes through its own chain of rounded scales
    /// and FMAs, independent of the other elements, so a head wider than the registers
    /// hold runs as column blocks of 64 (a narrower last block for the rest), each over
    /// all of the page's keys: the same operations on every element, the same bits.
    /// Head dims that are not a multiple of 16 take the scalar loop.
    ///
    /// # Safety
    /// AVX-512F/DQ and F16C; every row's `acc.len()` is the same `hd`;
    /// `values[seg].len() ≥ (from + steps.len()) · hd` for every row; `rows.len() ≤ 4`.
    #[target_feature(enable = "avx512f,avx512dq,f16c")]
    pub(super) unsafe fn accumulate_avx512<T: Lanes, V: AsRef<[T]>>(
        rows: &mut [Row],
        values: &[V],
    ) {
        // `N` registers per row at column `col` (sums advanced if `sum`), for all the rows.
        macro_rules! regs {
            ($n:literal, $col:expr, $sum:expr) => {
                match rows.len() {
                    4 => accumulate_regs::<$n, 4, T, V>(rows, values, $col, $sum),
                    3 => accumulate_regs::<$n, 3, T, V>(rows, values, $col, $sum),
                    2 => accumulate_regs::<$n, 2, T, V>(rows, values, $col, $sum),
                    _ => accumulate_regs::<$n, 1, T, V>(rows, values, $col, $sum),
                }
            };
        }
        let hd = rows.first().map_or(0, |r| r.acc.len());
        // SAFETY (all arms): this fn's contract, with the lengths each callee is built for
        // (column blocks inside `hd`).
        unsafe {
            if rows.is_empty() {
            } else if hd == 128 {
                regs!(8, 0, true);
            } else if hd % 16 == 0 {
                // Column blocks of 64; the rows' sums advance in the first.
                let mut col = 0;
                while col < hd {
                    let sum = col == 0;
                    match (hd - col).min(64) / 16 {
                        4 => regs!(4, col, sum),
                        3 => regs!(3, col, sum),
                        2 => regs!(2, col, sum),
                        _ => regs!(1, col, sum),
                    }
                    col += 64;
                }
            } else {
                for row in rows.iter_mut() {
                    let v = T::f32s(row.values(values));
                    accumulate_scalar(&mut row.acc, &mut row.sum, &v, &row.steps);
                }
            }
        }
    }

    /// `x` rounded to f16 and back.
    ///
    /// # Safety
    /// AVX-512F enabled by the caller.
    #[inline(always)]
    unsafe fn round(x: __m512) -> __m512 {
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        // SAFETY: register-only AVX-512F conversions.
        unsafe { _mm512_cvtph_ps(_mm512_cvtps_ph::<NEAREST>(x)) }
    }

    /// `R` rows (of the first `rows`), columns `col .. col + 16 · N` of their accumulators
    /// (each `hd` long); `sum`: also advance the rows' sums (once per key: in one column
    /// block only).
    ///
    /// # Safety
    /// AVX-512F; as [`accumulate_avx512`], `rows.len() ≥ R`, `col + 16 · N ≤ hd`.
    #[inline(always)]
    unsafe fn accumulate_regs<const N: usize, const R: usize, T: Lanes, V: AsRef<[T]>>(
        rows: &mut [Row],
        values: &[V],
        col: usize,
        sum: bool,
    ) {
        let hd = rows[0].acc.len();
        debug_assert!(col + 16 * N <= hd && rows[..R].iter().all(|r| r.acc.len() == hd));
        let n = rows[..R].iter().map(|r| r.steps.len()).max().unwrap_or(0);
        // Row r's value rows, from its first key in the runs.
        let vals: [&[T]; R] =
            core::array::from_fn(|r| &values[rows[r].seg].as_ref()[rows[r].from * hd..]);
        let vps: [*const T; R] = core::array::from_fn(|r| vals[r].as_ptr());
        let avail: [usize; R] = core::array::from_fn(|r| vals[r].len() / hd);
        // Rows reading the same value rows as the previous row (same kv head, same first
        // key) reuse its value registers.
        let key = |r: usize| (rows[r].seg, rows[r].from);
        let fresh: [bool; R] = core::array::from_fn(|r| r == 0 || key(r) != key(r - 1));
        // SAFETY: loads/stores of 16 floats at offsets col + 16·c < hd within each `acc`,
        // and within value row j < avail[r] of `vals[r]` (a row of a chain of rows sharing
        // `vals` has steps only for keys its run holds: j < steps.len() ≤ avail); AVX-512F
        // per the caller.
        unsafe {
            let mut a = [[_mm512_setzero_ps(); N]; R];
            for (r, a) in a.iter_mut().enumerate() {
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(rows[r].acc.as_ptr().add(col + 16 * c));
                }
            }
            let mut sums: [f32; R] = core::array::from_fn(|r| rows[r].sum);
            for j in 0..n {
                let mut v = [_mm512_setzero_ps(); N];
                for r in 0..R {
                    if fresh[r] && j < avail[r] {
                        let vp = vps[r].add(j * hd + col);
                        for (c, v) in v.iter_mut().enumerate() {
                            *v = T::load16(vp.add(16 * c));
                        }
                    }
                    let Some(step) = rows[r].steps.get(j) else { continue };
                    if sum {
                        sums[r] = sums[r].mul_add(step.ms, step.vs);
                    }
                    if step.ms != 1.0 {
                        let m = _mm512_set1_ps(step.ms);
                        for x in a[r].iter_mut() {
                            *x = round(_mm512_mul_ps(*x, m));
                        }
                    }
                    let w = _mm512_set1_ps(step.vs);
                    for (x, v) in a[r].iter_mut().zip(&v) {
                        *x = round(_mm512_fmadd_ps(*v, w, *x));
                    }
                }
            }
            for (r, a) in a.iter().enumerate() {
                rows[r].sum = sums[r];
                for (c, x) in a.iter().enumerate() {
                    _mm512_storeu_ps(rows[r].acc.as_mut_ptr().add(col + 16 * c), *x);
                }
            }
        }
    }

    /// `scores[j] =` [`super::dot_scalar`]`(keys[j], q)` with 8-lane registers: each of the
    /// scalar dot's four 16-lane sums is two registers, every lane the same chain of
    /// (exact-product) FMAs; the lane combination and [`super::reduce16`] pair the same
    /// partial sums; the tail past the last 64-element step is added in f64, one by one.
    ///
    /// # Safety
    /// AVX2 and FMA; `keys.len() ≥ scores.len() · q.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_avx2(keys: &[f32], q: &[f32], scores: &mut [f32]) {
        let hd = q.len();
        let np = hd / 64 * 64;
        debug_assert!(keys.len() >= scores.len() * hd);
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
            // SAFETY: loads of 8 floats at offsets < np ≤ hd of `k` and `q` (both hd
            // long); register-only AVX/FMA otherwise, enabled by this fn's contract.
            let head = unsafe {
                let (kp, qp) = (k.as_ptr(), q.as_ptr());
                // x[2j], x[2j + 1]: lanes 0..8 and 8..16 of the scalar dot's sum[j].
                let mut x = [_mm256_setzero_ps(); 8];
                let mut i = 0;
                while i < np {
                    for (c, x) in x.iter_mut().enumerate() {
                        let o = i + 8 * c;
                        *x = _mm256_fmadd_ps(
                            _mm256_loadu_ps(kp.add(o)),
                            _mm256_loadu_ps(qp.add(o)),
                            *x,
                        );
                    }
                    i += 64;
                }
                // (s0 + s2) + (s1 + s3), lanes 0..8 and 8..16.
                let lo = _mm256_add_ps(_mm256_add_ps(x[0], x[4]), _mm256_add_ps(x[2], x[6]));
                let hi = _mm256_add_ps(_mm256_add_ps(x[1], x[5]), _mm256_add_ps(x[3], x[7]));
                // reduce16: t8 = halves, t4 = quarters, then (t4 0 + 2) + (t4 1 + 3).
                let t8 = _mm256_add_ps(lo, hi);
                let t4 = _mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps::<1>(t8));
                let t2 = _mm_add_ps(t4, _mm_movehl_ps(t4, t4));
                _mm_cvtss_f32(_mm_add_ss(t2, _mm_movehdup_ps(t2)))
            };
            let mut total = f64::from(head);
            for (&k, &q) in k[np..].iter().zip(&q[np..]) {
                total += f64::from(k * q);
            }
            *s = total as f32;
        }
    }

    /// [`super::accumulate_scalar`] for up to 4 rows at once with 8-lane registers, as
    /// [`accumulate_avx512`]: column blocks of 16 (8 for the rest), each over all of the
    /// page's keys, the rows' sums advancing in the first. Head dims that are not a
    /// multiple of 8 take [`accumulate_fma`] row by row.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; every row's `acc.len()` is the same `hd`;
    /// `values[seg].len() ≥ (from + steps.len()) · hd` for every row; `rows.len() ≤ 4`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn accumulate_avx2<T: Lanes, V: AsRef<[T]>>(rows: &mut [Row], values: &[V]) {
        macro_rules! regs {
            ($n:literal, $col:expr, $sum:expr) => {
                match rows.len() {
                    4 => accumulate_regs8::<$n, 4, T, V>(rows, values, $col, $sum),
                    3 => accumulate_regs8::<$n, 3, T, V>(rows, values, $col, $sum),
                    2 => accumulate_regs8::<$n, 2, T, V>(rows, values, $col, $sum),
                    _ => accumulate_regs8::<$n, 1, T, V>(rows, values, $col, $sum),
                }
            };
        }
        let hd = rows.first().map_or(0, |r| r.acc.len());
        // SAFETY (all arms): this fn's contract, with the lengths each callee is built for
        // (column blocks inside `hd`).
        unsafe {
            if rows.is_empty() {
            } else if hd % 8 == 0 {
                let mut col = 0;
                while col < hd {
                    let sum = col == 0;
                    if hd - col >= 16 {
                        regs!(2, col, sum);
                    } else {
                        regs!(1, col, sum);
                    }
                    col += 16;
                }
            } else {
                for row in rows.iter_mut() {
                    let v = T::f32s(row.values(values));
                    accumulate_fma(&mut row.acc, &mut row.sum, &v, &row.steps);
                }
            }
        }
    }

    /// [`accumulate_regs`] with 8-lane registers: `R` rows (of the first `rows`), columns
    /// `col .. col + 8 · N` of their accumulators (each `hd` long); `sum`: also advance
    /// the rows' sums.
    ///
    /// # Safety
    /// AVX2, FMA and F16C; as [`accumulate_avx2`], `rows.len() ≥ R`, `col + 8 · N ≤ hd`.
    #[inline(always)]
    unsafe fn accumulate_regs8<const N: usize, const R: usize, T: Lanes, V: AsRef<[T]>>(
        rows: &mut [Row],
        values: &[V],
        col: usize,
        sum: bool,
    ) {
        // F16C's immediate: round to nearest even (not MXCSR's mode).
        const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT;
        let hd = rows[0].acc.len();
        debug_assert!(col + 8 * N <= hd && rows[..R].iter().all(|r| r.acc.len() == hd));
        let n = rows[..R].iter().map(|r| r.steps.len()).max().unwrap_or(0);
        let vals: [&[T]; R] =
            core::array::from_fn(|r| &values[rows[r].seg].as_ref()[rows[r].from * hd..]);
        let vps: [*const T; R] = core::array::from_fn(|r| vals[r].as_ptr());
        let avail: [usize; R] = core::array::from_fn(|r| vals[r].len() / hd);
        let key = |r: usize| (rows[r].seg, rows[r].from);
        let fresh: [bool; R] = core::array::from_fn(|r| r == 0 || key(r) != key(r - 1));
        // SAFETY: as `accumulate_regs`, with 8 floats per load/store at offsets
        // col + 8·c < hd; register-only AVX/FMA/F16C otherwise, enabled by the caller.
        unsafe {
            let round = |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<NEAREST>(x));
            let mut a = [[_mm256_setzero_ps(); N]; R];
            for (r, a) in a.iter_mut().enumerate() {
                for (c, a) in a.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(rows[r].acc.as_ptr().add(col + 8 * c));
                }
            }
            let mut sums: [f32; R] = core::array::from_fn(|r| rows[r].sum);
            for j in 0..n {
                let mut v = [_mm256_setzero_ps(); N];
                for r in 0..R {
                    if fresh[r] && j < avail[r] {
                        let vp = vps[r].add(j * hd + col);
                        for (c, v) in v.iter_mut().enumerate() {
                            *v = T::load8(vp.add(8 * c));
                        }
                    }
                    let Some(step) = rows[r].steps.get(j) else { continue };
                    if sum {
                        sums[r] = sums[r].mul_add(step.ms, step.vs);
                    }
                    if step.ms != 1.0 {
                        let m = _mm256_set1_ps(step.ms);
                        for x in a[r].iter_mut() {
                            *x = round(_mm256_mul_ps(*x, m));
                        }
                    }
                    let w = _mm256_set1_ps(step.vs);
                    for (x, v) in a[r].iter_mut().zip(&v) {
                        *x = round(_mm256_fmadd_ps(*v, w, *x));
                    }
                }
            }
            for (r, a) in a.iter().enumerate() {
                rows[r].sum = sums[r];
                for (c, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(rows[r].acc.as_mut_ptr().add(col + 8 * c), *x);
                }
            }
        }
    }

    /// [`super::accumulate_scalar`] compiled with FMA and F16C (one instruction per
    /// `mul_add`).
    ///
    /// # Safety
    /// AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn accumulate_fma(
        acc: &mut [f32],
        sum: &mut f32,
        values: &[f32],
        steps: &[Step],
    ) {
        accumulate_scalar(acc, sum, values, steps)
    }
}
