//! One attention task: a chunk of query tokens × one kv head × a range of pages.
//!
//! The task gathers its `rows = tokens × group` query rows (every query head of the GQA
//! group, for every token of the chunk) and walks its pages once. Per page it reads the kv
//! head's key run, scores all rows against it, updates each row's online softmax, then
//! reads the value run and accumulates all rows:
//!
//! ```text
//! for page in range:                        keys, values: n × hd   (one head_run each)
//!     S = scale · Q Kᵀ                       rows × n   (ops.scores)
//!     per row r:  a_r..b_r = slots of this page row r sees (window start, causal end)
//!                 m' = max(m, max S[r][a_r..b_r]);  c = exp(m - m')
//!                 l = l·c + Σ exp(S[r][j] - m');  acc[r] *= c;  m = m'
//!                 P[r][j] = exp(S[r][j] - m') for a_r ≤ j < b_r, else 0
//!     acc += P V                             rows × hd  (ops.accumulate)
//! ```
//!
//! Row `r` (token `t`) sees the table indices `lo_r .. hi_r`, `hi_r = first_pos + t + 1` and
//! `lo_r = cfg.first_visible(first_pos + t)` (0 without a sliding window). A page's slots
//! before the task's smallest `lo_r` are neither read nor scored (the "page" above is then
//! its tail), and the task's page range never starts before that page: masked keys take no
//! part in a row's max or sum.
//!
//! AVX-512, a task of at least 16 rows on 16-token pages (fast numerics' aligned split): a
//! page that every row sees in whole runs with the rows in vector lanes
//! (`PageOps::full_page_in_lanes`: queries transposed once per task, no per-row horizontal
//! sums), every other page (the diagonal, a window's edge) row by row as above. Both give a
//! row the same bits (the same FMA chains, sum trees and `exp`), so which one a row takes,
//! which depends on the rows it shares a task with, does not change its result.
//!
//! The result is unnormalised (`m`, `l`, `acc` per row): the caller divides, or merges the
//! partials of several page ranges with the log-sum-exp rule.

use core::ops::Range;

use pagoda_core::attention::{AttnConfig, AttnError};
use pagoda_core::kv::{KvFormat, KvHalf, KvPages};
use pagoda_core::pool::PageId;

use super::ops::{queries_in_lanes, PageOps};
use crate::kernels::Q8Rows;

/// The softmax state of a task's rows: `rows` maxima and sums, `rows × head_dim` outputs.
#[derive(Debug)]
pub(super) struct Partial {
    /// Running max of the scores per row (`-inf` if the row saw no token here).
    pub max: Vec<f32>,
    /// Σ exp(score - max) per row.
    pub sum: Vec<f32>,
    /// Σ exp(score - max) · value per row, `rows × head_dim`.
    pub acc: Vec<f32>,
}

/// What one task covers.
#[derive(Clone, Debug)]
pub(super) struct Task {
    /// Query tokens (indices into the call's chunk of `n_new` tokens).
    pub tokens: Range<usize>,
    /// The kv head; the task serves query heads `kv_head·group .. (kv_head+1)·group`.
    pub kv_head: usize,
    /// Logical page indices into the block table.
    pub pages: Range<usize>,
}

/// Everything a task reads, shared by all tasks of a call (already validated).
pub(super) struct Shared<'a, T, S> {
    pub ops: PageOps,
    pub kv: &'a KvPages<T, S>,
    pub layer: usize,
    pub pages: &'a [PageId],
    /// Position of query token 0 (`n_ctx - n_new`).
    pub first_pos: usize,
    pub q: &'a [f32],
    pub cfg: &'a AttnConfig,
    /// Score whole pages from slot 0 even where every row's window starts later, so that a
    /// row's scores sit at the same offsets in any task (`Split::Aligned`: batch invariance).
    pub whole_pages: bool,
}

