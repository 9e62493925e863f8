//! KV eviction policies at page granularity: which pages of a sequence to drop, and dropping
//! them through the [`BlockTable`] / [`BlockPool`] API.
//!
//! A policy never touches KV data. It looks at a sequence's pages (logical order, how many
//! tokens, each page's accumulated attention mass, whether another table shares it) and names
//! one victim at a time; [`evict_page`] takes that page out of the table and gives it back to
//! the pool. The table stays compact: the kept pages close up, so logical page `i` is still
//! `pages()[i]` and attention simply sees fewer tokens.
//!
//! ```text
//!   sink:4,window:40, block 16        before: [p0 p1 p2 p3 p4 p5]   len 88 (p5 holds 8)
//!                                              sink  ^^^^^^^^  window: last 40 tokens
//!                                              ----  p1, p2 older than the window
//!   victims, oldest first: p1, p2      after:  [p0 p3 p4 p5]         len 56
//! ```
//!
//! Rules (all decided at a step boundary, before the next tokens are appended):
//!
//! - [`EvictionRule::SinkWindow`] (StreamingLLM): keep the pages holding the first `sink` tokens
//!   and the fewest last pages holding at least `window` tokens; drop every page in between,
//!   oldest first. `sink = 0` is plain window attention.
//! - [`EvictionRule::HeavyHitters`] (H2O): keep at most `budget_pages` pages; while over, drop
//!   the page with the least accumulated attention mass that is not among the last
//!   `recent_pages` (ties: the oldest).
//! - PyramidKV ([`KvPolicy::Pyramid`]): one heavy-hitters rule per layer, each layer with its
//!   own block table and its own budget, shrinking linearly with depth ([`PyramidBudgets`]).
//!   Per-layer rules come from [`KvPolicy::resolve_layer`].
//!
//! Shared pages: a [`SeqView`] reports each page's refcount, and a page shared with another
//! table (refcount > 1) is never a victim of the rule — the sequence keeps more than the
//! policy asks for, and [`evict_page`] refuses such a page. A caller that wants a sequence to
//! evict what it would evict alone, shared or not, reports every page as its own and removes
//! victims with [`drop_page`], which lets go of this table's reference only.

use core::fmt;

use crate::pool::{BlockPool, PageEntry, PageId, PoolError};
use crate::table::{BlockTable, PageList, TableError};

mod pyramid;

pub use pyramid::{PyramidBudgets, PYRAMID_BETA};

/// A token budget: a count, or a percentage of the context size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// This many tokens.
    Tokens(usize),
    /// This percentage (1..=100) of the context size `n_ctx`.
    Percent(u8),
}

