//! The prefix index: which pool pages already hold the K/V of which token prefixes, so a
//! new sequence starting with the same tokens reuses them instead of recomputing them.
//!
//! ```text
//!   tokens:  | page 0 tokens | page 1 tokens | page 2 tok… (partial: never cached)
//!   keys:      k0 = H(∅, t0)   k1 = H(k0, t1)
//!   index:     k0 → PageId(7)  k1 → PageId(3)       (+ LRU of pages no sequence holds)
//! ```
//!
//! Only full pages are cached: a full page is never written again (tables append into a
//! fresh page), so its contents are a pure function of the tokens up to its end, which the
//! chained key names. An entry also keeps its parent key and its tokens, and a lookup
//! compares them, so a 64-bit key collision cannot hand out the wrong page (two different
//! prefixes would have to collide on the parent key as well: a 2⁻⁶⁴ event, accepted).
//!
//! Ownership: the index holds one pool reference on every cached page (it is a holder in
//! [`BlockPool::check_holders`]'s sense). A cached page that no sequence holds has
//! refcount 1; it stays cached, on an LRU list, until the pool needs a page: then
//! [`PrefixIndex::evict_lru`] drops the least recently used one. Pool, tables and index are
//! three separate types; the engine keeps them in step.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use pagoda_core::pool::{BlockPool, PageEntry, PageId, PoolError};

/// The chained key of one full page: `hash(parent key, the page's token ids)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixKey(pub u64);

#[derive(Debug)]
struct Entry {
    page: PageId,
    parent: Option<PrefixKey>,
    tokens: Box<[u32]>,
    /// `Some(tick)` while no sequence holds the page (it is on the LRU list).
    unused_since: Option<u64>,
}

/// Chained page keys → cached pages, plus the LRU list of cached pages nobody uses.
#[derive(Debug, Default)]
pub struct PrefixIndex {
    entries: HashMap<PrefixKey, Entry>,
    by_page: HashMap<PageId, PrefixKey>,
    /// Unused cached pages by the time they became unused, oldest first.
    lru: BTreeMap<u64, PrefixKey>,
    tick: u64,
}

