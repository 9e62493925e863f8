//! The KV manager: the page pool and page storage ([`KvCache`]), the prefix index and every
//! sequence's block tables, kept in step. A [`Session`](super::Session) (one sequence) and the
//! [`Engine`](crate::engine::Engine) (many) both sit on it; the model only computes over the
//! [`Batch`] it prepares.
//!
//! ```text
//!   Session / Engine ──add_sequence, fork, release, evict, register_full_pages──► KvManager
//!        │                                                                       ├─ KvCache (pool + pages)
//!        └── prepare([(seq, tokens, pos0, logits)]) ──► Batch ──► forward ───────├─ PrefixIndex
//!                                     (all or nothing)        (rollback on error)└─ tables per SeqKv
//! ```
//!
//! A page's refcount is the number of block tables holding it, plus one if the prefix index
//! caches it; a cached page no table holds is *reclaimable* (free on demand, least recently
//! used first). The pool is reachable only read-only from outside the crate
//! ([`KvManager::cache`]), so those refcounts always match the holders the manager knows.

use pagoda_core::pool::PageId;

use super::batch::{Batch, SeqItem};
use super::kv_cache::{KvCache, SeqTable};
use super::prefix_index::{PrefixIndex, PrefixKey};
use super::{drop_out_of_window, Evictor, ForwardScratch, Llama, LlamaConfig, Logits, ModelError};

/// A sequence's name in its [`KvManager`]: its block tables (one, or one per layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqKv(u32);

/// One sequence's part of a batch (see [`KvManager::prepare`]).
#[derive(Clone, Copy, Debug)]
pub struct BatchEntry<'a> {
    /// The sequence.
    pub seq: SeqKv,
    /// The tokens to append.
    pub tokens: &'a [u32],
    /// Text position (RoPE) of the first of them (more than the tables' length after KV
    /// eviction: positions stay those of the text).
    pub pos0: usize,
    /// Which of them need logits.
    pub logits: Logits,
}

/// Pool, page storage, prefix index and the sequences' tables (see the module docs).
#[derive(Debug)]
pub struct KvManager {
    cache: KvCache,
    index: PrefixIndex,
    /// Each live sequence's tables, by [`SeqKv`]; `None`: a free id.
    seqs: Vec<Option<Vec<SeqTable>>>,
    free_ids: Vec<u32>,
}

impl KvManager {
    /// A manager over `cache`, with no sequence and an empty prefix index.
    pub fn new(cache: KvCache) -> Self {
        KvManager { cache, index: PrefixIndex::new(), seqs: Vec::new(), free_ids: Vec::new() }
    }

    /// The pool and page storage, read-only.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// The prefix index.
    pub fn prefix_index(&self) -> &PrefixIndex {
        &self.index
    }

    /// Tokens per page.
    pub fn block_size(&self) -> usize {
        self.cache.block_size()
    }

    /// A new sequence with empty tables (one, or one per layer for single-layer pages).
    pub fn add_sequence(&mut self) -> SeqKv {
        let tables = (0..self.cache.table_groups()).map(|_| self.cache.new_table()).collect();
        self.insert(tables)
    }

    fn insert(&mut self, tables: Vec<SeqTable>) -> SeqKv {
        match self.free_ids.pop() {
            Some(id) => {
                self.seqs[id as usize] = Some(tables);
                SeqKv(id)
            }
            None => {
                self.seqs.push(Some(tables));
                SeqKv((self.seqs.len() - 1) as u32)
            }
        }
    }

    /// The sequence's tables.
    ///
    /// # Panics
    /// If `seq` was removed (a [`SeqKv`] names a live sequence of this manager until
    /// [`remove`](Self::remove)).
    #[track_caller]
    pub fn tables(&self, seq: SeqKv) -> &[SeqTable] {
        self.seqs[seq.0 as usize].as_deref().expect("a live sequence of this manager")
    }

    #[track_caller]
    fn tables_mut(&mut self, seq: SeqKv) -> &mut Vec<SeqTable> {
        self.seqs[seq.0 as usize].as_mut().expect("a live sequence of this manager")
    }

    /// Every live sequence's tables.
    pub fn sequences(&self) -> impl Iterator<Item = (SeqKv, &[SeqTable])> {
        self.seqs.iter().enumerate().filter_map(|(i, t)| Some((SeqKv(i as u32), t.as_deref()?)))
    }

    /// Pages a new allocation can take: free ones plus reclaimable cached ones.
    pub fn available(&self) -> usize {
        self.cache.pool().free_count() + self.index.unused()
    }

    /// Pages held by block tables (reclaimable cached pages excluded).
    pub fn pages_held(&self) -> usize {
        self.cache.pool().used_count() - self.index.unused()
    }

