//! Block tables: one per sequence, mapping logical pages to physical pages of a [`BlockPool`].
//!
//! ```text
//!   token position:  0 ...15 | 16 ...31 | 32 .. 36            block_size = 16, len = 37
//!   logical page:       0    |    1     |    2
//!   pages():         [ PageId(7), PageId(2), PageId(9) ]     physical ids, any order
//!                                            └─ last page: slots 0..5 filled, 5..16 free
//! ```
//!
//! Position `p` lives in logical page `p / block_size`, slot `p % block_size`.
//!
//! Sharing: [`BlockTable::fork`] makes a second table holding the same pages (each page's
//! refcount goes up). Full pages are never written again, so they stay shared for good.
//! A partly filled last page that is shared is copied on the next append (copy-on-write):
//! the table takes a fresh page, releases its hold on the shared one, and returns a
//! [`CopyOnWrite`] telling the caller to copy the filled slots in the KV storage
//! (the table never touches KV data; see [`crate::kv::KvPages::copy_page`]).
//!
//! A table does not own its pages in the Rust sense (it holds no reference to the pool):
//! give them back with [`BlockTable::free`] before dropping it, or they stay allocated.
//!
//! The page list lives in caller-chosen storage through [`PageList`]: a fixed-capacity
//! [`ArrayPageList`], a [`SlicePageList`] over a borrowed slice, or (with `alloc`) `Vec<PageId>`.

use core::fmt;

use crate::pool::{BlockPool, PageEntry, PageId, PoolError};

/// Storage for a block table's page ids.
pub trait PageList {
    /// The ids held, in logical order.
    fn as_slice(&self) -> &[PageId];
    /// The ids held, mutably (same length).
    fn as_mut_slice(&mut self) -> &mut [PageId];
    /// The most ids this list can hold.
    fn capacity(&self) -> usize;
    /// Appends an id; gives it back if the list is full.
    fn push(&mut self, page: PageId) -> Result<(), PageId>;
    /// Removes and returns the last id.
    fn pop(&mut self) -> Option<PageId>;
}

/// A page list with capacity `N` stored inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayPageList<const N: usize> {
    pages: [PageId; N],
    len: usize,
}

impl<const N: usize> Default for ArrayPageList<N> {
    fn default() -> Self {
        ArrayPageList { pages: [PageId(0); N], len: 0 }
    }
}

impl<const N: usize> PageList for ArrayPageList<N> {
    fn as_slice(&self) -> &[PageId] {
        &self.pages[..self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [PageId] {
        &mut self.pages[..self.len]
    }
    fn capacity(&self) -> usize {
        N
    }
    fn push(&mut self, page: PageId) -> Result<(), PageId> {
        match self.pages.get_mut(self.len) {
            Some(p) => {
                *p = page;
                self.len += 1;
                Ok(())
            }
            None => Err(page),
        }
    }
    fn pop(&mut self) -> Option<PageId> {
        self.len = self.len.checked_sub(1)?;
        Some(self.pages[self.len])
    }
}

/// A page list over a borrowed slice; the slice's length is the capacity.
#[derive(Debug)]
pub struct SlicePageList<'a> {
    pages: &'a mut [PageId],
    len: usize,
}

impl<'a> SlicePageList<'a> {
    /// An empty list backed by `storage` (its contents are ignored).
    pub fn new(storage: &'a mut [PageId]) -> Self {
        SlicePageList { pages: storage, len: 0 }
    }
}

impl PageList for SlicePageList<'_> {
    fn as_slice(&self) -> &[PageId] {
        &self.pages[..self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [PageId] {
        &mut self.pages[..self.len]
    }
    fn capacity(&self) -> usize {
        self.pages.len()
    }
    fn push(&mut self, page: PageId) -> Result<(), PageId> {
        match self.pages.get_mut(self.len) {
            Some(p) => {
                *p = page;
                self.len += 1;
                Ok(())
            }
            None => Err(page),
        }
    }
    fn pop(&mut self) -> Option<PageId> {
        self.len = self.len.checked_sub(1)?;
        Some(self.pages[self.len])
    }
}

#[cfg(feature = "alloc")]
impl PageList for alloc::vec::Vec<PageId> {
    fn as_slice(&self) -> &[PageId] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [PageId] {
        self
    }
    fn capacity(&self) -> usize {
        usize::MAX
    }
    fn push(&mut self, page: PageId) -> Result<(), PageId> {
        alloc::vec::Vec::push(self, page);
        Ok(())
    }
    fn pop(&mut self) -> Option<PageId> {
        alloc::vec::Vec::pop(self)
    }
}

/// Where a token's K and V go: physical page and slot within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Physical page.
    pub page: PageId,
    /// Token slot in the page, `0..block_size`.
    pub slot: usize,
}

/// A page copy the caller must perform in KV storage before writing the new token:
/// slots `0..tokens` of every layer and head, from page `from` to page `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOnWrite {
    /// The shared page (still held by other tables).
    pub from: PageId,
    /// The table's fresh private page.
    pub to: PageId,
    /// Filled slots to copy.
    pub tokens: usize,
}

