//! One sequence with its own paged KV cache: the unit `pagoda run`, `chat` and
//! `perplexity` drive.

use std::sync::Arc;

use pagoda_core::evict::{EvictionRule, KvPolicy};

use super::eviction::Evictor;
use super::kv_cache::{KvCache, KvType, SeqTable};
use super::kv_manager::{BatchEntry, KvManager, SeqKv};
use super::llama::{ForwardScratch, Llama, Logits};
use super::window::max_window_pages;
use super::{ModelError, ModelRef};

/// Settings of a [`Session`].
#[derive(Clone, Debug, PartialEq)]
pub struct SessionOptions {
    /// Context size in tokens: the most the sequence may hold.
    pub n_ctx: usize,
    /// KV page element type.
    pub kv_type: KvType,
    /// Tokens per KV page.
    pub block_size: usize,
    /// Most tokens per forward pass when processing a prompt.
    pub n_batch: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            n_ctx: 2048,
            kv_type: KvType::F16,
            block_size: pagoda_core::kv::DEFAULT_BLOCK_SIZE,
            n_batch: 512,
        }
    }
}

/// A single sequence: its tokens, its block table and a cache sized for `n_ctx` (or, under an
/// eviction policy with a bound, for that bound).
///
/// Under a [`KvPolicy`] that evicts, the prompt and generated tokens go through the model one
/// page-aligned step at a time (at most `block_size` tokens); before each step, pages the
/// policy drops go back to the pool. [`tokens`](Self::tokens) and [`len`](Self::len) still
/// count the whole sequence; [`cached_len`](Self::cached_len) is what the cache holds.
///
/// A per-layer policy (PyramidKV) gets a cache of single-layer pages and one table per layer
/// ([`tables`](Self::tables)); every other policy, and `full`, one table of all-layer pages.
///
/// A model with sliding-window layers (Gemma 3) gets single-layer pages and one table per
/// layer too: after every forward pass each windowed layer gives back the pages its window
/// has left (`super::window`), so memory is global layers × `n_ctx` + windowed layers ×
/// window. Such a model runs under `full` only (an evicting policy is refused at creation).
#[derive(Debug)]
pub struct Session<'m> {
    model: ModelRef<'m>,
    /// Its pool and pages, and its one sequence (one table, or one per layer).
    kv: KvManager,
    seq: SeqKv,
    tokens: Vec<u32>,
    opts: SessionOptions,
    scratch: ForwardScratch,
    evictor: Evictor,
    /// Whether the sequence may run past `n_ctx`: the policy evicts and its page bound fits
    /// in the context's pages (else the pool is capped at the context and so is the sequence).
    runs_past_ctx: bool,
    peak_pages: usize,
}

impl Session<'static> {
    /// A session that shares ownership of its model: it borrows nothing, so it can be
    /// stored in a struct or sent to another thread. Otherwise as [`with_policy`](Self::with_policy).
    pub fn shared(
        model: Arc<Llama>,
        opts: SessionOptions,
        policy: KvPolicy,
    ) -> Result<Self, ModelError> {
        Self::build(ModelRef::Shared(model), opts, policy)
    }
}

impl<'m> Session<'m> {
    /// A session whose cache holds exactly `opts.n_ctx` tokens (no eviction).
    pub fn new(model: &'m Llama, opts: SessionOptions) -> Result<Self, ModelError> {
        Self::with_policy(model, opts, KvPolicy::Full)
    }

    /// A session under a KV eviction policy. A policy with a bound on the pages it keeps
    /// (sink/window, H2O, PyramidKV) gets a pool of exactly that many pages (single-layer
    /// pages for PyramidKV: the sum of the layers' budgets), and the sequence may run past
    /// `opts.n_ctx` ([`remaining`](Self::remaining) is then unlimited); budgets given as a
    /// percentage are of `opts.n_ctx`. A bound larger than the context's pages is capped at
    /// them: the policy evicts nothing within `n_ctx` tokens, and the sequence then stops
    /// at `n_ctx` ([`ModelError::ContextFull`]) as under `full`.
    pub fn with_policy(
        model: &'m Llama,
        opts: SessionOptions,
        policy: KvPolicy,
    ) -> Result<Self, ModelError> {
        Self::build(ModelRef::Borrowed(model), opts, policy)
    }

