//! Parallel sampling: n samples fork one prefilled prompt and share its pages.

mod common;
mod engine_common;

use pagoda::cpu::engine::{Engine, EngineConfig, Request, RequestId};
use pagoda::cpu::model::Llama;
use pagoda::cpu::sampler::SamplerConfig;

#[test]
fn eight_greedy_samples_share_the_prompt_pages_and_agree() {
    let model = Llama::load(common::model_path()).expect("load model");
    let prompt = engine_common::prompt(11, 512);
    let steps = 4;
    let mut engine = Engine::new(&model, EngineConfig::default()).unwrap();
    let req = Request { n: 8, ..Request::greedy(1, prompt.clone(), steps) };
    engine.submit(req).unwrap();
    // Step until the prompt is done and the samples are forked (first tokens out).
    let mut out = engine.step().unwrap();
    while out.tokens.is_empty() {
        engine.check_invariants().unwrap();
        out = engine.step().unwrap();
    }
    engine.check_invariants().unwrap();
    assert_eq!(out.tokens.len(), 8, "every sample chose its first token");
    assert_eq!(engine.num_running(), 8);
    let one_sample = prompt.len().div_ceil(16); // 32 pages
    let held = engine.pages_held();
    assert!(
        held as f64 <= 1.15 * one_sample as f64,
        "right after the fork 8 samples hold {held} pages, one alone {one_sample}"
    );
    // Next step: each sample writes its first token into a private page; the 32 prompt
    // pages stay shared.
    engine.step().unwrap();
    engine.check_invariants().unwrap();
    assert_eq!(engine.pages_held(), one_sample + 8);

    let (done, _) = engine_common::run_checked(&mut engine);
    let samples = &done[0].samples;
    assert_eq!(samples.len(), 8);
    assert!(samples.iter().all(|s| s == &samples[0]), "greedy samples differ: {samples:?}");
    assert_eq!(samples[0].tokens, engine_common::reference(&model, &prompt, steps, 16));
    assert_eq!(engine.pages_held(), 0);
}

#[test]
fn samples_have_their_own_seeds_and_sample_zero_is_the_single_run() {
    let model = Llama::load(common::model_path()).expect("load model");
    // 21 tokens: the last prompt page is partly filled, so the samples copy it on write.
    let prompt = engine_common::prompt(5, 21);
    let sampler = SamplerConfig {
        temperature: 1.5,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 42,
        ..SamplerConfig::default()
    };
    let req = |id, n| Request {
        id: RequestId(id),
        prompt: prompt.clone(),
        max_tokens: 12,
        sampler: sampler.clone(),
        n,
        stop_tokens: Vec::new(),
        logprobs: None,
        stop: Vec::new(),
        constraint: None,
    };
    let mut engine = Engine::new(&model, EngineConfig::default()).unwrap();
    engine.submit(req(1, 4)).unwrap();
    let (many, _) = engine_common::run_checked(&mut engine);
    engine.submit(req(2, 1)).unwrap();
    let (single, _) = engine_common::run_checked(&mut engine);
    let s = &many[0].samples;
    assert_eq!(s[0], single[0].samples[0], "sample 0 uses the request's seed");
    // Sample i uses seed 42 + i: the same as a single run with that seed.
    engine
        .submit(Request { sampler: SamplerConfig { seed: 44, ..sampler.clone() }, ..req(3, 1) })
        .unwrap();
    let (third, _) = engine_common::run_checked(&mut engine);
    assert_eq!(s[2], third[0].samples[0]);
    // At temperature 1.5 with no filters, four 12-token samples are not all equal.
    assert!(s.iter().any(|x| x != &s[0]), "all samples identical: {s:?}");
}
