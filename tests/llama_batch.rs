//! A flat batch of several sequences gives each the same result as running it alone.

mod common;

use pagoda::cpu::model::{
    ForwardScratch, KvCache, KvType, Llama, Logits, ModelError, SeqItem, Session, SessionOptions,
};
use pagoda::cpu::sampler::argmax;

fn alone(model: &Llama, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut s = Session::new(model, SessionOptions::default()).unwrap();
    let mut logits = s.eval(prompt).unwrap();
    let mut out = Vec::new();
    for _ in 0..steps {
        let t = argmax(&logits);
        out.push(t);
        logits = s.eval(&[t]).unwrap();
    }
    out
}

#[test]
fn batched_greedy_equals_each_sequence_alone() {
    let model = Llama::load(common::model_path()).expect("load model");
    let data = common::data_json("llamacpp/greedy_dev.json");
    let prompts: Vec<Vec<u32>> =
        data["cases"].as_array().unwrap().iter().map(|c| common::ids(&c["prompt_ids"])).collect();
    let steps = 24;
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| alone(&model, p, steps)).collect();

    let mut cache = KvCache::new(model.config(), KvType::F16, 64, 16).unwrap();
    let mut tables: Vec<_> = prompts.iter().map(|_| cache.new_table()).collect();
    let mut scratch = ForwardScratch::default();
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    // Step 0: all prompts in one batch; then one decode token per sequence per step.
    let mut next: Vec<Vec<u32>> = prompts.clone();
    for _ in 0..steps {
        let mut items: Vec<SeqItem> = tables
            .iter_mut()
            .zip(&next)
            .map(|(table, toks)| SeqItem::new(table, toks, Logits::Last))
            .collect();
        let batch = cache.prepare(&mut items).unwrap();
        let logits = model.forward(&mut cache, &batch, &mut scratch).unwrap();
        for (i, l) in logits.iter().enumerate() {
            let t = argmax(l);
            got[i].push(t);
            next[i] = vec![t];
        }
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "sequence {i}: batched output differs from running alone");
    }
    for t in &mut tables {
        cache.free(t);
    }
    assert_eq!(cache.pages_in_use(), 0);
    cache.pool().check_invariants().unwrap();
}

/// `KvCache::prepare` is all or nothing, and a shortage is a typed error a caller can match:
/// `OutOfPages { needed, free }`, with every table back at its old length and no page taken.
#[test]
fn prepare_is_all_or_nothing_and_a_shortage_is_out_of_pages() {
    let model = Llama::load(common::model_path()).expect("load model");
    let mut cache = KvCache::new(model.config(), KvType::F16, 3, 16).unwrap();
    let (mut a, mut b) = (cache.new_table(), cache.new_table());
    let (ta, tb) = (vec![1u32; 20], vec![2u32; 30]);
    {
        let mut items =
            [SeqItem::new(&mut a, &ta, Logits::Last), SeqItem::new(&mut b, &tb, Logits::Last)];
        match cache.prepare(&mut items) {
            Err(ModelError::OutOfPages { needed, free }) => assert_eq!((needed, free), (2, 1)),
            other => panic!("expected OutOfPages, got {other:?}"),
        }
    }
    assert_eq!((a.len(), b.len(), cache.pages_in_use()), (0, 0, 0));
    // What fits is prepared, and a failed pass rolls back (here: an id outside the vocabulary).
    let bad = vec![u32::MAX; 5];
    let mut items =
        [SeqItem::new(&mut a, &ta, Logits::Last), SeqItem::new(&mut b, &bad, Logits::Last)];
    let batch = cache.prepare(&mut items).unwrap();
    assert_eq!(batch.len(), 25);
    let err = model.forward(&mut cache, &batch, &mut ForwardScratch::default()).unwrap_err();
    assert!(matches!(err, ModelError::Invalid(_)), "{err}");
    cache.rollback(&mut items, batch);
    assert_eq!((a.len(), b.len(), cache.pages_in_use()), (0, 0, 0));
    cache.pool().check_invariants().unwrap();
}
