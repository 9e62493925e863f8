//! KV eviction on the real model: a StreamingLLM (sink + window) generation far longer than its
//! window and its context keeps a bounded number of pages and stays sane; H2O keeps its budget;
//! perplexity under each policy is finite, and with sinks close to full attention.

mod common;

use pagoda::core::evict::{Budget, KvPolicy};
use pagoda::cpu::model::{KvType, Llama, Session, SessionOptions};
use pagoda::cpu::perplexity::perplexity_with_policy;
use pagoda::cpu::tokenizer::Tokenizer;

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in l.iter().enumerate() {
        assert!(v.is_finite(), "logit {i} is {v}");
        if v > l[best] {
            best = i;
        }
    }
    best as u32
}

fn opts(n_ctx: usize) -> SessionOptions {
    SessionOptions { n_ctx, kv_type: KvType::F16, block_size: 16, ..SessionOptions::default() }
}

/// Greedy generation of `n` tokens after `prompt`, checking pages after every token.
fn generate(s: &mut Session<'_>, prompt: &[u32], n: usize, max_pages: usize) -> Vec<u32> {
    let mut logits = s.eval(prompt).unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        logits = s.eval(&[t]).unwrap();
        assert!(
            s.kv_pages_in_use() <= max_pages,
            "{} pages in use after {} tokens, bound {max_pages}",
            s.kv_pages_in_use(),
            s.len()
        );
    }
    out
}

#[test]
fn sink_window_generation_runs_past_window_and_context_in_bounded_pages() {
    let model = Llama::load(common::model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&model.gguf()).unwrap();
    let prompt = tok.encode("The history of the printing press begins", true, false);
    let policy = KvPolicy::parse("sink:4,window:64").unwrap();
    // 1 sink page + the pages covering 64 tokens + the page being written.
    let max_pages = 1 + 64 / 16 + 2;
    let n_ctx = 128;
    let mut s = Session::with_policy(&model, opts(n_ctx), policy).unwrap();
    assert_eq!(s.cache().pool().capacity(), max_pages);
    let n = 400;
    let out = generate(&mut s, &prompt, n, max_pages);
    assert_eq!(s.len(), prompt.len() + n);
    assert!(s.len() > 3 * n_ctx);
    assert!(s.cached_len() <= 16 * max_pages);
    assert!(s.evicted_pages() >= (s.len() - s.cached_len()) / 16);
    // The sink page (the first 16 tokens) is still the table's first page.
    assert_eq!(s.table().pages()[0].index(), 0);

    // Until the first eviction the cache holds everything, so greedy tokens match full
    // attention's.
    let mut full = Session::new(&model, opts(n_ctx)).unwrap();
    let reference = generate(&mut full, &prompt, 40, usize::MAX);
    assert_eq!(out[..40], reference[..], "differs from full attention before any eviction");

    // Sane output far past the window: real text, not one token repeated.
    let tail = &out[n - 120..];
    let mut distinct = tail.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 12, "only {} distinct tokens in the last 120", distinct.len());
    let text = tok.decode(tail);
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    assert!(letters * 2 > text.chars().count(), "not text: {text:?}");
    let max = s.cache().pool().capacity();
    s.clear();
    assert_eq!(s.kv_pages_in_use(), 0);
    assert_eq!(s.cache().pool().free_count(), max);
}

#[test]
fn policies_score_a_text_and_sinks_beat_a_plain_window() {
    let model = Llama::load(common::model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&model.gguf()).unwrap();
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let tokens = tok.encode(&text, true, false);
    let o = opts(512);
    let chunk = &tokens[..512];
    let ppl = |p: KvPolicy| perplexity_with_policy(&model, chunk, &o, p, |_, _| {}).unwrap();
    let full = ppl(KvPolicy::Full);
    let sink = ppl(KvPolicy::SinkWindow { sink: 4, window: 128 });
    let window = ppl(KvPolicy::SinkWindow { sink: 0, window: 128 });
    let h2o = ppl(KvPolicy::H2o(Budget::Percent(50)));
    eprintln!(
        "ppl full {:.3} | sink:4,window:128 {:.3} | window:128 {:.3} | h2o:50% {:.3}",
        full.ppl, sink.ppl, window.ppl, h2o.ppl
    );
    eprintln!(
        "peak KV bytes full {} | sink {} | window {} | h2o {}",
        full.peak_kv_bytes, sink.peak_kv_bytes, window.peak_kv_bytes, h2o.peak_kv_bytes
    );
    for r in [&sink, &window, &h2o] {
        assert!(r.ppl.is_finite() && r.ppl > 1.0, "{r:?}");
        assert!(r.peak_kv_bytes < full.peak_kv_bytes, "no memory saved: {r:?}");
    }
    // H2O at 50% of 512: at most 16 pages of 16 tokens.
    let page = full.peak_kv_bytes / 32;
    assert!(h2o.peak_kv_bytes <= 16 * page, "h2o over budget: {}", h2o.peak_kv_bytes);
    assert!(sink.ppl < full.ppl * 1.25, "sink+window {:.3} vs full {:.3}", sink.ppl, full.ppl);
    assert!(window.ppl > sink.ppl * 1.05, "window {:.3} vs sink {:.3}", window.ppl, sink.ppl);
}

