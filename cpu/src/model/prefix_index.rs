//! The prefix index: which pool pages already hold the K/V of which token prefixes, so a
//! new sequence starting with the same tokens reuses them instead of recomputing them.
//!
//! ```text
//!   tokens:  | page 0 tokens | page 1 tokens | page 2 tok… (partial: never cached)
//!   keys:      k0 = H(∅, t0)   k1 = H(k0, t1)
//!   index:     k0 → [p7]       k1 → [p3]             one all-layer page per entry
//!      or      k0 → [p7 p40 …] k1 → [p3 p41 …]       one single-layer page per table
//!                                                    (+ LRU of cached pages no table holds)
//! ```
//!
//! Only full pages are cached: a full page is never written again (tables append into a
//! fresh page), so its contents are a pure function of the tokens up to its end, which the
//! chained key names. An entry also keeps its parent key and its tokens, and a lookup
//! compares them, so a 64-bit key collision cannot hand out the wrong page (two different
//! prefixes would have to collide on the parent key as well: a 2⁻⁶⁴ event, accepted).
//!
//! **Groups.** An entry holds a *group* of pages: the page of that prefix position in each
//! of a sequence's block tables, in table order. With all-layer pages a sequence has one
//! table, so a group is one page; with single-layer pages (a model with sliding-window
//! layers) it has one table per layer, and a group is one page per layer. A slot is empty
//! once its page was reclaimed: the index does not know which tables need which pages (a
//! windowed layer needs only the last pages of a hit, see
//! [`KvManager::cached_prefix`](super::KvManager::cached_prefix)); it hands out what it has.
//!
//! **Ownership.** The index holds one pool reference on every page of every group (it is a
//! holder in [`BlockPool::check_holders`]'s sense), so a table dropping a cached page (a
//! windowed layer leaving its window behind, an eviction) does not free it. Reclaiming is
//! per page: a cached page no table holds (refcount 1) is *unused* and sits on an LRU list,
//! in the order it became unused, until the pool needs a page: then
//! [`PrefixIndex::evict_lru`] drops the least recently used one from its group (and the
//! group once it is empty). So the old pages a windowed layer left while its sequence runs
//! are reclaimable from the moment the layer lets go of them, before the group's other
//! pages. Pool, tables and index are three separate types; the engine keeps them in step.
//!
//! **Invariants** ([`PrefixIndex::check`]): every cached page is in exactly one group slot
//! and holds one reference of the index; a cached page is on the LRU list iff its refcount
//! is 1; no group is empty.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use pagoda_core::pool::{BlockPool, PageEntry, PageId, PoolError};

/// The chained key of one full page: `hash(parent key, the page's token ids)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixKey(pub u64);

/// One cached prefix position, as [`PrefixIndex::longest_prefix`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedGroup {
    /// Its chained key.
    pub key: PrefixKey,
    /// Its page in each table slot, in table order (`None`: that page was reclaimed).
    pub pages: Vec<Option<PageId>>,
}

#[derive(Debug)]
struct Entry {
    /// One page per table slot; `None` once reclaimed. Never all `None` (the entry goes).
    pages: Box<[Option<PageId>]>,
    parent: Option<PrefixKey>,
    tokens: Box<[u32]>,
}

/// Chained page keys → cached page groups, plus the LRU list of cached pages nobody uses.
#[derive(Debug, Default)]
pub struct PrefixIndex {
    entries: HashMap<PrefixKey, Entry>,
    /// Every cached page: its group's key and its slot in the group.
    by_page: HashMap<PageId, (PrefixKey, usize)>,
    /// Unused cached pages → the tick they became unused at (their key in `lru`).
    unused_since: HashMap<PageId, u64>,
    /// Unused cached pages by the time they became unused, oldest first.
    lru: BTreeMap<u64, PageId>,
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

