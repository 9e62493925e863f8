//! Perplexity on the GPL-3 text at -c 512 against llama.cpp's figure
//! (tests/data/llamacpp/perplexity_dev.json): within 1%.

mod common;

use pagoda::cpu::model::{Llama, Numerics, SessionOptions};
use pagoda::cpu::tokenizer::Tokenizer;

#[test]
fn gpl3_perplexity_at_ctx_512_within_one_percent_of_llamacpp() {
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
    let run = &reference["runs"][0];
    assert_eq!(run["n_ctx"].as_u64(), Some(512));
    let want = run["ppl"].as_f64().unwrap();
    let opts = SessionOptions { n_ctx: 512, ..SessionOptions::default() };
    let got = pagoda::cpu::perplexity::perplexity(&model, &tokens, &opts, |_, _| {}).unwrap();
    let rel = (got.ppl - want).abs() / want;
    eprintln!(
        "GPL-3 c=512: pagoda PPL {:.4} ± {:.5} over {} chunks; llama.cpp {want:.4}; difference {:.3}%",
        got.ppl,
        got.ppl_stderr,
        got.chunks,
        rel * 100.0
    );
    assert_eq!(got.chunks as u64, run["n_chunks"].as_u64().unwrap());
    assert!(rel < 0.01, "PPL {} differs from llama.cpp's {want} by {:.3}%", got.ppl, rel * 100.0);
}
