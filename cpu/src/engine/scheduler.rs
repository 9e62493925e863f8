//! The engine: a request queue and a step loop over one model and one page pool.
//!
//! Each [`Engine::step`] builds one flat batch within `max_batch_tokens`:
//!
//! ```text
//!   running (oldest first):  A:1  B:1  C:1  D:chunk …   next token of each; a sequence
//!                                                       still prefilling gets a chunk
//!   waiting (FIFO):          E:chunk  F:…               admitted while pages and budget last
//!   ─────────────────────────────────────────────────
//!   forward(A B C D E)         → logits of every sequence whose pending tokens are all in
//!                                → sample, stream, finish, free pages at once
//! ```
//!
//! Pages: a step first reserves the new pages its batch will take (growth into a fresh
//! page, plus a copy of a shared partly filled last page), counting free pages and cached
//! pages nobody uses (reclaimed least recently used first). When a running sequence's pages
//! do not fit, the most recently started running sequence is preempted: its pages go back,
//! its tokens and sampler stay, and it waits at the head of the queue to be recomputed.
//! A waiting request is admitted only when the pool can hold its next chunk, and no request
//! is admitted in a step that had to preempt.
//!
//! KV eviction ([`Engine::with_policy`]): each sequence has its own [`Evictor`] and evicts
//! its own pages before each of its steps, taking the steps a [`Session`] under the same
//! policy takes alone (prompt in page-aligned steps, never split by the token budget, then
//! one token per step), so a greedy request gives the same tokens as
//! `Session::with_policy`. A page another sequence holds too (a fork's shared pages, a
//! prefix-cache hit in use by another sequence) is evicted from this sequence only: it
//! drops its reference and the page stays with its other holders, so a fork under a policy
//! attends to what it would attend to alone. A page only the prefix index holds besides the
//! sequence stays cached and becomes reclaimable.
//!
//! Per-layer policies (PyramidKV): the pool holds single-layer pages (`kv_pages × n_layers`
//! of them, the bytes of `kv_pages` all-layer pages) and each sequence one block table per
//! layer, each evicting under its layer's budget. Everything above then works table by
//! table, and every page count (admission, growth, preemption, [`EngineStats`], the
//! `TooLarge` refusal) is in single-layer pages:
//!
//! ```text
//!   sequence A: layer 0 [p3 p9 p12 …]   layer 1 [p4 p10 …]   …   layer 29 [p7 p30]
//!   sequence B: layer 0 [p3 p15 …]      layer 1 [p4 p16 …]   …      (p3, p4: shared with
//!                                                                    A after a fork: CoW)
//! ```
//!
//! Prefix caching is off under such a policy (it scores pages by attention mass, see
//! `prefix_caching`).
//!
//! A model with sliding-window layers (Gemma 3) has the same layout under `full`, and keeps
//! prefix caching: the prefix index caches a group per full page (that page in each of the
//! sequence's tables), registered when the page fills, before the windows drop pages. A hit
//! of `k` pages gives each global layer's table all `k`, and each windowed layer's table only
//! the pages its window rule keeps for `k` pages of tokens
//! ([`KvManager::cached_prefix`]): the tables a sequence would have after computing the
//! prefix itself. A windowed layer's old pages outlive its window only while cached, each
//! reclaimable (counted as available, reclaimed least recently used first) once no table
//! holds it.
//!
//! [`Session`]: crate::model::Session

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use pagoda_core::evict::KvPolicy;
use pagoda_core::pool::PageId;
use pagoda_core::table::TableError;

use super::sequence::{Sequence, TextState};
use super::{
    EngineError, EngineStats, FinishReason, Request, RequestId, RequestOutput, SampleOutput,
    StepOutput, TokenEvent, TokenLogprobs,
};
use crate::grammar::{Mask, Matcher};
use crate::model::{
    droppable_pages, max_window_pages, BatchEntry, Evictor, ForwardScratch, KvCache, KvType, Llama,
    Logits, ModelRef, SeqTable,
};
use crate::model::{KvManager, PrefixHit, PrefixIndex};
use crate::sampler::{log_probs, Sampler, SamplerConfig};
use crate::stop::StopMatcher;
use crate::tokenizer::{Tokenizer, Utf8Buffer};

/// Engine settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Pages in the pool shared by every sequence, in all-layer pages (a page holds
    /// `block_size` tokens' K/V of every layer). Under a per-layer policy (PyramidKV) the
    /// pool is made of `kv_pages × n_layers` single-layer pages instead: the same bytes.
    pub kv_pages: usize,
    /// Tokens per page.
    pub block_size: usize,
    /// Element type of the pages.
    pub kv_type: KvType,
    /// Most tokens in one forward pass (decode tokens plus prompt chunks). Running
    /// sequences are served oldest first, so with fewer tokens than running sequences the
    /// newest ones wait until older ones finish.
    pub max_batch_tokens: usize,
    /// Reuse the pages of cached prompt prefixes.
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    /// 512 pages of 16 tokens (8192 tokens), f16, 512 tokens per step, prefix caching on.
    fn default() -> Self {
        EngineConfig {
            kv_pages: 512,
            block_size: pagoda_core::kv::DEFAULT_BLOCK_SIZE,
            kv_type: KvType::F16,
            max_batch_tokens: 512,
            prefix_caching: true,
        }
    }
}

/// What the engine remembers about a request until its last sample finishes.
#[derive(Debug)]
struct Group {
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    logprobs: Option<usize>,
    sampler: SamplerConfig,
    prompt_len: usize,
    cached_prompt_tokens: Option<usize>,
    preemptions: usize,
    samples: Vec<Option<SampleOutput>>,
}

