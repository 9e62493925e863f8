//! PyramidKV in the engine: single-layer pages in one pool, one block table per layer for every
//! sequence. Each layer of each sequence evicts its own pages under its own budget; a request
//! gives the tokens it gives alone in a `Session` under the same policy (alone in the engine,
//! in a batch, after a preemption); forked samples share every layer's pages copy-on-write
//! and evict them from their own tables as they would alone (a page a sibling still holds
//! stays allocated to it); every page is free at the end.

mod common;
mod engine_common;

use std::collections::HashMap;

use pagoda::core::evict::{Budget, KvPolicy};
use pagoda::core::pool::PageId;
use pagoda::cpu::engine::{Engine, EngineConfig, EngineError, Request, RequestId, RequestOutput};
use pagoda::cpu::model::{Evictor, Llama};

const BS: usize = 16;

/// 4 pages per layer on average: 2 recent pages in every layer, the selected ones from 3
/// (layer 0, 5 pages) down to 1 (the last layer, 3 pages); 30 × 4 = 120 single-layer pages
/// per sequence at most.
const POLICY: KvPolicy = KvPolicy::Pyramid(Budget::Tokens(4 * BS));

/// Prefix caching stays on (the default): it is off under pyramid all the same (the policy
/// scores pages by attention).
fn config(kv_pages: usize) -> EngineConfig {
    EngineConfig { kv_pages, block_size: BS, max_batch_tokens: 64, ..EngineConfig::default() }
}

/// Each layer's page budget (the engine resolves percentages against the model's context
/// length, so the reference session uses it too).
fn layer_budgets(model: &Llama) -> Vec<usize> {
    let c = model.config();
    let ev = Evictor::new(POLICY, c.context_length, BS, c.n_layers).expect("evictor");
    (0..c.n_layers).map(|l| ev.rule(l).unwrap().max_pages(BS).unwrap()).collect()
}

/// Greedy tokens of `prompt` alone in a `Session` under [`POLICY`] (what `pagoda run
/// --kv-policy pyramid:64 --temp 0` runs): prompt in one call, then one token at a time.
fn session_reference(model: &Llama, prompt: &[u32], steps: usize) -> Vec<u32> {
    let (out, tables) = engine_common::evicting_reference(model, POLICY, BS, prompt, steps);
    assert_eq!(tables, model.config().n_layers);
    out
}

/// What one step of the engine is checked for.
#[derive(Default)]
struct Watch {
    /// (layer, full page) pairs held by two running sequences before a step.
    shared_seen: usize,
    /// Steps after which some sequence's layer 0 held more pages than its last layer.
    pyramid_seen: usize,
}

/// Steps the engine to the end. After every step: the engine's invariants (pool, refcount
/// = holders, tables in step with their sequences), no layer table of a sequence holds more
/// than its layer's budget (a sequence evicts shared pages as it would alone), and a full
/// page two running sequences shared in a layer before the step that one of them evicted
/// is still allocated to those that kept it.
fn run_watched(
    engine: &mut Engine<'_>,
    seqs: &[(RequestId, usize)],
    budgets: &[usize],
) -> (Vec<RequestOutput>, Watch) {
    let mut done = Vec::new();
    let mut watch = Watch::default();
    engine.check_invariants().expect("invariants before the first step");
    let mut steps = 0;
    while engine.has_unfinished() {
        let mut holders: HashMap<(usize, PageId), Vec<(RequestId, usize)>> = HashMap::new();
        for &s in seqs {
            for (l, t) in engine.sequence_tables(s.0, s.1).unwrap_or(&[]).iter().enumerate() {
                let pages = t.pages();
                for &p in &pages[..pages.len().saturating_sub(1)] {
                    holders.entry((l, p)).or_default().push(s);
                }
            }
        }
        let out = engine.step().expect("step");
        steps += 1;
        engine.check_invariants().unwrap_or_else(|e| panic!("after step {steps}: {e}"));
        let pool = engine.cache().pool();
        for (&(layer, page), hs) in holders.iter().filter(|(_, hs)| hs.len() > 1) {
            watch.shared_seen += 1;
            let running: Vec<bool> = hs
                .iter()
                .filter_map(|s| engine.sequence_tables(s.0, s.1))
                .map(|tables| tables[layer].pages().contains(&page))
                .collect();
            let kept = running.iter().filter(|&&k| k).count();
            if kept > 0 && kept < running.len() {
                let rc = pool.refcount(page).expect("refcount");
                assert!(
                    rc >= kept as u32,
                    "step {steps}: {page} of layer {layer} has {rc} holders, {kept} kept it"
                );
            }
        }
        for &s in seqs {
            let Some(tables) = engine.sequence_tables(s.0, s.1) else { continue };
            assert_eq!(tables.len(), budgets.len());
            for (l, t) in tables.iter().enumerate() {
                assert!(
                    t.pages().len() <= budgets[l],
                    "step {steps}: {} sample {} layer {l} holds {} pages, budget {}",
                    s.0,
                    s.1,
                    t.pages().len(),
                    budgets[l]
                );
            }
            if tables[0].pages().len() > tables[tables.len() - 1].pages().len() {
                watch.pyramid_seen += 1;
            }
        }
        done.extend(out.finished);
    }
    (done, watch)
}