    /// Cached pages (every page of every group).
    pub fn len(&self) -> usize {
        self.by_page.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Cached prefix positions (groups).
    pub fn groups(&self) -> usize {
        self.entries.len()
    }

    /// Cached pages no table holds (reclaimable).
    pub fn unused(&self) -> usize {
        self.lru.len()
    }

    /// Whether `page` is cached and no table holds it.
    pub fn is_unused(&self, page: PageId) -> bool {
        self.unused_since.contains_key(&page)
    }

    /// Whether `page` is cached (the index holds one pool reference on it).
    pub fn contains(&self, page: PageId) -> bool {
        self.by_page.contains_key(&page)
    }

    /// Every cached page (each holds one pool reference of the index).
    pub fn pages(&self) -> Vec<PageId> {
        self.by_page.keys().copied().collect()
    }

    /// The group cached for `tokens` after the page keyed `parent`: its key and its pages.
    pub fn get(&self, parent: Option<PrefixKey>, tokens: &[u32]) -> Option<CachedGroup> {
        let key = Self::key(parent, tokens);
        let e = self.entries.get(&key)?;
        (e.parent == parent && *e.tokens == *tokens)
            .then(|| CachedGroup { key, pages: e.pages.to_vec() })
    }

    /// The cached groups of the longest cached prefix of `tokens`, page by page, at most
    /// `max_pages` of them (some of their slots may be empty). Does not change anything
    /// (see [`acquire`](Self::acquire)).
    pub fn longest_prefix(
        &self,
        tokens: &[u32],
        block_size: usize,
        max_pages: usize,
    ) -> Vec<CachedGroup> {
        let mut found = Vec::new();
        let mut parent = None;
        if block_size == 0 {
            return found;
        }
        for chunk in tokens.chunks_exact(block_size).take(max_pages) {
            let Some(group) = self.get(parent, chunk) else { break };
            parent = Some(group.key);
            found.push(group);
        }
        found
    }

    /// Caches `pages` (one per table slot, each a full page holding `tokens` after the page
    /// keyed `parent`), taking one pool reference on each. Returns the group's key. If that
    /// prefix is already cached (two sequences computed it independently), one of the pages
    /// is already cached, or `pages` is empty, nothing changes.
    pub fn insert<S>(
        &mut self,
        parent: Option<PrefixKey>,
        tokens: &[u32],
        pages: &[PageId],
        pool: &mut BlockPool<S>,
    ) -> Result<PrefixKey, PoolError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let key = Self::key(parent, tokens);
        if pages.is_empty()
            || self.entries.contains_key(&key)
            || pages.iter().any(|p| self.by_page.contains_key(p))
            || (1..pages.len()).any(|i| pages[..i].contains(&pages[i]))
        {
            return Ok(key);
        }
        for (i, &page) in pages.iter().enumerate() {
            if let Err(e) = pool.retain(page) {
                for &p in &pages[..i] {
                    let _ = pool.release(p);
                }
                return Err(e);
            }
        }
        for (slot, &page) in pages.iter().enumerate() {
            self.by_page.insert(page, (key, slot));
        }
        let pages = pages.iter().map(|&p| Some(p)).collect();
        self.entries.insert(key, Entry { pages, parent, tokens: tokens.into() });
        Ok(key)
    }

    /// A table is about to hold `page` (a prefix hit): it is no longer reclaimable.
    pub fn acquire(&mut self, page: PageId) {
        if let Some(t) = self.unused_since.remove(&page) {
            self.lru.remove(&t);
        }
    }

