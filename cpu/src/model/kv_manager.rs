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
use super::{
    drop_out_of_window, droppable_pages, Evictor, ForwardScratch, Llama, LlamaConfig, Logits,
    ModelError,
};

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
        let pages: Vec<Vec<PageId>> = tables.iter().map(|t| t.pages().to_vec()).collect();
        for table in &mut tables {
            self.cache.free(table);
        }
        // Tables end at the same page (a windowed one lacks front pages): the last pages of
        // every table first, then the ones before, so a page group becomes reclaimable as a
        // whole, tail groups first.
        let longest = pages.iter().map(Vec::len).max().unwrap_or(0);
        for back in 1..=longest {
            for p in &pages {
                if let Some(i) = p.len().checked_sub(back) {
                    self.index.released(p[i], self.cache.pool());
                }
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

    /// The longest usable cached prefix of `tokens`, at most `max_pages` pages, and the
    /// cached pages each of the sequence's tables takes for it. `windows` has one entry per
    /// table: `None` for a table that keeps every page (the all-layer table, a global
    /// layer's), `Some(w)` for a sliding-window layer's table, which takes only the pages
    /// the window rule ([`droppable_pages`]) keeps for a table of the hit's length: the
    /// older pages of the hit are not put in it at all. A hit of `k` pages needs, in every
    /// table, each page that table takes; it is the longest cached prefix whose pages
    /// are all still there (a windowed layer's old pages are reclaimed first).
    pub fn cached_prefix(
        &self,
        tokens: &[u32],
        max_pages: usize,
        windows: &[Option<usize>],
    ) -> PrefixHit {
        let bs = self.block_size();
        let n_tables = windows.len();
        let mut chain = self.index.longest_prefix(tokens, bs, max_pages);
        if let Some(bad) = chain.iter().position(|g| g.pages.len() != n_tables) {
            chain.truncate(bad); // cached for another table layout: unusable
        }
        // For each table, `missing[t][k]`: 1 + the last empty slot among groups 0..k (0: none).
        let missing: Vec<Vec<usize>> = (0..n_tables)
            .map(|t| {
                let mut m = vec![0; chain.len() + 1];
                for (j, g) in chain.iter().enumerate() {
                    m[j + 1] = if g.pages[t].is_none() { j + 1 } else { m[j] };
                }
                m
            })
            .collect();
        let first_kept = |t: usize, k: usize| match windows[t] {
            Some(w) => droppable_pages(k * bs, w, bs),
            None => 0,
        };
        let k = (0..=chain.len())
            .rev()
            .find(|&k| (0..n_tables).all(|t| missing[t][k] <= first_kept(t, k)))
            .unwrap_or(0);
        chain.truncate(k);
        let pages = (0..n_tables)
            .map(|t| chain[first_kept(t, k)..].iter().filter_map(|g| g.pages[t]).collect())
            .collect();
        PrefixHit { keys: chain.iter().map(|g| g.key).collect(), pages }
    }

    /// How many of the pages `hit` hands out are reclaimable now (they stop being so once
    /// shared).
    pub fn reclaimable_among(&self, hit: &PrefixHit) -> usize {
        hit.pages.iter().flatten().filter(|&&p| self.index.is_unused(p)).count()
    }

    /// Starts `seq`'s (empty) tables with the cached pages of `hit` ([`cached_prefix`]'s,
    /// for this sequence's table layout), shared with the index.
    ///
    /// [`cached_prefix`]: Self::cached_prefix
    pub fn share_cached(&mut self, seq: SeqKv, hit: &PrefixHit) -> Result<(), ModelError> {
        let mut tables = std::mem::take(self.tables_mut(seq));
        let mut result = Ok(());
        if hit.pages.len() != tables.len() && !hit.is_empty() {
            *self.tables_mut(seq) = tables;
            return Err(ModelError::Invalid(format!(
                "a prefix hit for {} tables, the sequence has {}",
                hit.pages.len(),
                self.tables(seq).len()
            )));
        }
        'tables: for (table, pages) in tables.iter_mut().zip(&hit.pages) {
            for &page in pages {
                self.index.acquire(page);
                result = table.push_shared_page(page, self.cache.pool_mut());
                if result.is_err() {
                    break 'tables;
                }
            }
        }
        *self.tables_mut(seq) = tables;
        result.map_err(ModelError::Table)
    }

    /// Caches the full pages of `seq`'s tables not yet in the index, continuing the key
    /// chain `keys` (one key per page cached so far). `tokens` are the tokens whose K/V the
    /// tables hold, up to the tables' end (every computed token): each table holds them all
    /// or, a sliding-window layer's, a suffix of whole pages. The group of page `j` is each
    /// table's page `j`; it is cached only while every table still holds it (so call this
    /// before the windows drop pages), and the chain stops at the first page some table no
    /// longer holds.
    pub fn register_full_pages(
        &mut self,
        seq: SeqKv,
        tokens: &[u32],
        keys: &mut Vec<PrefixKey>,
    ) -> Result<(), ModelError> {
        let bs = self.block_size();
        let (from, full) = (keys.len(), tokens.len() / bs);
        if from >= full {
            return Ok(()); // the common case, every step: nothing new to cache
        }
        let tables = self.tables(seq);
        // Each table's first page, in the sequence's pages.
        let mut offsets = Vec::with_capacity(tables.len());
        for t in tables {
            let dropped = tokens.len().checked_sub(t.len()).filter(|d| d % bs == 0);
            let Some(dropped) = dropped else {
                return Err(ModelError::Invalid(format!(
                    "a table of {} tokens does not end a sequence of {} computed tokens",
                    t.len(),
                    tokens.len()
                )));
            };
            offsets.push(dropped / bs);
        }
        let mut groups = Vec::new();
        for j in from..full {
            if offsets.iter().any(|&o| o > j) {
                break; // a table left page j behind: the chain ends here
            }
            let group: Vec<PageId> =
                tables.iter().zip(&offsets).map(|(t, &o)| t.pages()[j - o]).collect();
            groups.push(group);
        }
        for (j, group) in (from..).zip(groups) {
            let parent = j.checked_sub(1).map(|p| keys[p]);
            let key = self
                .index
                .insert(parent, &tokens[j * bs..(j + 1) * bs], &group, self.cache.pool_mut())
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
        pool.check_holders(holders).map_err(ModelError::Invariant)?;
        self.index.check(pool).map_err(|e| ModelError::Invalid(format!("prefix index: {e}")))
    }
}

/// A cached prefix as one sequence's tables take it ([`KvManager::cached_prefix`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixHit {
    /// The keys of the prefix's pages, one per page: the hit is `keys.len()` pages long.
    pub keys: Vec<PrefixKey>,
    /// For each table, the cached pages it takes, oldest first: every page of the hit, or a
    /// sliding-window layer's last ones. Empty (no table) for no hit.
    pub pages: Vec<Vec<PageId>>,
}