    fn build(
        model: ModelRef<'m>,
        opts: SessionOptions,
        policy: KvPolicy,
    ) -> Result<Self, ModelError> {
        if opts.n_ctx == 0 || opts.n_batch == 0 || opts.block_size == 0 {
            return Err(ModelError::Invalid(
                "context size, batch size and block size must be at least 1".into(),
            ));
        }
        let c = model.config();
        if c.has_windows() {
            return Self::build_windowed(model, opts, policy);
        }
        let evictor = Evictor::new(policy, opts.n_ctx, opts.block_size, c.n_layers)?;
        // Each table needs the pages of its rule's bound. A rule that keeps more than the
        // context's `n_ctx` tokens evicts nothing within the context (it is `full` there): that
        // table gets the context's pages instead, and the sequence stops at `n_ctx` (its bound
        // could ask for any amount of memory, e.g. `window:1000000`).
        let ctx_pages = opts.n_ctx.div_ceil(opts.block_size);
        let mut n_pages = 0usize;
        let mut runs_past_ctx = evictor.evicts();
        for i in 0..evictor.n_tables() {
            let rule = evictor.rule(i).unwrap_or(EvictionRule::KeepAll);
            let keeps_more_than_ctx = match rule {
                EvictionRule::KeepAll => true,
                EvictionRule::SinkWindow { sink, window } => {
                    sink.saturating_add(window) > opts.n_ctx
                }
                EvictionRule::HeavyHitters { budget_pages, .. } => budget_pages > ctx_pages,
            };
            let pages = match rule.max_pages(opts.block_size) {
                Some(p) if !keeps_more_than_ctx => p,
                _ => {
                    runs_past_ctx = false;
                    ctx_pages
                }
            };
            n_pages = n_pages.checked_add(pages).ok_or_else(|| ModelError::OutOfMemory {
                what: "the KV page pool".into(),
                bytes: None,
            })?;
        }
        let cache = if policy.per_layer() {
            KvCache::new_per_layer(c, opts.kv_type, n_pages, opts.block_size)?
        } else {
            KvCache::new(c, opts.kv_type, n_pages, opts.block_size)?
        };
        let mut kv = KvManager::new(cache);
        let seq = kv.add_sequence();
        let mut scratch = ForwardScratch::default();
        // The largest step: a prompt chunk, or under eviction a page-aligned step.
        let step = opts.n_batch.min(opts.n_ctx);
        scratch.reserve(c, if evictor.evicts() { step.min(opts.block_size) } else { step })?;
        scratch.record_queries(policy.needs_attention_mass());
        Ok(Session {
            model,
            kv,
            seq,
            tokens: Vec::new(),
            opts,
            scratch,
            evictor,
            runs_past_ctx,
            peak_pages: 0,
        })
    }

    /// A session for a model with sliding-window layers (see the type's docs).
    fn build_windowed(
        model: ModelRef<'m>,
        opts: SessionOptions,
        policy: KvPolicy,
    ) -> Result<Self, ModelError> {
        let c = model.config();
        if policy.evicts() {
            let w = c.layer_windows.iter().flatten().next().copied().unwrap_or(0);
            return Err(ModelError::Unsupported(format!(
                "KV policy '{policy}' with a {} model: its sliding-window layers already keep only \
                 their last {w} tokens and cannot be evicted by another rule; use the full policy",
                c.family.name()
            )));
        }
        let bs = opts.block_size;
        let ctx_pages = opts.n_ctx.div_ceil(bs);
        let step = opts.n_batch.min(opts.n_ctx);
        let mut n_pages = 0usize;
        for l in 0..c.n_layers {
            let pages = match c.window(l) {
                Some(w) => max_window_pages(w, step, bs).min(ctx_pages),
                None => ctx_pages,
            };
            n_pages = n_pages.checked_add(pages).ok_or_else(|| ModelError::OutOfMemory {
                what: "the KV page pool".into(),
                bytes: None,
            })?;
        }
        let mut kv = KvManager::new(KvCache::new_per_layer(c, opts.kv_type, n_pages, bs)?);
        let seq = kv.add_sequence();
        let evictor = Evictor::new(KvPolicy::Full, opts.n_ctx, bs, c.n_layers)?;
        let mut scratch = ForwardScratch::default();
        scratch.reserve(c, step)?;
        Ok(Session {
            model,
            kv,
            seq,
            tokens: Vec::new(),
            opts,
            scratch,
            evictor,
            runs_past_ctx: false,
            peak_pages: 0,
        })
    }