/// The positions a task's tokens see, shared by its kv heads.
#[derive(Clone, Copy)]
struct Span {
    /// One past the last table index any row sees.
    max_visible: usize,
    /// The first index any row sees (`first_visible` grows with the position).
    min_first: usize,
    /// The last index any row's window starts at.
    first_max: usize,
    /// The fewest keys any row sees (one past the first token's own index).
    visible_min: usize,
}

/// One kv head's rows of a task and their softmax state, while the task walks its pages.
struct HeadRows {
    kv_head: usize,
    rows: usize,
    /// Query rows of the group, token-major: row = t_local · group + g.
    q: Vec<f32>,
    /// Row r sees the table indices `first[r] .. visible[r]`.
    visible: Vec<usize>,
    first: Vec<usize>,
    part: Partial,
    /// Scores, then probabilities, `rows × block_size`.
    p: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    /// Full 16-key pages that every row sees in whole: rows in vector lanes (AVX-512).
    in_lanes: bool,
    /// Few rows (decode) read f16, q8_0 and q4_0 pages in place: each load serves every row.
    in_place: bool,
    /// q8_0 pages at AVX-512: the rows quantized for integer scores (`q8_0_scores`); empty
    /// (and unused) otherwise.
    quantized: Q8Rows,
    /// In lanes: the queries transposed, the probabilities, the rescale factors.
    qt: Vec<f32>,
    pt: Vec<f32>,
    c: Vec<f32>,
}

/// A [`HeadRows`]' buffers, kept per thread from one task to the next: a decode runs
/// `ranges × kv heads` tasks per layer, and allocating their buffers afresh took ~1.5% of
/// the samples of a decode at depth 4096 (`perf`, q8_0 pages: malloc and free 3.4% → 2.0%).
#[derive(Default)]
struct Spare {
    q: Vec<f32>,
    visible: Vec<usize>,
    first: Vec<usize>,
    p: Vec<f32>,
    kbuf: Vec<f32>,
    vbuf: Vec<f32>,
    pt: Vec<f32>,
    c: Vec<f32>,
    quantized: Q8Rows,
}

thread_local! {
    static SPARES: core::cell::RefCell<Vec<Spare>> = const { core::cell::RefCell::new(Vec::new()) };
}

impl Spare {
    /// A spare of this thread, or new buffers.
    fn take() -> Spare {
        SPARES.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    /// Keeps `self` for this thread's next task (at most 16 spares per thread).
    fn give_back(self) {
        SPARES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 16 {
                s.push(self);
            }
        });
    }
}

impl HeadRows {
    /// The rows' softmax state; the buffers go back to the thread's spares.
    fn finish(self) -> Partial {
        let HeadRows { q, visible, first, part, p, kbuf, vbuf, pt, c, quantized, .. } = self;
        Spare { q, visible, first, p, kbuf, vbuf, pt, c, quantized }.give_back();
        part
    }
}

