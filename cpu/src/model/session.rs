//! One sequence with its own paged KV cache: the unit `pagoda run`, `chat` and
//! `perplexity` drive.

use pagoda_core::evict::{EvictionRule, KvPolicy};

use super::eviction::Evictor;
use super::kv_cache::{KvCache, KvType, SeqTable};
use super::llama::{ForwardScratch, Llama, Logits};
use super::ModelError;

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
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Llama,
    cache: KvCache,
    table: SeqTable,
    tokens: Vec<u32>,
    opts: SessionOptions,
    scratch: ForwardScratch,
    evictor: Evictor,
    peak_pages: usize,
}

impl<'m> Session<'m> {
    /// A session whose cache holds exactly `opts.n_ctx` tokens (no eviction).
    pub fn new(model: &'m Llama, opts: SessionOptions) -> Result<Self, ModelError> {
        Self::with_policy(model, opts, KvPolicy::Full)
    }

    /// A session under a KV eviction policy. A policy with a bound on the pages it keeps
    /// (sink/window, H2O) gets a pool of exactly that many pages, and the sequence may run
    /// past `opts.n_ctx` ([`remaining`](Self::remaining) is then unlimited); budgets given as
    /// a percentage are of `opts.n_ctx`.
    pub fn with_policy(
        model: &'m Llama,
        opts: SessionOptions,
        policy: KvPolicy,
    ) -> Result<Self, ModelError> {
        if opts.n_ctx == 0 || opts.n_batch == 0 || opts.block_size == 0 {
            return Err(ModelError::Invalid(
                "context size, batch size and block size must be at least 1".into(),
            ));
        }
        let evictor = Evictor::new(policy, opts.n_ctx, opts.block_size)?;
        let n_pages = evictor
            .rule()
            .max_pages(opts.block_size)
            .unwrap_or_else(|| opts.n_ctx.div_ceil(opts.block_size));
        let cache = KvCache::new(model.config(), opts.kv_type, n_pages, opts.block_size)?;
        let table = cache.new_table();
        let mut scratch = ForwardScratch::default();
        scratch.record_queries(policy.needs_attention_mass());
        Ok(Session {
            model,
            cache,
            table,
            tokens: Vec::new(),
            opts,
            scratch,
            evictor,
            peak_pages: 0,
        })
    }

    /// The KV eviction policy.
    pub fn policy(&self) -> KvPolicy {
        self.evictor.policy()
    }

    /// Tokens the cache holds now (`len()` minus those evicted).
    pub fn cached_len(&self) -> usize {
        self.table.len()
    }

    /// Pages the eviction policy has given back to the pool so far.
    pub fn evicted_pages(&self) -> usize {
        self.evictor.evicted_pages()
    }

    fn bounded(&self) -> bool {
        !matches!(self.evictor.rule(), EvictionRule::KeepAll)
    }

    /// The model.
    pub fn model(&self) -> &'m Llama {
        self.model
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
        &self.cache
    }

    /// The sequence's block table.
    pub fn table(&self) -> &SeqTable {
        &self.table
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
        if !self.bounded() {
            let l = self.model.forward(
                &mut self.cache,
                &mut self.table,
                chunk,
                want,
                &mut self.scratch,
            )?;
            self.tokens.extend_from_slice(chunk);
            self.peak_pages = self.peak_pages.max(self.cache.pages_in_use());
            return Ok(l);
        }
        // Page-aligned steps, evicting before each: every token sees what the policy keeps
        // plus at most the earlier tokens of its own page.
        let bs = self.opts.block_size;
        let mut out = Vec::new();
        let mut at = 0;
        while at < chunk.len() {
            let n = (bs - self.table.len() % bs).min(chunk.len() - at);
            let step = &chunk[at..at + n];
            let step_want = match want {
                Logits::None => Logits::None,
                Logits::Last if at + n == chunk.len() => Logits::Last,
                Logits::Last => Logits::None,
                Logits::From(i) if at + n <= i => Logits::None,
                Logits::From(i) => Logits::From(i.saturating_sub(at)),
            };
            self.evictor.evict(&mut self.cache, &mut self.table)?;
            let pos0 = self.tokens.len();
            let shift = pos0 - self.table.len();
            let l = self.model.forward_shifted(
                &mut self.cache,
                &mut self.table,
                step,
                shift,
                step_want,
                &mut self.scratch,
            )?;
            self.evictor.appended(&self.table, pos0, n);
            let queries = self.scratch.take_queries();
            self.evictor.add_mass(&self.cache, &self.table, self.model.config(), &queries, n)?;
            self.tokens.extend_from_slice(step);
            self.peak_pages = self.peak_pages.max(self.cache.pages_in_use());
            out.extend_from_slice(&l);
            at += n;
        }
        Ok(out)
    }

    /// Drops tokens past `n`, giving their pages back. Under eviction, the cache keeps the
    /// tokens it still holds at positions below `n`.
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            let keep = if self.bounded() { self.evictor.cached_below(&self.table, n) } else { n };
            self.cache.truncate(&mut self.table, keep);
            self.evictor.truncated(&self.table);
            self.tokens.truncate(n);
        }
    }

    /// Empties the sequence.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// KV pages the sequence holds.
    pub fn kv_pages_in_use(&self) -> usize {
        self.cache.pages_in_use()
    }

    /// Bytes of those pages.
    pub fn kv_bytes_in_use(&self) -> usize {
        self.cache.bytes_in_use()
    }

    /// The most KV bytes the session has held at once (after any forward pass).
    pub fn peak_kv_bytes(&self) -> usize {
        self.peak_pages * self.cache.page_bytes()
    }
}
