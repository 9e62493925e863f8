//! Property tests of page eviction: evicted pages go back to the pool, the pool's invariants
//! and refcounts hold after every step, shared pages are never evicted, and a sequence under a
//! bounded rule stays within `max_pages` however long it runs.

use pagoda_core::evict::{evict_page, Budget, EvictionRule, KvPolicy, SeqView};
use pagoda_core::pool::{BlockPool, PageEntry};
use pagoda_core::table::{ArrayPageList, BlockTable};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
    }
}

const N_PAGES: usize = if cfg!(miri) { 24 } else { 48 };
/// Steps of a simulated generation.
const STEPS: usize = if cfg!(miri) { 60 } else { 600 };
type Table = BlockTable<ArrayPageList<N_PAGES>>;
type Pool = BlockPool<[PageEntry; N_PAGES]>;

/// Evicts until `rule` is satisfied, as a sequence would before appending `step` tokens;
/// checks every victim is this table's alone and comes back to the pool.
fn evict_to_rule(rule: &EvictionRule, t: &mut Table, pool: &mut Pool, mass: &mut Vec<f32>) {
    loop {
        let refcounts: Vec<u32> = t.pages().iter().map(|&p| pool.refcount(p).unwrap()).collect();
        let view =
            SeqView { block_size: t.block_size(), n_tokens: t.len(), mass, refcounts: &refcounts };
        let new_page = t.len() % t.block_size() == 0;
        let Some(i) = rule.next_victim(&view, new_page) else { break };
        assert_eq!(refcounts[i], 1, "a shared page was chosen");
        let free_before = pool.free_count();
        let page = evict_page(t, i, pool).unwrap();
        assert_eq!(pool.refcount(page), Ok(0));
        assert_eq!(pool.free_count(), free_before + 1);
        mass.remove(i);
    }
}

/// Appends one token, growing the mass list when a page opens.
fn append(t: &mut Table, pool: &mut Pool, mass: &mut Vec<f32>) {
    let o = t.append_slot(pool).unwrap();
    assert!(o.copy.is_none());
    if o.slot.slot == 0 {
        mass.push(0.0);
    }
}