    /// A table just let go of `page`: if it is cached and the index is now its only holder,
    /// it goes to the back of the LRU list (reclaimed last).
    pub fn released<S>(&mut self, page: PageId, pool: &BlockPool<S>)
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        if !self.by_page.contains_key(&page) || self.unused_since.contains_key(&page) {
            return;
        }
        if pool.refcount(page) == Ok(1) {
            self.tick += 1;
            self.unused_since.insert(page, self.tick);
            self.lru.insert(self.tick, page);
        }
    }

    /// Forgets the least recently used unused page (emptying its group's slot, and
    /// forgetting the group once no slot is left) and gives it back to the pool; returns it
    /// (now free), or `None` if every cached page is in use.
    pub fn evict_lru<S>(&mut self, pool: &mut BlockPool<S>) -> Result<Option<PageId>, PoolError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let Some((&tick, &page)) = self.lru.iter().next() else { return Ok(None) };
        pool.release(page)?;
        self.lru.remove(&tick);
        self.unused_since.remove(&page);
        if let Some((key, slot)) = self.by_page.remove(&page) {
            if let Some(e) = self.entries.get_mut(&key) {
                if let Some(s) = e.pages.get_mut(slot) {
                    *s = None;
                }
                if e.pages.iter().all(Option::is_none) {
                    self.entries.remove(&key);
                }
            }
        }
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

    /// Checks the invariants of the module docs against `pool`; the error says which one
    /// fails.
    pub fn check<S>(&self, pool: &BlockPool<S>) -> Result<(), String>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let mut slots = 0;
        for (key, e) in &self.entries {
            if e.pages.iter().all(Option::is_none) {
                return Err(format!("the group of {key:?} is empty"));
            }
            for (slot, page) in e.pages.iter().enumerate() {
                let Some(page) = page else { continue };
                slots += 1;
                if self.by_page.get(page) != Some(&(*key, slot)) {
                    return Err(format!("page {page:?} of {key:?} slot {slot} is not indexed"));
                }
            }
        }
        if slots != self.by_page.len() {
            return Err(format!(
                "{} cached pages indexed, {slots} in the groups",
                self.by_page.len()
            ));
        }
        if self.unused_since.len() != self.lru.len() {
            return Err("the LRU list and its page map disagree".into());
        }
        for (&page, &tick) in &self.unused_since {
            if self.lru.get(&tick) != Some(&page) {
                return Err(format!("unused page {page:?} is not on the LRU list"));
            }
        }
        for &page in self.by_page.keys() {
            let rc = pool.refcount(page).map_err(|e| format!("cached page {page:?}: {e}"))?;
            if (rc == 1) != self.unused_since.contains_key(&page) {
                return Err(format!(
                    "cached page {page:?} has refcount {rc} but is {}on the LRU list",
                    if rc == 1 { "not " } else { "" }
                ));
            }
        }
        Ok(())
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
        let ka = idx.insert(None, &toks[0..2], &[a], &mut pool).unwrap();
        let kb = idx.insert(Some(ka), &toks[2..4], &[b], &mut pool).unwrap();
        assert_eq!(pool.refcount(a), Ok(2));
        let group = |key, p| CachedGroup { key, pages: vec![Some(p)] };
        assert_eq!(idx.longest_prefix(&toks, 2, 9), vec![group(ka, a), group(kb, b)]);
        assert_eq!(idx.longest_prefix(&toks, 2, 1), vec![group(ka, a)]);
        // Same tokens after a different parent: no hit.
        assert_eq!(idx.get(None, &toks[2..4]), None);
        assert_eq!(idx.longest_prefix(&[1, 9, 3, 4], 2, 9), vec![]);
        idx.check(&pool).unwrap();
        // The sequences let go: b first (tail), then a; eviction follows that order.
        pool.release(b).unwrap();
        idx.released(b, &pool);
        pool.release(a).unwrap();
        idx.released(a, &pool);
        assert_eq!(idx.unused(), 2);
        idx.check(&pool).unwrap();
        idx.acquire(a);
        pool.retain(a).unwrap();
        assert_eq!(idx.evict_lru(&mut pool), Ok(Some(b)));
        assert_eq!(pool.refcount(b), Ok(0));
        assert_eq!(idx.evict_lru(&mut pool), Ok(None), "a is in use");
        pool.check_holders([&[a][..], &idx.pages()[..]].into_iter()).unwrap();
        idx.check(&pool).unwrap();
        pool.release(a).unwrap();
        idx.released(a, &pool);
        assert_eq!(idx.clear_unused(&mut pool), Ok(1));
        assert!(idx.is_empty());
        assert_eq!(pool.free_count(), 4);
        pool.check_invariants().unwrap();
    }

    /// Groups of three pages (one per table): a table letting go of its page makes that page
    /// alone reclaimable; the group stays (with an empty slot) until its last page goes.
    #[test]
    fn groups_are_reclaimed_page_by_page() {
        let mut pool = BlockPool::new(vec![PageEntry::VACANT; 8]).unwrap();
        let mut idx = PrefixIndex::new();
        let g0: Vec<PageId> = (0..3).map(|_| pool.try_alloc().unwrap()).collect();
        let g1: Vec<PageId> = (0..3).map(|_| pool.try_alloc().unwrap()).collect();
        let toks = [1u32, 2, 3, 4];
        let k0 = idx.insert(None, &toks[0..2], &g0, &mut pool).unwrap();
        let k1 = idx.insert(Some(k0), &toks[2..4], &g1, &mut pool).unwrap();
        assert_eq!((idx.len(), idx.groups()), (6, 2));
        // Inserting again, or a group with an already cached page, changes nothing.
        assert_eq!(idx.insert(None, &toks[0..2], &g1, &mut pool), Ok(k0));
        assert_eq!(
            idx.insert(None, &[9, 9], &[g0[0], g1[1]], &mut pool),
            Ok(PrefixIndex::key(None, &[9, 9]))
        );
        assert_eq!(idx.len(), 6);
        assert!(g0.iter().chain(&g1).all(|&p| pool.refcount(p) == Ok(2)));
        idx.check(&pool).unwrap();
        // Table 0 (a windowed layer) leaves page 0 behind while the sequence runs.
        pool.release(g0[0]).unwrap();
        idx.released(g0[0], &pool);
        assert_eq!(idx.unused(), 1);
        assert!(idx.is_unused(g0[0]) && !idx.is_unused(g0[1]));
        idx.check(&pool).unwrap();
        // Under pressure only that page goes; the group keeps its other slots.
        assert_eq!(idx.evict_lru(&mut pool), Ok(Some(g0[0])));
        assert_eq!(idx.evict_lru(&mut pool), Ok(None));
        let hit = idx.longest_prefix(&toks, 2, 9);
        assert_eq!(hit.len(), 2);
        assert_eq!((hit[0].key, hit[1].key), (k0, k1));
        assert_eq!(hit[0].pages, vec![None, Some(g0[1]), Some(g0[2])]);
        assert_eq!(hit[1].pages, g1.iter().map(|&p| Some(p)).collect::<Vec<_>>());
        idx.check(&pool).unwrap();
        // The sequence ends: every other page becomes unused, and goes; so do the groups.
        for &p in g1.iter().rev().chain(&g0[1..]) {
            pool.release(p).unwrap();
            idx.released(p, &pool);
        }
        assert_eq!(idx.unused(), 5);
        assert_eq!(idx.clear_unused(&mut pool), Ok(5));
        assert!(idx.is_empty() && idx.pages().is_empty());
        assert_eq!(pool.free_count(), 8);
        idx.check(&pool).unwrap();
        pool.check_invariants().unwrap();
    }
}