impl Budget {
    /// The budget in tokens for a context of `n_ctx` tokens (a percentage rounds down, but is
    /// at least 1).
    pub fn tokens(self, n_ctx: usize) -> usize {
        match self {
            Budget::Tokens(n) => n,
            Budget::Percent(p) => (n_ctx.saturating_mul(p as usize) / 100).max(1),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Tokens(n) => write!(f, "{n}"),
            Budget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// What `--kv-policy` asks for, before the context size is known.
///
/// | text               | policy                                                      |
/// |--------------------|-------------------------------------------------------------|
/// | `full`             | keep everything (the default)                               |
/// | `sink:S,window:W`  | StreamingLLM: first `S` tokens + last `W` tokens            |
/// | `window:W`         | last `W` tokens only                                        |
/// | `h2o:B`            | H2O heavy hitters, budget `B` tokens (or `B%` of the context) |
/// | `pyramid:B`        | PyramidKV: H2O per layer, budgets shrinking with depth, average `B` |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvPolicy {
    /// Never evict.
    #[default]
    Full,
    /// Attention sinks plus a sliding window (`sink = 0`: window only).
    SinkWindow {
        /// Tokens at the start of the sequence that are always kept.
        sink: usize,
        /// Most recent tokens that are always kept.
        window: usize,
    },
    /// H2O: keep the pages with the most attention mass within a budget; the most recent
    /// half of the budget is always kept.
    H2o(Budget),
    /// PyramidKV: a heavy-hitters rule per layer (each layer its own pages and attention
    /// mass), budgets decreasing linearly from the first layer to the last, `B` on average
    /// (see [`PyramidBudgets`]).
    Pyramid(Budget),
}

/// Why a `--kv-policy` text or a policy's parameters were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The name before the first `:` is not a policy.
    UnknownPolicy,
    /// A `key:value` part has a key this policy does not take, or a key twice.
    UnexpectedPart,
    /// A value is not a non-negative integer (or percentage, where one is allowed).
    BadNumber,
    /// A value is out of range: `what` must be at least 1 (a percentage at most 100).
    OutOfRange {
        /// Which value.
        what: &'static str,
    },
    /// `sink:S` was given without `window:W`.
    SinkWithoutWindow,
    /// The budget is smaller than two pages (one kept page plus the page being written).
    BudgetTooSmall {
        /// The budget in tokens.
        tokens: usize,
        /// Tokens per page.
        block_size: usize,
    },
    /// The policy keeps a different set of pages in each layer ([`KvPolicy::Pyramid`]): ask
    /// for each layer's rule with [`KvPolicy::resolve_layer`].
    PerLayer,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::UnknownPolicy => write!(
                f,
                "unknown KV policy (expected full, sink:S,window:W, window:W, h2o:TOKENS, \
                 h2o:PERCENT%, pyramid:TOKENS or pyramid:PERCENT%)"
            ),
            PolicyError::UnexpectedPart => {
                write!(f, "unexpected or repeated part (sink:S,window:W takes sink then window)")
            }
            PolicyError::BadNumber => {
                write!(f, "expected a whole number of tokens (or N% for a budget)")
            }
            PolicyError::OutOfRange { what } => write!(f, "{what} is out of range"),
            PolicyError::SinkWithoutWindow => write!(f, "sink:S needs a window: sink:S,window:W"),
            PolicyError::BudgetTooSmall { tokens, block_size } => write!(
                f,
                "a budget of {tokens} tokens is less than two pages of {block_size} tokens"
            ),
            PolicyError::PerLayer => write!(
                f,
                "this policy keeps different pages in each layer (per-layer block tables)"
            ),
        }
    }
}

impl core::error::Error for PolicyError {}

fn parse_count(s: &str) -> Result<usize, PolicyError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PolicyError::BadNumber);
    }
    s.parse().map_err(|_| PolicyError::BadNumber)
}

fn parse_budget(s: &str) -> Result<Budget, PolicyError> {
    if let Some(p) = s.strip_suffix('%') {
        let p = parse_count(p)?;
        if !(1..=100).contains(&p) {
            return Err(PolicyError::OutOfRange { what: "a budget percentage (1..=100)" });
        }
        return Ok(Budget::Percent(p as u8));
    }
    match parse_count(s)? {
        0 => Err(PolicyError::OutOfRange { what: "a budget of 0 tokens" }),
        n => Ok(Budget::Tokens(n)),
    }
}