/// Many sequences, one model, one page pool: continuous batching with chunked prefill,
/// prefix caching, copy-on-write parallel sampling and preemption by recomputation.
///
/// ```no_run
/// # use pagoda_cpu::model::Llama;
/// # use pagoda_cpu::engine::{Engine, EngineConfig, Request};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = Llama::load("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
/// let mut engine = Engine::new(&model, EngineConfig::default())?;
/// engine.submit(Request::greedy(1, vec![1, 504, 3458], 16))?;
/// engine.submit(Request::greedy(2, vec![1, 504, 1120, 314], 16))?;
/// for out in engine.run_to_completion()? {
///     println!("{}: {:?}", out.id, out.samples[0].tokens);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Engine<'m> {
    model: ModelRef<'m>,
    kv: KvManager,
    config: EngineConfig,
    /// Not started, or preempted (at the front, oldest first). Hold no pages.
    waiting: VecDeque<Sequence>,
    /// Started, in start order (the last one is preempted first).
    running: Vec<Sequence>,
    groups: HashMap<RequestId, Group>,
    scratch: ForwardScratch,
    stats: EngineStats,
    next_start: u64,
    /// Every sequence's KV eviction policy.
    policy: KvPolicy,
    /// Block tables per sequence: 1, or `n_layers` under a per-layer policy.
    n_tables: usize,
    /// Each table's sliding window (`None`: it keeps every page), for prefix hits.
    table_windows: Vec<Option<usize>>,
    /// Turns tokens into text for [`TokenEvent::text`] and stop strings.
    tokenizer: Option<Arc<Tokenizer>>,
    /// Compute grammar masks on a thread of their own during the forward pass.
    overlap_masks: bool,
}

impl Engine<'static> {
    /// An engine that shares ownership of its model: it borrows nothing, so it can be
    /// stored or moved to a thread of its own (a server's engine thread). Otherwise as
    /// [`with_policy`](Self::with_policy).
    pub fn shared(
        model: Arc<Llama>,
        config: EngineConfig,
        policy: KvPolicy,
    ) -> Result<Self, EngineError> {
        Self::build(ModelRef::Shared(model), config, policy)
    }
}

impl<'m> Engine<'m> {
    /// An engine over `model` with a fresh pool of `config.kv_pages` pages.
    pub fn new(model: &'m Llama, config: EngineConfig) -> Result<Self, EngineError> {
        Self::with_policy(model, config, KvPolicy::Full)
    }

    /// An engine whose sequences each evict their own pages under `policy` (see the module
    /// docs). Budgets given as a percentage are of the model's context length. An evicting
    /// policy needs `max_batch_tokens ≥ block_size` (a prompt step fills a whole page).
    ///
    /// A per-layer policy (PyramidKV, [`KvPolicy::per_layer`]) gets a pool of
    /// `kv_pages × n_layers` single-layer pages ([`KvCache::new_per_layer`]) and one block
    /// table per layer for each sequence; the engine's page counts ([`EngineStats`],
    /// [`pages_held`](Self::pages_held), [`EngineError::TooLarge`]) are then in
    /// single-layer pages. Prefix caching is off under it (it scores pages by attention
    /// mass); forks share every layer's pages copy-on-write, and no layer evicts a page a
    /// sibling still holds.
    ///
    /// A model with sliding-window layers (Gemma 3) runs under `full` only. It gets the
    /// per-layer pool (`kv_pages × n_layers` single-layer pages) and one table per layer, and
    /// after every step each windowed layer gives back the pages its window has left
    /// (`crate::model::drop_out_of_window`): a sequence holds global layers × its length +
    /// windowed layers × the window. Prefix caching works for it: a cached prefix keeps every
    /// layer's pages (one group of single-layer pages per full page), and a request that
    /// finds it gives each windowed layer only the pages of its window. The windowed layers'
    /// older pages stay only while cached: each is reclaimable once no table holds it, counts
    /// as available, and is reclaimed least recently used first when the pool needs pages.
    pub fn with_policy(
        model: &'m Llama,
        config: EngineConfig,
        policy: KvPolicy,
    ) -> Result<Self, EngineError> {
        Self::build(ModelRef::Borrowed(model), config, policy)
    }

    fn build(
        model: ModelRef<'m>,
        config: EngineConfig,
        policy: KvPolicy,
    ) -> Result<Self, EngineError> {
        if config.kv_pages == 0 || config.block_size == 0 || config.max_batch_tokens == 0 {
            return Err(EngineError::InvalidConfig(format!(
                "KV pages ({}), block size ({}) and max batch tokens ({}) must be at least 1",
                config.kv_pages, config.block_size, config.max_batch_tokens
            )));
        }
        if policy.evicts() && config.max_batch_tokens < config.block_size {
            return Err(EngineError::InvalidConfig(format!(
                "KV policy {policy} needs max batch tokens ({}) of at least one page ({})",
                config.max_batch_tokens, config.block_size
            )));
        }
        let c = model.config();
        if c.has_windows() && policy.evicts() {
            return Err(EngineError::InvalidConfig(format!(
                "KV policy {policy} with a {} model: its sliding-window layers cannot be evicted \
                 by another rule; use the full policy",
                c.family.name()
            )));
        }
        // Checks the policy against the page size (a budget of at least two pages).
        Evictor::new(policy, c.context_length, config.block_size, c.n_layers)?;
        let (cache, n_tables) = if policy.per_layer() || c.has_windows() {
            let pages = config.kv_pages.checked_mul(c.n_layers).ok_or_else(|| {
                EngineError::InvalidConfig(format!(
                    "KV pages ({}) × layers ({}) overflows",
                    config.kv_pages, c.n_layers
                ))
            })?;
            (KvCache::new_per_layer(c, config.kv_type, pages, config.block_size)?, c.n_layers)
        } else {
            (KvCache::new(c, config.kv_type, config.kv_pages, config.block_size)?, 1)
        };
        let table_windows = match n_tables {
            1 => vec![None],
            _ => (0..n_tables).map(|l| c.window(l)).collect(),
        };
        let mut scratch = ForwardScratch::default();
        scratch.record_queries(policy.needs_attention_mass());
        Ok(Engine {
            model,
            kv: KvManager::new(cache),
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            groups: HashMap::new(),
            scratch,
            stats: EngineStats::default(),
            next_start: 0,
            policy,
            n_tables,
            table_windows,
            tokenizer: None,
            overlap_masks: spare_core(),
        })
    }

