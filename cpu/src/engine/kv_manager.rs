//! The engine's KV side: the page pool and page storage ([`KvCache`]) and the prefix index,
//! kept in step. Every page operation of the engine goes through here; the pool itself is
//! reachable only read-only ([`KvManager::cache`]).
//!
//! ```text
//!   Engine ──reserve / prepare / fork / release / evict / register_full_pages──► KvManager
//!                                                                      ├─ KvCache (pool + pages)
//!   Llama::forward(manager.forward(model, &batch)) ◄── Batch           └─ PrefixIndex
//! ```
//!
//! A page's refcount is the number of block tables holding it, plus one if the prefix index
//! caches it; a cached page no table holds is *reclaimable* (free on demand, least recently
//! used first). The sequences' block tables are the caller's, passed in by reference.

use pagoda_core::pool::PageId;
use pagoda_core::table::TableError;

use super::prefix_index::{PrefixIndex, PrefixKey};
use super::EngineError;
use crate::model::{
    drop_out_of_window, Batch, Evictor, ForwardScratch, KvCache, Llama, LlamaConfig, ModelError,
    SeqItem, SeqTable,
};

/// Pool, page storage and prefix index (see the module docs).
#[derive(Debug)]
pub struct KvManager {
    cache: KvCache,
    index: PrefixIndex,
}

fn pool_error(e: pagoda_core::pool::PoolError) -> EngineError {
    EngineError::Table(TableError::Pool(e))
}

impl KvManager {
    /// A manager over `cache`, with an empty prefix index.
    pub fn new(cache: KvCache) -> Self {
        KvManager { cache, index: PrefixIndex::new() }
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

    /// An empty block table for this pool.
    pub fn new_table(&self) -> SeqTable {
        self.cache.new_table()
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
    pub fn reserve(&mut self, pages: usize) -> Result<usize, EngineError> {
        let mut reclaimed = 0;
        while self.cache.pool().free_count() < pages {
            match self.index.evict_lru(self.cache.pool_mut()).map_err(pool_error)? {
                Some(_) => reclaimed += 1,
                None => break,
            }
        }
        Ok(reclaimed)
    }

    /// Takes a slot for every new token of `items` ([`KvCache::prepare`]: all or nothing).
    pub fn prepare(&mut self, items: &mut [SeqItem<'_>]) -> Result<Batch, ModelError> {
        self.cache.prepare(items)
    }

    /// Runs a prepared batch through `model`; on error the batch is rolled back (every
    /// table of `items` back to its old length) and the error returned.
    pub fn forward(
        &mut self,
        model: &Llama,
        items: &mut [SeqItem<'_>],
        batch: Batch,
        scratch: &mut ForwardScratch,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        match model.forward(&mut self.cache, &batch, scratch) {
            Ok(logits) => Ok(logits),
            Err(e) => {
                self.cache.rollback(items, batch);
                Err(e)
            }
        }
    }

    /// New tables sharing every page of `tables` (copy-on-write on the first write).
    pub fn fork(&mut self, tables: &[SeqTable]) -> Result<Vec<SeqTable>, EngineError> {
        tables
            .iter()
            .map(|t| t.fork(self.cache.pool_mut()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(EngineError::Table)
    }

    /// Gives every page of `tables` back; a cached page nobody else holds becomes
    /// reclaimable, tail pages first (they are the least likely to be shared).
    pub fn release(&mut self, tables: &mut [SeqTable]) {
        for table in tables {
            let pages = table.pages().to_vec();
            self.cache.free(table);
            for &p in pages.iter().rev() {
                self.index.released(p, self.cache.pool());
            }
        }
    }

    /// Evicts pages of `tables` as `evictor`'s policy says before their next step; pages
    /// another table or the prefix index also holds stay with them. Returns how many pages
    /// the tables dropped.
    pub fn evict(
        &mut self,
        evictor: &mut Evictor,
        tables: &mut [SeqTable],
    ) -> Result<usize, EngineError> {
        let dropped = evictor.evict_pages(&mut self.cache, tables)?;
        for &p in &dropped {
            self.index.released(p, self.cache.pool());
        }
        Ok(dropped.len())
    }

    /// Sliding-window layers give back the pages their window has left
    /// ([`drop_out_of_window`]).
    pub fn drop_out_of_window(
        &mut self,
        tables: &mut [SeqTable],
        config: &LlamaConfig,
    ) -> Result<(), EngineError> {
        for p in drop_out_of_window(&mut self.cache, tables, config)? {
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

    /// Starts `table` (empty) with the cached pages `hits`, shared with the index.
    pub fn share_cached(
        &mut self,
        table: &mut SeqTable,
        hits: &[(PrefixKey, PageId)],
    ) -> Result<(), EngineError> {
        for &(_, page) in hits {
            self.index.acquire(page);
            table.push_shared_page(page, self.cache.pool_mut()).map_err(EngineError::Table)?;
        }
        Ok(())
    }

    /// Caches the full pages of `table` (holding `tokens`) not yet in the index, continuing
    /// the key chain `keys` (one key per page cached so far).
    pub fn register_full_pages(
        &mut self,
        table: &SeqTable,
        tokens: &[u32],
        keys: &mut Vec<PrefixKey>,
    ) -> Result<(), EngineError> {
        let bs = self.block_size();
        let full = table.len() / bs;
        for j in keys.len()..full {
            let parent = j.checked_sub(1).map(|p| keys[p]);
            let page = table.pages()[j];
            let key = self
                .index
                .insert(parent, &tokens[j * bs..(j + 1) * bs], page, self.cache.pool_mut())
                .map_err(pool_error)?;
            keys.push(key);
        }
        Ok(())
    }

    /// Gives back every cached page nobody uses; returns how many.
    pub fn clear_prefix_cache(&mut self) -> Result<usize, EngineError> {
        self.index.clear_unused(self.cache.pool_mut()).map_err(pool_error)
    }

    /// Checks the pool's invariants and that every page's refcount equals the number of
    /// its holders: the page lists `tables` (every sequence's) and the prefix index.
    pub fn check_invariants<'a>(
        &self,
        tables: impl Iterator<Item = &'a [PageId]>,
    ) -> Result<(), EngineError> {
        let pool = self.cache.pool();
        pool.check_invariants()?;
        let cached = self.index.pages();
        let mut holders: Vec<&[PageId]> = tables.collect();
        holders.push(&cached);
        pool.check_holders(holders.iter().copied())?;
        Ok(())
    }
}
