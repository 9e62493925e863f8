//! `Engine::cancel`: a cancelled request's pages (its forks' too) go back in the call, the
//! other requests finish with the tokens they get alone, and ids are reusable.

mod common;
mod engine_common;

use std::collections::HashMap;

use pagoda::cpu::engine::{Engine, EngineConfig, Request, RequestId};
use pagoda::cpu::model::{KvType, Llama};

use engine_common::{prompt_in, tiny_llama, TinyShape};

const BS: usize = 8;

fn model() -> &'static Llama {
    use std::sync::OnceLock;
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| tiny_llama(TinyShape::default(), 7))
}

fn config(kv_pages: usize, prefix_caching: bool) -> EngineConfig {
    EngineConfig {
        kv_pages,
        block_size: BS,
        kv_type: KvType::F16,
        max_batch_tokens: 64,
        prefix_caching,
    }
}

fn vocab() -> usize {
    model().config().vocab_size
}

/// Pages the engine's sequences hold, counted from their tables (every sample).
fn pages_of(engine: &Engine<'_>, id: u64, n: usize) -> usize {
    (0..n).filter_map(|k| engine.sequence_pages(RequestId(id), k)).map(<[_]>::len).sum()
}

#[test]
fn cancelling_a_running_forked_request_frees_its_pages_at_once() {
    let model = model();
    for prefix_caching in [false, true] {
        let mut engine = Engine::new(model, config(32, prefix_caching)).unwrap();
        let keep = Request::greedy(1, prompt_in(1, 21, vocab()), 12);
        let doomed = Request { n: 3, ..Request::greedy(2, prompt_in(2, 19, vocab()), 40) };
        engine.submit(keep.clone()).unwrap();
        engine.submit(doomed).unwrap();
        let mut done = Vec::new();
        // Run until the doomed request has forked and its samples have diverged pages.
        for _ in 0..4 {
            done.extend(engine.step().unwrap().finished);
            engine.check_invariants().unwrap();
        }
        assert!(engine.sequence_pages(RequestId(2), 2).is_some(), "sample 2 forked");
        let held_before = engine.pages_held();
        let doomed_pages = pages_of(&engine, 2, 3);
        assert!(doomed_pages > 0);
        assert!(engine.cancel(RequestId(2)).unwrap());
        engine.check_invariants().unwrap();
        for k in 0..3 {
            assert!(engine.sequence_pages(RequestId(2), k).is_none());
        }
        // Only request 1's pages are held now: every page of request 2 was given back (to
        // the free list, or to the prefix cache as a reclaimable page).
        assert_eq!(engine.pages_held(), pages_of(&engine, 1, 1));
        assert!(engine.pages_held() < held_before);
        assert_eq!(engine.stats().cancelled, 1);
        assert!(!engine.cancel(RequestId(2)).unwrap(), "already gone");
        while engine.has_unfinished() {
            done.extend(engine.step().unwrap().finished);
            engine.check_invariants().unwrap();
        }
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].id, RequestId(1));
        assert_eq!(
            done[0].samples[0].tokens,
            engine_common::reference(model, &keep.prompt, keep.max_tokens, BS),
            "prefix caching {prefix_caching}"
        );
        engine.clear_prefix_cache().unwrap();
        let pool = engine.cache().pool();
        assert_eq!(pool.free_count(), pool.capacity());
    }
}

#[test]
fn cancelling_waiting_and_preempted_requests_and_reusing_ids() {
    let model = model();
    // 6 pages of 8 tokens: three requests of 20 + 20 tokens cannot all run at once.
    let mut engine = Engine::new(model, config(6, true)).unwrap();
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| prompt_in(10 + i, 20, vocab())).collect();
    for (i, p) in prompts.iter().enumerate().take(3) {
        engine.submit(Request::greedy(i as u64, p.clone(), 20)).unwrap();
    }
    assert!(!engine.cancel(RequestId(99)).unwrap(), "unknown id");
    let mut done: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut cancelled_waiting = false;
    let mut steps = 0;
    while engine.has_unfinished() {
        for f in engine.step().unwrap().finished {
            done.insert(f.id, f.samples[0].tokens.clone());
        }
        engine.check_invariants().unwrap();
        steps += 1;
        // Cancel request 2 while it waits (not admitted yet, or preempted).
        if !cancelled_waiting
            && engine.num_waiting() > 0
            && engine.sequence_pages(RequestId(2), 0).is_none()
        {
            let held = engine.pages_held();
            assert!(engine.cancel(RequestId(2)).unwrap());
            assert_eq!(engine.pages_held(), held, "a waiting request holds no pages");
            cancelled_waiting = true;
            // Its id is free again: queue a different request under it.
            engine.submit(Request::greedy(2, prompts[3].clone(), 9)).unwrap();
        }
        assert!(steps < 10_000);
    }
    assert!(cancelled_waiting, "request 2 never waited: the test proves nothing");
    assert_eq!(done.len(), 3);
    for (id, prompt, max) in [(0, &prompts[0], 20), (1, &prompts[1], 20), (2, &prompts[3], 9)] {
        let want = engine_common::reference(model, prompt, max, BS);
        assert_eq!(done[&RequestId(id)], want, "request {id}");
    }
    engine.clear_prefix_cache().unwrap();
    let pool = engine.cache().pool();
    assert_eq!(pool.free_count(), pool.capacity());
}

