//! Drives a page pool and several block tables with arbitrary operation sequences, asserting
//! the pool's invariants (free list sound, refcount = holders, free + used = total) after every
//! operation, and that failed operations change nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pagoda_core::pool::{BlockPool, PageEntry, PageId};
use pagoda_core::table::{ArrayPageList, BlockTable};

const MAX_PAGES: usize = 64;
const MAX_TABLES: usize = 8;
/// Small on purpose: the fuzzer should hit "page list full" as well as "pool empty".
const LIST_CAPACITY: usize = 24;

type Table = BlockTable<ArrayPageList<LIST_CAPACITY>>;

#[derive(Arbitrary, Debug)]
enum Op {
    New,
    Fork(u8),
    Append(u8, u8),
    Truncate(u8, u8),
    Free(u8),
    AllocMany(u8),
    /// Raw pool misuse with arbitrary ids: must be an error or a balanced retain/release.
    Retain(u32),
    Release(u32),
}

#[derive(Arbitrary, Debug)]
struct Input {
    n_pages: u8,
    block_size: u8,
    ops: Vec<Op>,
}

fn refcounts(pool: &BlockPool<&mut [PageEntry]>) -> [u32; MAX_PAGES] {
    core::array::from_fn(|i| pool.refcount(PageId(i as u32)).unwrap_or(u32::MAX))
}

fuzz_target!(|input: Input| {
    let n_pages = usize::from(input.n_pages) % (MAX_PAGES + 1);
    let block_size = usize::from(input.block_size % 8) + 1;
    let mut storage = [PageEntry::VACANT; MAX_PAGES];
    let mut pool = BlockPool::new(&mut storage[..n_pages]).unwrap();
    let mut tables: Vec<Table> = Vec::new();

    for op in input.ops {
        match op {
            Op::New => {
                if tables.len() < MAX_TABLES {
                    tables.push(Table::new(block_size, ArrayPageList::default()).unwrap());
                }
            }
            Op::Fork(i) => {
                if !tables.is_empty() && tables.len() < MAX_TABLES {
                    let parent = &tables[usize::from(i) % tables.len()];
                    let child = parent.fork(&mut pool).unwrap();
                    assert_eq!(child.pages(), parent.pages());
                    tables.push(child);
                }
            }
            Op::Append(i, n) => {
                if tables.is_empty() {
                    continue;
                }
                let k = usize::from(i) % tables.len();
                let t = &mut tables[k];
                for _ in 0..n % 32 {
                    let (len, pages, free) = (t.len(), t.pages().to_vec(), pool.free_count());
                    match t.append_slot(&mut pool) {
                        Ok(o) => {
                            assert_eq!(t.len(), len + 1);
                            assert_eq!(t.slot(len), Some(o.slot));
                            if let Some(cow) = o.copy {
                                assert_eq!(cow.tokens, len % block_size);
                                assert_eq!(Some(&cow.from), pages.last());
                            }
                        }
                        Err(_) => {
                            assert_eq!(t.len(), len);
                            assert_eq!(t.pages(), &pages[..]);
                            assert_eq!(pool.free_count(), free);
                            break;
                        }
                    }
                }
            }
            Op::Truncate(i, n) => {
                if !tables.is_empty() {
                    let k = usize::from(i) % tables.len();
                    tables[k].truncate(usize::from(n), &mut pool).unwrap();
                }
            }
            Op::Free(i) => {
                if !tables.is_empty() {
                    let mut t = tables.swap_remove(usize::from(i) % tables.len());
                    t.free(&mut pool).unwrap();
                }
            }
            Op::AllocMany(n) => {
                let mut out = [PageId(0); 256];
                let out = &mut out[..usize::from(n)];
                let (before, free) = (refcounts(&pool), pool.free_count());
                match pool.try_alloc_many(out) {
                    Ok(()) => {
                        for &p in out.iter() {
                            assert!(pool.release(p).unwrap());
                        }
                    }
                    Err(_) => {
                        assert!(out.len() > free);
                        assert_eq!(refcounts(&pool), before);
                    }
                }
            }
            Op::Retain(id) => {
                let before = refcounts(&pool);
                if pool.retain(PageId(id)).is_ok() {
                    assert!(!pool.release(PageId(id)).unwrap());
                }
                assert_eq!(refcounts(&pool), before);
            }
            Op::Release(id) => {
                // Releasing a page nobody outside the tables holds would break the tables'
                // holds; only free (unheld) ids may be probed, and they must be refused.
                let id = PageId(id);
                if pool.refcount(id).map_or(true, |rc| rc == 0) {
                    assert!(pool.release(id).is_err());
                }
            }
        }
        pool.check_invariants().unwrap();
        pool.check_holders(tables.iter().map(|t| t.pages())).unwrap();
        assert_eq!(pool.free_count() + pool.used_count(), n_pages);
    }
    for mut t in tables {
        t.free(&mut pool).unwrap();
    }
    assert_eq!(pool.free_count(), n_pages);
});
