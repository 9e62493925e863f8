//! Gemma 3 270M (Q4_K_M, `scripts/fetch-model.sh gemma3`) against llama.cpp b11312
//! (tests/data/llamacpp/gemma3.json, made by scripts/gen_gemma3_refs.sh), and its
//! sliding-window layers on the paged cache.

mod common;

use pagoda::cpu::kernels::gelu;

/// ggml's GELU table, bit for bit: the SHA-256 of the 65 536 f16 results that
/// scripts/gelu_table.c computes when compiled as ggml-cpu is (gcc -O3 -mfma).
#[test]
fn gelu_table_equals_ggml_cpu() {
    let bytes: Vec<u8> = gelu::table().iter().flat_map(|h| h.to_le_bytes()).collect();
    assert_eq!(
        common::sha256::sha256_hex(&bytes),
        "5372503d4d69aabb589feee6b59e80bf08cbcd71ffb6c43a8210622729ad32bf"
    );
    // √(2/π) written to f32 precision.
    assert_eq!(gelu::gelu_f32(1.0), {
        let (a, s) = (0.044715f32, (2.0f64 / std::f64::consts::PI).sqrt() as f32);
        0.5 * (1.0 + (s * (a * 1.0f32).mul_add(1.0, 1.0)).tanh())
    });
}

use pagoda::cpu::engine::{Engine, EngineConfig, Request};
use pagoda::cpu::model::{
    droppable_pages, ForwardScratch, KvCache, KvType, Llama, Logits, Session, SessionOptions,
};
use pagoda::cpu::tokenizer::Tokenizer;

fn gemma3() -> Llama {
    Llama::load(common::gemma3_model_path()).expect("load gemma3")
}

/// The first `n` tokens of the GPL-3 text (BOS first), as the model tokenizes it.
fn text_tokens(model: &Llama, n: usize) -> Vec<u32> {
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let mut ids = tok.encode(&text, true, false);
    assert!(ids.len() >= n, "GPL-3 has {} tokens, want {n}", ids.len());
    ids.truncate(n);
    ids
}

/// The 270M model's layout: 18 layers, every sixth global, the others windowed to 512.
#[test]
fn config_reads_gemma3_blocks_from_metadata() {
    let model = gemma3();
    let c = model.config();
    assert_eq!((c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim), (18, 640, 4, 1, 256));
    assert_eq!(
        (c.vocab_size, c.ffn_dim, c.rope_base, c.rope_base_local),
        (262_144, 2048, 1e6, 1e4)
    );
    let globals: Vec<usize> = (0..18).filter(|&l| c.window(l).is_none()).collect();
    assert_eq!(globals, [5, 11, 17]);
    assert!((0..18).filter_map(|l| c.window(l)).all(|w| w == 512));
    assert_eq!(c.q_scale, Some(1.0 / 16.0));
    assert_eq!(c.embed_scale, Some(640f32.sqrt()));
    assert!(c.qk_norm && c.post_norms);
}

