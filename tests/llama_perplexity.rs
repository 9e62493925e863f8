//! Perplexity on the GPL-3 text against llama.cpp's `llama-perplexity`
//! (tests/data/llamacpp/perplexity_dev.json, its default run: flash attention, f16 cache,
//! `-b 2048 -ub 512`): in exact numerics, with llama-perplexity's rows per pass
//! ([`llama_perplexity_batch`]: 128 at `-c 512`, which takes llama.cpp's tiled attention,
//! 32 at `-c 128`, which keeps its one-key-at-a-time kernel), pagoda's final PPL, its ± and
//! the running PPL after every chunk equal llama.cpp's to every printed digit.

mod common;

use common::golden::PrintedPerplexity;
use pagoda::cpu::model::{Llama, Numerics, SessionOptions};
use pagoda::cpu::perplexity::llama_perplexity_batch;
use pagoda::cpu::tokenizer::Tokenizer;

fn gpl3_perplexity_equals_llamacpp(n_ctx: usize) {
    let model =
        Llama::load(common::model_path()).expect("load model").with_numerics(Numerics::Exact);
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    let text = std::fs::read_to_string(common::root().join("tests/data/text/GPL-3")).unwrap();
    let reference = common::data_json("llamacpp/perplexity_dev.json");
    assert_eq!(
        reference["text_sha256"].as_str().unwrap(),
        "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
    );
    let tokens = tok.encode(&text, true, false);
    assert_eq!(tokens.len() as u64, reference["text_n_tokens_no_bos"].as_u64().unwrap());
    let run = reference["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["n_ctx"].as_u64() == Some(n_ctx as u64))
        .unwrap_or_else(|| panic!("perplexity_dev.json has no -c {n_ctx} run"));
    let opts =
        SessionOptions { n_ctx, n_batch: llama_perplexity_batch(n_ctx), ..Default::default() };
    let got = pagoda::cpu::perplexity::perplexity(&model, &tokens, &opts, |_, _| {}).unwrap();
    let want = run["ppl"].as_f64().unwrap();
    eprintln!(
        "GPL-3 c={n_ctx}: pagoda PPL {:.4} ± {:.5} over {} chunks; llama.cpp {want:.4} ± {}",
        got.ppl, got.ppl_stderr, got.chunks, run["ppl_pm"]
    );
    assert_eq!(got.chunks as u64, run["n_chunks"].as_u64().unwrap());
    assert_eq!(PrintedPerplexity::of(&got), PrintedPerplexity::of_llamacpp(run));
    assert_eq!(format!("{:.4}", got.ppl), format!("{want:.4}"), "final PPL");
}

#[test]
fn gpl3_perplexity_at_ctx_512_equals_llamacpp_tiled_attention() {
    gpl3_perplexity_equals_llamacpp(512);
}

#[test]
fn gpl3_perplexity_at_ctx_128_equals_llamacpp_one_key_attention() {
    gpl3_perplexity_equals_llamacpp(128);
}

#[test]
fn llama_perplexity_rows_per_pass() {
    // -b 2048 / -c chunks per batch, the 512-row ubatch split equally among them.
    assert_eq!(llama_perplexity_batch(128), 32);
    assert_eq!(llama_perplexity_batch(512), 128);
    assert_eq!(llama_perplexity_batch(1024), 256);
    assert_eq!(llama_perplexity_batch(2048), 512);
    assert_eq!(llama_perplexity_batch(8192), 512);
    assert_eq!(llama_perplexity_batch(4), 1);
}