    /// Puts the session under `policy` from now on, keeping what the cache holds: a chat
    /// whose history filled the context switches to StreamingLLM and goes on without
    /// processing the history again. The next step evicts what `policy` does not keep; the
    /// cached tokens keep their positions in the text, as if `policy` had been given at
    /// creation and had not evicted yet. If `policy` bounds the pages it keeps within the
    /// pool, the sequence may then run past `n_ctx` ([`remaining`](Self::remaining) becomes
    /// unlimited).
    ///
    /// Refused ([`ModelError::Unsupported`], the session unchanged) when the session has
    /// already evicted under another policy (its positions would be lost) unless it is
    /// empty, when `policy` keeps a different page layout (PyramidKV's one table per layer
    /// against one table, or the reverse), when the model has sliding-window layers and
    /// `policy` evicts, and when `policy`'s bound needs more pages than the pool has.
    pub fn switch_policy(&mut self, policy: KvPolicy) -> Result<(), ModelError> {
        let current = self.policy();
        if policy == current {
            return Ok(());
        }
        let refuse = |why: String| {
            Err(ModelError::Unsupported(format!(
                "switching the KV policy from '{current}' to '{policy}': {why}"
            )))
        };
        if self.windowed() && policy.evicts() {
            return refuse(format!(
                "a {} model's sliding-window layers cannot be evicted by another rule",
                self.model.config().family.name()
            ));
        }
        if policy.per_layer() != current.per_layer() {
            return refuse("the two policies keep different page layouts".into());
        }
        if current.evicts() && self.evicted_pages() > 0 && !self.is_empty() {
            return refuse("the session has already evicted pages under the current policy".into());
        }
        let c = self.model.config();
        let mut evictor = Evictor::new(policy, self.opts.n_ctx, self.opts.block_size, c.n_layers)?;
        // The pages each table needs, as at creation: its rule's bound, or the context's
        // pages for a rule that keeps more than the context (the sequence then stops at
        // `n_ctx`).
        let ctx_pages = self.opts.n_ctx.div_ceil(self.opts.block_size);
        let (mut needed, mut runs_past_ctx) = (0usize, policy.evicts());
        for i in 0..evictor.n_tables() {
            let rule = evictor.rule(i).unwrap_or(EvictionRule::KeepAll);
            let keeps_more_than_ctx = match rule {
                EvictionRule::KeepAll => true,
                EvictionRule::SinkWindow { sink, window } => {
                    sink.saturating_add(window) > self.opts.n_ctx
                }
                EvictionRule::HeavyHitters { budget_pages, .. } => budget_pages > ctx_pages,
            };
            let pages = match rule.max_pages(self.opts.block_size) {
                Some(p) if !keeps_more_than_ctx => p,
                _ => {
                    runs_past_ctx = false;
                    ctx_pages
                }
            };
            needed = needed.saturating_add(pages);
        }
        let capacity = self.kv.cache().pool().capacity();
        if needed > capacity {
            return refuse(format!("it needs {needed} pages and the pool has {capacity}"));
        }
        // Nothing was evicted: logical page `j` holds text positions `j × block_size…`.
        let len = self.tables().iter().map(|t| t.len()).max().unwrap_or(0);
        if len > 0 {
            evictor.appended(self.kv.tables(self.seq), 0, len);
        }
        self.scratch.record_queries(policy.needs_attention_mass());
        self.runs_past_ctx = runs_past_ctx;
        self.evictor = evictor;
        Ok(())
    }

    /// Whether the model has sliding-window layers (one table per layer, see the type docs).
    fn windowed(&self) -> bool {
        self.model.config().has_windows()
    }

    /// The KV eviction policy.
    pub fn policy(&self) -> KvPolicy {
        self.evictor.policy()
    }

