//! Property test (1): random alloc/fork/append/truncate/free sequences over a pool and several
//! block tables keep every invariant after every step, and exhaustion changes nothing.

use pagoda_core::pool::{BlockPool, PageEntry, PageId, PoolError};
use pagoda_core::table::{BlockTable, TableError};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::default()
    }
}

const MAX_TABLES: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    /// Start an empty table (if fewer than MAX_TABLES).
    New,
    /// Fork table i into a new one.
    Fork(usize),
    /// Append n tokens to table i.
    Append(usize, usize),
    /// Truncate table i to n tokens.
    Truncate(usize, usize),
    /// Free table i and drop it.
    Free(usize),
    /// Take n raw pages from the pool all-or-nothing, and give them back.
    AllocMany(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::New),
        2 => (0..MAX_TABLES).prop_map(Op::Fork),
        5 => (0..MAX_TABLES, 1..12usize).prop_map(|(i, n)| Op::Append(i, n)),
        2 => (0..MAX_TABLES, 0..30usize).prop_map(|(i, n)| Op::Truncate(i, n)),
        1 => (0..MAX_TABLES).prop_map(Op::Free),
        1 => (0..30usize).prop_map(Op::AllocMany),
    ]
}

type Pool = BlockPool<Vec<PageEntry>>;
type Table = BlockTable<Vec<PageId>>;

fn snapshot(pool: &Pool) -> Vec<u32> {
    (0..pool.capacity() as u32).map(|i| pool.refcount(PageId(i)).unwrap()).collect()
}

fn check_all(pool: &Pool, tables: &[Table]) {
    pool.check_invariants().unwrap();
    pool.check_holders(tables.iter().map(|t| t.pages())).unwrap();
    assert_eq!(pool.free_count() + pool.used_count(), pool.capacity());
    for t in tables {
        assert_eq!(t.pages().len(), t.len().div_ceil(t.block_size()));
        let mut ids = t.pages().to_vec();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), t.pages().len(), "a table holds a page twice");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold_after_every_step(
        n_pages in 0..24usize,
        block_size in 1..5usize,
        ops in prop::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 80 }),
    ) {
        let mut pool = BlockPool::new(vec![PageEntry::VACANT; n_pages]).unwrap();
        let mut tables: Vec<Table> = vec![Table::new(block_size, Vec::new()).unwrap()];
        for op in ops {
            match op {
                Op::New => {
                    if tables.len() < MAX_TABLES {
                        tables.push(Table::new(block_size, Vec::new()).unwrap());
                    }
                }
                Op::Fork(i) => {
                    if tables.len() < MAX_TABLES && !tables.is_empty() {
                        let i = i % tables.len();
                        let child = tables[i].fork(&mut pool).unwrap();
                        prop_assert_eq!(child.pages(), tables[i].pages());
                        prop_assert_eq!(child.len(), tables[i].len());
                        tables.push(child);
                    }
                }
                Op::Append(i, n) => {
                    if tables.is_empty() {
                        continue;
                    }
                    let i = i % tables.len();
                    for _ in 0..n {
                        let before_pool = snapshot(&pool);
                        let before_pages = tables[i].pages().to_vec();
                        let before_len = tables[i].len();
                        let last_shared = before_pages
                            .last()
                            .is_some_and(|&p| pool.refcount(p).unwrap() > 1);
                        match tables[i].append_slot(&mut pool) {
                            Ok(outcome) => {
                                let t = &tables[i];
                                prop_assert_eq!(t.len(), before_len + 1);
                                prop_assert_eq!(t.slot(before_len), Some(outcome.slot));
                                let partial = before_len % block_size != 0;
                                match outcome.copy {
                                    Some(cow) => {
                                        prop_assert!(partial && last_shared);
                                        prop_assert_eq!(cow.from, *before_pages.last().unwrap());
                                        prop_assert_eq!(cow.to, outcome.slot.page);
                                        prop_assert_eq!(cow.tokens, before_len % block_size);
                                        prop_assert_eq!(pool.refcount(cow.to).unwrap(), 1);
                                    }
                                    None => prop_assert!(!(partial && last_shared)),
                                }
                            }
                            Err(e) => {
                                prop_assert!(
                                    matches!(e, TableError::Pool(PoolError::OutOfPages { free: 0, .. })),
                                    "unexpected error {:?}", e
                                );
                                prop_assert_eq!(pool.free_count(), 0);
                                // Exhaustion changes nothing.
                                prop_assert_eq!(snapshot(&pool), before_pool);
                                prop_assert_eq!(tables[i].pages(), &before_pages[..]);
                                prop_assert_eq!(tables[i].len(), before_len);
                                break;
                            }
                        }
                        check_all(&pool, &tables);
                    }
                }
                Op::Truncate(i, n) => {
                    if tables.is_empty() {
                        continue;
                    }
                    let i = i % tables.len();
                    let old = tables[i].len();
                    tables[i].truncate(n, &mut pool).unwrap();
                    prop_assert_eq!(tables[i].len(), n.min(old));
                }
                Op::Free(i) => {
                    if tables.is_empty() {
                        continue;
                    }
                    let i = i % tables.len();
                    let mut t = tables.swap_remove(i);
                    t.free(&mut pool).unwrap();
                    prop_assert!(t.is_empty() && t.pages().is_empty());
                }
                Op::AllocMany(n) => {
                    let before = snapshot(&pool);
                    let free = pool.free_count();
                    let mut out = vec![PageId(0); n];
                    match pool.try_alloc_many(&mut out) {
                        Ok(()) => {
                            prop_assert!(n <= free);
                            prop_assert_eq!(pool.free_count(), free - n);
                            for &p in &out {
                                prop_assert_eq!(pool.refcount(p).unwrap(), 1);
                            }
                            pool.check_invariants().unwrap();
                            for &p in &out {
                                prop_assert!(pool.release(p).unwrap());
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(e, PoolError::OutOfPages { requested: n, free });
                            prop_assert_eq!(snapshot(&pool), before);
                        }
                    }
                }
            }
            check_all(&pool, &tables);
        }
        for mut t in tables {
            t.free(&mut pool).unwrap();
        }
        prop_assert_eq!(pool.free_count(), n_pages);
        pool.check_invariants().unwrap();
    }
}
