//! The scheduler under random arrivals in a small pool: every request completes with the
//! tokens it gets alone, the pool's bookkeeping holds after every step, and nothing but
//! prefix-cached pages is left at the end.

#[path = "common/mod.rs"]
mod common;
mod engine_common;

use std::collections::HashMap;

use pagoda::cpu::engine::{Engine, EngineConfig, EngineError, Request, RequestId};
use pagoda::cpu::model::{KvType, Llama};
use proptest::prelude::*;

fn model() -> &'static Llama {
    use std::sync::OnceLock;
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| Llama::load(common::model_path()).expect("load model"))
}

#[derive(Clone, Debug)]
struct Arrival {
    step: usize,
    shared_prefix: usize,
    own: usize,
    max_tokens: usize,
    samples: usize,
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (0usize..6, 0usize..24, 1usize..16, 1usize..8, 1usize..4).prop_map(
        |(step, shared_prefix, own, max, samples)| Arrival {
            step,
            shared_prefix,
            own,
            max_tokens: max,
            samples,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(engine_common::cases(8)))]

    #[test]
    fn random_arrivals_complete_with_reference_outputs(
        arrivals in prop::collection::vec(arrival(), 1..6),
        kv_pages in 6usize..10,
        max_batch_tokens in 1usize..48,
        prefix_caching in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let model = model();
        let cfg = EngineConfig {
            kv_pages,
            block_size: 8,
            kv_type: KvType::F16,
            max_batch_tokens,
            prefix_caching,
        };
        let mut engine = Engine::new(model, cfg).unwrap();
        // Prompts share a common stem of random length, so prefix hits happen.
        let stem = engine_common::prompt(seed, 24);
        let requests: Vec<Request> = arrivals
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut p = stem[..a.shared_prefix].to_vec();
                p.extend(engine_common::prompt(seed ^ (i as u64 + 1), a.own));
                // Several greedy samples fork the prompt and copy its last page on write.
                Request { n: a.samples, ..Request::greedy(i as u64, p, a.max_tokens) }
            })
            .collect();
        let mut outputs = HashMap::new();
        let mut step = 0;
        engine.check_invariants().unwrap();
        while outputs.len() < requests.len() {
            for (r, a) in requests.iter().zip(&arrivals) {
                if a.step == step {
                    engine.submit(r.clone()).unwrap();
                }
            }
            let out = engine.step().unwrap();
            engine.check_invariants().unwrap();
            for f in out.finished {
                outputs.insert(f.id, f);
            }
            step += 1;
            prop_assert!(step < 10_000, "no progress");
        }
        for r in &requests {
            let want = engine_common::reference(model, &r.prompt, r.max_tokens, 8);
            let samples = &outputs[&r.id].samples;
            prop_assert_eq!(samples.len(), r.n);
            for (k, s) in samples.iter().enumerate() {
                prop_assert_eq!(&s.tokens, &want, "{} sample {} differs from its unbatched run", r.id, k);
            }
        }
        prop_assert_eq!(engine.num_running() + engine.num_waiting(), 0);
        prop_assert_eq!(engine.pages_held(), 0);
        prop_assert_eq!(engine.cache().pages_in_use(), engine.prefix_index().len());
        engine.clear_prefix_cache().unwrap();
        prop_assert_eq!(engine.cache().pages_in_use(), 0);
        engine.check_invariants().unwrap();
    }
}

#[test]
fn requests_that_can_never_fit_or_are_malformed_are_refused() {
    let model = model();
    let cfg = EngineConfig { kv_pages: 4, block_size: 16, ..EngineConfig::default() };
    let mut engine = Engine::new(model, cfg).unwrap();
    // 60 prompt + 5 generated − 1 = 64 tokens = 4 pages: fits exactly.
    engine.submit(Request::greedy(1, engine_common::prompt(1, 60), 5)).unwrap();
    let too_big = engine.submit(Request::greedy(2, engine_common::prompt(2, 60), 6));
    assert!(
        matches!(too_big, Err(EngineError::TooLarge { pages_needed: 5, pages_total: 4, .. })),
        "{too_big:?}"
    );
    let msg = too_big.unwrap_err().to_string();
    assert!(msg.contains("request 2") && msg.contains("5 KV pages"), "{msg}");
    assert!(matches!(
        engine.submit(Request::greedy(1, vec![5], 1)),
        Err(EngineError::DuplicateId(RequestId(1)))
    ));
    let empty = engine.submit(Request::greedy(3, vec![], 1)).unwrap_err();
    assert!(empty.to_string().contains("empty"), "{empty}");
    let oov = engine.submit(Request::greedy(4, vec![1, u32::MAX], 1)).unwrap_err();
    assert!(oov.to_string().contains("prompt token 1"), "{oov}");
    let zero = Request { n: 0, ..Request::greedy(5, vec![1], 1) };
    assert!(engine.submit(zero).unwrap_err().to_string().contains("n (samples)"));
    assert!(matches!(
        Engine::new(model, EngineConfig { max_batch_tokens: 0, ..EngineConfig::default() }),
        Err(EngineError::InvalidConfig(_))
    ));
    // The request that fits runs alone in the whole pool.
    let (done, _) = engine_common::run_checked(&mut engine);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].samples[0].tokens.len(), 5);
}