    /// Tokens the cache holds now (`len()` minus those evicted; with a table per layer, those
    /// of the table that keeps the most).
    pub fn cached_len(&self) -> usize {
        self.tables().iter().map(|t| t.len()).max().unwrap_or(0)
    }

    /// Pages the eviction policy has given back to the pool so far.
    pub fn evicted_pages(&self) -> usize {
        self.evictor.evicted_pages()
    }

    /// Whether the sequence may run past `n_ctx` (see the field).
    fn bounded(&self) -> bool {
        self.runs_past_ctx
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The settings.
    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// Tokens in the cache, in order.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Room left in the context (unlimited under an evicting policy: memory stays bounded).
    pub fn remaining(&self) -> usize {
        if self.bounded() {
            return usize::MAX - self.tokens.len();
        }
        self.opts.n_ctx - self.tokens.len()
    }

    /// The cache (pool statistics, page size).
    pub fn cache(&self) -> &KvCache {
        self.kv.cache()
    }

    /// The KV manager the session sits on (its one sequence's tables, the pool).
    pub fn kv(&self) -> &KvManager {
        &self.kv
    }

    /// The forward pass's scratch (the KV calibration pass records statistics in it).
    pub(crate) fn scratch_mut(&mut self) -> &mut ForwardScratch {
        &mut self.scratch
    }

    /// The sequence's block table (layer 0's under a per-layer policy).
    pub fn table(&self) -> &SeqTable {
        &self.tables()[0]
    }

    /// The sequence's block tables: one, or one per layer under a per-layer policy.
    pub fn tables(&self) -> &[SeqTable] {
        self.kv.tables(self.seq)
    }

    /// Appends `tokens` (in chunks of `n_batch`) and returns the last token's logits.
    pub fn eval(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut logits = Vec::new();
        self.eval_with(
            tokens,
            |_, chunk_logits, is_last| {
                if is_last {
                    logits = chunk_logits;
                }
            },
            true,
        )?;
        Ok(logits)
    }

    /// Appends `tokens` and returns the logits of every token from index `from` of
    /// `tokens` on (`(tokens.len() - from) × vocab`, row-major).
    pub fn eval_all(&mut self, tokens: &[u32], from: usize) -> Result<Vec<f32>, ModelError> {
        let vocab = self.model.config().vocab_size;
        let mut all = Vec::with_capacity(tokens.len().saturating_sub(from) * vocab);
        let n_batch = self.opts.n_batch;
        self.check_room(tokens.len())?;
        for (i, chunk) in tokens.chunks(n_batch).enumerate() {
            let start = i * n_batch;
            let want = if start + chunk.len() <= from {
                Logits::None
            } else {
                Logits::From(from.saturating_sub(start))
            };
            let l = self.forward(chunk, want)?;
            all.extend_from_slice(&l);
        }
        Ok(all)
    }

    fn eval_with(
        &mut self,
        tokens: &[u32],
        mut sink: impl FnMut(usize, Vec<f32>, bool),
        last_only: bool,
    ) -> Result<(), ModelError> {
        self.check_room(tokens.len())?;
        let n_chunks = tokens.len().div_ceil(self.opts.n_batch);
        for (i, chunk) in tokens.chunks(self.opts.n_batch).enumerate() {
            let is_last = i + 1 == n_chunks;
            let want = if is_last || !last_only { Logits::Last } else { Logits::None };
            let l = self.forward(chunk, want)?;
            sink(i, l, is_last);
        }
        Ok(())
    }

    fn check_room(&self, n: usize) -> Result<(), ModelError> {
        if !self.bounded() && self.tokens.len() + n > self.opts.n_ctx {
            return Err(ModelError::ContextFull {
                needed: self.tokens.len() + n,
                n_ctx: self.opts.n_ctx,
            });
        }
        Ok(())
    }

    fn forward(&mut self, chunk: &[u32], want: Logits) -> Result<Vec<f32>, ModelError> {
        if self.windowed() {
            let l = self.pass(chunk, want)?;
            self.tokens.extend_from_slice(chunk);
            self.peak_pages = self.peak_pages.max(self.kv.cache().pages_in_use());
            self.kv.drop_out_of_window(self.seq, self.model.config())?;
            return Ok(l);
        }
        if !self.evictor.evicts() {
            let l = self.pass(chunk, want)?;
            self.tokens.extend_from_slice(chunk);
            self.peak_pages = self.peak_pages.max(self.kv.cache().pages_in_use());
            return Ok(l);
        }
        // Page-aligned steps, evicting before each: every token sees what the policy keeps
        // plus at most the earlier tokens of its own page.
        let bs = self.opts.block_size;
        let mut out = Vec::new();
        let mut at = 0;
        while at < chunk.len() {
            // Every table holds whole pages plus the same partial last page.
            let n = (bs - self.table().len() % bs).min(chunk.len() - at);
            let step = &chunk[at..at + n];
            let step_want = match want {
                Logits::None => Logits::None,
                Logits::Last if at + n == chunk.len() => Logits::Last,
                Logits::Last => Logits::None,
                Logits::From(i) if at + n <= i => Logits::None,
                Logits::From(i) => Logits::From(i.saturating_sub(at)),
            };
            self.kv.evict(self.seq, &mut self.evictor)?;
            let pos0 = self.tokens.len();
            let l = self.pass(step, step_want)?;
            self.evictor.appended(self.kv.tables(self.seq), pos0, n);
            let queries = self.scratch.take_queries();
            let (cache, tables) = (self.kv.cache(), self.kv.tables(self.seq));
            self.evictor.add_mass(cache, tables, self.model.config(), &queries, n)?;
            self.tokens.extend_from_slice(step);
            self.peak_pages = self.peak_pages.max(self.kv.cache().pages_in_use());
            out.extend_from_slice(&l);
            at += n;
        }
        Ok(out)
    }

    /// One forward pass over `tokens` as the sequence's next tokens, in every table; their
    /// RoPE positions continue the text (`self.tokens.len()` on, whatever was evicted). All
    /// or nothing: on error no table changes length.
    fn pass(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>, ModelError> {
        let pos0 = self.tokens.len();
        let entry = BatchEntry { seq: self.seq, tokens, pos0, logits: want };
        let batch = self.kv.prepare(&[entry])?;
        let mut logits = self.kv.forward(&self.model, batch, &mut self.scratch)?;
        Ok(logits.pop().unwrap_or_default())
    }

    /// Drops tokens past `n`, giving their pages back. Under eviction, the cache keeps the
    /// tokens it still holds at positions below `n`; so does a sliding-window layer, which
    /// still holds the window of the last token after a truncation of one token (and, after
    /// a longer one, fewer than its window: the next tokens then see less than they would
    /// in a fresh run).
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            let (len, windowed) = (self.tokens.len(), self.windowed());
            for i in 0..self.tables().len() {
                let table = &self.tables()[i];
                // A table's tokens are the last `table.len()` of the sequence.
                let keep = if windowed {
                    n.saturating_sub(len - table.len())
                } else if self.evictor.evicts() {
                    self.evictor.cached_below(i, table, n)
                } else {
                    n
                };
                self.kv.truncate(self.seq, i, keep);
            }
            self.evictor.truncated(self.kv.tables(self.seq));
            self.tokens.truncate(n);
        }
    }