/// `Engine::finish_sample` (a stop string found by the caller): the sample ends with the
/// tokens it has, its pages go back in the call, its siblings run on to what they produce
/// alone, and the request's output comes when the last sample ends.
#[test]
fn finishing_one_sample_frees_its_pages_and_leaves_its_siblings_alone() {
    use pagoda::cpu::engine::FinishReason;
    use pagoda::cpu::sampler::SamplerConfig;
    let model = model();
    let sampler = SamplerConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 9,
        ..SamplerConfig::default()
    };
    let req = Request { n: 3, sampler, ..Request::greedy(5, prompt_in(5, 19, vocab()), 30) };
    // Alone: what each sample produces unstopped.
    let mut alone = Engine::new(model, config(64, false)).unwrap();
    alone.submit(req.clone()).unwrap();
    let full = alone.run_to_completion().unwrap().remove(0);

    let mut engine = Engine::new(model, config(64, false)).unwrap();
    engine.submit(req).unwrap();
    // Before the prompt is done nothing was generated: nothing to finish.
    assert_eq!(engine.finish_sample(RequestId(5), 0).unwrap(), None);
    let mut generated = 0;
    while generated < 6 {
        generated += engine.step().unwrap().tokens.iter().filter(|t| t.sample == 1).count();
    }
    let held = engine.pages_held();
    let own = pages_of(&engine, 5, 3) - pages_of(&engine, 5, 1) - {
        // sample 2's pages
        engine.sequence_pages(RequestId(5), 2).map_or(0, <[_]>::len)
    };
    assert!(own > 0);
    assert_eq!(engine.finish_sample(RequestId(5), 1).unwrap(), None, "samples 0 and 2 run on");
    engine.check_invariants().unwrap();
    assert!(engine.pages_held() < held, "sample 1's own pages went back in the call");
    assert!(engine.sequence_pages(RequestId(5), 1).is_none());
    // Finishing it again, or an unknown request, changes nothing.
    assert_eq!(engine.finish_sample(RequestId(5), 1).unwrap(), None);
    assert_eq!(engine.finish_sample(RequestId(77), 0).unwrap(), None);
    let out = engine.run_to_completion().unwrap().remove(0);
    engine.check_invariants().unwrap();
    assert_eq!(engine.pages_held(), 0);
    assert_eq!(out.samples[0], full.samples[0]);
    assert_eq!(out.samples[2], full.samples[2]);
    assert_eq!(out.samples[1].finish, FinishReason::Stop);
    assert_eq!(out.samples[1].tokens[..], full.samples[1].tokens[..6]);
}

/// `Request::logprobs`: each token event carries `ln p` of the chosen token under the
/// model's softmax and the top alternatives, most likely first; greedy picks the top one.
#[test]
fn token_events_carry_log_probabilities_when_asked() {
    let model = model();
    let mut engine = Engine::new(model, config(64, false)).unwrap();
    let req = Request { logprobs: Some(3), ..Request::greedy(1, prompt_in(3, 11, vocab()), 8) };
    engine.submit(req).unwrap();
    engine.submit(Request::greedy(2, prompt_in(4, 9, vocab()), 8)).unwrap();
    let mut seen = 0;
    while engine.has_unfinished() {
        for t in engine.step().unwrap().tokens {
            match t.id.0 {
                1 => {
                    let lp = t.logprobs.expect("asked for");
                    assert_eq!(lp.top.len(), 3);
                    assert_eq!(lp.top[0], (t.token, lp.logprob), "greedy takes the most likely");
                    assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
                    assert!(lp.logprob <= 0.0 && lp.logprob.is_finite());
                    seen += 1;
                }
                _ => assert!(t.logprobs.is_none(), "not asked for"),
            }
        }
    }
    assert_eq!(seen, 8);
}
