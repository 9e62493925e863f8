use super::*;
use crate::table::ArrayPageList;

type Table = BlockTable<ArrayPageList<16>>;

fn filled(pool: &mut BlockPool<[PageEntry; 16]>, bs: usize, n: usize) -> Table {
    let mut t = Table::new(bs, ArrayPageList::default()).unwrap();
    for _ in 0..n {
        let _ = t.append_slot(pool).unwrap();
    }
    t
}

fn view<'a>(t: &Table, mass: &'a [f32], rc: &'a [u32]) -> SeqView<'a> {
    SeqView { block_size: t.block_size(), n_tokens: t.len(), mass, refcounts: rc }
}

#[test]
fn parses_every_form_and_prints_it_back() {
    let cases = [
        ("full", KvPolicy::Full),
        ("sink:4,window:512", KvPolicy::SinkWindow { sink: 4, window: 512 }),
        ("window:256", KvPolicy::SinkWindow { sink: 0, window: 256 }),
        ("h2o:1024", KvPolicy::H2o(Budget::Tokens(1024))),
        ("h2o:50%", KvPolicy::H2o(Budget::Percent(50))),
        ("pyramid:20%", KvPolicy::Pyramid(Budget::Percent(20))),
        ("pyramid:700", KvPolicy::Pyramid(Budget::Tokens(700))),
    ];
    for (text, want) in cases {
        assert_eq!(KvPolicy::parse(text), Ok(want), "{text}");
        let mut buf = [0u8; 32];
        let mut w = Buf(&mut buf, 0);
        core::fmt::write(&mut w, format_args!("{want}")).unwrap();
        let n = w.1;
        assert_eq!(core::str::from_utf8(&buf[..n]).unwrap(), text);
    }
}

struct Buf<'a>(&'a mut [u8], usize);
impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0.get_mut(self.1..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

#[test]
fn rejects_bad_policies_with_the_reason() {
    use PolicyError::*;
    let cases = [
        ("", UnknownPolicy),
        ("ful", UnknownPolicy),
        ("lru:5", UnknownPolicy),
        ("sink:4", SinkWithoutWindow),
        ("sink:4,window:0", OutOfRange { what: "a window of 0 tokens" }),
        ("window:-1", BadNumber),
        ("window:1e3", BadNumber),
        ("window:", BadNumber),
        ("sink:x,window:5", BadNumber),
        ("window:5,sink:4", UnexpectedPart),
        ("sink:4,window:5,window:6", UnexpectedPart),
        ("sink:4,sink:5", UnexpectedPart),
        ("h2o:0", OutOfRange { what: "a budget of 0 tokens" }),
        ("h2o:101%", OutOfRange { what: "a budget percentage (1..=100)" }),
        ("h2o:0%", OutOfRange { what: "a budget percentage (1..=100)" }),
        ("h2o:%", BadNumber),
        ("h2o:5,window:3", UnexpectedPart),
        ("pyramid:0", OutOfRange { what: "a budget of 0 tokens" }),
        ("pyramid:150%", OutOfRange { what: "a budget percentage (1..=100)" }),
        ("pyramid:50%,window:3", UnexpectedPart),
        ("pyramid", UnknownPolicy),
        ("window:99999999999999999999999", BadNumber),
    ];
    for (text, want) in cases {
        assert_eq!(KvPolicy::parse(text), Err(want), "{text:?}");
    }
}

#[test]
fn budgets_resolve_against_the_context() {
    assert_eq!(Budget::Percent(50).tokens(2048), 1024);
    assert_eq!(Budget::Percent(1).tokens(10), 1);
    assert_eq!(Budget::Tokens(300).tokens(2048), 300);
    let rule = KvPolicy::H2o(Budget::Percent(20)).resolve(2048, 16).unwrap();
    // 409 tokens → 25 pages, 13 of them the protected recent window.
    assert_eq!(rule, EvictionRule::HeavyHitters { budget_pages: 25, recent_pages: 13 });
    assert_eq!(
        KvPolicy::H2o(Budget::Tokens(20)).resolve(2048, 16),
        Err(PolicyError::BudgetTooSmall { tokens: 20, block_size: 16 })
    );
}

#[test]
fn sink_window_drops_the_pages_between_sinks_and_window() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    // 6 pages of 4, last holds 2: tokens 0..22.
    let t = filled(&mut pool, 4, 22);
    let rc = [1u32; 6];
    let rule = EvictionRule::SinkWindow { sink: 1, window: 6 };
    // Window of 6 = last page (2 tokens) + page 4 (4 tokens); sink = page 0.
    assert_eq!(rule.next_victim(&view(&t, &[], &rc), false), Some(1));
    // Page 1 shared: page 2 goes instead.
    let rc_shared = [1, 2, 1, 1, 1, 1];
    assert_eq!(rule.next_victim(&view(&t, &[], &rc_shared), false), Some(2));
    // Window only: page 0 is a victim too.
    let rule = EvictionRule::SinkWindow { sink: 0, window: 6 };
    assert_eq!(rule.next_victim(&view(&t, &[], &rc), false), Some(0));
    // A window covering everything: nothing to drop.
    let rule = EvictionRule::SinkWindow { sink: 4, window: 18 };
    assert_eq!(rule.next_victim(&view(&t, &[], &rc), false), None);
}

