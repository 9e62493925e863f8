//! KV eviction in the engine: every sequence evicts its own pages under the policy, runs past
//! what its pool could hold under full attention, gives the tokens it gives alone in a
//! `Session` under the same policy, and evicts a page another sequence shares from its own
//! table only (the page stays with the others).

mod common;
mod engine_common;

use std::collections::HashMap;

use pagoda::core::evict::{Budget, KvPolicy};
use pagoda::core::pool::PageId;
use pagoda::cpu::engine::{Engine, EngineConfig, EngineError, Request, RequestId, RequestOutput};
use pagoda::cpu::model::Llama;

const BS: usize = 16;

/// What [`run_watching_shared_pages`] saw.
struct Watched {
    done: Vec<RequestOutput>,
    /// (page, step) pairs where a full page was held by two or more watched sequences.
    shared_seen: usize,
    /// Shared pages one sequence evicted while another kept them.
    dropped_shared: usize,
}

/// Steps the engine to the end. After every step: the pool's invariants hold (every page's
/// refcount equals its holders), and a full page two running sequences shared before the
/// step that one of them evicted is still allocated to those that kept it.
/// Every request's tokens equal its [`engine_common::evicting_reference`], and every page is free once the
/// prefix cache lets go.
fn assert_session_tokens_and_all_free(
    model: &Llama,
    engine: &mut Engine<'_>,
    done: &[RequestOutput],
    policy: KvPolicy,
    prompts: &[Vec<u32>],
    steps: &[usize],
) {
    for out in done {
        let i = out.id.0 as usize;
        let want = engine_common::evicting_reference(model, policy, BS, &prompts[i], steps[i]).0;
        assert_eq!(out.samples[0].tokens, want, "request {i} differs from its Session run");
    }
    engine.clear_prefix_cache().expect("clear");
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity());
}

fn run_watching_shared_pages(engine: &mut Engine<'_>, seqs: &[(RequestId, usize)]) -> Watched {
    let mut done = Vec::new();
    let (mut shared_seen, mut dropped_shared) = (0, 0);
    engine.check_invariants().expect("invariants before the first step");
    let mut steps = 0;
    while engine.has_unfinished() {
        let mut holders: HashMap<PageId, Vec<(RequestId, usize)>> = HashMap::new();
        for &s in seqs {
            let pages = engine.sequence_pages(s.0, s.1).unwrap_or(&[]);
            for &p in pages.iter().take(pages.len().saturating_sub(1)) {
                holders.entry(p).or_default().push(s);
            }
        }
        let out = engine.step().expect("step");
        steps += 1;
        engine.check_invariants().unwrap_or_else(|e| panic!("after step {steps}: {e}"));
        for (page, hs) in holders.iter().filter(|(_, hs)| hs.len() > 1) {
            shared_seen += 1;
            let running: Vec<bool> = hs
                .iter()
                .filter_map(|s| engine.sequence_pages(s.0, s.1))
                .map(|pages| pages.contains(page))
                .collect();
            let (kept, dropped) = (running.iter().filter(|&&k| k).count(), running.len());
            if kept > 0 && kept < dropped {
                dropped_shared += 1;
                let rc = engine.cache().pool().refcount(*page).expect("refcount");
                assert!(rc >= kept as u32, "step {steps}: {page} has {rc} holders, {kept} kept it");
            }
        }
        done.extend(out.finished);
    }
    Watched { done, shared_seen, dropped_shared }
}

fn config(kv_pages: usize) -> EngineConfig {
    EngineConfig { kv_pages, block_size: BS, max_batch_tokens: 64, ..EngineConfig::default() }
}

#[test]
fn sink_window_batch_runs_past_full_capacity_and_matches_sessions() {
    let model = Llama::load(common::model_path()).expect("load model");
    // The sink is the first page, which the prompts share through the prefix cache.
    let policy = KvPolicy::SinkWindow { sink: BS, window: 3 * BS };
    let stem = engine_common::prompt(11, BS);
    let prompts: Vec<Vec<u32>> = [(1, 24), (2, 21), (3, 34)]
        .iter()
        .map(|&(seed, n)| {
            let mut p = stem.clone();
            p.extend(engine_common::prompt(seed, n));
            p
        })
        .collect();
    let steps = [260, 90, 120];
    // Per sequence at most 1 sink + 3 window + 2 pages = 6; 18 pages hold three of them. Under
    // full attention the first request alone needs ⌈(40 + 260 − 1) / 16⌉ = 19 pages.
    let kv_pages = 18;
    let full = Engine::new(&model, config(kv_pages));
    let refused = full.unwrap().submit(Request::greedy(0, prompts[0].clone(), steps[0]));
    assert!(matches!(refused, Err(EngineError::TooLarge { .. })), "{refused:?}");

    let mut engine = Engine::with_policy(&model, config(kv_pages), policy).expect("engine");
    let mut seqs = Vec::new();
    for (i, (p, &n)) in prompts.iter().zip(&steps).enumerate() {
        engine.submit(Request::greedy(i as u64, p.clone(), n)).expect("request");
        seqs.push((RequestId(i as u64), 0));
        if i == 0 {
            // Its first page computed and cached: the others start from it.
            let mut done = engine.step().expect("first step").finished;
            done.extend(engine.step().expect("second step").finished);
            assert!(done.is_empty());
        }
    }
    let Watched { done, shared_seen, .. } = run_watching_shared_pages(&mut engine, &seqs);
    assert!(shared_seen > 0, "no page was ever shared: the sharing check proves nothing");
    assert!(engine.stats().policy_evictions > 0);
    assert!(engine.stats().prefix_hits > 0, "the shared stem page was never a prefix hit");
    assert!(engine.stats().peak_pages <= kv_pages);
    assert_eq!(done.len(), prompts.len());
    for out in &done {
        let i = out.id.0 as usize;
        let want = engine_common::evicting_reference(&model, policy, BS, &prompts[i], steps[i]).0;
        assert_eq!(out.samples[0].tokens, want, "request {i} differs from its Session run");
    }
    // Every page back: held by nobody, and free once the prefix cache lets go.
    assert_eq!(engine.pages_held(), 0);
    engine.clear_prefix_cache().expect("clear");
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity());
    pool.check_invariants().expect("pool invariants at the end");
}