    /// Gives the engine the model's tokenizer: token events then carry their text
    /// ([`TokenEvent::text`]) and requests may have stop strings ([`Request::stop`]).
    pub fn with_tokenizer(mut self, tokenizer: Arc<Tokenizer>) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }

    /// Whether the grammar masks of a step ([`Request::constraint`]) are computed on a
    /// thread of their own while the step's forward pass runs, or after it. Either way the
    /// tokens are the same; [`EngineStats::mask_wait`] is the time sampling waited for masks.
    ///
    /// The default overlaps only when the forward pass leaves a core free (rayon has fewer
    /// threads than the machine has cores): with every core in the pass, a mask thread
    /// delays the pass's parallel sections by about what it saves (measured on 2 cores:
    /// SmolLM2 batch 1, 14.3 ms per step serial against 16.7 ms overlapped; a mask costs
    /// 70-100 µs, under 1% of a step).
    pub fn with_mask_overlap(mut self, overlap: bool) -> Self {
        self.overlap_masks = overlap;
        self
    }

    /// The KV eviction policy of every sequence.
    pub fn policy(&self) -> KvPolicy {
        self.policy
    }

    /// The pages sample `sample` of request `id` holds now, if it is running (for tests and
    /// statistics); under a per-layer policy, those of its layer-0 table
    /// ([`sequence_tables`](Self::sequence_tables) has every layer's).
    pub fn sequence_pages(&self, id: RequestId, sample: usize) -> Option<&[PageId]> {
        self.sequence_tables(id, sample).map(|t| t[0].pages())
    }

    /// The block tables of sample `sample` of request `id`, if it is running: one, or one
    /// per layer under a per-layer policy.
    pub fn sequence_tables(&self, id: RequestId, sample: usize) -> Option<&[SeqTable]> {
        let seq = self.running.iter().find(|s| s.id == id && s.sample == sample)?;
        Some(self.kv.tables(seq.kv))
    }

    /// Block tables per sequence: 1, or the model's layer count under a per-layer policy.
    pub fn tables_per_sequence(&self) -> usize {
        self.n_tables
    }

    /// A new sequence's eviction state (`None` without an evicting policy).
    fn new_evictor(&self) -> Result<Option<Evictor>, EngineError> {
        if !self.policy.evicts() {
            return Ok(None);
        }
        let c = self.model.config();
        Ok(Some(Evictor::new(self.policy, c.context_length, self.config.block_size, c.n_layers)?))
    }

    /// Whether prefix caching applies: on, and the policy does not score pages by the
    /// attention of the tokens that wrote them (a cached prefix skips those tokens). That
    /// excludes every per-layer policy (PyramidKV), so the prefix index holds single-layer
    /// pages only for a model with sliding-window layers (a group of one page per layer).
    fn prefix_caching(&self) -> bool {
        self.config.prefix_caching
            && !self.policy.needs_attention_mass()
            && !self.policy.per_layer()
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The pool and pages.
    pub fn cache(&self) -> &KvCache {
        self.kv.cache()
    }

    /// The prefix index.
    pub fn prefix_index(&self) -> &PrefixIndex {
        self.kv.prefix_index()
    }

    /// The KV side: pool, pages and prefix index.
    pub fn kv(&self) -> &KvManager {
        &self.kv
    }

    /// Counters since creation.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Sequences waiting to start or resume.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences started (holding pages).
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether any request is unfinished.
    pub fn has_unfinished(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Pages held by sequences (cached pages nobody uses excluded: they are reclaimable); in
    /// single-layer pages under a per-layer policy.
    pub fn pages_held(&self) -> usize {
        self.kv.pages_held()
    }

    /// Queues a request. Refused with a clear error if it is malformed, its id is in use,
    /// or one sample of it could never fit in the whole pool
    /// (`⌈(prompt + max_tokens − 1) / block_size⌉ > kv_pages`; the last sampled token's K/V
    /// is never needed; under an evicting policy, at most the pages the policy keeps; under
    /// a per-layer policy, single-layer pages: that many per layer, at most the sum of the
    /// layers' budgets, against `kv_pages × n_layers`). Under an evicting policy a request
    /// may run past the model's context length.
    pub fn submit(&mut self, req: Request) -> Result<RequestId, EngineError> {
        let id = req.id;
        let invalid = |reason: String| Err(EngineError::InvalidRequest { id, reason });
        if self.groups.contains_key(&id) {
            return Err(EngineError::DuplicateId(id));
        }
        if req.prompt.is_empty() {
            return invalid("the prompt is empty".into());
        }
        if req.max_tokens == 0 {
            return invalid("max_tokens must be at least 1".into());
        }
        if req.n == 0 {
            return invalid("n (samples) must be at least 1".into());
        }
        if !req.stop.is_empty() && self.tokenizer.is_none() {
            return invalid(
                "stop strings need the engine's tokenizer (Engine::with_tokenizer)".into(),
            );
        }
        let vocab = self.model.config().vocab_size;
        if let Some((i, t)) = req.prompt.iter().enumerate().find(|(_, &t)| t as usize >= vocab) {
            return invalid(format!(
                "prompt token {i} is {t}, outside the vocabulary ({vocab} tokens)"
            ));
        }
        let n_ctx = self.model.config().context_length;
        let longest = req.prompt.len().saturating_add(req.max_tokens);
        let evictor = self.new_evictor()?;
        let bound = evictor.as_ref().and_then(|e| e.max_pages(self.config.block_size));
        if longest > n_ctx && bound.is_none() {
            return invalid(format!(
                "prompt ({}) + max_tokens ({}) exceeds the model's context length ({n_ctx})",
                req.prompt.len(),
                req.max_tokens
            ));
        }
        let bs = self.config.block_size;
        let seq_pages = (longest - 1).div_ceil(bs);
        let c = self.model.config();
        let pages_needed = if c.has_windows() {
            // Windowed layers hold their window and a step, never more than the sequence.
            let step = self.config.max_batch_tokens;
            (0..c.n_layers)
                .map(|l| match c.window(l) {
                    Some(w) => max_window_pages(w, step, bs).min(seq_pages),
                    None => seq_pages,
                })
                .fold(0usize, usize::saturating_add)
        } else {
            seq_pages.saturating_mul(self.n_tables).min(bound.unwrap_or(usize::MAX))
        };
        let pages_total = self.kv.cache().pool().capacity();
        if pages_needed > pages_total {
            return Err(EngineError::TooLarge { id, pages_needed, pages_total });
        }
        let mut sampler = new_sampler(req.sampler.clone(), self.tokenizer.as_deref())?;
        req.prompt.iter().for_each(|&t| sampler.accept(t));
        self.groups.insert(
            id,
            Group {
                max_tokens: req.max_tokens,
                stop_tokens: req.stop_tokens,
                logprobs: req.logprobs,
                sampler: req.sampler,
                prompt_len: req.prompt.len(),
                cached_prompt_tokens: None,
                preemptions: 0,
                samples: vec![None; req.n],
            },
        );
        self.waiting.push_back(Sequence {
            id,
            sample: 0,
            prompt_len: req.prompt.len(),
            tokens: req.prompt,
            kv: self.kv.add_sequence(),
            computed: 0,
            evictor,
            page_keys: Vec::new(),
            sampler,
            forks_pending: req.n - 1,
            started: 0,
            text: self.tokenizer.as_ref().map(|_| TextState {
                utf8: Utf8Buffer::default(),
                stop: StopMatcher::new(req.stop.iter().cloned()),
            }),
            matcher: req.constraint.as_ref().map(|g| g.matcher()),
            mask: None,
        });
        Ok(id)
    }

    /// Steps until every request has finished; returns their outputs in finishing order.
    pub fn run_to_completion(&mut self) -> Result<Vec<RequestOutput>, EngineError> {
        let mut done = Vec::new();
        while self.has_unfinished() {
            done.extend(self.step()?.finished);
        }
        Ok(done)
    }

    /// One scheduling round and one forward pass (see the module docs). Returns the tokens
    /// chosen and the requests finished in it; an empty output when there is nothing to do.
    pub fn step(&mut self) -> Result<StepOutput, EngineError> {
        let mut out = StepOutput::default();
        let plan = self.schedule()?;
        if plan.is_empty() {
            if self.has_unfinished() {
                // Unreachable by construction (submit refuses what cannot fit).
                return Err(EngineError::Stalled {
                    waiting: self.waiting.len(),
                    running: self.running.len(),
                });
            }
            return Ok(out);
        }
        let logits = self.forward_with_masks(&plan)?;
        self.stats.steps += 1;
        let mut children = Vec::new();
        let mut finished = Vec::new();
        for (&(i, n), mut logits) in plan.iter().zip(logits) {
            let seq = &mut self.running[i];
            let start = seq.computed - n;
            let prompt_part = seq.prompt_len.saturating_sub(start).min(n);
            self.stats.batch_tokens += n as u64;
            self.stats.prefill_computed += prompt_part as u64;
            // Generated tokens other than the pending last one are recomputation.
            let recomputed =
                (start + n).min(seq.tokens.len() - 1).saturating_sub(seq.prompt_len.max(start));
            self.stats.recomputed_tokens += recomputed as u64;
            out.batch_tokens += n;
            if seq.pending() > 0 {
                continue; // a prompt chunk that is not the last: no logits
            }
            let group = self.groups.get_mut(&seq.id).expect("running sequence has a group");
            if seq.forks_pending > 0 {
                for k in 1..=seq.forks_pending {
                    // Every table shares its pages with the child (copy-on-write).
                    let kv = self.kv.fork(seq.kv)?;
                    let mut cfg = group.sampler.clone();
                    cfg.seed = cfg.seed.wrapping_add(k as u64);
                    let mut sampler = new_sampler(cfg, self.tokenizer.as_deref())?;
                    seq.tokens.iter().for_each(|&t| sampler.accept(t));
                    let mut child = Sequence {
                        id: seq.id,
                        sample: k,
                        tokens: seq.tokens.clone(),
                        prompt_len: seq.prompt_len,
                        kv,
                        computed: seq.computed,
                        evictor: seq.evictor.clone(),
                        page_keys: seq.page_keys.clone(),
                        sampler,
                        forks_pending: 0,
                        started: self.next_start,
                        text: seq.text.clone(),
                        matcher: seq.matcher.clone(),
                        mask: seq.mask.clone(),
                    };
                    self.next_start += 1;
                    let mut l = logits.clone();
                    let tok = self.tokenizer.as_deref();
                    if let Some(f) = sample_into(&mut child, group, tok, &mut l, &mut out)? {
                        finished.push((child.id, child.sample, f));
                    }
                    children.push(child);
                }
                seq.forks_pending = 0;
            }
            if let Some(f) =
                sample_into(seq, group, self.tokenizer.as_deref(), &mut logits, &mut out)?
            {
                finished.push((seq.id, seq.sample, f));
            }
        }
        self.stats.generated_tokens += out.tokens.len() as u64;
        self.running.extend(children);
        self.record_occupancy();
        // Finished sequences give their pages back now.
        if !finished.is_empty() {
            let mut keep = Vec::with_capacity(self.running.len());
            for seq in std::mem::take(&mut self.running) {
                let Some(&(_, _, reason)) =
                    finished.iter().find(|f| f.0 == seq.id && f.1 == seq.sample)
                else {
                    keep.push(seq);
                    continue;
                };
                self.kv.remove(seq.kv);
                let group = self.groups.get_mut(&seq.id).expect("group of a running sequence");
                let generated = seq.generated().to_vec();
                group.samples[seq.sample] =
                    Some(SampleOutput { tokens: generated, finish: reason });
                if group.samples.iter().all(Option::is_some) {
                    let g = self.groups.remove(&seq.id).expect("just looked up");
                    out.finished.push(RequestOutput {
                        id: seq.id,
                        prompt_tokens: g.prompt_len,
                        cached_prompt_tokens: g.cached_prompt_tokens.unwrap_or(0),
                        preemptions: g.preemptions,
                        samples: g.samples.into_iter().flatten().collect(),
                    });
                }
            }
            self.running = keep;
        }
        Ok(out)
    }

    /// Cancels request `id`, waiting or running: every one of its samples is dropped (forked
    /// samples too, and samples not yet forked) and their pages are given back at once, in
    /// this call. A page the prefix cache also holds stays cached under its usual rules
    /// (reclaimable once no sequence holds it); samples that already finished are dropped
    /// with the rest. No [`RequestOutput`] is produced for it, and its id may be reused.
    ///
    /// Returns whether the engine was working on `id` (`false`: unknown, or already
    /// finished). The error is reserved for a pool whose bookkeeping disagrees with the
    /// sequences after the pages went back (a bug).
    pub fn cancel(&mut self, id: RequestId) -> Result<bool, EngineError> {
        if self.groups.remove(&id).is_none() {
            return Ok(false);
        }
        let mut keep = Vec::with_capacity(self.running.len());
        for seq in std::mem::take(&mut self.running) {
            if seq.id == id {
                self.kv.remove(seq.kv);
            } else {
                keep.push(seq);
            }
        }
        self.running = keep;
        let mut waiting = VecDeque::with_capacity(self.waiting.len());
        for seq in std::mem::take(&mut self.waiting) {
            if seq.id == id {
                // Waiting sequences hold no pages; removing gives back their tables.
                self.kv.remove(seq.kv);
            } else {
                waiting.push_back(seq);
            }
        }
        self.waiting = waiting;
        self.stats.cancelled += 1;
        self.kv.cache().pool().check_invariants()?;
        Ok(true)
    }

    /// Ends sample `sample` of request `id` now, as if it had produced a stop token: its
    /// pages go back at once and it finishes with [`FinishReason::Stop`] and the tokens it
    /// generated so far (a caller that found a stop string in its text, for example).
    /// Returns the request's output when this was its last unfinished sample.
    ///
    /// Returns `Ok(None)` and changes nothing when the engine is not running that sample:
    /// an unknown request, a sample that already finished, or one not yet forked from the
    /// prompt (it has generated nothing; cancel the request instead).
    pub fn finish_sample(
        &mut self,
        id: RequestId,
        sample: usize,
    ) -> Result<Option<RequestOutput>, EngineError> {
        // A sample that has generated nothing may still have samples to fork from it.
        let finishable =
            |s: &Sequence| s.id == id && s.sample == sample && !s.generated().is_empty();
        let seq = if let Some(i) = self.running.iter().position(finishable) {
            self.running.remove(i)
        } else if let Some(i) = self.waiting.iter().position(finishable) {
            self.waiting.remove(i).expect("position is in range")
        } else {
            return Ok(None);
        };
        self.kv.remove(seq.kv);
        self.kv.cache().pool().check_invariants()?;
        let group = self.groups.get_mut(&id).expect("a sequence's group exists");
        group.samples[sample] =
            Some(SampleOutput { tokens: seq.generated().to_vec(), finish: FinishReason::Stop });
        if !group.samples.iter().all(Option::is_some) {
            return Ok(None);
        }
        let g = self.groups.remove(&id).expect("just looked up");
        Ok(Some(RequestOutput {
            id,
            prompt_tokens: g.prompt_len,
            cached_prompt_tokens: g.cached_prompt_tokens.unwrap_or(0),
            preemptions: g.preemptions,
            samples: g.samples.into_iter().flatten().collect(),
        }))
    }

    /// Gives back every cached page no sequence uses; returns how many.
    pub fn clear_prefix_cache(&mut self) -> Result<usize, EngineError> {
        Ok(self.kv.clear_prefix_cache()?)
    }

    /// Checks the pool's invariants and that every page's refcount equals the number of
    /// its holders (sequence tables and the prefix index). O(pages × held ids): for tests.
    pub fn check_invariants(&self) -> Result<(), EngineError> {
        self.kv.check_invariants()?;
        let live = self.kv.sequences().count();
        if live != self.running.len() + self.waiting.len() {
            return Err(EngineError::Inconsistent(format!(
                "the KV manager holds {live} sequences, the engine {}",
                self.running.len() + self.waiting.len()
            )));
        }
        let cached = self.kv.prefix_index().len();
        if self.policy.per_layer() && cached > 0 {
            return Err(EngineError::Inconsistent(format!(
                "the prefix index holds {} single-layer pages (prefix caching is off under {})",
                cached, self.policy
            )));
        }
        let bs = self.kv.block_size();
        let c = self.model.config();
        let windowed = c.has_windows();
        for s in self.running.iter().chain(&self.waiting) {
            let tables = self.kv.tables(s.kv);
            let evicted = s.evictor.as_ref().map_or(0, |e| e.evicted_pages());
            if windowed {
                // Each windowed table holds exactly the pages of the rule, never more.
                for (l, t) in tables.iter().enumerate() {
                    let Some(w) = c.window(l) else { continue };
                    let rule = s.computed - droppable_pages(s.computed, w, bs) * bs;
                    if droppable_pages(t.len(), w, bs) > 0 || t.len() != rule {
                        return Err(EngineError::Inconsistent(format!(
                            "{} sample {} layer {l}: {} tokens held, the pages of its last \
                             {w} of {} computed are {rule}",
                            s.id,
                            s.sample,
                            t.len(),
                            s.computed
                        )));
                    }
                }
            }
            if tables.len() != self.n_tables {
                return Err(EngineError::Inconsistent(format!(
                    "{} sample {}: {} block tables, expected {}",
                    s.id,
                    s.sample,
                    tables.len(),
                    self.n_tables
                )));
            }
            if let Some(ev) = &s.evictor {
                ev.check(tables).map_err(|e| {
                    EngineError::Inconsistent(format!("{} sample {}: {e}", s.id, s.sample))
                })?;
            }
            for (l, t) in tables.iter().enumerate() {
                let ok = t.len() <= s.computed
                    && s.computed <= s.tokens.len()
                    && t.pages().len() == t.len().div_ceil(bs)
                    && t.len() % bs == s.computed % bs
                    && (s.evictor.is_some() || windowed || s.computed == t.len())
                    && (evicted > 0 || windowed || s.computed == t.len());
                if !ok {
                    return Err(EngineError::Inconsistent(format!(
                        "{} sample {} table {l}: {} tokens, {} computed, {} in the table, {} \
                         pages, {} evicted",
                        s.id,
                        s.sample,
                        s.tokens.len(),
                        s.computed,
                        t.len(),
                        t.pages().len(),
                        evicted
                    )));
                }
            }
        }
        Ok(())
    }

    /// Picks this step's batch: `(index into running, tokens)` in batch order, with the
    /// pages it needs free in the pool.
    fn schedule(&mut self) -> Result<Vec<(usize, usize)>, EngineError> {
        let bs = self.kv.block_size();
        let mut budget = self.config.max_batch_tokens;
        let mut plan = Vec::new();
        let mut reserved = 0usize;
        let mut cow_claims: HashMap<PageId, u32> = HashMap::new();
        let mut preempted = false;
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let n = match self.running[i].eviction_step(self.kv.tables(self.running[i].kv), bs) {
                None => self.running[i].pending().min(budget),
                // A Session's step, never split: it waits if the budget is short.
                Some(n) if n > budget => 0,
                Some(n) => {
                    self.evict(i)?;
                    n
                }
            };
            if n == 0 {
                i += 1;
                continue;
            }
            let (mut need, mut cows) = self.pages_needed(i, n, &cow_claims)?;
            while self.available() < reserved + need {
                let victim = self.running.len() - 1;
                self.preempt_last();
                preempted = true;
                if victim == i {
                    break 'running;
                }
                // The victim may have shared our last pages: fewer copies now.
                (need, cows) = self.pages_needed(i, n, &cow_claims)?;
            }
            for p in cows {
                *cow_claims.entry(p).or_default() += 1;
            }
            reserved += need;
            budget -= n;
            plan.push((i, n));
            i += 1;
        }
        let prefix_caching = self.prefix_caching();
        while !preempted && budget > 0 {
            let Some(seq) = self.waiting.front() else { break };
            let probe = (seq.tokens.len() - 1) / bs;
            let hit = if prefix_caching {
                self.kv.cached_prefix(&seq.tokens, probe, &self.table_windows)
            } else {
                PrefixHit::default()
            };
            let cached = hit.len() * bs;
            let n = if seq.evictor.is_some() {
                // The first step from a page boundary: a whole page (or the prompt's rest).
                let n = (seq.prompt_len.saturating_sub(cached)).min(bs).max(1);
                if n > budget {
                    break;
                }
                n
            } else {
                (seq.tokens.len() - cached).min(budget)
            };
            // Each table starts with whole cached pages (a windowed one with fewer of them):
            // the chunk takes fresh pages in every table.
            let need = n.div_ceil(bs) * self.n_tables;
            let hits_unused = self.kv.reclaimable_among(&hit);
            if reserved + need > self.available() - hits_unused {
                break;
            }
            let mut seq = self.waiting.pop_front().expect("front exists");
            self.kv.share_cached(seq.kv, &hit)?;
            seq.page_keys.extend_from_slice(&hit.keys);
            seq.computed = cached;
            if let Some(ev) = &mut seq.evictor {
                ev.appended(self.kv.tables(seq.kv), 0, cached);
            }
            if prefix_caching {
                self.stats.prefix_lookups += probe as u64;
                self.stats.prefix_hits += hit.len() as u64;
            }
            let skipped = cached.min(seq.prompt_len);
            self.stats.prefill_skipped += skipped as u64;
            if let Some(g) = self.groups.get_mut(&seq.id) {
                g.cached_prompt_tokens.get_or_insert(skipped);
            }
            seq.started = self.next_start;
            self.next_start += 1;
            self.running.push(seq);
            // Cached pages may already be more than the policy keeps.
            self.evict(self.running.len() - 1)?;
            plan.push((self.running.len() - 1, n));
            reserved += need;
            budget -= n;
        }
        // Reclaiming cannot fall short: `reserved` fits in what is available.
        self.stats.evictions += self.kv.reserve(reserved)? as u64;
        Ok(plan)
    }

    /// Free pages plus cached pages nobody uses.
    fn available(&self) -> usize {
        self.kv.available()
    }

    /// New pages `running[i]` takes to append `n` tokens to each of its tables, and the
    /// shared pages it will copy (each table's partly filled last page if it is shared with
    /// holders not already copying it in this batch: the last holder to append keeps the
    /// page).
    fn pages_needed(
        &self,
        i: usize,
        n: usize,
        cow_claims: &HashMap<PageId, u32>,
    ) -> Result<(usize, Vec<PageId>), EngineError> {
        let bs = self.kv.block_size();
        let mut need = 0;
        let mut cows = Vec::new();
        for table in self.kv.tables(self.running[i].kv) {
            let len = table.len();
            need += (len + n).div_ceil(bs) - len.div_ceil(bs);
            if len % bs == 0 {
                continue;
            }
            let last = *table.pages().last().expect("a partly filled page exists");
            let rc = self
                .kv
                .cache()
                .pool()
                .refcount(last)
                .map_err(|e| EngineError::Table(TableError::Pool(e)))?;
            let claims = cow_claims.get(&last).copied().unwrap_or(0);
            if rc.saturating_sub(claims) > 1 {
                need += 1;
                cows.push(last);
            }
        }
        Ok((need, cows))
    }

    /// Preempts the most recently started running sequence: frees its pages, keeps its
    /// tokens and sampler, and puts it at the head of the queue.
    fn preempt_last(&mut self) {
        let Some(mut seq) = self.running.pop() else { return };
        self.free_pages(&mut seq);
        seq.page_keys.clear();
        self.stats.preemptions += 1;
        if let Some(g) = self.groups.get_mut(&seq.id) {
            g.preemptions += 1;
        }
        self.waiting.push_front(seq);
    }

    /// Gives a sequence's pages back (every table's); cached ones nobody else holds become
    /// reclaimable, tail pages first (they are the least likely to be shared).
    fn free_pages(&mut self, seq: &mut Sequence) {
        self.kv.release(seq.kv);
        seq.computed = 0;
        if let Some(e) = &mut seq.evictor {
            e.reset();
        }
    }

    /// Evicts `running[i]`'s pages for its next step; pages another sequence or the prefix
    /// index also holds stay with them (a cached page nobody else uses becomes reclaimable).
    fn evict(&mut self, i: usize) -> Result<(), EngineError> {
        let seq = &mut self.running[i];
        let Some(evictor) = &mut seq.evictor else { return Ok(()) };
        self.stats.policy_evictions += self.kv.evict(seq.kv, evictor)? as u64;
        Ok(())
    }

    /// [`forward`](Self::forward), and meanwhile the grammar masks of the sequences that
    /// sample after this step (all their pending tokens are in it): on a scoped thread of
    /// their own, or after the pass without overlap. Each mask lands in its sequence's
    /// `mask`.
    fn forward_with_masks(
        &mut self,
        plan: &[(usize, usize)],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut jobs: Vec<(usize, Matcher)> = Vec::new();
        for &(i, n) in plan {
            let seq = &mut self.running[i];
            if seq.pending() == n {
                if let Some(m) = seq.matcher.take() {
                    jobs.push((i, m));
                }
            }
        }
        if jobs.is_empty() {
            return self.forward(plan);
        }
        let compute = |jobs: &mut Vec<(usize, Matcher)>| {
            let start = Instant::now();
            let masks: Vec<_> = jobs.iter_mut().map(|(_, m)| m.compute_mask()).collect();
            (masks, start.elapsed())
        };
        let (logits, (masks, took), waited) = if self.overlap_masks {
            std::thread::scope(|s| {
                let worker = s.spawn(|| compute(&mut jobs));
                let logits = self.forward(plan);
                let wait = Instant::now();
                let masks = worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                (logits, masks, wait.elapsed())
            })
        } else {
            let logits = self.forward(plan);
            let masks = compute(&mut jobs);
            let took = masks.1;
            (logits, masks, took)
        };
        self.stats.masks += jobs.len() as u64;
        self.stats.mask_time += took;
        self.stats.mask_wait += waited;
        let mut failed = None;
        for ((i, matcher), mask) in jobs.into_iter().zip(masks) {
            let seq = &mut self.running[i];
            match mask {
                Ok(mask) => seq.mask = Some(mask),
                Err(error) => {
                    failed.get_or_insert(EngineError::Grammar {
                        id: seq.id,
                        sample: seq.sample,
                        error,
                    });
                }
            }
            seq.matcher = Some(matcher);
        }
        match failed {
            Some(e) => Err(e),
            None => logits,
        }
    }

    /// Runs the planned batch through the model; one logits vector per plan entry (empty
    /// for a chunk that does not end its sequence's pending tokens).
    fn forward(&mut self, plan: &[(usize, usize)]) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut n_of = vec![0usize; self.running.len()];
        for &(i, n) in plan {
            n_of[i] = n;
        }
        // Plan order is ascending running order (running first, then admissions appended).
        let mut items: Vec<BatchEntry> = Vec::with_capacity(plan.len());
        for (seq, &n) in self.running.iter_mut().zip(&n_of) {
            if n == 0 {
                continue;
            }
            let Sequence { kv, tokens, computed, .. } = seq;
            let start = *computed;
            let logits = if start + n == tokens.len() { Logits::Last } else { Logits::None };
            // Evicted tokens: the new ones keep their positions in the text.
            items.push(BatchEntry {
                seq: *kv,
                tokens: &tokens[start..start + n],
                pos0: start,
                logits,
            });
        }
        // All or nothing: a failed pass gives every slot back.
        let batch = self.kv.prepare(&items)?;
        let logits = self.kv.forward(&self.model, batch, &mut self.scratch)?;
        drop(items);
        // The batch's queries, `[layer][batch token][q]`, for the policies that score pages.
        let queries = self.scratch.take_queries();
        let c = self.model.config();
        let q_dim = c.n_heads * c.head_dim;
        let total: usize = n_of.iter().sum();
        let mut off = 0;
        let prefix_caching = self.prefix_caching();
        for (seq, &n) in self.running.iter_mut().zip(&n_of) {
            if n == 0 {
                continue;
            }
            if let Some(ev) = &mut seq.evictor {
                let tables = self.kv.tables(seq.kv);
                ev.appended(tables, seq.computed, n);
                if !queries.is_empty() {
                    let mine: Vec<f32> = (0..c.n_layers)
                        .flat_map(|l| {
                            &queries[(l * total + off) * q_dim..(l * total + off + n) * q_dim]
                        })
                        .copied()
                        .collect();
                    ev.add_mass(self.kv.cache(), tables, c, &mine, n)?;
                }
            }
            seq.computed += n;
            off += n;
            // Full pages are cached before the windows drop any: every table still holds
            // them (an evicting policy's table maps pages to tokens only until it evicts).
            if prefix_caching && (seq.evictor.is_none() || seq.unevicted(self.kv.tables(seq.kv))) {
                let computed = &seq.tokens[..seq.computed];
                self.kv.register_full_pages(seq.kv, computed, &mut seq.page_keys)?;
            }
            if c.has_windows() {
                self.kv.drop_out_of_window(seq.kv, c)?;
            }
        }
        Ok(logits)
    }

    /// Adds this step's page occupancy to the utilisation counters and the peak (pool
    /// pages: single-layer pages under a per-layer policy).
    fn record_occupancy(&mut self) {
        let bs = self.kv.block_size();
        let mut filled = vec![0u32; self.kv.cache().pool().capacity()];
        for t in self.running.iter().flat_map(|s| self.kv.tables(s.kv)) {
            let len = t.len();
            for (j, p) in t.pages().iter().enumerate() {
                let f = (len - j * bs).min(bs) as u32;
                let slot = &mut filled[p.index()];
                *slot = (*slot).max(f);
            }
        }
        let held = filled.iter().filter(|&&f| f > 0).count();
        self.stats.filled_slots += filled.iter().map(|&f| f as u64).sum::<u64>();
        self.stats.held_slots += (held * bs) as u64;
        self.stats.peak_pages = self.stats.peak_pages.max(self.pages_held());
    }
}

