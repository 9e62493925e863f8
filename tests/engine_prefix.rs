//! Prefix caching: a request sharing a cached prefix prefills only its suffix and yields
//! the same tokens as without the cache.

mod common;
mod engine_common;

use pagoda::cpu::engine::{Engine, EngineConfig, Request};
use pagoda::cpu::model::Llama;

#[test]
fn second_request_prefills_only_its_suffix_and_matches_the_uncached_run() {
    let model = Llama::load(common::model_path()).expect("load model");
    let shared = engine_common::prompt(7, 300);
    let with_suffix = |seed: u64| {
        let mut p = shared.clone();
        p.extend(engine_common::prompt(seed, 20));
        p
    };
    let (a, b) = (with_suffix(1), with_suffix(2));
    let steps = 6;

    let mut engine = Engine::new(&model, EngineConfig::default()).unwrap();
    engine.submit(Request::greedy(1, a.clone(), steps)).unwrap();
    let (done_a, _) = engine_common::run_checked(&mut engine);
    assert_eq!(done_a[0].cached_prompt_tokens, 0);
    let before = engine.stats().clone();
    engine.submit(Request::greedy(2, b.clone(), steps)).unwrap();
    let (done_b, _) = engine_common::run_checked(&mut engine);
    let after = engine.stats();

    // 300 shared tokens = 18 full pages of 16 (288 tokens); the rest is B's to compute.
    let bs = engine.cache().block_size();
    let cached = 300 / bs * bs;
    assert_eq!(cached, 288);
    engine_common::assert_prefilled_only_suffix(&done_b[0], &before, after, b.len(), cached, 18);

    // The same tokens as with the cache off, and as B alone in a session.
    let mut plain =
        Engine::new(&model, EngineConfig { prefix_caching: false, ..Default::default() }).unwrap();
    plain.submit(Request::greedy(2, b.clone(), steps)).unwrap();
    let (uncached, _) = engine_common::run_checked(&mut plain);
    assert_eq!(plain.stats().prefill_computed, b.len() as u64);
    assert_eq!(done_b[0].samples, uncached[0].samples);
    assert_eq!(done_b[0].samples[0].tokens, engine_common::reference(&model, &b, steps, 16));
    assert_eq!(done_a[0].samples[0].tokens, engine_common::reference(&model, &a, steps, 16));

    // A's pages stay cached after both finished; clearing gives every page back.
    assert_eq!(engine.pages_held(), 0);
    assert!(engine.prefix_index().len() >= 18);
    engine.clear_prefix_cache().unwrap();
    assert_eq!(engine.cache().pages_in_use(), 0);
}

#[test]
fn a_fully_cached_prompt_still_computes_its_last_token() {
    let model = Llama::load(common::model_path()).expect("load model");
    let p = engine_common::prompt(3, 64); // exactly 4 pages
    let mut engine = Engine::new(&model, EngineConfig::default()).unwrap();
    engine.submit(Request::greedy(1, p.clone(), 3)).unwrap();
    let (first, _) = engine_common::run_checked(&mut engine);
    engine.submit(Request::greedy(2, p.clone(), 3)).unwrap();
    let (second, _) = engine_common::run_checked(&mut engine);
    // The last page is recomputed (its last token's logits are needed): 3 pages reused.
    assert_eq!(second[0].cached_prompt_tokens, 48);
    assert_eq!(first[0].samples, second[0].samples);
}
