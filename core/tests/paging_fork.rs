//! Property test (3): after `fork` and different appends, each sequence reads back exactly its
//! own tokens (through its block table and the KV pages, copy-on-write carried out), and the
//! shared prefix pages are stored once.

use pagoda_core::attention::naive::naive_attention;
use pagoda_core::attention::{paged_decode, AttnConfig};
use pagoda_core::kv::{KvConfig, KvPages};
use pagoda_core::pool::{BlockPool, PageEntry, PageId};
use pagoda_core::table::{ArrayPageList, BlockTable};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
    }
}

const N_KV_HEADS: usize = 2;
const HEAD_DIM: usize = 3;
const ROW: usize = N_KV_HEADS * HEAD_DIM;
/// Enough for the longest prefix plus every child's appends at block size 1.
const N_PAGES: usize = if cfg!(miri) { 24 } else { 64 };
const MAX_PREFIX: usize = if cfg!(miri) { 8 } else { 20 };
const MAX_EXTRA: usize = if cfg!(miri) { 5 } else { 12 };
/// Fixed-capacity page lists: the no-heap configuration.
type Table = BlockTable<ArrayPageList<N_PAGES>>;

/// A row no other (sequence, position, layer) shares.
fn row(seq: usize, pos: usize, layer: usize, is_v: bool) -> [f32; ROW] {
    core::array::from_fn(|j| {
        (seq * 100_000 + pos * 100 + layer * 10 + j) as f32 * if is_v { -1.0 } else { 1.0 }
    })
}

/// Appends one token of sequence `seq` to `table`, carrying out copy-on-write, and writes it.
fn append(
    table: &mut Table,
    seq: usize,
    pool: &mut BlockPool<[PageEntry; N_PAGES]>,
    kv: &mut KvPages<f32, Vec<f32>>,
) {
    let pos = table.len();
    let outcome = table.append_slot(pool).unwrap();
    if let Some(cow) = outcome.copy {
        kv.copy_page(cow.from, cow.to, cow.tokens).unwrap();
    }
    for layer in 0..kv.config().n_layers {
        let (k, v) = (row(seq, pos, layer, false), row(seq, pos, layer, true));
        kv.write(layer, outcome.slot.page, outcome.slot.slot, &k, &v).unwrap();
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn forks_read_back_their_own_tokens(
        block_size in 1..6usize,
        prefix in 0..MAX_PREFIX,
        // Per child: how many tokens it appends after the fork (child 0 is the parent).
        extra in prop::collection::vec(0..MAX_EXTRA, 2..4),
        // Interleaving of the appends.
        order_seed in any::<u64>(),
    ) {
        let kc = KvConfig { n_layers: 2, n_kv_heads: N_KV_HEADS, head_dim: HEAD_DIM, block_size, n_pages: N_PAGES };
        let mut kv = KvPages::new(kc, vec![f32::NAN; kc.slab_len().unwrap()]).unwrap();
        let mut pool = BlockPool::new([PageEntry::VACANT; N_PAGES]).unwrap();

        let mut parent = Table::new(block_size, ArrayPageList::default()).unwrap();
        for _ in 0..prefix {
            append(&mut parent, 0, &mut pool, &mut kv);
        }
        let mut tables = vec![parent];
        for _ in 1..extra.len() {
            let child = tables[0].fork(&mut pool).unwrap();
            tables.push(child);
        }
        prop_assert_eq!(pool.used_count(), prefix.div_ceil(block_size));

        // Interleave the appends pseudo-randomly; sequence i's token at pos ≥ prefix is row(i, pos).
        let mut remaining = extra.clone();
        let mut s = order_seed | 1;
        while remaining.iter().any(|&r| r > 0) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mut i = (s % remaining.len() as u64) as usize;
            while remaining[i] == 0 {
                i = (i + 1) % remaining.len();
            }
            remaining[i] -= 1;
            append(&mut tables[i], i, &mut pool, &mut kv);
            pool.check_invariants().unwrap();
            pool.check_holders(tables.iter().map(|t| t.pages())).unwrap();
        }

        // Each sequence reads back exactly its own tokens.
        for (i, t) in tables.iter().enumerate() {
            prop_assert_eq!(t.len(), prefix + extra[i]);
            for pos in 0..t.len() {
                let owner = if pos < prefix { 0 } else { i };
                let slot = t.slot(pos).unwrap();
                for layer in 0..2 {
                    let (k, v) = (row(owner, pos, layer, false), row(owner, pos, layer, true));
                    for h in 0..N_KV_HEADS {
                        let hk = &k[h * HEAD_DIM..][..HEAD_DIM];
                        let hv = &v[h * HEAD_DIM..][..HEAD_DIM];
                        prop_assert_eq!(kv.key(layer, slot.page, h, slot.slot).unwrap(), hk);
                        prop_assert_eq!(kv.value(layer, slot.page, h, slot.slot).unwrap(), hv);
                    }
                }
            }
        }

        // The prefix's full pages are shared by all, stored once; everything else is private.
        let full = prefix / block_size;
        for t in &tables[1..] {
            prop_assert_eq!(&t.pages()[..full], &tables[0].pages()[..full]);
        }
        for &p in &tables[0].pages()[..full] {
            prop_assert_eq!(pool.refcount(p).unwrap() as usize, tables.len());
        }
        let mut distinct: Vec<PageId> = tables.iter().flat_map(|t| t.pages().iter().copied()).collect();
        distinct.sort();
        distinct.dedup();
        let private: usize = tables.iter().map(|t| t.pages().len() - full).sum();
        let partial_still_shared = usize::from(
            prefix % block_size != 0 && tables.iter().filter(|t| t.len() == prefix).count() > 1,
        );
        // A partly filled prefix page nobody appended to is still shared by those tables.
        let shared_partial_holders = if partial_still_shared == 1 {
            tables.iter().filter(|t| t.len() == prefix).count()
        } else {
            0
        };
        prop_assert_eq!(distinct.len(), full + private - shared_partial_holders + partial_still_shared);
        prop_assert_eq!(pool.used_count(), distinct.len());

        // And attention through each table sees that sequence's tokens only.
        let cfg = AttnConfig::new(4, N_KV_HEADS, HEAD_DIM).unwrap();
        for (i, t) in tables.iter().enumerate() {
            if t.is_empty() {
                continue;
            }
            let q: Vec<f32> = (0..cfg.q_len()).map(|j| (j as f32 * 0.37).sin() * 1e-5).collect();
            let (mut k, mut v) = (Vec::new(), Vec::new());
            for pos in 0..t.len() {
                let owner = if pos < prefix { 0 } else { i };
                k.extend(row(owner, pos, 1, false));
                v.extend(row(owner, pos, 1, true));
            }
            let mut want = vec![0.0; cfg.q_len()];
            let mut scores = vec![0.0; t.len()];
            naive_attention(&q, &k, &v, t.len() - 1, &cfg, &mut scores, &mut want).unwrap();
            let mut got = vec![0.0; cfg.q_len()];
            paged_decode(&kv, 1, t.pages(), t.len(), &q, &mut got, &cfg).unwrap();
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{} vs {}", g, w);
            }
        }

        for t in &mut tables {
            t.free(&mut pool).unwrap();
        }
        prop_assert_eq!(pool.free_count(), N_PAGES);
    }
}
