//! One sequence with its own paged KV cache: the unit `pagoda run`, `chat` and
//! `perplexity` drive.

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

/// A single sequence: its tokens, its block table and a cache sized for `n_ctx`.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Llama,
    cache: KvCache,
    table: SeqTable,
    tokens: Vec<u32>,
    opts: SessionOptions,
    scratch: ForwardScratch,
}

impl<'m> Session<'m> {
    /// A session whose cache holds exactly `opts.n_ctx` tokens.
    pub fn new(model: &'m Llama, opts: SessionOptions) -> Result<Self, ModelError> {
        if opts.n_ctx == 0 || opts.n_batch == 0 || opts.block_size == 0 {
            return Err(ModelError::Invalid(
                "context size, batch size and block size must be at least 1".into(),
            ));
        }
        let n_pages = opts.n_ctx.div_ceil(opts.block_size);
        let cache = KvCache::new(model.config(), opts.kv_type, n_pages, opts.block_size)?;
        let table = cache.new_table();
        Ok(Session {
            model,
            cache,
            table,
            tokens: Vec::new(),
            opts,
            scratch: ForwardScratch::default(),
        })
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

    /// Room left in the context.
    pub fn remaining(&self) -> usize {
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
        if self.tokens.len() + n > self.opts.n_ctx {
            return Err(ModelError::ContextFull {
                needed: self.tokens.len() + n,
                n_ctx: self.opts.n_ctx,
            });
        }
        Ok(())
    }

    fn forward(&mut self, chunk: &[u32], want: Logits) -> Result<Vec<f32>, ModelError> {
        let l =
            self.model.forward(&mut self.cache, &mut self.table, chunk, want, &mut self.scratch)?;
        self.tokens.extend_from_slice(chunk);
        Ok(l)
    }

    /// Drops cached tokens past `n`, giving their pages back.
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            self.cache.truncate(&mut self.table, n);
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
}