#[test]
fn heavy_hitters_drop_the_least_mass_outside_the_recent_pages() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let t = filled(&mut pool, 4, 24);
    let rc = [1u32; 6];
    let mass = [9.0, 1.0, 0.5, 0.5, 0.1, 0.0];
    let rule = EvictionRule::HeavyHitters { budget_pages: 5, recent_pages: 2 };
    // 6 pages + the step's new page > 5: the least mass among pages 0..4 (ties: oldest).
    assert_eq!(rule.next_victim(&view(&t, &mass, &rc), true), Some(2));
    let rc_shared = [1, 1, 2, 1, 1, 1];
    assert_eq!(rule.next_victim(&view(&t, &mass, &rc_shared), true), Some(3));
    // Within budget: nothing.
    let rule = EvictionRule::HeavyHitters { budget_pages: 7, recent_pages: 2 };
    assert_eq!(rule.next_victim(&view(&t, &mass, &rc), true), None);
    assert_eq!(rule.next_victim(&view(&t, &mass, &rc), false), None);
}

#[test]
fn evict_page_frees_the_victim_and_keeps_the_rest_in_order() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let mut t = filled(&mut pool, 4, 15);
    let before = [t.pages()[0], t.pages()[2], t.pages()[3]];
    let victim = t.pages()[1];
    assert_eq!(evict_page(&mut t, 1, &mut pool), Ok(victim));
    assert_eq!(t.pages(), &before);
    assert_eq!(t.len(), 11);
    assert_eq!(pool.refcount(victim), Ok(0));
    assert_eq!(pool.used_count(), 3);
    pool.check_holders([t.pages()].into_iter()).unwrap();
    pool.check_invariants().unwrap();
    // Appends continue in the (partly filled) last page.
    let o = t.append_slot(&mut pool).unwrap();
    assert_eq!((o.slot.page, o.slot.slot), (before[2], 3));
}

#[test]
fn evict_page_refuses_the_last_page_and_shared_pages() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let mut t = filled(&mut pool, 4, 12);
    assert_eq!(
        evict_page(&mut t, 2, &mut pool),
        Err(EvictError::NotEvictable { index: 2, pages: 3 })
    );
    assert_eq!(
        evict_page(&mut t, 9, &mut pool),
        Err(EvictError::NotEvictable { index: 9, pages: 3 })
    );
    let mut child = t.fork(&mut pool).unwrap();
    let shared = t.pages()[0];
    assert_eq!(
        evict_page(&mut t, 0, &mut pool),
        Err(EvictError::Shared { page: shared, refcount: 2 })
    );
    assert_eq!(t.len(), 12);
    pool.check_holders([t.pages(), child.pages()].into_iter()).unwrap();
    child.free(&mut pool).unwrap();
    assert_eq!(evict_page(&mut t, 0, &mut pool), Ok(shared));
    pool.check_holders([t.pages()].into_iter()).unwrap();
}

