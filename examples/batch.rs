//! Many requests in one KV page pool: continuous batching, prefix caching and
//! copy-on-write samples. `cargo run --release --example batch`.
use pagoda::cpu::engine::FinishReason;
use pagoda::{EngineConfig, Model, Request, RequestId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(pagoda::cpu::model_file::default_model_path())?;
    let prompts = ["The capital of France is", "The capital of Japan is", "Water boils at"];
    let mut engine = model.engine(EngineConfig { kv_pages: 64, ..EngineConfig::default() })?;
    for (i, p) in prompts.iter().enumerate() {
        let mut req = Request::greedy(i as u64, model.tokenize(p), 16);
        req.stop_tokens = model.tokenizer().eog_ids().to_vec();
        engine.submit(req)?;
    }
    // Two samples of one prompt: prefilled once, its pages shared copy-on-write.
    let mut forked = Request::greedy(99, model.tokenize("Once upon a time"), 16);
    forked.n = 2;
    forked.sampler.temperature = 0.8;
    engine.submit(forked)?;

    let mut outputs = engine.run_to_completion()?;
    outputs.sort_by_key(|o| o.id);
    for out in &outputs {
        for (i, s) in out.samples.iter().enumerate() {
            let text = model.detokenize(&s.tokens)?;
            let why = if s.finish == FinishReason::Stop { "stop" } else { "length" };
            println!("{} sample {i} ({why}): {text:?}", out.id);
        }
    }
    let stats = engine.stats();
    println!(
        "{} requests, {} tokens generated, peak {} KV pages, {} prompt tokens served from the prefix cache",
        outputs.len(),
        stats.generated_tokens,
        stats.peak_pages,
        stats.prefill_skipped
    );
    assert!(outputs.iter().any(|o| o.id == RequestId(99) && o.samples.len() == 2));
    Ok(())
}
