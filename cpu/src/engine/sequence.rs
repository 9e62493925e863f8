//! One sample of one request as the engine tracks it.
//!
//! ```text
//!   tokens:  | prompt ................ | generated ..... |
//!   table:   | K/V computed (table.len())  | pending   |      pending = tokens − computed
//! ```
//!
//! A running sequence usually has exactly one pending token (the last one sampled). A new
//! one has its whole prompt pending (minus what the prefix cache supplied); a preempted
//! one, when it resumes, has prompt + everything generated so far pending, all of it
//! recomputed by chunked prefill. Its sampler (random state, repetition window) survives
//! preemption, so nothing about its output changes.
//!
//! Under a KV eviction policy the table holds fewer tokens than were computed:
//!
//! ```text
//!   tokens:    | prompt ................ | generated ..... |
//!   computed:  |<------------ computed ------------>| pending |
//!   table:     | sink |  (evicted)  | window ......  |            len = computed − evicted
//! ```
//!
//! and the sequence goes through the model in the steps a [`Session`](crate::model::Session)
//! takes alone: the prompt in page-aligned steps, then one token per step (also when
//! recomputing after a preemption), its [`Evictor`] evicting before each step.
//!
//! Under a per-layer policy (PyramidKV) the engine's pages are single-layer pages and a
//! sequence has one table per layer, each evicting on its own; every table holds whole pages
//! plus the same partly filled last page (`len ≡ computed mod block_size`), since eviction
//! drops whole pages.

use super::RequestId;
use crate::grammar::{Mask, Matcher};
use crate::model::{Evictor, PrefixKey, SeqKv, SeqTable};
use crate::sampler::Sampler;
use crate::stop::StopMatcher;
use crate::tokenizer::Utf8Buffer;

#[derive(Debug)]
pub(super) struct Sequence {
    /// The request it belongs to.
    pub id: RequestId,
    /// Which of the request's samples it is.
    pub sample: usize,
    /// Prompt followed by every generated token.
    pub tokens: Vec<u32>,
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// Its block tables in the engine's [`KvManager`](crate::model::KvManager): one
    /// (all-layer pages), or one per layer (single-layer pages, a per-layer policy). Each
    /// holds the K/V of `len()` of the computed tokens (all of them unless evicting).
    pub kv: SeqKv,
    /// Tokens whose K/V has been computed (the first `computed` of `tokens`).
    pub computed: usize,
    /// Its eviction state, under an evicting policy.
    pub evictor: Option<Evictor>,
    /// Prefix keys of the table's leading full pages that are known to the prefix index
    /// (registered or matched): the chain the next full page's key continues.
    pub page_keys: Vec<PrefixKey>,
    /// Its own sampler.
    pub sampler: Sampler,
    /// Samples still to fork off this one when its prompt is complete (`n - 1` for a
    /// request's first sample until then, else 0).
    pub forks_pending: usize,
    /// Admission order (larger = started more recently): preemption picks the largest.
    pub started: u64,
    /// Its output text so far, with the engine's tokenizer: UTF-8 pending across tokens and
    /// the stop strings' matcher (kept through preemption: generated tokens are kept).
    pub text: Option<TextState>,
    /// Its position in the request's grammar, if it has one (kept through preemption).
    pub matcher: Option<Matcher>,
    /// The grammar's mask for its next sampled token, computed during the step's forward
    /// pass.
    pub mask: Option<Mask>,
}

/// A sample's output text as it streams (see [`TokenEvent::text`](super::TokenEvent)).
#[derive(Clone, Debug)]
pub struct TextState {
    pub utf8: Utf8Buffer,
    pub stop: StopMatcher,
}

impl Sequence {
    /// Tokens whose K/V still has to be computed.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Under an evicting policy, the tokens of its next step (what a `Session` would run):
    /// the rest of the prompt's current page, else one token. `None` without a policy.
    /// `tables` are its tables.
    pub fn eviction_step(&self, tables: &[SeqTable], block_size: usize) -> Option<usize> {
        self.evictor.as_ref()?;
        let n = if self.computed < self.prompt_len {
            (self.prompt_len - self.computed).min(block_size - tables[0].len() % block_size)
        } else {
            1
        };
        Some(n.min(self.pending()))
    }

    /// Whether every one of its `tables` still maps page `j` to tokens `j·bs..` (nothing
    /// evicted yet).
    pub fn unevicted(&self, tables: &[SeqTable]) -> bool {
        tables.iter().all(|t| t.len() == self.computed)
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }
}
