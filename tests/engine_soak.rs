//! Soak: thousands of random requests through small pools of a tiny synthetic model, under
//! every KV policy: random arrival times, prompt lengths (over shared stems, so prefix hits
//! happen), `n` > 1 (forks), greedy and seeded sampling, stop tokens, cancellations of
//! waiting and running requests, and pools small enough that preemption must happen.
//!
//! After every step the engine's invariants hold; at the end no page is leaked, every
//! request finished exactly once unless cancelled, and every finished request's samples
//! equal those of the same request run alone in a fresh engine under the same policy.
//!
//! `PAGODA_SOAK_REQUESTS` sets the number of requests (default 2000, split over the rounds).

mod common;
mod engine_common;

use std::collections::{HashMap, HashSet};

use pagoda::core::evict::{Budget, KvPolicy};
use pagoda::cpu::engine::{Engine, EngineConfig, Request, RequestId, SampleOutput};
use pagoda::cpu::model::{KvType, Llama};
use pagoda::cpu::sampler::SamplerConfig;

use common::Rng;
use engine_common::{prompt_in, tiny_llama, TinyShape};

const BS: usize = 8;

fn policies() -> [KvPolicy; 4] {
    [
        KvPolicy::Full,
        KvPolicy::SinkWindow { sink: 4, window: 2 * BS },
        KvPolicy::H2o(Budget::Tokens(4 * BS)),
        KvPolicy::Pyramid(Budget::Tokens(4 * BS)),
    ]
}

fn random_request(rng: &mut Rng, id: u64, stems: &[Vec<u32>], vocab: usize) -> Request {
    let stem = &stems[rng.range(0, stems.len())];
    let mut prompt = stem[..rng.range(0, stem.len() + 1)].to_vec();
    prompt.extend(prompt_in(rng.next(), rng.range(1, 20), vocab));
    let sampler = if rng.chance(50) {
        SamplerConfig::greedy()
    } else {
        SamplerConfig {
            temperature: 0.8,
            top_k: rng.range(0, 40),
            repeat_last_n: 8,
            seed: rng.next(),
            ..SamplerConfig::default()
        }
    };
    let stop_tokens = if rng.chance(30) { prompt_in(rng.next(), 3, vocab) } else { Vec::new() };
    Request {
        id: RequestId(id),
        prompt,
        max_tokens: rng.range(1, 14),
        sampler,
        // Forks under every policy: a sample evicts what it would evict alone, pages its
        // siblings share included (see `Engine::with_policy`), so its tokens do not depend on
        // how far its siblings have got.
        n: if rng.chance(30) { rng.range(2, 4) } else { 1 },
        stop_tokens,
        logprobs: None,
        stop: Vec::new(),
        constraint: None,
    }
}

/// The request's samples alone in a fresh engine (big enough never to preempt).
fn solo(model: &Llama, policy: KvPolicy, req: &Request) -> Vec<SampleOutput> {
    let cfg = EngineConfig { kv_pages: 64, block_size: BS, ..EngineConfig::default() };
    let mut engine = Engine::with_policy(model, cfg, policy).expect("solo engine");
    engine.submit(req.clone()).expect("solo request");
    let mut done = engine.run_to_completion().expect("solo run");
    assert_eq!(done.len(), 1);
    done.remove(0).samples
}

#[derive(Default, Debug)]
struct Totals {
    finished: usize,
    cancelled_waiting: usize,
    cancelled_running: usize,
    preemptions: u64,
    forks: usize,
    steps: u64,
}