#[test]
fn pyramid_budgets_follow_the_papers_arithmetic_sequence() {
    // SmolLM2: 30 layers, -c 2048, pages of 16. 50% → 64 pages on average.
    let p = PyramidBudgets::new(64, 30, 128).unwrap();
    assert_eq!(p.recent_pages(), 32);
    let pages: [usize; 30] = core::array::from_fn(|l| p.layer_pages(l).unwrap());
    // R + b (+1 of rounding) at the bottom, R + t at the top: b = 2·32 − 1, t = ⌊32/20⌋ → 1.
    assert_eq!((pages[0], pages[29]), (32 + 63 + 1, 32 + 1));
    assert_eq!(pages.iter().sum::<usize>(), 30 * 64);
    assert_eq!(p.total_pages(), 30 * 64);
    assert_eq!(p.layer_pages(30), None);
    // Within one page of the real sequence a_l = b − (b − t)·l/29, never increasing.
    for (l, &n) in pages.iter().enumerate() {
        let a = 63.0 - 62.0 * l as f64 / 29.0;
        let s = (n - 32) as f64;
        assert!(s >= a.floor() && s <= a.floor() + 1.0, "layer {l}: {s} vs {a}");
    }
    assert!(pages.windows(2).all(|w| w[0] >= w[1]), "{pages:?}");
    assert_eq!(p.rule(29), Some(EvictionRule::HeavyHitters { budget_pages: 33, recent_pages: 32 }));
}

#[test]
fn pyramid_budgets_sum_exactly_for_any_shape() {
    let (budgets, layers) = if cfg!(miri) { (2..12, 1..6) } else { (2..200, 1..64) };
    for budget in budgets {
        for n_layers in layers.clone() {
            for ctx_pages in [budget, budget + 3, 4 * budget] {
                let p = PyramidBudgets::new(budget, n_layers, ctx_pages).unwrap();
                let mut prev = usize::MAX;
                let mut sum = 0;
                for l in 0..n_layers {
                    let n = p.layer_pages(l).unwrap();
                    // More than the protected window: the step's page fits.
                    assert!(n > p.recent_pages(), "{budget} {n_layers} {l}");
                    assert!(n <= prev, "budget {budget}, {n_layers} layers: layer {l} grows");
                    prev = n;
                    sum += n;
                }
                assert_eq!(sum, budget * n_layers, "budget {budget}, {n_layers} layers");
            }
        }
    }
    // A context too short for the bottom layer's plan: bottom lowered, average kept.
    let p = PyramidBudgets::new(115, 30, 128).unwrap();
    assert!(p.layer_pages(0).unwrap() <= 129 && p.layer_pages(29).unwrap() >= 58 + 44);
    assert_eq!(p.total_pages(), 30 * 115);
}

