//! The generator's prompt progress (`Generator::start_with_progress`): one report per chunk
//! of `n_batch` prompt tokens, the same forward passes as `start`, so the same tokens.

mod common;

use pagoda::cpu::generate::{GenerateOptions, Generator};
use pagoda::cpu::model::{Llama, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};
use pagoda::cpu::tokenizer::Tokenizer;

#[test]
fn progress_reports_each_batch_and_changes_nothing() {
    let model = Llama::load(common::model_path()).expect("load model");
    let tok = Tokenizer::from_gguf(&model.gguf()).expect("tokenizer");
    let prompt = tok.encode(&"The quick brown fox jumps over the lazy dog. ".repeat(4), true, true);
    let n = prompt.len();
    assert!(n > 32 && n % 16 != 0, "{n} tokens");
    let session_opts = SessionOptions { n_batch: 16, ..SessionOptions::default() };
    let opts = GenerateOptions { n_predict: Some(8), ..Default::default() };
    let run = |with_progress: bool| {
        let mut session = Session::new(&model, session_opts.clone()).unwrap();
        let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
        let mut reports = Vec::new();
        let mut g = if with_progress {
            Generator::start_with_progress(&mut session, &mut sampler, &prompt, &opts, |d, t| {
                reports.push((d, t))
            })
        } else {
            Generator::start(&mut session, &mut sampler, &prompt, &opts)
        }
        .unwrap();
        while g.step(&mut session, &mut sampler, |t| tok.is_eog(t)).unwrap().is_some() {}
        (g.finish().tokens, reports)
    };
    let (tokens, reports) = run(true);
    let want: Vec<(usize, usize)> = (1..=n.div_ceil(16)).map(|i| ((i * 16).min(n), n)).collect();
    assert_eq!(reports, want);
    let (plain, none) = run(false);
    assert!(none.is_empty());
    assert_eq!(tokens, plain);
    assert_eq!(tokens.len(), 8);
}