/// One engine, `n_requests` random requests arriving over time.
fn round(model: &Llama, policy: KvPolicy, n_requests: usize, seed: u64, totals: &mut Totals) {
    let mut rng = Rng(seed | 1);
    let vocab = model.config().vocab_size;
    let cfg = EngineConfig {
        // Up to 6 requests at ~4 pages each at their longest: preemption is routine.
        kv_pages: rng.range(8, 13),
        block_size: BS,
        kv_type: KvType::F16,
        max_batch_tokens: rng.range(BS, 48),
        prefix_caching: rng.chance(75),
    };
    let mut engine = Engine::with_policy(model, cfg.clone(), policy).expect("engine");
    let stems: Vec<Vec<u32>> = (0..3).map(|_| prompt_in(rng.next(), 24, vocab)).collect();
    let mut requests: HashMap<RequestId, Request> = HashMap::new();
    let mut live: Vec<RequestId> = Vec::new();
    let mut cancelled: HashSet<RequestId> = HashSet::new();
    let mut outputs = HashMap::new();
    let mut next_id = 0u64;
    let mut steps = 0u64;
    engine.check_invariants().expect("invariants at the start");
    while next_id < n_requests as u64 || engine.has_unfinished() {
        // Arrivals: bursts, with the queue kept short enough for requests to finish.
        if next_id < n_requests as u64 && live.len() < 8 {
            for _ in 0..rng.range(0, 4).min(n_requests - next_id as usize) {
                let req = random_request(&mut rng, next_id, &stems, vocab);
                engine.submit(req.clone()).unwrap_or_else(|e| panic!("{:?}: {e}", req));
                totals.forks += req.n - 1;
                live.push(req.id);
                requests.insert(req.id, req);
                next_id += 1;
            }
        }
        // Cancellations: a random unfinished request, waiting or running.
        if !live.is_empty() && rng.chance(4) {
            let id = live.swap_remove(rng.range(0, live.len()));
            let running = engine.sequence_pages(id, 0).is_some();
            let held = engine.pages_held();
            assert!(engine.cancel(id).expect("cancel"), "{id} was unfinished");
            engine.check_invariants().unwrap_or_else(|e| panic!("after cancelling {id}: {e}"));
            assert!(engine.pages_held() <= held);
            if running {
                totals.cancelled_running += 1;
            } else {
                totals.cancelled_waiting += 1;
            }
            cancelled.insert(id);
        }
        let out = engine.step().unwrap_or_else(|e| panic!("step {steps} ({policy}): {e}"));
        engine
            .check_invariants()
            .unwrap_or_else(|e| panic!("after step {steps} ({policy}, {cfg:?}): {e}"));
        steps += 1;
        assert!(steps < 200 * n_requests as u64 + 1000, "no progress");
        for f in out.finished {
            assert!(!cancelled.contains(&f.id), "cancelled {} finished", f.id);
            live.retain(|&id| id != f.id);
            assert!(outputs.insert(f.id, f).is_none(), "finished twice");
        }
    }
    assert_eq!(engine.num_running() + engine.num_waiting(), 0);
    assert_eq!(engine.pages_held(), 0, "pages leaked ({policy})");
    engine.clear_prefix_cache().expect("clear");
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity(), "pages leaked ({policy})");
    assert_eq!(outputs.len() + cancelled.len(), n_requests);
    let stats = engine.stats();
    assert_eq!(stats.cancelled, cancelled.len() as u64);

    // Every finished request equals its solo run (memoised: identical requests repeat).
    let mut memo: HashMap<String, Vec<SampleOutput>> = HashMap::new();
    for (id, out) in &outputs {
        let req = &requests[id];
        let key = format!("{:?}", Request { id: RequestId(0), ..req.clone() });
        let want = memo.entry(key).or_insert_with(|| solo(model, policy, req));
        assert_eq!(
            &out.samples, want,
            "{id} ({policy}, {cfg:?}, preempted {} times, {req:?}) differs from its solo run",
            out.preemptions
        );
    }
    totals.finished += outputs.len();
    totals.preemptions += stats.preemptions;
    totals.steps += steps;
}

#[test]
fn thousands_of_random_requests_match_their_solo_runs_and_leak_nothing() {
    let n: usize =
        std::env::var("PAGODA_SOAK_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let model = tiny_llama(TinyShape::default(), 11);
    let rounds = 8;
    let mut totals = Totals::default();
    let mut preempted_under = HashSet::new();
    let mut forked_under = HashSet::new();
    for r in 0..rounds {
        let policy = policies()[r % 4];
        let (preemptions, forks) = (totals.preemptions, totals.forks);
        round(&model, policy, n.div_ceil(rounds), 0x50A4 + r as u64, &mut totals);
        if totals.preemptions > preemptions {
            preempted_under.insert(policy.to_string());
        }
        if totals.forks > forks {
            forked_under.insert(policy.to_string());
        }
    }
    eprintln!("soak: {n} requests, {totals:?}, preemptions under {preempted_under:?}");
    assert!(totals.preemptions > 0 && preempted_under.len() == 4, "{preempted_under:?}");
    assert_eq!(forked_under.len(), 4, "forks under {forked_under:?}");
    assert!(totals.cancelled_running > 0 && totals.cancelled_waiting > 0, "{totals:?}");
    assert!(totals.forks > 0);
}