    /// Empties the sequence.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// KV pages the sequence holds.
    pub fn kv_pages_in_use(&self) -> usize {
        self.kv.cache().pages_in_use()
    }

    /// Bytes of those pages.
    pub fn kv_bytes_in_use(&self) -> usize {
        self.kv.cache().bytes_in_use()
    }

    /// The most KV bytes the session has held at once (after any forward pass).
    pub fn peak_kv_bytes(&self) -> usize {
        self.peak_pages * self.kv.cache().page_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;
    use crate::sampler::argmax;

    fn model() -> Llama {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = crate::model_file::workspace_model_path(&root);
        assert!(path.exists(), "model {} missing: run scripts/fetch-model.sh", path.display());
        Llama::load(&path).unwrap()
    }

    fn opts(n_ctx: usize) -> SessionOptions {
        SessionOptions { n_ctx, kv_type: KvType::F16, block_size: 16, n_batch: 512 }
    }

    /// `n` greedy tokens after logits `l`, checking the pages after every token.
    fn greedy(s: &mut Session<'_>, mut l: Vec<f32>, n: usize, max_pages: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for _ in 0..n {
            let t = argmax(&l);
            out.push(t);
            l = s.eval(&[t]).unwrap();
            assert!(s.kv_pages_in_use() <= max_pages, "{} pages", s.kv_pages_in_use());
        }
        out
    }