/// Whether a core is left over by the forward pass (rayon's pool is smaller than the
/// machine), so that grammar masks computed beside it do not slow it down.
fn spare_core() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| rayon::current_num_threads() < n.get())
}

/// A sample's sampler: with the engine's tokenizer, DRY's sequence breakers are found in its
/// vocabulary and logit-bias ids are checked against it (llama.cpp's behaviour); without
/// one, a request using DRY breakers is refused ([`SamplerError::NeedsVocabulary`]).
///
/// [`SamplerError::NeedsVocabulary`]: crate::sampler::SamplerError::NeedsVocabulary
fn new_sampler(
    cfg: crate::sampler::SamplerConfig,
    tokenizer: Option<&Tokenizer>,
) -> Result<Sampler, crate::sampler::SamplerError> {
    match tokenizer {
        Some(t) => Sampler::with_vocabulary(cfg, t),
        None => Sampler::new(cfg),
    }
}

/// Samples the sequence's next token from `logits` (masked by its grammar, if it has one),
/// streams it (with its text when there is a tokenizer), and says whether the sample is
/// finished.
fn sample_into(
    seq: &mut Sequence,
    group: &Group,
    tokenizer: Option<&Tokenizer>,
    logits: &mut [f32],
    out: &mut StepOutput,
) -> Result<Option<FinishReason>, EngineError> {
    // The grammar's mask first: log-probabilities are those of the allowed tokens.
    let mask: Option<Mask> = seq.mask.take();
    if let Some(mask) = &mask {
        mask.apply(logits);
    }
    // Log-probabilities come from the logits before the sampler's penalties change them.
    let raw = group.logprobs.map(|top| (logits.to_vec(), top));
    let token = seq.sampler.sample(logits);
    let logprobs = raw.and_then(|(raw, top)| {
        let (logprob, top) = log_probs(&raw, token, top)?;
        Some(TokenLogprobs { logprob, top })
    });
    let mut grammar_done = false;
    if let Some(matcher) = &mut seq.matcher {
        matcher.commit(token).map_err(|error| EngineError::Grammar {
            id: seq.id,
            sample: seq.sample,
            error,
        })?;
        grammar_done = matcher.is_finished();
    }
    seq.sampler.accept(token);
    seq.tokens.push(token);
    let stop_token = group.stop_tokens.contains(&token);
    let mut finish = if stop_token || grammar_done {
        Some(FinishReason::Stop)
    } else if seq.generated().len() >= group.max_tokens {
        Some(FinishReason::Length)
    } else {
        None
    };
    // An end-of-generation token the grammar took as its end is not text either.
    let no_text = stop_token || (grammar_done && tokenizer.is_some_and(|t| t.is_eog(token)));
    let text = match (&mut seq.text, tokenizer) {
        (Some(t), Some(tok)) => {
            // A stop token's piece is not text.
            let piece = if no_text { String::new() } else { t.utf8.push(tok, token) };
            let (mut text, stopped) = t.stop.push(&piece);
            if stopped {
                finish = Some(FinishReason::Stop);
            } else if finish.is_some() {
                let (tail, stopped) = t.stop.push(&t.utf8.finish());
                text.push_str(&tail);
                if !stopped {
                    text.push_str(&t.stop.finish());
                }
            }
            Some(text)
        }
        _ => None,
    };
    out.tokens.push(TokenEvent { id: seq.id, sample: seq.sample, token, logprobs, text, finish });
    Ok(finish)
}