impl PrefixIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key of a full page holding `tokens`, following the page keyed `parent`
    /// (`None` for a sequence's first page).
    pub fn key(parent: Option<PrefixKey>, tokens: &[u32]) -> PrefixKey {
        let mut h = DefaultHasher::new();
        parent.map(|k| k.0).hash(&mut h);
        tokens.hash(&mut h);
        PrefixKey(h.finish())
    }

    /// Cached pages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached pages no sequence holds (reclaimable).
    pub fn unused(&self) -> usize {
        self.lru.len()
    }

    /// Whether `page` is cached and no sequence holds it.
    pub fn is_unused(&self, page: PageId) -> bool {
        self.by_page
            .get(&page)
            .and_then(|k| self.entries.get(k))
            .is_some_and(|e| e.unused_since.is_some())
    }

    /// Whether `page` is cached (the index holds one pool reference on it).
    pub fn contains(&self, page: PageId) -> bool {
        self.by_page.contains_key(&page)
    }

    /// Every cached page (each holds one pool reference of the index).
    pub fn pages(&self) -> Vec<PageId> {
        self.entries.values().map(|e| e.page).collect()
    }

    /// The page cached for `tokens` after the page keyed `parent`, with its key.
    pub fn get(&self, parent: Option<PrefixKey>, tokens: &[u32]) -> Option<(PrefixKey, PageId)> {
        let key = Self::key(parent, tokens);
        let e = self.entries.get(&key)?;
        (e.parent == parent && *e.tokens == *tokens).then_some((key, e.page))
    }

    /// The cached pages of the longest cached prefix of `tokens`, page by page, at most
    /// `max_pages` of them. Does not change anything (see [`acquire`](Self::acquire)).
    pub fn longest_prefix(
        &self,
        tokens: &[u32],
        block_size: usize,
        max_pages: usize,
    ) -> Vec<(PrefixKey, PageId)> {
        let mut found = Vec::new();
        let mut parent = None;
        for chunk in tokens.chunks_exact(block_size).take(max_pages) {
            let Some((key, page)) = self.get(parent, chunk) else { break };
            found.push((key, page));
            parent = Some(key);
        }
        found
    }

    /// Caches `page`, a full page holding `tokens` after the page keyed `parent`, taking
    /// one pool reference on it. Returns the page's key. If that prefix is already cached
    /// (two sequences computed it independently) or the page is already cached, nothing
    /// changes.
    pub fn insert<S>(
        &mut self,
        parent: Option<PrefixKey>,
        tokens: &[u32],
        page: PageId,
        pool: &mut BlockPool<S>,
    ) -> Result<PrefixKey, PoolError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let key = Self::key(parent, tokens);
        if self.entries.contains_key(&key) || self.by_page.contains_key(&page) {
            return Ok(key);
        }
        pool.retain(page)?;
        let entry = Entry { page, parent, tokens: tokens.into(), unused_since: None };
        self.entries.insert(key, entry);
        self.by_page.insert(page, key);
        Ok(key)
    }

    /// A sequence is about to hold `page` (a prefix hit): it is no longer reclaimable.
    pub fn acquire(&mut self, page: PageId) {
        if let Some(e) = self.by_page.get(&page).and_then(|k| self.entries.get_mut(k)) {
            if let Some(t) = e.unused_since.take() {
                self.lru.remove(&t);
            }
        }
    }

    /// A sequence just let go of `page`: if it is cached and the index is now its only
    /// holder, it goes to the back of the LRU list (reclaimed last).
    pub fn released<S>(&mut self, page: PageId, pool: &BlockPool<S>)
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let Some(&key) = self.by_page.get(&page) else { return };
        let Some(e) = self.entries.get_mut(&key) else { return };
        if e.unused_since.is_none() && pool.refcount(page) == Ok(1) {
            self.tick += 1;
            e.unused_since = Some(self.tick);
            self.lru.insert(self.tick, key);
        }
    }

    /// Forgets the least recently used unused page and gives it back to the pool; returns
    /// it (now free), or `None` if every cached page is in use.
    pub fn evict_lru<S>(&mut self, pool: &mut BlockPool<S>) -> Result<Option<PageId>, PoolError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let Some((&tick, &key)) = self.lru.iter().next() else { return Ok(None) };
        let page = self.entries.get(&key).map(|e| e.page);
        let Some(page) = page else {
            self.lru.remove(&tick);
            return Ok(None);
        };
        pool.release(page)?;
        self.lru.remove(&tick);
        self.entries.remove(&key);
        self.by_page.remove(&page);
        Ok(Some(page))
    }

    /// Evicts every unused page; returns how many were given back.
    pub fn clear_unused<S>(&mut self, pool: &mut BlockPool<S>) -> Result<usize, PoolError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let mut n = 0;
        while self.evict_lru(pool)?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_lookup_lru_and_eviction() {
        let mut pool = BlockPool::new(vec![PageEntry::VACANT; 4]).unwrap();
        let mut idx = PrefixIndex::new();
        let (a, b) = (pool.try_alloc().unwrap(), pool.try_alloc().unwrap());
        let toks = [1u32, 2, 3, 4, 5, 6, 7];
        let ka = idx.insert(None, &toks[0..2], a, &mut pool).unwrap();
        let kb = idx.insert(Some(ka), &toks[2..4], b, &mut pool).unwrap();
        assert_eq!(pool.refcount(a), Ok(2));
        assert_eq!(idx.longest_prefix(&toks, 2, 9), vec![(ka, a), (kb, b)]);
        assert_eq!(idx.longest_prefix(&toks, 2, 1), vec![(ka, a)]);
        // Same tokens after a different parent: no hit.
        assert_eq!(idx.get(None, &toks[2..4]), None);
        assert_eq!(idx.longest_prefix(&[1, 9, 3, 4], 2, 9), vec![]);
        // The sequences let go: b first (tail), then a; eviction follows that order.
        pool.release(b).unwrap();
        idx.released(b, &pool);
        pool.release(a).unwrap();
        idx.released(a, &pool);
        assert_eq!(idx.unused(), 2);
        idx.acquire(a);
        pool.retain(a).unwrap();
        assert_eq!(idx.evict_lru(&mut pool), Ok(Some(b)));
        assert_eq!(pool.refcount(b), Ok(0));
        assert_eq!(idx.evict_lru(&mut pool), Ok(None), "a is in use");
        pool.check_holders([&[a][..], &idx.pages()[..]].into_iter()).unwrap();
        pool.release(a).unwrap();
        idx.released(a, &pool);
        assert_eq!(idx.clear_unused(&mut pool), Ok(1));
        assert!(idx.is_empty());
        assert_eq!(pool.free_count(), 4);
        pool.check_invariants().unwrap();
    }
}