    #[test]
    fn switching_a_full_session_to_streaming_llm_keeps_its_cache_and_runs_past_the_context() {
        let model = model();
        let policy = KvPolicy::SinkWindow { sink: 16, window: 80 };
        let prompt: Vec<u32> = (0..40).map(|i| 1000 + 37 * i).collect();
        // Switched after the prompt, before anything was evicted: the same tokens as under
        // the policy from the start (which evicts nothing within its window either).
        let mut a = Session::new(&model, opts(128)).unwrap();
        let la = a.eval(&prompt).unwrap();
        a.switch_policy(policy).unwrap();
        assert_eq!(a.policy(), policy);
        assert_eq!(a.remaining(), usize::MAX - a.len());
        let mut b = Session::with_policy(&model, opts(128), policy).unwrap();
        let lb = b.eval(&prompt).unwrap();
        assert_eq!(argmax(&la), argmax(&lb));
        // 1 sink page + ⌈79/16⌉ window pages + 2.
        let bound = 8;
        let ta = greedy(&mut a, la, 200, bound);
        let tb = greedy(&mut b, lb, 200, bound);
        assert_eq!(ta[..32], tb[..32], "the first tokens after the switch");
        assert_eq!(a.len(), 240, "past the 128-token context");
        assert!(a.evicted_pages() > 0);
        assert_eq!(a.cached_len(), b.cached_len());

        // Switched with a full context: the next step evicts down to the policy at once.
        let mut c = Session::new(&model, opts(128)).unwrap();
        let text: Vec<u32> = (0..127).map(|i| 500 + 11 * i).collect();
        let l = c.eval(&text).unwrap();
        assert_eq!(c.remaining(), 1);
        c.switch_policy(policy).unwrap();
        greedy(&mut c, l, 100, bound);
        assert_eq!(c.len(), 227);
    }

    #[test]
    fn switches_that_cannot_keep_the_cache_are_refused_and_change_nothing() {
        let model = model();
        let mut s = Session::new(&model, opts(128)).unwrap();
        s.eval(&[1, 2, 3]).unwrap();
        // PyramidKV keeps one table per layer: another page layout.
        let e = s.switch_policy(KvPolicy::Pyramid(pagoda_core::evict::Budget::Tokens(64)));
        assert!(e.unwrap_err().to_string().contains("different page layouts"));
        assert_eq!((s.policy(), s.len(), s.remaining()), (KvPolicy::Full, 3, 125));
        // A bound beyond the pool (the context's 8 pages): H2O over 12 pages.
        let e = s.switch_policy(KvPolicy::H2o(pagoda_core::evict::Budget::Tokens(192)));
        assert!(e.is_ok(), "a budget beyond the context is full within it: {e:?}");
        assert_eq!(s.remaining(), 125, "and the sequence still stops at n_ctx");
        // A session that has evicted cannot change its policy, until it is emptied.
        let small = KvPolicy::SinkWindow { sink: 16, window: 32 };
        let mut t = Session::with_policy(&model, opts(128), small).unwrap();
        let l = t.eval(&(0..100).map(|i| 300 + i).collect::<Vec<u32>>()).unwrap();
        greedy(&mut t, l, 4, 5);
        let e = t.switch_policy(KvPolicy::SinkWindow { sink: 16, window: 16 }).unwrap_err();
        assert!(e.to_string().contains("already evicted"), "{e}");
        // Emptied, it may go back to full only if its pool holds the context: it does not.
        t.clear();
        let e = t.switch_policy(KvPolicy::Full).unwrap_err();
        assert!(e.to_string().contains("needs 8 pages and the pool has 5"), "{e}");
        t.switch_policy(KvPolicy::SinkWindow { sink: 16, window: 16 }).unwrap();
        assert!(t.is_empty());
    }
}