/// No page held by anyone, the pool whole and consistent.
fn assert_all_free(engine: &mut Engine<'_>) {
    assert_eq!(engine.pages_held(), 0);
    assert_eq!(engine.prefix_index().pages().len(), 0, "prefix caching is off under pyramid");
    engine.clear_prefix_cache().expect("clear");
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity());
    pool.check_invariants().expect("pool invariants at the end");
}

fn greedy_requests(engine: &mut Engine<'_>, prompts: &[Vec<u32>], steps: &[usize]) {
    for (i, (p, &n)) in prompts.iter().zip(steps).enumerate() {
        engine.submit(Request::greedy(i as u64, p.clone(), n)).expect("request");
    }
}

#[test]
fn pyramid_batch_matches_sessions_alone_and_keeps_each_layers_budget() {
    let model = Llama::load(common::model_path()).expect("load model");
    let n_layers = model.config().n_layers;
    let budgets = layer_budgets(&model);
    assert!(budgets[0] > budgets[n_layers - 1], "{budgets:?}");
    assert_eq!(budgets.iter().sum::<usize>(), n_layers * 4);
    let prompts = [
        engine_common::prompt(51, 37),
        engine_common::prompt(52, 21),
        engine_common::prompt(53, 50),
    ];
    let steps = [80, 50, 64];
    // Room for all three at their bound (3 × 120 single-layer pages); unevicted, the first
    // would need ⌈(37 + 80 − 1) / 16⌉ = 8 pages in each of 30 layers.
    let kv_pages = 16;
    let mut engine = Engine::with_policy(&model, config(kv_pages), POLICY).expect("engine");
    assert_eq!(engine.tables_per_sequence(), n_layers);
    assert!(engine.cache().per_layer());
    assert_eq!(engine.cache().pool().capacity(), kv_pages * n_layers);
    greedy_requests(&mut engine, &prompts, &steps);
    let seqs: Vec<_> = (0..prompts.len()).map(|i| (RequestId(i as u64), 0)).collect();
    let (done, watch) = run_watched(&mut engine, &seqs, &budgets);
    assert_eq!(done.len(), prompts.len());
    assert!(watch.pyramid_seen > 0, "layer 0 never held more pages than the last layer");
    let stats = engine.stats().clone();
    assert!(stats.policy_evictions > 0, "{stats:?}");
    assert_eq!((stats.prefix_lookups, stats.prefix_hits, stats.preemptions), (0, 0, 0));
    // Peak: in single-layer pages, at most the three sequences' bounds.
    assert!(stats.peak_pages <= 3 * n_layers * 4, "{stats:?}");
    assert!(stats.peak_pages > 2 * n_layers * 4, "the batch never ran together: {stats:?}");
    assert_all_free(&mut engine);

    for out in &done {
        let i = out.id.0 as usize;
        let want = session_reference(&model, &prompts[i], steps[i]);
        assert_eq!(out.samples[0].tokens, want, "request {i} in the batch differs from Session");
        // Alone through the engine: the same tokens again.
        let mut alone = Engine::with_policy(&model, config(kv_pages), POLICY).expect("engine");
        alone.submit(Request::greedy(i as u64, prompts[i].clone(), steps[i])).unwrap();
        let (solo, _) = run_watched(&mut alone, &[(out.id, 0)], &budgets);
        assert_eq!(solo[0].samples[0].tokens, want, "request {i} alone differs from Session");
        assert_all_free(&mut alone);
    }
}