/// The result of [`BlockTable::append_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the slot says where to write K/V; a CopyOnWrite must be carried out first"]
pub struct AppendOutcome {
    /// Where the new token goes.
    pub slot: Slot,
    /// A copy to do first, if the last page was shared.
    pub copy: Option<CopyOnWrite>,
}

/// What went wrong in a table operation. The table and pool are unchanged after any error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableError {
    /// The pool refused (usually [`PoolError::OutOfPages`]).
    Pool(PoolError),
    /// The page list storage is full.
    ListFull {
        /// Its capacity in pages.
        capacity: usize,
    },
    /// A block size of 0 was given.
    ZeroBlockSize,
    /// A whole page can only be added at a page boundary; the table holds `len` tokens.
    NotPageAligned {
        /// Tokens in the table.
        len: usize,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Pool(e) => write!(f, "block table: {e}"),
            TableError::ListFull { capacity } => {
                write!(f, "block table page list is full ({capacity} pages)")
            }
            TableError::ZeroBlockSize => write!(f, "block size must be at least 1"),
            TableError::NotPageAligned { len } => write!(
                f,
                "cannot add a whole page to a table of {len} tokens (not a page boundary)"
            ),
        }
    }
}

impl core::error::Error for TableError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            TableError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PoolError> for TableError {
    fn from(e: PoolError) -> Self {
        TableError::Pool(e)
    }
}

/// One sequence's map from logical pages to physical pages, plus its token count.
///
/// Invariant: `pages().len() == len().div_ceil(block_size())`, ids distinct, each held once
/// (one refcount) in the pool this table is used with.
#[derive(Clone, Debug)]
pub struct BlockTable<L> {
    pages: L,
    n_tokens: usize,
    block_size: usize,
}

impl<L: PageList> BlockTable<L> {
    /// An empty table. `pages` must be empty (ids it already holds are dropped from the list
    /// without touching the pool).
    pub fn new(block_size: usize, mut pages: L) -> Result<Self, TableError> {
        if block_size == 0 {
            return Err(TableError::ZeroBlockSize);
        }
        while pages.pop().is_some() {}
        Ok(BlockTable { pages, n_tokens: 0, block_size })
    }

    /// Tokens per page.
    #[inline]
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Tokens in the sequence.
    #[inline]
    pub fn len(&self) -> usize {
        self.n_tokens
    }