#[test]
fn pyramid_resolves_per_layer_only() {
    let policy = KvPolicy::Pyramid(Budget::Percent(20));
    assert!(policy.per_layer() && policy.needs_attention_mass() && policy.evicts());
    assert_eq!(policy.resolve(2048, 16), Err(PolicyError::PerLayer));
    // 409 tokens → 25 pages: 13 recent + 12 selected on average, 23 at the bottom.
    assert_eq!(
        policy.resolve_layer(2048, 16, 0, 30),
        Ok(EvictionRule::HeavyHitters { budget_pages: 37, recent_pages: 13 })
    );
    assert_eq!(
        policy.resolve_layer(2048, 16, 29, 30),
        Ok(EvictionRule::HeavyHitters { budget_pages: 14, recent_pages: 13 })
    );
    assert_eq!(
        policy.resolve_layer(2048, 16, 30, 30),
        Err(PolicyError::OutOfRange { what: "the layer index" })
    );
    assert_eq!(
        KvPolicy::Pyramid(Budget::Tokens(31)).resolve_layer(2048, 16, 0, 30),
        Err(PolicyError::BudgetTooSmall { tokens: 31, block_size: 16 })
    );
    // Every other policy: the same rule in every layer.
    let h2o = KvPolicy::H2o(Budget::Percent(20));
    assert_eq!(h2o.resolve_layer(2048, 16, 7, 30), h2o.resolve(2048, 16));
    assert!(!h2o.per_layer());
}

#[test]
fn a_pyramid_layer_drops_its_least_attended_page() {
    // Layer rules are heavy-hitter rules: the victim is the least mass outside the window.
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let t = filled(&mut pool, 4, 16);
    let rc = [1u32; 4];
    let p = PyramidBudgets::new(4, 3, 64).unwrap(); // R = 2, M = 2: layers 3, 2, 1 selected
    let mass = [0.2, 3.0, 1.0, 1.0];
    let top = p.rule(2).unwrap(); // 2 + 1 pages: 4 pages + the step's → 2 victims
    assert_eq!(top.next_victim(&view(&t, &mass, &rc), true), Some(0));
    let bottom = p.rule(0).unwrap(); // 2 + 3 pages: room for the step's page
    assert_eq!(bottom.next_victim(&view(&t, &mass, &rc), true), None);
    // A shared page is skipped: the next least attended unshared page goes.
    let rc_shared = [2, 1, 1, 1];
    assert_eq!(top.next_victim(&view(&t, &mass, &rc_shared), true), Some(1));
}

#[test]
fn evict_cached_page_lets_go_of_a_page_a_cache_also_holds() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let mut t = filled(&mut pool, 4, 12);
    let page = t.pages()[0];
    pool.retain(page).unwrap(); // a prefix cache's hold
    assert_eq!(evict_page(&mut t, 0, &mut pool), Err(EvictError::Shared { page, refcount: 2 }));
    assert_eq!(evict_cached_page(&mut t, 0, &mut pool, 1), Ok(page));
    assert_eq!(pool.refcount(page), Ok(1)); // still the cache's
    assert_eq!(t.len(), 8);
    // A page of another sequence too (cache + 2 tables): refused even with the cache hold.
    let mut child = t.fork(&mut pool).unwrap();
    let shared = t.pages()[0];
    pool.retain(shared).unwrap();
    assert_eq!(
        evict_cached_page(&mut t, 0, &mut pool, 1),
        Err(EvictError::Shared { page: shared, refcount: 3 })
    );
    child.free(&mut pool).unwrap();
    pool.check_invariants().unwrap();
}

#[test]
fn drop_page_lets_go_of_a_shared_page_and_leaves_it_to_the_other_holder() {
    let mut pool = BlockPool::new([PageEntry::VACANT; 16]).unwrap();
    let mut t = filled(&mut pool, 4, 12);
    let child = t.fork(&mut pool).unwrap();
    let shared = t.pages()[0];
    let kept = [t.pages()[1], t.pages()[2]];
    assert_eq!(drop_page(&mut t, 0, &mut pool), Ok(shared));
    assert_eq!(t.len(), 8);
    assert_eq!(t.pages(), &kept[..]);
    // The child still holds it: allocated, one holder.
    assert_eq!(pool.refcount(shared), Ok(1));
    assert_eq!(child.pages()[0], shared);
    pool.check_holders([t.pages(), child.pages()].into_iter()).unwrap();
    pool.check_invariants().unwrap();
    assert_eq!(
        drop_page(&mut t, 1, &mut pool),
        Err(EvictError::NotEvictable { index: 1, pages: 2 })
    );
}