#[test]
fn pyramid_forked_samples_share_every_layer_and_evict_shared_pages_as_alone() {
    let model = Llama::load(common::model_path()).expect("load model");
    let n_layers = model.config().n_layers;
    let budgets = layer_budgets(&model);
    let n = 3;
    let prompt = engine_common::prompt(61, 5 * BS + 3);
    let mut req = Request::greedy(0, prompt.clone(), 64);
    req.n = n;
    let mut engine = Engine::with_policy(&model, config(24), POLICY).expect("engine");
    engine.submit(req).expect("request");
    let seqs: Vec<_> = (0..n).map(|k| (RequestId(0), k)).collect();

    // Prompt steps (one page each) until the fork.
    while engine.sequence_tables(RequestId(0), 1).is_none() {
        assert!(engine.step().expect("prompt step").finished.is_empty());
    }
    engine.check_invariants().expect("invariants after the fork");
    // Right after the fork: every sample holds exactly sample 0's pages in every layer, each
    // page once per sample (refcount n), and nothing else is in use.
    let first = engine.sequence_tables(RequestId(0), 0).unwrap().to_vec();
    let pool = engine.cache().pool();
    let mut held = 0;
    for (l, t) in first.iter().enumerate() {
        assert!(t.pages().len() <= budgets[l], "layer {l} evicted down to its budget");
        for k in 1..n {
            let tk = &engine.sequence_tables(RequestId(0), k).unwrap()[l];
            assert_eq!((tk.pages(), tk.len()), (t.pages(), t.len()), "sample {k} layer {l}");
        }
        for &p in t.pages() {
            assert_eq!(pool.refcount(p).unwrap(), n as u32, "layer {l} page {p}");
        }
        held += t.pages().len();
    }
    assert_eq!(pool.used_count(), held);
    assert!(held > n_layers * 2, "{held} pages at the fork");

    let (done, watch) = run_watched(&mut engine, &seqs, &budgets);
    // The (layer, full prompt page) pairs kept at the fork are shared, and each sample drops
    // them from its own tables as its layers' budgets demand.
    assert!(watch.shared_seen >= n_layers * 2, "{}", watch.shared_seen);
    assert!(engine.stats().policy_evictions > 0, "{:?}", engine.stats());
    let samples = &done[0].samples;
    assert_eq!(samples.len(), n);
    assert!(samples.iter().all(|s| s.tokens.len() == 64));
    for s in &samples[1..] {
        assert_eq!(s.tokens, samples[0].tokens, "greedy samples differ");
    }
    // And they are what the request gives alone, in a Session under the same policy.
    assert_eq!(samples[0].tokens, session_reference(&model, &prompt, 64));
    assert_all_free(&mut engine);
}

#[test]
fn preempted_pyramid_sequences_recompute_to_their_session_tokens() {
    let model = Llama::load(common::model_path()).expect("load model");
    let n_layers = model.config().n_layers;
    let budgets = layer_budgets(&model);
    // At most 120 single-layer pages per sequence; 6 all-layer pages = 180 single-layer pages
    // cannot hold two at their bound, so the newer one is preempted, recomputed (prompt by
    // pages, then token by token, every layer evicting as it goes) and must still give its
    // Session tokens.
    let prompts = [engine_common::prompt(71, 45), engine_common::prompt(72, 30)];
    let steps = [70, 60];
    let mut engine = Engine::with_policy(&model, config(6), POLICY).expect("engine");
    assert_eq!(engine.cache().pool().capacity(), 6 * n_layers);
    greedy_requests(&mut engine, &prompts, &steps);
    let seqs: Vec<_> = (0..prompts.len()).map(|i| (RequestId(i as u64), 0)).collect();
    let (done, _) = run_watched(&mut engine, &seqs, &budgets);
    let stats = engine.stats().clone();
    assert!(stats.preemptions > 0, "{stats:?}");
    assert!(stats.recomputed_tokens > 0, "{stats:?}");
    assert!(stats.peak_pages <= 6 * n_layers, "{stats:?}");
    assert_all_free(&mut engine);
    assert_eq!(done.len(), prompts.len());
    for out in &done {
        let i = out.id.0 as usize;
        assert!(out.preemptions > 0 || i == 0, "request {i}: {out:?}");
        let want = session_reference(&model, &prompts[i], steps[i]);
        assert_eq!(out.samples[0].tokens, want, "request {i} differs from its Session run");
    }
}

#[test]
fn pyramid_requests_are_counted_in_single_layer_pages() {
    let model = Llama::load(common::model_path()).expect("load model");
    let n_layers = model.config().n_layers;
    // 3 all-layer pages = 90 single-layer pages: less than one sequence's bound (120).
    let mut engine = Engine::with_policy(&model, config(3), POLICY).expect("engine");
    let err = engine.submit(Request::greedy(0, engine_common::prompt(81, 40), 200));
    match err {
        Err(EngineError::TooLarge { pages_needed, pages_total, .. }) => {
            assert_eq!((pages_needed, pages_total), (n_layers * 4, 3 * n_layers));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A short request needs 2 pages per layer unevicted (⌈(20 + 12 − 1) / 16⌉): it fits.
    engine.submit(Request::greedy(1, engine_common::prompt(82, 20), 12)).expect("fits");
    let (done, _) = engine_common::run_checked(&mut engine);
    assert_eq!(done.len(), 1);
    assert_eq!(engine.stats().peak_pages, 2 * n_layers);
    assert_all_free(&mut engine);
}