#[test]
fn truncating_an_evicted_sequence_keeps_its_recent_tokens() {
    let model = Llama::load(common::model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&model.gguf()).unwrap();
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let tokens = tok.encode(&text, true, false);
    let policy = KvPolicy::parse("sink:4,window:32").unwrap();
    let mut s = Session::with_policy(&model, opts(64), policy).unwrap();
    let n = 150;
    let last = s.eval(&tokens[..n]).unwrap();
    assert!(s.evicted_pages() > 0);
    let cached = s.cached_len();
    // What `generate` does to continue a cached sequence: drop the last token, feed it again.
    s.truncate(n - 1);
    assert_eq!((s.len(), s.cached_len()), (n - 1, cached - 1));
    let again = s.eval(&tokens[n - 1..n]).unwrap();
    assert_eq!(s.len(), n);
    assert_eq!(argmax(&again), argmax(&last));
    let diff = last.iter().zip(&again).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 0.05, "logits moved by {diff} after truncate + re-eval");
}

#[test]
fn pyramid_bounds_each_layers_pages_and_scores_sanely_at_half_budget() {
    use pagoda::core::evict::PyramidBudgets;
    let model = Llama::load(common::model_path()).unwrap();
    let tok = Tokenizer::from_gguf(&model.gguf()).unwrap();
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let tokens = tok.encode(&text, true, false);
    let n_layers = model.config().n_layers;
    let o = opts(512);
    let policy = KvPolicy::Pyramid(Budget::Percent(50));
    // 50% of 512 = 16 pages per layer on average: 8 recent, the selected 8 spread from 15
    // (layer 0) down to 1 (the last layer).
    let budgets = PyramidBudgets::new(16, n_layers, 32).unwrap();

    // Memory, layer by layer, while running far past the context.
    let mut s = Session::with_policy(&model, o.clone(), policy).unwrap();
    assert_eq!(s.tables().len(), n_layers);
    assert_eq!(s.cache().pool().capacity(), n_layers * 16);
    assert!(s.cache().per_layer());
    for step in tokens[..700].chunks(50) {
        s.eval(step).unwrap();
        for (l, t) in s.tables().iter().enumerate() {
            let bound = budgets.layer_pages(l).unwrap();
            assert!(t.pages().len() <= bound, "layer {l}: {} pages > {bound}", t.pages().len());
        }
        assert!(s.kv_pages_in_use() <= n_layers * 16);
        s.cache().pool().check_invariants().unwrap();
    }
    // Every layer is full to its own budget (the last step's page may be partly filled):
    // lower layers really keep more.
    let pages: Vec<usize> = s.tables().iter().map(|t| t.pages().len()).collect();
    for (l, &n) in pages.iter().enumerate() {
        let bound = budgets.layer_pages(l).unwrap();
        assert!(n + 1 >= bound, "layer {l} holds {n} of {bound} pages");
    }
    assert!(pages[0] > pages[n_layers - 1] + 8, "{pages:?}");
    // Each layer's table holds distinct pages; together exactly the pool's used pages.
    s.cache().pool().check_holders(s.tables().iter().map(|t| t.pages())).unwrap();
    s.clear();
    assert_eq!(s.cache().pool().free_count(), n_layers * 16);

    // Perplexity at 50%: finite, bounded memory, between full attention and a plain window.
    let chunk = &tokens[..512];
    let ppl = |p: KvPolicy| perplexity_with_policy(&model, chunk, &o, p, |_, _| {}).unwrap();
    let full = ppl(KvPolicy::Full);
    let pyramid = ppl(policy);
    let window = ppl(KvPolicy::SinkWindow { sink: 0, window: 256 });
    eprintln!(
        "ppl full {:.3} | pyramid:50% {:.3} | window:256 {:.3}; peak KV {} vs {}",
        full.ppl, pyramid.ppl, window.ppl, pyramid.peak_kv_bytes, full.peak_kv_bytes
    );
    assert!(pyramid.ppl.is_finite() && pyramid.ppl > 1.0, "{pyramid:?}");
    assert!(pyramid.peak_kv_bytes <= full.peak_kv_bytes / 2, "{pyramid:?}");
    assert!(pyramid.ppl < full.ppl * 1.15, "pyramid {:.3} vs full {:.3}", pyramid.ppl, full.ppl);
    assert!(pyramid.ppl < window.ppl, "pyramid {:.3} vs window {:.3}", pyramid.ppl, window.ppl);
}