    /// Makes at least `pages` pages free, reclaiming cached pages nobody uses, least
    /// recently used first. Returns how many it reclaimed; fewer free pages than asked
    /// remain only if the reclaimable ones run out ([`prepare`](Self::prepare) then reports
    /// the shortage).
    pub fn reserve(&mut self, pages: usize) -> Result<usize, ModelError> {
        let mut reclaimed = 0;
        while self.cache.pool().free_count() < pages {
            match self.index.evict_lru(self.cache.pool_mut()).map_err(pool_error)? {
                Some(_) => reclaimed += 1,
                None => break,
            }
        }
        Ok(reclaimed)
    }

    /// Takes a slot for every new token of every entry in each of its sequence's tables
    /// (allocating pages, copying a shared last page on write) and lays the batch out. All
    /// or nothing: on [`ModelError::OutOfPages`] (or a sequence named twice) every table
    /// keeps its old length.
    pub fn prepare(&mut self, entries: &[BatchEntry<'_>]) -> Result<Batch, ModelError> {
        let mut taken: Vec<Vec<SeqTable>> =
            entries.iter().map(|e| std::mem::take(self.tables_mut(e.seq))).collect();
        let result = {
            let mut items: Vec<SeqItem<'_>> = taken
                .iter_mut()
                .zip(entries)
                .map(|(tables, e)| SeqItem {
                    tables,
                    tokens: e.tokens,
                    pos0: e.pos0,
                    logits: e.logits,
                })
                .collect();
            self.cache.prepare(&mut items)
        };
        // Back in reverse: a sequence named twice gets its real tables back last.
        for (e, tables) in entries.iter().zip(taken).rev() {
            *self.tables_mut(e.seq) = tables;
        }
        let mut batch = result?;
        batch.seqs = entries.iter().map(|e| e.seq).collect();
        Ok(batch)
    }

    /// Runs a prepared batch through `model`: each entry's logits as it asked for. On error
    /// the batch is given back (every table at its old length) and the error returned.
    pub fn forward(
        &mut self,
        model: &Llama,
        batch: Batch,
        scratch: &mut ForwardScratch,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        match model.forward(&mut self.cache, &batch, scratch) {
            Ok(logits) => Ok(logits),
            Err(e) => {
                self.rollback(batch);
                Err(e)
            }
        }
    }

    /// Gives back a prepared batch that will not run: every table at its old length.
    pub fn rollback(&mut self, batch: Batch) {
        let seqs = batch.seqs.clone();
        let mut taken: Vec<Vec<SeqTable>> =
            seqs.iter().map(|&s| std::mem::take(self.tables_mut(s))).collect();
        {
            let mut items: Vec<SeqItem<'_>> = taken
                .iter_mut()
                .map(|tables| SeqItem { tables, tokens: &[], pos0: 0, logits: Logits::None })
                .collect();
            self.cache.rollback(&mut items, batch);
        }
        for (&s, tables) in seqs.iter().zip(taken).rev() {
            *self.tables_mut(s) = tables;
        }
    }

    /// A new sequence sharing every page of `seq` (copy-on-write on the first write).
    pub fn fork(&mut self, seq: SeqKv) -> Result<SeqKv, ModelError> {
        let tables = self.seqs[seq.0 as usize].as_ref().expect("a live sequence of this manager");
        let pool = self.cache.pool_mut();
        let forked = tables
            .iter()
            .map(|t| t.fork(pool))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ModelError::Table)?;
        Ok(self.insert(forked))
    }

    /// Gives every page of `seq` back (its tables become empty; the sequence stays, e.g.
    /// preempted); a cached page nobody else holds becomes reclaimable, tail pages first
    /// (they are the least likely to be shared).
    pub fn release(&mut self, seq: SeqKv) {
        let mut tables = std::mem::take(self.tables_mut(seq));
        for table in &mut tables {
            let pages = table.pages().to_vec();
            self.cache.free(table);
            for &p in pages.iter().rev() {
                self.index.released(p, self.cache.pool());
            }
        }
        *self.tables_mut(seq) = tables;
    }

    /// [`release`](Self::release)s `seq` and forgets it (its id may be reused).
    pub fn remove(&mut self, seq: SeqKv) {
        self.release(seq);
        self.seqs[seq.0 as usize] = None;
        self.free_ids.push(seq.0);
    }

    /// Shrinks table `table` of `seq` to `n` tokens, giving back the pages it no longer needs.
    pub fn truncate(&mut self, seq: SeqKv, table: usize, n: usize) {
        let mut tables = std::mem::take(self.tables_mut(seq));
        if let Some(t) = tables.get_mut(table) {
            let pages = t.pages().to_vec();
            self.cache.truncate(t, n);
            for &p in pages[t.pages().len()..].iter().rev() {
                self.index.released(p, self.cache.pool());
            }
        }
        *self.tables_mut(seq) = tables;
    }