impl KvPolicy {
    /// Parses `full`, `sink:S,window:W`, `window:W`, `h2o:B`, `h2o:P%`, `pyramid:B` or
    /// `pyramid:P%` (see the table above).
    /// `W` and `B` must be at least 1; `S` may be 0.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        if s == "full" {
            return Ok(KvPolicy::Full);
        }
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or("");
        let (name, value) = first.split_once(':').ok_or(PolicyError::UnknownPolicy)?;
        match name {
            "h2o" | "pyramid" => {
                if parts.next().is_some() {
                    return Err(PolicyError::UnexpectedPart);
                }
                let b = parse_budget(value)?;
                Ok(if name == "h2o" { KvPolicy::H2o(b) } else { KvPolicy::Pyramid(b) })
            }
            "sink" | "window" => {
                let (sink, window_part) = if name == "sink" {
                    (parse_count(value)?, parts.next().ok_or(PolicyError::SinkWithoutWindow)?)
                } else {
                    (0, first)
                };
                let w = window_part.strip_prefix("window:").ok_or(PolicyError::UnexpectedPart)?;
                if parts.next().is_some() {
                    return Err(PolicyError::UnexpectedPart);
                }
                let window = parse_count(w)?;
                if window == 0 {
                    return Err(PolicyError::OutOfRange { what: "a window of 0 tokens" });
                }
                Ok(KvPolicy::SinkWindow { sink, window })
            }
            _ => Err(PolicyError::UnknownPolicy),
        }
    }

    /// Whether the policy ever evicts.
    pub fn evicts(&self) -> bool {
        !matches!(self, KvPolicy::Full)
    }

    /// Whether the policy needs each page's accumulated attention mass.
    pub fn needs_attention_mass(&self) -> bool {
        matches!(self, KvPolicy::H2o(_) | KvPolicy::Pyramid(_))
    }

    /// Whether each layer keeps its own set of pages (one block table per layer).
    pub fn per_layer(&self) -> bool {
        matches!(self, KvPolicy::Pyramid(_))
    }

    /// The rule for a context of `n_ctx` tokens and pages of `block_size` tokens, for
    /// policies that keep the same pages in every layer ([`PolicyError::PerLayer`] for
    /// [`KvPolicy::Pyramid`]: use [`resolve_layer`](Self::resolve_layer)).
    ///
    /// H2O's budget becomes `⌊budget / block_size⌋` pages (at least 2: one kept page and the
    /// page being written), half of them (rounded up) protected as the recent window.
    pub fn resolve(&self, n_ctx: usize, block_size: usize) -> Result<EvictionRule, PolicyError> {
        let bs = block_size.max(1);
        Ok(match *self {
            KvPolicy::Full => EvictionRule::KeepAll,
            KvPolicy::SinkWindow { sink, window } => EvictionRule::SinkWindow { sink, window },
            KvPolicy::H2o(b) => {
                let budget_pages = budget_pages(b, n_ctx, bs)?;
                EvictionRule::HeavyHitters { budget_pages, recent_pages: budget_pages.div_ceil(2) }
            }
            KvPolicy::Pyramid(_) => return Err(PolicyError::PerLayer),
        })
    }

    /// The rule of layer `layer` of a model of `n_layers` layers. The same as
    /// [`resolve`](Self::resolve) for every layer, except under [`KvPolicy::Pyramid`], whose
    /// layers get the budgets of [`PyramidBudgets`].
    pub fn resolve_layer(
        &self,
        n_ctx: usize,
        block_size: usize,
        layer: usize,
        n_layers: usize,
    ) -> Result<EvictionRule, PolicyError> {
        match *self {
            KvPolicy::Pyramid(b) => {
                let bs = block_size.max(1);
                let pyramid =
                    PyramidBudgets::new(budget_pages(b, n_ctx, bs)?, n_layers, n_ctx.div_ceil(bs))?;
                pyramid.rule(layer).ok_or(PolicyError::OutOfRange { what: "the layer index" })
            }
            _ => self.resolve(n_ctx, block_size),
        }
    }
}

/// `⌊budget / block_size⌋` pages, at least 2 (one kept page and the page being written).
fn budget_pages(b: Budget, n_ctx: usize, bs: usize) -> Result<usize, PolicyError> {
    let tokens = b.tokens(n_ctx);
    let pages = tokens / bs;
    if pages < 2 {
        return Err(PolicyError::BudgetTooSmall { tokens, block_size: bs });
    }
    Ok(pages)
}

impl fmt::Display for KvPolicy {
    /// The text [`KvPolicy::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvPolicy::Full => write!(f, "full"),
            KvPolicy::SinkWindow { sink: 0, window } => write!(f, "window:{window}"),
            KvPolicy::SinkWindow { sink, window } => write!(f, "sink:{sink},window:{window}"),
            KvPolicy::H2o(b) => write!(f, "h2o:{b}"),
            KvPolicy::Pyramid(b) => write!(f, "pyramid:{b}"),
        }
    }
}

/// A policy with its sizes resolved to tokens and pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionRule {
    /// Never evict.
    KeepAll,
    /// Keep the first `sink` and the last `window` tokens (in whole pages).
    SinkWindow {
        /// Tokens kept at the start.
        sink: usize,
        /// Tokens kept at the end.
        window: usize,
    },
    /// Keep at most `budget_pages`, never evicting the last `recent_pages`.
    HeavyHitters {
        /// Most pages held once the next step's page is counted.
        budget_pages: usize,
        /// Last pages always kept.
        recent_pages: usize,
    },
}

impl EvictionRule {
    /// The most pages a sequence under this rule holds at once (after eviction and one step
    /// of at most one page), if none of its pages is shared; `None` if unbounded.
    ///
    /// - sink/window: `⌈sink / bs⌉ + ⌈(window − 1) / bs⌉ + 1` kept, plus the step's page;
    /// - heavy hitters: `budget_pages`.
    pub fn max_pages(&self, block_size: usize) -> Option<usize> {
        let bs = block_size.max(1);
        match *self {
            EvictionRule::KeepAll => None,
            EvictionRule::SinkWindow { sink, window } => {
                // Saturating: `sink` and `window` come from user input (`sink:S,window:W`).
                let kept = sink.div_ceil(bs).saturating_add(window.saturating_sub(1).div_ceil(bs));
                Some(kept.saturating_add(2))
            }
            EvictionRule::HeavyHitters { budget_pages, .. } => Some(budget_pages),
        }
    }

