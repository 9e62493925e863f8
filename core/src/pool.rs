//! The page pool: a fixed number of KV pages, handed out by id, with reference counts.
//!
//! ```text
//!   storage: [PageEntry; n_pages]   (caller-provided: slice, array or Vec)
//!
//!   id:      0        1        2        3        4
//!          ┌────────┬────────┬────────┬────────┬────────┐
//!          │ Used 2 │ Free ──┼──────► │ Used 1 │ Free ∅ │      free_head = 1
//!          └────────┴────────┴ Free ──┴────────┴───▲────┘
//!                                  └───────────────┘
//! ```
//!
//! A free page stores the id of the next free page (the free list is threaded through the
//! entries themselves, as in `slab`), a used page stores its reference count (the number of
//! block tables holding it). Allocation pops the list head, freeing pushes onto it: both O(1),
//! no allocator needed.
//!
//! Invariants (checked by [`BlockPool::check_invariants`]):
//! - every page is either on the free list exactly once or used with refcount ≥ 1;
//! - `free_count + used_count == capacity`.
//!
//! Misuse (an id out of range, releasing a free page, asking for more pages than are free)
//! returns a [`PoolError`] and leaves the pool unchanged; nothing here panics.

use core::fmt;
use core::num::NonZeroU32;

/// The id of one physical page in a [`BlockPool`] (an index into its storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PageId(pub u32);

impl PageId {
    /// The page's index as `usize` (into the pool's storage and the KV slab).
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "page {}", self.0)
    }
}

/// One page's bookkeeping entry. Callers only provide storage for these
/// (`[PageEntry::VACANT; N]`, `vec![PageEntry::VACANT; n]`); [`BlockPool::new`] initialises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageEntry(Entry);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// On the free list; `next` is the following free page.
    Free { next: Option<PageId> },
    /// Held by `refcount` block tables.
    Used { refcount: NonZeroU32 },
}

impl PageEntry {
    /// A placeholder value for building storage; overwritten by [`BlockPool::new`].
    pub const VACANT: PageEntry = PageEntry(Entry::Free { next: None });
}

impl Default for PageEntry {
    fn default() -> Self {
        Self::VACANT
    }
}

/// What went wrong in a pool operation. The pool is unchanged after any error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolError {
    /// More pages were requested than are free.
    OutOfPages {
        /// Pages asked for.
        requested: usize,
        /// Pages free at the time.
        free: usize,
    },
    /// The id is not below the pool's capacity.
    InvalidPage {
        /// The offending id.
        page: PageId,
        /// Number of pages in the pool.
        capacity: usize,
    },
    /// The page is free, but the operation needs an allocated page.
    NotAllocated {
        /// The offending id.
        page: PageId,
    },
    /// The page's reference count is already `u32::MAX`.
    RefcountOverflow {
        /// The offending id.
        page: PageId,
    },
    /// The storage has more entries than page ids can name (`u32::MAX`).
    TooManyPages {
        /// Entries in the storage given to [`BlockPool::new`].
        len: usize,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PoolError::OutOfPages { requested, free } => {
                write!(f, "out of KV pages: {requested} requested, {free} free")
            }
            PoolError::InvalidPage { page, capacity } => {
                write!(f, "{page} does not exist (the pool has {capacity} pages)")
            }
            PoolError::NotAllocated { page } => write!(f, "{page} is not allocated"),
            PoolError::RefcountOverflow { page } => {
                write!(f, "{page} reference count would overflow u32")
            }
            PoolError::TooManyPages { len } => {
                write!(f, "a pool holds at most {} pages, got storage for {len}", u32::MAX)
            }
        }
    }
}

impl core::error::Error for PoolError {}

/// A broken pool invariant, found by [`BlockPool::check_invariants`] (a bug, not misuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvariantViolation {
    /// The page concerned, if one is.
    pub page: Option<PageId>,
    /// Which invariant broke.
    pub what: &'static str,
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.page {
            Some(p) => write!(f, "pool invariant broken at {p}: {}", self.what),
            None => write!(f, "pool invariant broken: {}", self.what),
        }
    }
}

impl core::error::Error for InvariantViolation {}

/// A fixed set of pages with O(1) alloc/free and per-page reference counts.
///
/// `S` is the caller's storage for the bookkeeping: `&mut [PageEntry]`, `[PageEntry; N]`
/// or (with `alloc`) `Vec<PageEntry>`. Its length is the number of pages.
#[derive(Debug)]
pub struct BlockPool<S> {
    entries: S,
    free_head: Option<PageId>,
    free: usize,
}