impl<T: KvFormat, S: AsRef<[T]>> Shared<'_, T, S> {
    /// Runs `task`; errors only if the KV storage rejects an access (validated beforehand).
    pub(super) fn run(&self, task: &Task) -> Result<Partial, AttnError> {
        let mut parts = self.run_heads(core::slice::from_ref(task))?;
        Ok(parts.pop().expect("one task, one partial"))
    }

    /// Runs tasks that differ only in their kv head (same tokens, same pages), walking the
    /// pages once: per page, every head's key and value runs, which are adjacent in the page
    /// (`pagoda_core::kv`'s layout), so the page is read as one region. Each head's rows get
    /// the bits [`Self::run`] gives them alone.
    pub(super) fn run_heads(&self, tasks: &[Task]) -> Result<Vec<Partial>, AttnError> {
        let Some(task) = tasks.first() else { return Ok(Vec::new()) };
        debug_assert!(tasks.iter().all(|t| t.tokens == task.tokens && t.pages == task.pages));
        let cfg = self.cfg;
        let bs = self.kv.config().block_size;
        let span = Span {
            max_visible: self.first_pos + task.tokens.end,
            min_first: cfg.first_visible(self.first_pos + task.tokens.start),
            first_max: cfg.first_visible(self.first_pos + task.tokens.end - 1),
            visible_min: self.first_pos + task.tokens.start + 1,
        };
        let mut heads: Vec<HeadRows> =
            tasks.iter().map(|t| self.head_rows(t, Spare::take())).collect();

        for i in task.pages.clone() {
            let start = i * bs;
            if start >= span.max_visible {
                break;
            }
            // Slots any row reads: s0..n. Later slots of the last page are unwritten;
            // earlier ones of the window's first page are masked for every row.
            let n = (span.max_visible - start).min(bs);
            let s0 = if self.whole_pages { 0 } else { span.min_first.saturating_sub(start) };
            if s0 >= n {
                continue;
            }
            // The next page's runs are prefetched one head run at a time, each just before
            // this page's same run is computed: the lines arrive while the page is worked
            // on, and a 32-line burst does not fill the load queues as a whole page's
            // (all heads at once) did. Decode over 30 × 4096 f16 tokens (benches/attention.rs,
            // 2 threads, AMD EPYC): 6.0–6.1 ms without, 3.5–3.7 ms with this (26 of the
            // 30 GB/s read bandwidth); the whole next page at once gave 4.4–4.5 ms, two pages
            // ahead 3.8–3.9 ms.
            let next = (i + 1 < task.pages.end && (i + 1) * bs < span.max_visible)
                .then(|| self.pages[i + 1]);
            for h in &mut heads {
                self.page(h, &span, i, n, s0, next)?;
            }
        }
        Ok(heads.into_iter().map(HeadRows::finish).collect())
    }

    /// The rows of `task` (its kv head's query heads for its tokens), with empty state, in
    /// the buffers of `spare`.
    fn head_rows(&self, task: &Task, spare: Spare) -> HeadRows {
        let cfg = self.cfg;
        let (hd, group) = (cfg.head_dim, cfg.group_size());
        let bs = self.kv.config().block_size;
        let rows = task.tokens.len() * group;
        let Spare {
            mut q,
            mut visible,
            mut first,
            mut p,
            kbuf,
            vbuf,
            mut pt,
            mut c,
            mut quantized,
        } = spare;
        q.clear();
        visible.clear();
        first.clear();
        for t in task.tokens.clone() {
            let head0 = t * cfg.n_heads + task.kv_head * group;
            q.extend_from_slice(&self.q[head0 * hd..(head0 + group) * hd]);
            visible.extend(core::iter::repeat_n(self.first_pos + t + 1, group));
            first.extend(core::iter::repeat_n(cfg.first_visible(self.first_pos + t), group));
        }
        // Integer scores (q8_0 pages at AVX-512) go through the per-row page step for every
        // row count: the rows-in-lanes step scores in f32.
        let integer_scores = self.ops.quantizes_queries::<T>();
        if integer_scores {
            // Whole blocks: q8_0 pages have head dims of whole blocks.
            quantized.quantize(&self.ops.kernels(), &q).expect("rows of whole blocks");
        } else {
            quantized.blocks.clear();
        }
        let in_lanes = self.ops.rows_in_lanes()
            && !integer_scores
            && self.whole_pages
            && bs == 16
            && hd % 16 == 0
            && rows >= 16;
        let padded = if in_lanes { rows.next_multiple_of(16) } else { 0 };
        let qt = if in_lanes { queries_in_lanes(&q, hd) } else { Vec::new() };
        p.clear();
        p.resize(rows * bs, 0.0);
        pt.clear();
        pt.resize(16 * padded, 0.0);
        c.clear();
        c.resize(padded, 1.0);
        HeadRows {
            kv_head: task.kv_head,
            rows,
            q,
            visible,
            first,
            part: Partial {
                max: vec![f32::NEG_INFINITY; rows],
                sum: vec![0.0; rows],
                acc: vec![0.0; rows * hd],
            },
            p,
            kbuf,
            vbuf,
            in_lanes,
            in_place: rows < 16,
            quantized,
            qt,
            pt,
            c,
        }
    }

    /// Table page `i` (slots `s0..n`) for one head's rows, prefetching the head's runs of
    /// page `next` (the next one the task reads, if any) into L2.
    fn page(
        &self,
        h: &mut HeadRows,
        span: &Span,
        i: usize,
        n: usize,
        s0: usize,
        next: Option<PageId>,
    ) -> Result<(), AttnError> {
        let cfg = self.cfg;
        let hd = cfg.head_dim;
        let bs = self.kv.config().block_size;
        // Units of T per slot (head_dim for float elements, head_dim / 32 for blocks).
        let ru = self.kv.row_units();
        let (start, len, page) = (i * bs, n - s0, self.pages[i]);
        let key_run = &self.kv.head_run(self.layer, page, KvHalf::Key, h.kv_head)?;
        let key_run = &key_run[s0 * ru..n * ru];
        let value_run = &self.kv.head_run(self.layer, page, KvHalf::Value, h.kv_head)?;
        let value_run = &value_run[s0 * ru..n * ru];
        let part = &mut h.part;
        let prefetch = |half| -> Result<(), AttnError> {
            if let Some(next) = next {
                self.ops.prefetch(self.kv.head_run(self.layer, next, half, h.kv_head)?);
            }
            Ok(())
        };
        prefetch(KvHalf::Key)?;
        // Every row sees all of the page's slots s0..n: one call for all rows.
        let all_see = span.first_max <= start + s0 && span.visible_min >= start + n;
        if h.in_lanes && all_see && len == 16 {
            let keys = self.ops.as_f32(key_run, &mut h.kbuf);
            prefetch(KvHalf::Value)?;
            let values = self.ops.as_f32(value_run, &mut h.vbuf);
            let state = (&mut part.max[..], &mut part.sum[..], &mut part.acc[..]);
            let (qt, pt, c) = (&h.qt, &mut h.pt, &mut h.c);
            self.ops.full_page_in_lanes(qt, keys, values, hd, cfg.scale, state, pt, c);
            return Ok(());
        }
        let p = &mut h.p[..h.rows * len];
        let in_place = h.in_place;
        let scored = !h.quantized.blocks.is_empty()
            && self.ops.scores_quantized(&h.quantized, key_run, hd, len, cfg.scale, p);
        if !scored {
            self.ops.scores_run(&h.q, key_run, hd, len, cfg.scale, p, &mut h.kbuf, in_place);
        }

        let (max, sum, acc) = (&mut part.max, &mut part.sum, &mut part.acc);
        let done = all_see && self.ops.softmax_page(p, len, max, sum, acc, hd);
        for (r, p_r) in p.chunks_exact_mut(len).enumerate().filter(|_| !done) {
            // The row sees slots s0 + a .. s0 + b: from its window's start (a > 0 only
            // if it starts later than the task's) to its causal end.
            let b = h.visible[r].saturating_sub(start).min(n).saturating_sub(s0);
            let a = h.first[r].saturating_sub(start + s0).min(b);
            if a == b {
                p_r.fill(0.0);
                continue;
            }
            let block_max = p_r[a..b].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m = &mut part.max[r];
            if block_max > *m {
                // exp(-inf) = 0 on the row's first page: nothing summed yet to rescale.
                let c = self.ops.exp(*m - block_max);
                part.sum[r] *= c;
                part.acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= c);
                *m = block_max;
            }
            part.sum[r] += self.ops.exp_sum(&mut p_r[a..b], *m);
            p_r[..a].fill(0.0);
            p_r[b..].fill(0.0);
        }
        prefetch(KvHalf::Value)?;
        self.ops.accumulate_run(&mut part.acc, p, value_run, hd, len, &mut h.vbuf, in_place);
        Ok(())
    }
}