#[test]
fn h2o_batch_matches_sessions_and_keeps_its_budget() {
    let model = Llama::load(common::model_path()).expect("load model");
    let policy = KvPolicy::H2o(Budget::Tokens(6 * BS));
    let prompts = [engine_common::prompt(21, 45), engine_common::prompt(22, 19)];
    let steps = [110, 130];
    let kv_pages = 12; // 2 × the budget of 6 pages; full attention needs 10 + 10
    let mut engine = Engine::with_policy(&model, config(kv_pages), policy).expect("engine");
    let mut seqs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        engine.submit(Request::greedy(i as u64, p.clone(), steps[i])).expect("request");
        seqs.push((RequestId(i as u64), 0));
    }
    let done = run_watching_shared_pages(&mut engine, &seqs).done;
    assert!(engine.stats().peak_pages <= kv_pages);
    assert_session_tokens_and_all_free(&model, &mut engine, &done, policy, &prompts, &steps);
}

#[test]
fn forked_samples_evict_shared_pages_as_they_would_alone() {
    let model = Llama::load(common::model_path()).expect("load model");
    let policy = KvPolicy::SinkWindow { sink: 4, window: 2 * BS };
    // Prefilled under the policy, the 5-page prompt leaves its sink and window pages to both
    // samples after the fork; each sample then evicts them from its own table when its own
    // window moves on, whether or not its sibling still holds them.
    let prompt = engine_common::prompt(31, 5 * BS + 3);
    let mut req = Request::greedy(0, prompt, 80);
    req.n = 2;
    req.sampler.temperature = 0.9;
    req.sampler.seed = 5;
    let mut engine = Engine::with_policy(&model, config(24), policy).expect("engine");
    engine.submit(req.clone()).expect("request");
    let seqs = [(RequestId(0), 0), (RequestId(0), 1)];
    let Watched { done, shared_seen, dropped_shared } =
        run_watching_shared_pages(&mut engine, &seqs);
    assert!(shared_seen > 0, "no page was ever shared: the check proves nothing");
    assert!(dropped_shared > 0, "no sample evicted a page its sibling kept");
    // Each sample keeps at most 1 sink page + 3 window pages + the step's page: 2 × 5.
    assert!(engine.stats().policy_evictions > 0);
    assert!(engine.stats().peak_pages <= 2 * 5, "{:?}", engine.stats());
    let samples = &done[0].samples;
    assert_eq!(samples.len(), 2);
    assert_eq!(engine.pages_held(), 0);
    engine.clear_prefix_cache().expect("clear");
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity());
    // Sample k is what a single sample seeded `seed + k` gives alone under the policy.
    for (k, sample) in samples.iter().enumerate() {
        let mut alone = req.clone();
        alone.n = 1;
        alone.sampler.seed = req.sampler.seed + k as u64;
        let mut solo = Engine::with_policy(&model, config(24), policy).expect("engine");
        solo.submit(alone).expect("request");
        let mut out = Vec::new();
        while solo.has_unfinished() {
            out.extend(solo.step().expect("step").finished);
        }
        assert_eq!(sample.tokens, out[0].samples[0].tokens, "sample {k} differs from alone");
        assert_eq!(sample.tokens.len(), 80);
    }
    assert_ne!(samples[0].tokens, samples[1].tokens, "the samples are the same draw");
}

#[test]
fn engine_refuses_short_batches_and_tiny_budgets() {
    let model = Llama::load(common::model_path()).expect("load model");
    let short = EngineConfig { max_batch_tokens: 8, ..config(8) };
    let err = Engine::with_policy(&model, short, KvPolicy::SinkWindow { sink: 4, window: 32 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("max batch tokens (8)"), "{err}");
    let err = Engine::with_policy(&model, config(8), KvPolicy::H2o(Budget::Tokens(20)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("less than two pages"), "{err}");
    let err = Engine::with_policy(&model, config(8), KvPolicy::Pyramid(Budget::Tokens(20)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pyramid:20") && err.contains("less than two pages"), "{err}");
}

#[test]
fn preempted_evicting_sequences_recompute_to_their_session_tokens() {
    let model = Llama::load(common::model_path()).expect("load model");
    // At most 1 + 2 + 2 = 5 pages per sequence; 7 pages cannot hold two at once, so the
    // newer one is preempted, recomputed (prompt by pages, then token by token, evicting as
    // it goes) and must still give its Session tokens.
    let policy = KvPolicy::SinkWindow { sink: BS, window: 2 * BS };
    let prompts = [engine_common::prompt(41, 37), engine_common::prompt(42, 50)];
    let steps = [70, 60];
    let mut engine = Engine::with_policy(&model, config(7), policy).expect("engine");
    let mut seqs = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        engine.submit(Request::greedy(i as u64, p.clone(), steps[i])).expect("request");
        seqs.push((RequestId(i as u64), 0));
    }
    let done = run_watching_shared_pages(&mut engine, &seqs).done;
    assert!(engine.stats().preemptions > 0, "{:?}", engine.stats());
    assert!(engine.stats().recomputed_tokens > 0, "{:?}", engine.stats());
    assert_session_tokens_and_all_free(&model, &mut engine, &done, policy, &prompts, &steps);
}