impl<S: AsRef<[PageEntry]> + AsMut<[PageEntry]>> BlockPool<S> {
    /// A pool whose pages are all free; `storage.len()` is the number of pages.
    /// Pages are handed out lowest id first.
    pub fn new(mut storage: S) -> Result<Self, PoolError> {
        let entries = storage.as_mut();
        let len = entries.len();
        if len > u32::MAX as usize {
            return Err(PoolError::TooManyPages { len });
        }
        for (i, e) in entries.iter_mut().enumerate() {
            let next = if i + 1 < len { Some(PageId(i as u32 + 1)) } else { None };
            *e = PageEntry(Entry::Free { next });
        }
        let free_head = if len > 0 { Some(PageId(0)) } else { None };
        Ok(BlockPool { entries: storage, free_head, free: len })
    }

    /// Total number of pages.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries.as_ref().len()
    }

    /// Pages on the free list.
    #[inline]
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// Pages held by at least one table.
    #[inline]
    pub fn used_count(&self) -> usize {
        self.capacity() - self.free
    }

    /// The reference count of `page`: 0 if it is free.
    pub fn refcount(&self, page: PageId) -> Result<u32, PoolError> {
        match self.entry(page)? {
            Entry::Free { .. } => Ok(0),
            Entry::Used { refcount } => Ok(refcount.get()),
        }
    }

    /// Takes one free page, with reference count 1.
    pub fn try_alloc(&mut self) -> Result<PageId, PoolError> {
        let Some(page) = self.free_head else {
            return Err(PoolError::OutOfPages { requested: 1, free: 0 });
        };
        let slot = &mut self.entries.as_mut()[page.index()];
        let Entry::Free { next } = slot.0 else {
            // Unreachable while the invariants hold; report rather than panic.
            return Err(PoolError::NotAllocated { page });
        };
        slot.0 = Entry::Used { refcount: NonZeroU32::MIN };
        self.free_head = next;
        self.free -= 1;
        Ok(page)
    }

    /// Fills `out` with fresh pages (reference count 1 each), all or nothing: if fewer than
    /// `out.len()` pages are free, returns [`PoolError::OutOfPages`] and takes none.
    pub fn try_alloc_many(&mut self, out: &mut [PageId]) -> Result<(), PoolError> {
        if out.len() > self.free {
            return Err(PoolError::OutOfPages { requested: out.len(), free: self.free });
        }
        for o in out.iter_mut() {
            *o = self.try_alloc()?;
        }
        Ok(())
    }

    /// Adds one holder to an allocated page; returns the new reference count.
    pub fn retain(&mut self, page: PageId) -> Result<u32, PoolError> {
        match self.entry(page)? {
            Entry::Free { .. } => Err(PoolError::NotAllocated { page }),
            Entry::Used { refcount } => {
                let rc = refcount.checked_add(1).ok_or(PoolError::RefcountOverflow { page })?;
                self.entries.as_mut()[page.index()].0 = Entry::Used { refcount: rc };
                Ok(rc.get())
            }
        }
    }

    /// Drops one holder of `page`; returns `true` if that was the last one and the page is
    /// free again.
    pub fn release(&mut self, page: PageId) -> Result<bool, PoolError> {
        match self.entry(page)? {
            Entry::Free { .. } => Err(PoolError::NotAllocated { page }),
            Entry::Used { refcount } => {
                let slot = &mut self.entries.as_mut()[page.index()];
                match NonZeroU32::new(refcount.get() - 1) {
                    Some(rc) => {
                        slot.0 = Entry::Used { refcount: rc };
                        Ok(false)
                    }
                    None => {
                        slot.0 = Entry::Free { next: self.free_head };
                        self.free_head = Some(page);
                        self.free += 1;
                        Ok(true)
                    }
                }
            }
        }
    }

    /// Checks the pool's own invariants: the free list visits each free page exactly once and
    /// nothing else, and `free_count + used_count == capacity`. O(pages).
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let entries = self.entries.as_ref();
        let n_free_entries = entries.iter().filter(|e| matches!(e.0, Entry::Free { .. })).count();
        if n_free_entries != self.free {
            return Err(InvariantViolation { page: None, what: "free count != free entries" });
        }
        // Walk the list: each step must land on a free entry, and the walk must end after
        // exactly `free` steps (so no cycles, no page twice, every free page reached).
        let mut cursor = self.free_head;
        let mut steps = 0usize;
        while let Some(page) = cursor {
            let Some(e) = entries.get(page.index()) else {
                return Err(InvariantViolation {
                    page: Some(page),
                    what: "free list id out of range",
                });
            };
            let Entry::Free { next } = e.0 else {
                return Err(InvariantViolation {
                    page: Some(page),
                    what: "used page on free list",
                });
            };
            steps += 1;
            if steps > self.free {
                return Err(InvariantViolation {
                    page: Some(page),
                    what: "free list too long (cycle?)",
                });
            }
            cursor = next;
        }
        if steps != self.free {
            return Err(InvariantViolation { page: None, what: "free list misses free pages" });
        }
        if self.free + self.used_count() != self.capacity() {
            return Err(InvariantViolation { page: None, what: "free + used != capacity" });
        }
        Ok(())
    }

    /// Checks that each page's reference count equals the number of times it occurs in
    /// `holders` (e.g. every live table's `pages()`), and that free pages are held by nobody.
    /// O(pages × held ids); meant for tests and fuzzing.
    pub fn check_holders<'h, I>(&self, holders: I) -> Result<(), InvariantViolation>
    where
        I: Iterator<Item = &'h [PageId]> + Clone,
    {
        for h in holders.clone() {
            for &p in h {
                if p.index() >= self.capacity() {
                    return Err(InvariantViolation {
                        page: Some(p),
                        what: "holder has invalid id",
                    });
                }
            }
        }
        for (i, e) in self.entries.as_ref().iter().enumerate() {
            let page = PageId(i as u32);
            let held = holders.clone().map(|h| h.iter().filter(|&&p| p == page).count()).sum();
            let rc = match e.0 {
                Entry::Free { .. } => 0,
                Entry::Used { refcount } => refcount.get() as usize,
            };
            if rc != held {
                return Err(InvariantViolation { page: Some(page), what: "refcount != holders" });
            }
        }
        Ok(())
    }

    fn entry(&self, page: PageId) -> Result<Entry, PoolError> {
        self.entries
            .as_ref()
            .get(page.index())
            .map(|e| e.0)
            .ok_or(PoolError::InvalidPage { page, capacity: self.capacity() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_roundtrip_and_lowest_first() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 3]).unwrap();
        assert_eq!(pool.try_alloc(), Ok(PageId(0)));
        assert_eq!(pool.try_alloc(), Ok(PageId(1)));
        assert_eq!(pool.retain(PageId(1)), Ok(2));
        assert_eq!(pool.release(PageId(1)), Ok(false));
        assert_eq!(pool.release(PageId(1)), Ok(true));
        assert_eq!(pool.refcount(PageId(1)), Ok(0));
        assert_eq!(pool.free_count(), 2);
        assert_eq!(pool.used_count(), 1);
        pool.check_invariants().unwrap();
        // LIFO reuse of the page just freed.
        assert_eq!(pool.try_alloc(), Ok(PageId(1)));
    }

    #[test]
    fn misuse_is_an_error_and_changes_nothing() {
        let mut storage = [PageEntry::VACANT; 2];
        let mut pool = BlockPool::new(&mut storage[..]).unwrap();
        let a = pool.try_alloc().unwrap();
        assert_eq!(pool.release(PageId(1)), Err(PoolError::NotAllocated { page: PageId(1) }));
        assert_eq!(pool.retain(PageId(1)), Err(PoolError::NotAllocated { page: PageId(1) }));
        assert_eq!(
            pool.retain(PageId(7)),
            Err(PoolError::InvalidPage { page: PageId(7), capacity: 2 })
        );
        let mut out = [PageId(0); 2];
        assert_eq!(
            pool.try_alloc_many(&mut out),
            Err(PoolError::OutOfPages { requested: 2, free: 1 })
        );
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.refcount(a), Ok(1));
        pool.check_invariants().unwrap();
        pool.try_alloc().unwrap();
        assert_eq!(pool.try_alloc(), Err(PoolError::OutOfPages { requested: 1, free: 0 }));
        pool.check_invariants().unwrap();
    }

    #[test]
    fn empty_pool_is_valid() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 0]).unwrap();
        assert!(pool.try_alloc().is_err());
        pool.check_invariants().unwrap();
    }
}