fn rules() -> impl Strategy<Value = EvictionRule> {
    prop_oneof![
        (0..9usize, 1..40usize)
            .prop_map(|(sink, window)| EvictionRule::SinkWindow { sink, window }),
        (2..12usize, 0..6usize).prop_map(|(budget_pages, recent)| EvictionRule::HeavyHitters {
            budget_pages,
            recent_pages: recent.min(budget_pages - 1),
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// A long generation under a bounded rule: the table never holds more than `max_pages`,
    /// the pool never runs dry, and every step leaves the pool consistent.
    #[test]
    fn long_generation_stays_bounded(
        block_size in 1..5usize,
        rule in rules(),
        weights in proptest::collection::vec(0.0f32..1.0, 8),
    ) {
        let max = rule.max_pages(block_size).unwrap();
        prop_assume!(max <= N_PAGES);
        let mut pool = Pool::new([PageEntry::VACANT; N_PAGES]).unwrap();
        let mut t = Table::new(block_size, ArrayPageList::default()).unwrap();
        let mut mass = Vec::new();
        for step in 0..STEPS {
            evict_to_rule(&rule, &mut t, &mut pool, &mut mass);
            append(&mut t, &mut pool, &mut mass);
            // Some attention mass on a page the step "looked at".
            let n = mass.len();
            mass[step * 7 % n] += weights[step % weights.len()];
            prop_assert!(t.pages().len() <= max, "{} pages > bound {max}", t.pages().len());
            prop_assert_eq!(pool.used_count(), t.pages().len());
            pool.check_invariants().unwrap();
        }
        if let EvictionRule::SinkWindow { sink, .. } = rule {
            // The sink pages are the first ones ever taken: pages 0.. in allocation order.
            for (i, &p) in t.pages().iter().take(sink.div_ceil(block_size)).enumerate() {
                prop_assert_eq!(p.index(), i);
            }
        }
        t.free(&mut pool).unwrap();
        prop_assert_eq!(pool.free_count(), N_PAGES);
    }

    /// Two sequences sharing a prefix (a fork): eviction in either never takes a shared page,
    /// and refcounts always equal the holders.
    #[test]
    fn forks_never_lose_shared_pages(
        block_size in 1..4usize,
        prefix in 1..20usize,
        rule in rules(),
        steps in 1..80usize,
    ) {
        let mut pool = Pool::new([PageEntry::VACANT; N_PAGES]).unwrap();
        let mut a = Table::new(block_size, ArrayPageList::default()).unwrap();
        let mut mass_a = Vec::new();
        for _ in 0..prefix {
            append(&mut a, &mut pool, &mut mass_a);
        }
        let mut b = a.fork(&mut pool).unwrap();
        let mut mass_b = mass_a.clone();
        let shared: Vec<_> = a.pages()[..prefix / block_size].to_vec();
        for step in 0..steps {
            let (t, m) = if step % 2 == 0 { (&mut a, &mut mass_a) } else { (&mut b, &mut mass_b) };
            evict_to_rule(&rule, t, &mut pool, m);
            if pool.free_count() == 0 {
                break;
            }
            // Copy-on-write may take a page: skip if it cannot.
            let Ok(o) = t.append_slot(&mut pool) else { break };
            if o.slot.slot == 0 {
                m.push(0.0);
            }
            pool.check_holders([a.pages(), b.pages()].into_iter()).unwrap();
            pool.check_invariants().unwrap();
        }
        // Shared full pages are still held by both whenever both still list them.
        for p in &shared {
            let holders = [a.pages(), b.pages()].iter().filter(|t| t.contains(p)).count();
            prop_assert_eq!(pool.refcount(*p).unwrap() as usize, holders);
            prop_assert!(holders >= 1, "a shared page was evicted from both");
        }
        a.free(&mut pool).unwrap();
        b.free(&mut pool).unwrap();
        prop_assert_eq!(pool.free_count(), N_PAGES);
    }
}

#[test]
fn parsed_policies_resolve_to_bounded_rules() {
    let p = KvPolicy::parse("sink:4,window:512").unwrap();
    let r = p.resolve(2048, 16).unwrap();
    // 1 sink page + 32 window pages + the partial last page + the step's page.
    assert_eq!(r.max_pages(16), Some(1 + 32 + 2));
    let r = KvPolicy::H2o(Budget::Percent(50)).resolve(2048, 16).unwrap();
    assert_eq!(r.max_pages(16), Some(64));
    assert_eq!(KvPolicy::Full.resolve(2048, 16).unwrap().max_pages(16), None);
}

/// Found by the kv_policy fuzz target (fuzz/regressions/kv_policy/pyramid_budget_overflow):
/// a huge pyramid budget overflowed `bottom × (n_layers − 1)`, and a huge layer count made
/// building the budgets loop for ever. Both are refused now, quickly.
#[test]
fn pyramid_budgets_out_of_range_are_refused_not_overflowed_or_looped() {
    let huge = KvPolicy::parse("pyramid:18446744073709551615").unwrap();
    assert!(huge.resolve_layer(2048, 16, 0, 30).is_err());
    let ok = KvPolicy::parse("pyramid:512").unwrap();
    assert!(ok.resolve_layer(2048, 16, 0, 30).is_ok());
    assert!(ok.resolve_layer(2048, 16, 0, 1 << 16).is_ok());
    assert!(ok.resolve_layer(2048, 16, 0, (1 << 16) + 1).is_err());
    assert!(ok.resolve_layer(2048, 16, 0, usize::MAX).is_err());
}

/// Found by the kv_policy fuzz smoke (fuzz/regressions/kv_policy/sink_window_max_pages_overflow):
/// `sink:S,window:W` near `usize::MAX` at one token a page overflowed `max_pages`.
#[test]
fn sink_window_max_pages_saturates_instead_of_overflowing() {
    let rule = EvictionRule::SinkWindow { sink: usize::MAX, window: usize::MAX };
    assert_eq!(rule.max_pages(1), Some(usize::MAX));
    let rule = EvictionRule::SinkWindow { sink: 4, window: 32 };
    assert_eq!(rule.max_pages(16), Some(1 + 2 + 2));
}