    /// The next page to evict before appending a step, or `None` when the sequence is within
    /// the rule.
    ///
    /// `view` describes the table as it is now; `new_page` says whether the step about to be
    /// appended opens a new page (the table is empty or its last page is full). Call again
    /// after each eviction (with the table's new shape) until it returns `None`.
    pub fn next_victim(&self, view: &SeqView<'_>, new_page: bool) -> Option<usize> {
        let n_pages = view.n_pages();
        if n_pages == 0 {
            return None;
        }
        let bs = view.block_size.max(1);
        match *self {
            EvictionRule::KeepAll => None,
            EvictionRule::SinkWindow { sink, window } => {
                let first = sink.div_ceil(bs);
                // Tokens in the last page (1..=bs), then the fewest last pages covering the window.
                let tail = view.n_tokens - (n_pages - 1) * bs;
                let keep_last = 1 + window.saturating_sub(tail).div_ceil(bs);
                let end = n_pages.saturating_sub(keep_last);
                (first..end).find(|&i| !view.is_shared(i))
            }
            EvictionRule::HeavyHitters { budget_pages, recent_pages } => {
                let after_step = n_pages + usize::from(new_page);
                if after_step <= budget_pages {
                    return None;
                }
                let end = n_pages.saturating_sub(recent_pages.max(1));
                let mut best: Option<(usize, f32)> = None;
                for i in 0..end {
                    if view.is_shared(i) {
                        continue;
                    }
                    let m = view.mass.get(i).copied().unwrap_or(0.0);
                    // Strictly less keeps the oldest of equal masses; NaN never wins.
                    if best.is_none_or(|(_, b)| m < b) {
                        best = Some((i, m));
                    }
                }
                best.map(|(i, _)| i)
            }
        }
    }
}

/// What a rule looks at: one sequence's pages in logical order.
#[derive(Clone, Copy, Debug)]
pub struct SeqView<'a> {
    /// Tokens per page.
    pub block_size: usize,
    /// Tokens in the table; every page but the last is full.
    pub n_tokens: usize,
    /// Accumulated attention mass of each logical page (may be empty if the rule ignores it).
    pub mass: &'a [f32],
    /// Holders of each logical page among sequences (`> 1`: shared, never a victim). A
    /// pool reference count, minus any hold of a cache that is not a sequence (a prefix
    /// cache, see [`evict_cached_page`]).
    pub refcounts: &'a [u32],
}

impl SeqView<'_> {
    /// Pages in the table.
    pub fn n_pages(&self) -> usize {
        self.n_tokens.div_ceil(self.block_size.max(1))
    }

    /// Whether logical page `i` is shared with another table (unknown counts as shared).
    pub fn is_shared(&self, i: usize) -> bool {
        self.refcounts.get(i).is_none_or(|&rc| rc != 1)
    }
}

/// Why [`evict_page`] refused. The table and pool are unchanged after any error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictError {
    /// The index is not a page of the table, or is its last page (where appends go; shorten
    /// the sequence with [`BlockTable::truncate`] instead).
    NotEvictable {
        /// The logical page asked for.
        index: usize,
        /// Pages in the table.
        pages: usize,
    },
    /// Another table holds the page too.
    Shared {
        /// The physical page.
        page: PageId,
        /// Its reference count.
        refcount: u32,
    },
    /// The pool or the table refused (a table used with the wrong pool).
    Table(TableError),
}

impl fmt::Display for EvictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EvictError::NotEvictable { index, pages } => write!(
                f,
                "cannot evict logical page {index} of a table of {pages} pages (only pages \
                 before the last can be evicted)"
            ),
            EvictError::Shared { page, refcount } => {
                write!(f, "{page} is shared ({refcount} holders); it is never evicted")
            }
            EvictError::Table(e) => write!(f, "eviction: {e}"),
        }
    }
}