    /// Whether the sequence has no tokens.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.n_tokens == 0
    }

    /// Physical pages in logical order.
    #[inline]
    pub fn pages(&self) -> &[PageId] {
        self.pages.as_slice()
    }

    /// Where token position `pos` is stored, if `pos < len()`.
    pub fn slot(&self, pos: usize) -> Option<Slot> {
        if pos >= self.n_tokens {
            return None;
        }
        let page = *self.pages().get(pos / self.block_size)?;
        Some(Slot { page, slot: pos % self.block_size })
    }

    /// Makes room for one more token and says where it goes.
    ///
    /// Takes a fresh page when the last one is full (or there is none). If the last page is
    /// partly filled and shared with another table, copies on write: takes a fresh page,
    /// releases the shared one, and returns the copy the caller must do in KV storage.
    pub fn append_slot<S>(&mut self, pool: &mut BlockPool<S>) -> Result<AppendOutcome, TableError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let slot = self.n_tokens % self.block_size;
        if slot == 0 {
            if self.pages.as_slice().len() >= self.pages.capacity() {
                return Err(TableError::ListFull { capacity: self.pages.capacity() });
            }
            let page = pool.try_alloc()?;
            if self.pages.push(page).is_err() {
                // Capacity was checked; undo rather than leak if a PageList lies about it.
                pool.release(page)?;
                return Err(TableError::ListFull { capacity: self.pages.capacity() });
            }
            self.n_tokens += 1;
            return Ok(AppendOutcome { slot: Slot { page, slot }, copy: None });
        }
        let last_index = self.pages.as_slice().len() - 1;
        let last = self.pages.as_slice()[last_index];
        if pool.refcount(last)? > 1 {
            let fresh = pool.try_alloc()?;
            pool.release(last)?;
            self.pages.as_mut_slice()[last_index] = fresh;
            self.n_tokens += 1;
            let copy = CopyOnWrite { from: last, to: fresh, tokens: slot };
            return Ok(AppendOutcome { slot: Slot { page: fresh, slot }, copy: Some(copy) });
        }
        self.n_tokens += 1;
        Ok(AppendOutcome { slot: Slot { page: last, slot }, copy: None })
    }

    /// Appends a full page that is already allocated and holds the next `block_size`
    /// tokens of this sequence (a prefix-cache page, say), taking one more reference on it.
    ///
    /// ```text
    ///   before: [p7 p2]      len 32        after: [p7 p2 p9]   len 48
    ///                                             └ shared ┘ refcount(p9) += 1
    /// ```
    ///
    /// The table must end on a page boundary (`len() % block_size() == 0`), so the shared
    /// page is never written through this table: appends after it take a fresh page.
    /// All or nothing.
    pub fn push_shared_page<S>(
        &mut self,
        page: PageId,
        pool: &mut BlockPool<S>,
    ) -> Result<(), TableError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        if self.n_tokens % self.block_size != 0 {
            return Err(TableError::NotPageAligned { len: self.n_tokens });
        }
        if self.pages.as_slice().len() >= self.pages.capacity() {
            return Err(TableError::ListFull { capacity: self.pages.capacity() });
        }
        pool.retain(page)?;
        if self.pages.push(page).is_err() {
            pool.release(page)?;
            return Err(TableError::ListFull { capacity: self.pages.capacity() });
        }
        self.n_tokens += self.block_size;
        Ok(())
    }

    /// A new table sharing every page of this one (each page's refcount goes up by one),
    /// with its page list in `storage`. All or nothing.
    pub fn fork_into<M, S>(
        &self,
        pool: &mut BlockPool<S>,
        storage: M,
    ) -> Result<BlockTable<M>, TableError>
    where
        M: PageList,
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        let mut child = BlockTable::new(self.block_size, storage)?;
        let n = self.pages().len();
        if child.pages.capacity() < n {
            return Err(TableError::ListFull { capacity: child.pages.capacity() });
        }
        for (i, &page) in self.pages().iter().enumerate() {
            let pushed = child
                .pages
                .push(page)
                .map_err(|_| TableError::ListFull { capacity: child.pages.capacity() });
            let result = pushed.and_then(|()| pool.retain(page).map_err(TableError::from));
            if let Err(e) = result {
                // Undo the retains done so far.
                for &p in &self.pages()[..i] {
                    pool.release(p)?;
                }
                return Err(e);
            }
        }
        child.n_tokens = self.n_tokens;
        Ok(child)
    }

    /// [`fork_into`](Self::fork_into) a default-constructed page list of the same type.
    pub fn fork<S>(&self, pool: &mut BlockPool<S>) -> Result<BlockTable<L>, TableError>
    where
        L: Default,
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        self.fork_into(pool, L::default())
    }

    /// Shortens the sequence to `n_tokens` (no-op if it is not longer), releasing pages no
    /// longer needed. Slots past the new end in the kept last page are simply overwritten
    /// by later appends.
    pub fn truncate<S>(
        &mut self,
        n_tokens: usize,
        pool: &mut BlockPool<S>,
    ) -> Result<(), TableError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        if n_tokens >= self.n_tokens {
            return Ok(());
        }
        let keep = n_tokens.div_ceil(self.block_size);
        // Check first: every page to release must be allocated, so the loop below cannot
        // fail halfway (it could only if the pool was corrupted or is a different pool).
        for &p in &self.pages()[keep..] {
            if pool.refcount(p)? == 0 {
                return Err(PoolError::NotAllocated { page: p }.into());
            }
        }
        while self.pages().len() > keep {
            if let Some(p) = self.pages.pop() {
                pool.release(p)?;
            }
        }
        self.n_tokens = n_tokens;
        Ok(())
    }

    /// Gives every page back; the table is empty and reusable afterwards.
    pub fn free<S>(&mut self, pool: &mut BlockPool<S>) -> Result<(), TableError>
    where
        S: AsRef<[PageEntry]> + AsMut<[PageEntry]>,
    {
        self.truncate(0, pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Table = BlockTable<ArrayPageList<8>>;

    #[test]
    fn appends_fill_pages_in_order() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 4]).unwrap();
        let mut t = Table::new(2, ArrayPageList::default()).unwrap();
        let slots: [Slot; 3] = core::array::from_fn(|_| {
            let o = t.append_slot(&mut pool).unwrap();
            assert_eq!(o.copy, None);
            o.slot
        });
        assert_eq!(slots[0], Slot { page: PageId(0), slot: 0 });
        assert_eq!(slots[1], Slot { page: PageId(0), slot: 1 });
        assert_eq!(slots[2], Slot { page: PageId(1), slot: 0 });
        assert_eq!(t.len(), 3);
        assert_eq!(t.slot(2), Some(slots[2]));
        assert_eq!(t.slot(3), None);
        t.free(&mut pool).unwrap();
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn append_into_shared_partial_page_copies_on_write() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 4]).unwrap();
        let mut a = Table::new(4, ArrayPageList::default()).unwrap();
        for _ in 0..6 {
            let _ = a.append_slot(&mut pool).unwrap();
        }
        let mut b = a.fork(&mut pool).unwrap();
        assert_eq!(pool.refcount(PageId(1)), Ok(2));
        let o = b.append_slot(&mut pool).unwrap();
        let cow = CopyOnWrite { from: PageId(1), to: PageId(2), tokens: 2 };
        assert_eq!(o, AppendOutcome { slot: Slot { page: PageId(2), slot: 2 }, copy: Some(cow) });
        assert_eq!(pool.refcount(PageId(1)), Ok(1));
        // a is now the only holder: no copy.
        let o = a.append_slot(&mut pool).unwrap();
        assert_eq!(o.copy, None);
        assert_eq!(b.pages()[0], a.pages()[0]);
        pool.check_holders([a.pages(), b.pages()].into_iter()).unwrap();
    }

    #[test]
    fn push_shared_page_retains_and_needs_a_page_boundary() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 4]).unwrap();
        let mut a = Table::new(2, ArrayPageList::default()).unwrap();
        for _ in 0..3 {
            let _ = a.append_slot(&mut pool).unwrap();
        }
        let mut b = Table::new(2, ArrayPageList::default()).unwrap();
        b.push_shared_page(a.pages()[0], &mut pool).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(pool.refcount(a.pages()[0]), Ok(2));
        // The next append takes a fresh page, never writing into the shared one.
        let o = b.append_slot(&mut pool).unwrap();
        assert_eq!((o.slot.slot, o.copy), (0, None));
        assert_ne!(o.slot.page, a.pages()[0]);
        assert_eq!(
            b.push_shared_page(a.pages()[1], &mut pool),
            Err(TableError::NotPageAligned { len: 3 })
        );
        assert_eq!(
            b.truncate(2, &mut pool).and_then(|()| b.push_shared_page(PageId(3), &mut pool)),
            Err(TableError::Pool(PoolError::NotAllocated { page: PageId(3) }))
        );
        assert_eq!(b.len(), 2);
        pool.check_holders([a.pages(), b.pages()].into_iter()).unwrap();
        a.free(&mut pool).unwrap();
        b.free(&mut pool).unwrap();
        assert_eq!(pool.free_count(), 4);
        pool.check_invariants().unwrap();
    }

    #[test]
    fn exhaustion_changes_nothing() {
        let mut pool = BlockPool::new([PageEntry::VACANT; 1]).unwrap();
        let mut a = Table::new(1, ArrayPageList::default()).unwrap();
        let _ = a.append_slot(&mut pool).unwrap();
        let err = a.append_slot(&mut pool).unwrap_err();
        assert_eq!(err, TableError::Pool(PoolError::OutOfPages { requested: 1, free: 0 }));
        assert_eq!(a.len(), 1);
        assert_eq!(a.pages(), &[PageId(0)]);
        let err = a.fork_into(&mut pool, ArrayPageList::<0>::default()).unwrap_err();
        assert_eq!(err, TableError::ListFull { capacity: 0 });
        let mut small = BlockTable::new(1, ArrayPageList::<0>::default()).unwrap();
        assert_eq!(small.append_slot(&mut pool).unwrap_err(), TableError::ListFull { capacity: 0 });
        assert_eq!(pool.refcount(PageId(0)), Ok(1));
    }
}