    /// Evicts pages of `seq` as `evictor`'s policy says before its next step; pages another
    /// table or the prefix index also holds stay with them. Returns how many pages the
    /// tables dropped.
    pub fn evict(&mut self, seq: SeqKv, evictor: &mut Evictor) -> Result<usize, ModelError> {
        let mut tables = std::mem::take(self.tables_mut(seq));
        let dropped = evictor.evict_pages(&mut self.cache, &mut tables);
        *self.tables_mut(seq) = tables;
        let dropped = dropped?;
        for &p in &dropped {
            self.index.released(p, self.cache.pool());
        }
        Ok(dropped.len())
    }

    /// Sliding-window layers of `seq` give back the pages their window has left
    /// ([`drop_out_of_window`]).
    pub fn drop_out_of_window(
        &mut self,
        seq: SeqKv,
        config: &LlamaConfig,
    ) -> Result<(), ModelError> {
        let mut tables = std::mem::take(self.tables_mut(seq));
        let dropped = drop_out_of_window(&mut self.cache, &mut tables, config);
        *self.tables_mut(seq) = tables;
        for p in dropped? {
            self.index.released(p, self.cache.pool());
        }
        Ok(())
    }

    /// The cached pages of the longest cached prefix of `tokens`, at most `max_pages`.
    pub fn cached_prefix(&self, tokens: &[u32], max_pages: usize) -> Vec<(PrefixKey, PageId)> {
        self.index.longest_prefix(tokens, self.block_size(), max_pages)
    }

    /// How many of `hits` are reclaimable now (they stop being so once shared).
    pub fn reclaimable_among(&self, hits: &[(PrefixKey, PageId)]) -> usize {
        hits.iter().filter(|(_, p)| self.index.is_unused(*p)).count()
    }

    /// Starts `seq`'s (empty, single) table with the cached pages `hits`, shared with the
    /// index.
    pub fn share_cached(
        &mut self,
        seq: SeqKv,
        hits: &[(PrefixKey, PageId)],
    ) -> Result<(), ModelError> {
        let mut tables = std::mem::take(self.tables_mut(seq));
        let mut result = Ok(());
        for &(_, page) in hits {
            self.index.acquire(page);
            result = tables[0].push_shared_page(page, self.cache.pool_mut());
            if result.is_err() {
                break;
            }
        }
        *self.tables_mut(seq) = tables;
        result.map_err(ModelError::Table)
    }

    /// Caches the full pages of `seq`'s (single) table, which holds `tokens`, not yet in the
    /// index, continuing the key chain `keys` (one key per page cached so far).
    pub fn register_full_pages(
        &mut self,
        seq: SeqKv,
        tokens: &[u32],
        keys: &mut Vec<PrefixKey>,
    ) -> Result<(), ModelError> {
        let bs = self.block_size();
        let table = &self.tables(seq)[0];
        let (from, full) = (keys.len(), table.len() / bs);
        if from >= full {
            return Ok(()); // the common case, every step: nothing new to cache
        }
        let pages = table.pages()[from..full].to_vec();
        for j in from..full {
            let parent = j.checked_sub(1).map(|p| keys[p]);
            let key = self
                .index
                .insert(
                    parent,
                    &tokens[j * bs..(j + 1) * bs],
                    pages[j - from],
                    self.cache.pool_mut(),
                )
                .map_err(pool_error)?;
            keys.push(key);
        }
        Ok(())
    }

    /// Gives back every cached page nobody uses; returns how many.
    pub fn clear_prefix_cache(&mut self) -> Result<usize, ModelError> {
        self.index.clear_unused(self.cache.pool_mut()).map_err(pool_error)
    }

    /// Checks the pool's invariants and that every page's refcount equals the number of
    /// its holders: the live sequences' tables and the prefix index.
    pub fn check_invariants(&self) -> Result<(), ModelError> {
        let pool = self.cache.pool();
        pool.check_invariants().map_err(ModelError::Invariant)?;
        let cached = self.index.pages();
        let holders = self
            .seqs
            .iter()
            .flatten()
            .flat_map(|tables| tables.iter().map(|t| t.pages()))
            .chain(std::iter::once(&cached[..]));
        pool.check_holders(holders).map_err(ModelError::Invariant)
    }
}

fn pool_error(e: pagoda_core::pool::PoolError) -> ModelError {
    ModelError::Table(pagoda_core::table::TableError::Pool(e))
}