impl core::error::Error for EvictError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            EvictError::Table(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TableError> for EvictError {
    fn from(e: TableError) -> Self {
        EvictError::Table(e)
    }
}

impl From<PoolError> for EvictError {
    fn from(e: PoolError) -> Self {
        EvictError::Table(TableError::Pool(e))
    }
}

/// Removes logical page `index` (any page but the last, held by this table only) from
/// `table` and gives it back to `pool`; the pages after it move up one place and the table
/// holds `block_size` fewer tokens. Returns the freed page.
///
/// ```text
///   [p7 p2 p9 p4]  len 60   evict_page(1)   [p7 p9 p4]  len 44      p2 → free list
/// ```
///
/// Built from the public table API: a fresh table takes a shared hold on every kept page
/// ([`BlockTable::push_shared_page`]), then the old table lets go of all of its pages, so the
/// kept pages end where they started (refcount 1) and the victim's count reaches 0. All or
/// nothing.
pub fn evict_page<L, S>(
    table: &mut BlockTable<L>,
    index: usize,
    pool: &mut BlockPool<S>,
) -> Result<PageId, EvictError>
where
    L: PageList + Default,
    S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
{
    evict_cached_page(table, index, pool, 0)
}

/// [`evict_page`] for a page that a cache which is not a sequence (a prefix cache) may also
/// hold: the page's refcount must be exactly `1 + cache_holds` (this table plus the caches),
/// else it is shared with another sequence and refused ([`EvictError::Shared`]). The table
/// lets go of the page; with `cache_holds > 0` it stays allocated to the caches (which may
/// hand it to a later sequence, or reclaim it) and the caller tells them it is unused.
pub fn evict_cached_page<L, S>(
    table: &mut BlockTable<L>,
    index: usize,
    pool: &mut BlockPool<S>,
    cache_holds: u32,
) -> Result<PageId, EvictError>
where
    L: PageList + Default,
    S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
{
    let pages = table.pages().len();
    if index + 1 >= pages {
        return Err(EvictError::NotEvictable { index, pages });
    }
    let victim = table.pages()[index];
    let refcount = pool.refcount(victim)?;
    if refcount != cache_holds.saturating_add(1) {
        return Err(EvictError::Shared { page: victim, refcount });
    }
    drop_page(table, index, pool)
}

/// Removes logical page `index` (any page but the last) from `table` whoever else holds it:
/// the table lets go of its one reference, so the page is freed if the table held it alone
/// and otherwise stays allocated to its other holders (a fork's siblings, a prefix cache).
/// The pages after it move up one place and the table holds `block_size` fewer tokens.
/// Returns the page; all or nothing.
///
/// This is what a sequence under an eviction policy does to a page it shares: it forgets
/// the page as it would alone, so its attention (and its tokens) do not depend on who else
/// holds the page — at the price that evicting a shared page frees no memory until its
/// last holder lets go of it too.
///
/// ```text
///   A [p7 p2 p9]  B [p7 p2 p5]   drop_page(A, 0)   A [p2 p9]  B [p7 p2 p5]   p7: refcount 1
/// ```
///
/// Built from the public table API: a fresh table takes a shared hold on every kept page
/// ([`BlockTable::push_shared_page`]), then the old table lets go of all of its pages, so the
/// kept pages end where they started and the victim's count drops by one.
pub fn drop_page<L, S>(
    table: &mut BlockTable<L>,
    index: usize,
    pool: &mut BlockPool<S>,
) -> Result<PageId, EvictError>
where
    L: PageList + Default,
    S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
{
    let pages = table.pages().len();
    if index + 1 >= pages {
        return Err(EvictError::NotEvictable { index, pages });
    }
    let victim = table.pages()[index];
    let bs = table.block_size();
    let mut fresh = BlockTable::new(bs, L::default())?;
    for (i, &p) in table.pages().iter().enumerate() {
        if i == index {
            continue;
        }
        if let Err(e) = fresh.push_shared_page(p, pool) {
            let _ = fresh.free(pool);
            return Err(e.into());
        }
    }
    // The last page may be partly filled: trim the count (no page is released, the new
    // length still needs all of `fresh`'s pages).
    let new_len = table.len() - bs;
    if let Err(e) = fresh.truncate(new_len, pool) {
        let _ = fresh.free(pool);
        return Err(e.into());
    }
    if let Err(e) = table.free(pool) {
        let _ = fresh.free(pool);
        return Err(e.into());
    }
    *table = fresh;
    Ok(victim)
}

#[cfg(test)]
mod tests;
