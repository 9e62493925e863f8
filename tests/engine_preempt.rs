//! Preemption: a pool too small for every request at once still completes them all, with
//! the tokens each gets alone.

mod common;
mod engine_common;

use pagoda::cpu::engine::{Engine, EngineConfig, Request};
use pagoda::cpu::model::Llama;

#[test]
fn a_small_pool_completes_every_request_with_reference_outputs() {
    let model = Llama::load(common::model_path()).expect("load model");
    // Four requests of 30 prompt + 34 generated tokens: all four prompts fit at once
    // (2 pages each), but at their longest they need 4 pages each, 16 together, in a pool
    // of 8.
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| engine_common::prompt(100 + i, 30)).collect();
    let steps = 34;
    let cfg = EngineConfig { kv_pages: 8, block_size: 16, ..EngineConfig::default() };
    for prefix_caching in [false, true] {
        let mut engine =
            Engine::new(&model, EngineConfig { prefix_caching, ..cfg.clone() }).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            engine.submit(Request::greedy(i as u64, p.clone(), steps)).unwrap();
        }
        let (done, _) = engine_common::run_checked(&mut engine);
        let stats = engine.stats();
        assert!(stats.preemptions > 0, "the pool was meant to be too small: {stats:?}");
        assert!(stats.recomputed_tokens > 0, "preempted sequences resume by recomputation");
        assert!(stats.peak_pages <= 8);
        assert_eq!(done.len(), 4);
        for out in &done {
            let p = &prompts[out.id.0 as usize];
            assert_eq!(
                out.samples[0].tokens,
                engine_common::reference(&model, p, steps, 16),
                "{} (preempted {} times, prefix cache {prefix_caching})",
                out.id,
                out.preemptions
            );
        }
        assert_eq!(engine.pages_held(), 0);
    }
}