/// A 2000-token session: after every step each windowed layer holds exactly the pages of its
/// last 512 tokens (the rule of `pagoda_cpu::model::window`), the global layers every page,
/// the pool's invariants hold and it holds nothing else; and the logits equal, bit for bit,
/// a run that keeps every page of every layer in one all-layer table and lets the attention
/// mask the window.
#[test]
fn windowed_layers_keep_only_their_pages_and_give_the_logits_of_a_masked_full_cache() {
    let model = gemma3();
    let c = model.config().clone();
    let tokens = text_tokens(&model, 2000);
    let bs = 16;
    let opts = SessionOptions { n_ctx: 2048, block_size: bs, ..Default::default() };
    let mut session = Session::new(&model, opts).unwrap();
    let mut full = KvCache::new(&c, KvType::F16, 2048 / bs, bs).unwrap();
    let mut table = full.new_table();
    let mut scratch = ForwardScratch::default();
    // Steps of every shape: single tokens, partial pages, chunks longer than the window.
    let sizes = [1, 37, 300, 5, 1, 64, 700, 16, 3, 1, 200, 1, 90];
    let (mut at, mut step) = (0, 0);
    let mut peak_windowed = 0;
    while at < tokens.len() {
        let n = sizes[step % sizes.len()].min(tokens.len() - at);
        let chunk = &tokens[at..at + n];
        let got = session.eval(chunk).unwrap();
        let want = model.forward(&mut full, &mut table, chunk, Logits::Last, &mut scratch).unwrap();
        at += n;
        step += 1;
        let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(
            differ, 0,
            "step {step} ({at} tokens): {differ} logits differ from the masked run"
        );
        // The pages each layer holds.
        let tables = session.tables();
        assert_eq!(tables.len(), c.n_layers);
        let mut held = 0;
        for (l, t) in tables.iter().enumerate() {
            assert_eq!(t.pages().len(), t.len().div_ceil(bs), "layer {l}");
            match c.window(l) {
                None => assert_eq!(t.len(), at, "global layer {l}"),
                Some(w) => {
                    assert!(t.len() >= w.min(at), "layer {l} lost part of its window");
                    assert_eq!(droppable_pages(t.len(), w, bs), 0, "layer {l} keeps too much");
                    assert_eq!((at - t.len()) % bs, 0, "layer {l} dropped a partial page");
                    peak_windowed = peak_windowed.max(t.pages().len());
                }
            }
            held += t.pages().len();
        }
        let pool = session.cache().pool();
        pool.check_invariants().unwrap();
        assert_eq!(pool.used_count(), held, "the pool holds pages no table holds");
    }
    // ⌈512/16⌉ + 1 pages at most between steps.
    assert!(peak_windowed <= 512 / bs + 1, "{peak_windowed}");
    eprintln!(
        "2000 tokens: {} pages held (all-layer run: {} single-layer pages)",
        session.kv_pages_in_use(),
        full.pages_in_use() * c.n_layers
    );
}

/// The engine batches windowed sequences (one table per layer, pages given back as windows
/// move) and gives each request the tokens a session gives it alone; every page goes back.
#[test]
fn engine_runs_windowed_requests_as_a_session_does_alone() {
    let model = gemma3();
    let prompts = text_tokens(&model, 1400);
    let cases: Vec<(Vec<u32>, usize)> = vec![
        (prompts[..700].to_vec(), 12),
        (prompts[..9].to_vec(), 20),
        (prompts[300..1400].to_vec(), 8),
        (prompts[..530].to_vec(), 16),
    ];
    let solo: Vec<Vec<u32>> = cases.iter().map(|(p, n)| greedy_session(&model, p, *n)).collect();
    let config = EngineConfig { kv_pages: 100, max_batch_tokens: 256, ..Default::default() };
    let mut engine = Engine::new(&model, config).unwrap();
    assert_eq!(engine.tables_per_sequence(), 18);
    for (i, (p, n)) in cases.iter().enumerate() {
        let mut req = Request::greedy(i as u64, p.clone(), *n);
        // Two samples of the long prompt: forked pages, dropped by each sample on its own.
        req.n = if i == 0 { 2 } else { 1 };
        engine.add_request(req).unwrap();
    }
    let mut outs = Vec::new();
    while engine.has_unfinished() {
        outs.extend(engine.step().unwrap().finished);
        engine.check_invariants().unwrap();
    }
    assert_eq!(outs.len(), cases.len());
    for o in outs {
        let want = &solo[o.id.0 as usize];
        for s in &o.samples {
            assert_eq!(&s.tokens, want, "request {}", o.id.0);
        }
    }
    assert_eq!(engine.cache().pool().used_count(), 0);
}

fn greedy_session(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = SessionOptions { n_ctx: 2048, ..Default::default() };
    let mut s = Session::new(model, opts).unwrap();
    let mut logits = s.eval(prompt).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        out.push(t);
        logits = s.eval(&[t]).unwrap();
    }
    out
}
