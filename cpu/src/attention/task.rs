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

use super::ops::PageOps;

/// Pages a task asks the CPU to load ahead of the one it computes.
const PREFETCH_PAGES: usize = 4;

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

impl<T: KvFormat, S: AsRef<[T]>> Shared<'_, T, S> {
    /// Runs `task`; errors only if the KV storage rejects an access (validated beforehand).
    pub(super) fn run(&self, task: &Task) -> Result<Partial, AttnError> {
        let cfg = self.cfg;
        let (hd, group) = (cfg.head_dim, cfg.group_size());
        let bs = self.kv.config().block_size;
        // Units of T per slot (head_dim for float elements, head_dim / 32 for blocks).
        let ru = self.kv.row_units();
        let rows = task.tokens.len() * group;

        // Query rows of the group, token-major: row = t_local · group + g.
        let mut q = Vec::with_capacity(rows * hd);
        // Each row sees the table indices first[r] .. visible[r].
        let mut visible = Vec::with_capacity(rows);
        let mut first = Vec::with_capacity(rows);
        for t in task.tokens.clone() {
            let head0 = t * cfg.n_heads + task.kv_head * group;
            q.extend_from_slice(&self.q[head0 * hd..(head0 + group) * hd]);
            visible.extend(core::iter::repeat_n(self.first_pos + t + 1, group));
            first.extend(core::iter::repeat_n(cfg.first_visible(self.first_pos + t), group));
        }
        let max_visible = self.first_pos + task.tokens.end;
        // The first index any row sees (`first_visible` grows with the position).
        let min_first = cfg.first_visible(self.first_pos + task.tokens.start);
        // The last index any row's window starts at, and the fewest keys any row sees.
        let first_max = cfg.first_visible(self.first_pos + task.tokens.end - 1);
        let visible_min = self.first_pos + task.tokens.start + 1;

        let mut part = Partial {
            max: vec![f32::NEG_INFINITY; rows],
            sum: vec![0.0; rows],
            acc: vec![0.0; rows * hd],
        };
        let mut p = vec![0.0f32; rows * bs];
        let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
        // Full 16-key pages that every row sees in whole: rows in vector lanes (AVX-512).
        let in_lanes =
            self.ops.rows_in_lanes() && self.whole_pages && bs == 16 && hd % 16 == 0 && rows >= 16;
        let padded = if in_lanes { rows.next_multiple_of(16) } else { 0 };
        // Few rows (decode) read f16 pages in place: each load serves every row.
        let in_place = rows < 16;
        let mut qt = vec![0.0f32; padded * hd];
        for (r, q_r) in q.chunks_exact(hd).enumerate().filter(|_| in_lanes) {
            let (b, i) = (r / 16, r % 16);
            for (d, &x) in q_r.iter().enumerate() {
                qt[(b * hd + d) * 16 + i] = x;
            }
        }
        let (mut pt, mut c) = (vec![0.0f32; 16 * padded], vec![1.0f32; padded]);

        for i in task.pages.clone() {
            let start = i * bs;
            if start >= max_visible {
                break;
            }
            // Slots any row reads: s0..n. Later slots of the last page are unwritten;
            // earlier ones of the window's first page are masked for every row.
            let n = (max_visible - start).min(bs);
            let s0 = if self.whole_pages { 0 } else { min_first.saturating_sub(start) };
            if s0 >= n {
                continue;
            }
            let len = n - s0;
            let page = self.pages[i];
            // Keep PREFETCH_PAGES pages in flight (the task's first ones before its first).
            let ahead = if i == task.pages.start {
                i + 1..i + 1 + PREFETCH_PAGES
            } else {
                i + PREFETCH_PAGES..i + PREFETCH_PAGES + 1
            };
            for j in ahead.take_while(|&j| j < task.pages.end && j * bs < max_visible) {
                let next = self.pages[j];
                for half in [KvHalf::Key, KvHalf::Value] {
                    self.ops.prefetch(self.kv.head_run(self.layer, next, half, task.kv_head)?);
                }
            }
            let key_run = &self.kv.head_run(self.layer, page, KvHalf::Key, task.kv_head)?;
            let key_run = &key_run[s0 * ru..n * ru];
            let value_run = &self.kv.head_run(self.layer, page, KvHalf::Value, task.kv_head)?;
            let value_run = &value_run[s0 * ru..n * ru];
            // Every row sees all of the page's slots s0..n: one call for all rows.
            let all_see = first_max <= start + s0 && visible_min >= start + n;
            if in_lanes && all_see && len == 16 {
                let keys = self.ops.as_f32(key_run, &mut kbuf);
                let values = self.ops.as_f32(value_run, &mut vbuf);
                let state = (&mut part.max[..], &mut part.sum[..], &mut part.acc[..]);
                let scale = cfg.scale;
                self.ops.full_page_in_lanes(&qt, keys, values, hd, scale, state, &mut pt, &mut c);
                continue;
            }
            let p = &mut p[..rows * len];
            self.ops.scores_run(&q, key_run, hd, len, cfg.scale, p, &mut kbuf, in_place);

            let (max, sum, acc) = (&mut part.max, &mut part.sum, &mut part.acc);
            let done = all_see && self.ops.softmax_page(p, len, max, sum, acc, hd);
            for (r, p_r) in p.chunks_exact_mut(len).enumerate().filter(|_| !done) {
                // The row sees slots s0 + a .. s0 + b: from its window's start (a > 0 only
                // if it starts later than the task's) to its causal end.
                let b = visible[r].saturating_sub(start).min(n).saturating_sub(s0);
                let a = first[r].saturating_sub(start + s0).min(b);
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

            self.ops.accumulate_run(&mut part.acc, p, value_run, hd, len, &mut vbuf, in_place);
        }
        Ok(part)
    }
}