impl PrefixHit {
    /// Pages of the prefix (each `block_size` tokens).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether nothing is cached for the prefix.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn pool_error(e: pagoda_core::pool::PoolError) -> ModelError {
    ModelError::Table(pagoda_core::table::TableError::Pool(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;

    /// Two layers, the first windowed to 8 tokens, pages of 4 tokens: groups of two
    /// single-layer pages; the windowed layer's old pages stay cached, are reclaimed first, and
    /// a hit hands each table the pages its rule keeps.
    #[test]
    fn windowed_groups_hits_and_reclaim() {
        let mut c = LlamaConfig { vocab_size: 10, ..LlamaConfig::llama(2, 8, 16, 2, 1, 4) };
        c.layer_windows = vec![Some(8), None];
        let windows = [Some(8), None];
        let cache = KvCache::new_per_layer(&c, KvType::F32, 40, 4).unwrap();
        let mut kv = KvManager::new(cache);
        let tokens: Vec<u32> = (0..23).collect();
        let a = kv.add_sequence();
        let step = |kv: &mut KvManager, seq, toks: &[u32], pos0| {
            let e = BatchEntry { seq, tokens: toks, pos0, logits: Logits::None };
            kv.prepare(&[e]).unwrap();
        };
        step(&mut kv, a, &tokens[..20], 0);
        let mut keys = Vec::new();
        kv.register_full_pages(a, &tokens[..20], &mut keys).unwrap();
        assert_eq!((keys.len(), kv.prefix_index().groups(), kv.prefix_index().len()), (5, 5, 10));
        kv.drop_out_of_window(a, &c).unwrap();
        // Layer 0 left pages 0-2 behind: cached, now reclaimable, and not held.
        assert_eq!(kv.tables(a)[0].len(), 8);
        assert_eq!((kv.prefix_index().unused(), kv.pages_held()), (3, 7));
        kv.check_invariants().unwrap();
        // Registering again changes nothing; the next full page continues the chain.
        kv.register_full_pages(a, &tokens[..20], &mut keys).unwrap();
        assert_eq!(keys.len(), 5);

        // A hit of 5 pages: the global layer takes them all, the windowed one pages 3 and 4.
        let full = kv.cached_prefix(&tokens, 5, &windows);
        assert_eq!(full.keys, keys);
        let (l0, l1) = (kv.tables(a)[0].pages().to_vec(), kv.tables(a)[1].pages().to_vec());
        assert_eq!(full.pages, vec![l0.clone(), l1.clone()]);
        assert_eq!(kv.reclaimable_among(&full), 0, "A holds every page of this hit");
        let b = kv.add_sequence();
        kv.share_cached(b, &full).unwrap();
        assert_eq!((kv.tables(b)[0].len(), kv.tables(b)[1].len()), (8, 20));
        kv.check_invariants().unwrap();

        // Pressure: layer 0's page 0 goes first (it became unused first).
        assert_eq!(kv.reserve(kv.cache().pool().free_count() + 1).unwrap(), 1);
        kv.check_invariants().unwrap();
        // A prompt of 9 tokens would need layer 0's page 0 for a hit of 1 or 2 pages: none.
        assert!(kv.cached_prefix(&tokens[..9], 2, &windows).is_empty());
        // 13 tokens: a hit of 3 pages needs layer 0's pages 1 and 2 only (still cached).
        let short = kv.cached_prefix(&tokens[..13], 3, &windows);
        assert_eq!(short.len(), 3);
        assert_eq!(short.pages[1], l1[..3].to_vec());
        assert_eq!(short.pages[0].len(), 2);
        assert_eq!(kv.reclaimable_among(&short), 2);
        // Every page goes back once the sequences end and the cache is cleared.
        kv.remove(a);
        kv.remove(b);
        assert_eq!(kv.pages_held(), 0);
        kv.check_invariants().unwrap();
        assert_eq!(kv.clear_prefix_cache().unwrap(), 9);
        assert_eq!(kv.cache().pages_in_use(), 0);
        assert!(kv.prefix_index().is_empty());
        kv.check_invariants().unwrap();
    }
}
