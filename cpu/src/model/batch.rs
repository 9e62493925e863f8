//! A batch ready for the forward pass: the KV side's half of a step.
//!
//! ```text
//!   items (tables + new tokens) ──KvCache::prepare──► Batch (slots, positions, pages)
//!                                    all or nothing       │
//!                                                         ▼
//!                                     Llama::forward(cache, &batch, scratch) ──► logits
//!                                                         │ error
//!                                    KvCache::rollback ◄──┘ (tables back to their lengths)
//! ```
//!
//! The model computes; it does not manage pages: `prepare` takes every new token's slot
//! (copy-on-write included) and lays the batch out, the forward pass only reads that
//! layout and writes K/V into the slots it names.

use pagoda_core::pool::PageId;

use super::kv_cache::{KvCache, SeqTable};
use super::llama::Logits;
use super::ModelError;

/// One sequence's part of a batch: its table(s) and the tokens to append.
#[derive(Debug)]
pub struct SeqItem<'a> {
    /// One table shared by every layer (all-layer pages), or one per layer (single-layer
    /// pages, [`KvCache::new_per_layer`]); the cached tokens of each come first.
    pub tables: &'a mut [SeqTable],
    /// The tokens to append.
    pub tokens: &'a [u32],
    /// Text position (RoPE) of the first token: `tables[0].len()` for a sequence that
    /// never lost a token, more after KV eviction (its position in the original text).
    pub pos0: usize,
    /// Which of them need logits.
    pub logits: Logits,
}

impl<'a> SeqItem<'a> {
    /// An item whose positions continue its (only) table: `pos0 = table.len()`.
    pub fn new(table: &'a mut SeqTable, tokens: &'a [u32], logits: Logits) -> Self {
        let pos0 = table.len();
        SeqItem { tables: std::slice::from_mut(table), tokens, pos0, logits }
    }
}

/// A prepared batch (see the module docs): every new token has a slot in each of its
/// sequence's tables. Made by [`KvCache::prepare`]; consumed by
/// [`Llama::forward`](super::Llama::forward), or given back with [`KvCache::rollback`].
#[derive(Debug)]
pub struct Batch {
    layout: BatchLayout,
    /// Each item's table lengths before the batch.
    old_lens: Vec<Vec<usize>>,
    /// The items' sequences, when a [`KvManager`](super::KvManager) prepared it.
    pub(super) seqs: Vec<super::SeqKv>,
}

impl Batch {
    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.layout.tokens.len()
    }

    /// Whether the batch holds no token.
    pub fn is_empty(&self) -> bool {
        self.layout.tokens.is_empty()
    }

    pub(super) fn layout(&self) -> &BatchLayout {
        &self.layout
    }
}

/// A sequence's tokens within the flat batch.
#[derive(Debug)]
pub(super) struct SeqSpan {
    /// Pages per table group (one group, or one per layer), after the append.
    pub pages: Vec<Vec<PageId>>,
    /// Tokens per table group after the append (what the last new token sees).
    pub n_ctx: Vec<usize>,
    pub off: usize,
    pub n: usize,
    pub logits: Logits,
}

/// Where every token of a flat batch comes from and goes to.
#[derive(Debug, Default)]
pub(super) struct BatchLayout {
    pub spans: Vec<SeqSpan>,
    pub tokens: Vec<u32>,
    pub positions: Vec<usize>,
    /// Where each token's K/V goes, per table group: `slots[g][token]`.
    pub slots: Vec<Vec<(PageId, usize)>>,
    /// One table group per layer, in slab layer 0 (single-layer pages).
    pub per_layer: bool,
}

impl KvCache {
    /// Takes a slot for every new token of every item in each of its tables (allocating
    /// pages, copying a shared last page on write) and lays the batch out. All or nothing:
    /// when the pool runs dry ([`ModelError::OutOfPages`]) or an item is malformed, every
    /// table keeps its old length.
    pub fn prepare(&mut self, items: &mut [SeqItem<'_>]) -> Result<Batch, ModelError> {
        let groups = self.table_groups();
        for it in items.iter() {
            if it.tables.len() != groups {
                return Err(ModelError::Invalid(format!(
                    "{} block tables for a sequence in a cache of {} pages (needs {groups})",
                    it.tables.len(),
                    if self.per_layer() { "single-layer" } else { "all-layer" }
                )));
            }
        }
        let mut layout = BatchLayout {
            slots: vec![Vec::new(); groups],
            per_layer: self.per_layer(),
            ..BatchLayout::default()
        };
        let mut old_lens: Vec<Vec<usize>> = Vec::with_capacity(items.len());
        for i in 0..items.len() {
            let olds: Vec<usize> = items[i].tables.iter().map(|t| t.len()).collect();
            let n = items[i].tokens.len();
            for g in 0..groups {
                if let Err(e) = self.append(&mut items[i].tables[g], n) {
                    old_lens.push(olds);
                    self.truncate_items(items, &old_lens);
                    return Err(e);
                }
            }
            let it = &items[i];
            let off = layout.tokens.len();
            for (g, (t, &old)) in it.tables.iter().zip(&olds).enumerate() {
                for p in old..old + n {
                    let sl = t.slot(p).expect("slot appended above");
                    layout.slots[g].push((sl.page, sl.slot));
                }
            }
            layout.positions.extend(it.pos0..it.pos0 + n);
            layout.tokens.extend_from_slice(it.tokens);
            layout.spans.push(SeqSpan {
                pages: it.tables.iter().map(|t| t.pages().to_vec()).collect(),
                n_ctx: it.tables.iter().map(|t| t.len()).collect(),
                off,
                n,
                logits: it.logits,
            });
            old_lens.push(olds);
        }
        Ok(Batch { layout, old_lens, seqs: Vec::new() })
    }

    /// Gives back a prepared batch whose forward pass failed: each item's tables return to
    /// their lengths before [`prepare`](Self::prepare) (`items` as given to it).
    pub fn rollback(&mut self, items: &mut [SeqItem<'_>], batch: Batch) {
        self.truncate_items(items, &batch.old_lens);
    }

    fn truncate_items(&mut self, items: &mut [SeqItem<'_>], old_lens: &[Vec<usize>]) {
        for (it, olds) in items.iter_mut().zip(old_lens) {
            for (t, &old) in it.tables.iter_mut().zip(olds) {
                self.truncate(t, old);
            }
        }
    }
}
