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

use pagoda_core::pool::PageId;

use super::prefix_index::PrefixKey;
use super::RequestId;
use crate::model::SeqTable;
use crate::sampler::Sampler;

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
    /// Its pages; `table.len()` tokens have K/V.
    pub table: SeqTable,
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
}

impl Sequence {
    /// Tokens whose K/V still has to be computed.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.table.len()
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Its physical pages.
    pub fn pages(&self) -> &[PageId] {
        self.table.pages()
    }
}
