//! `pagoda run`: generate from a prompt, streaming to stdout.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use pagoda_cpu::generate::{GenerateOptions, Generation};
use pagoda_cpu::model::Session;
use pagoda_cpu::sampler::Sampler;
use serde_json::json;

use pagoda_cpu::engine::{Engine, EngineConfig, FinishReason, Request, RequestId};
use pagoda_cpu::sampler::SamplerConfig;

use crate::common::{
    generate_until_closed, load, read_text_file, stdout_error, CliResult, ContextArgs, Loaded,
    ModelArgs, PolicyArgs, SamplingArgs,
};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from a file (UTF-8).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or a full context).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    n_predict: i64,
    #[command(flatten)]
    ctx: ContextArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Recompute the whole sequence every step (the O(N³) baseline).
    #[arg(long = "no-kv-cache", conflicts_with = "kv_policy")]
    no_kv_cache: bool,
    /// Print one JSON object instead of streaming text (a JSON array with --samples).
    #[arg(long = "json")]
    json: bool,
    /// Draw N samples: the prompt is prefilled once and its pages shared by all samples
    /// (copy-on-write); sample i uses seed + i. Printed in turn.
    #[arg(long = "samples", default_value_t = 1, conflicts_with_all = ["no_kv_cache", "kv_policy"],
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    samples: u32,
}

pub fn main(a: RunArgs) -> CliResult {
    let prompt = match (&a.prompt, &a.file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => read_text_file(f)?,
        _ => return Err("give a prompt with -p PROMPT or -f FILE".into()),
    };
    let mut sampler = Sampler::new(a.sampling.config())?;
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let prompt_ids = tok.encode(&prompt, true, true);
    if prompt_ids.is_empty() {
        return Err("the prompt is empty".into());
    }
    if a.samples > 1 {
        return run_samples(&a, &loaded, prompt_ids, sampler.config().clone());
    }
    let opts = a.ctx.session(2048);
    let policy = a.policy.checked(&opts, loaded.model.config().n_layers);
    let mut session = Session::with_policy(&loaded.model, opts, policy)?;
    let opts = GenerateOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        ignore_eos: a.ignore_eos,
        no_kv_cache: a.no_kv_cache,
    };
    let mut decoder = tok.stream_decoder();
    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    // A failed write (a closed pipe: `pagoda run … | head`) stops generation at once.
    let result = generate_until_closed(
        &mut session,
        &mut sampler,
        &prompt_ids,
        &opts,
        |t| tok.is_eog(t),
        |t| {
            if tok.is_eog(t) && !a.ignore_eos {
                return Ok(());
            }
            let piece = decoder.push(t);
            text.push_str(&piece);
            if !json {
                stdout.write_all(piece.as_bytes())?;
                stdout.flush()?;
            }
            Ok(())
        },
    );
    let tail = decoder.finish();
    text.push_str(&tail);
    let (gen, err) = match result {
        Ok((g, None)) => (g, None),
        Ok((_, Some(closed))) => return Err(stdout_error(closed)),
        Err(e) => (e.partial, Some(e.error)),
    };
    if json {
        let mut obj = json!({
            "prompt_tokens": prompt_ids,
            "tokens": gen.tokens,
            "text": text,
            "stop": gen.stop.as_str(),
            "timings": timings(&gen, loaded.load_time.as_secs_f64()),
            "kv": { "pages": session.kv_pages_in_use(), "bytes": session.kv_bytes_in_use(),
                    "block_size": session.cache().block_size(),
                    "policy": policy.to_string(), "peak_bytes": session.peak_kv_bytes(),
                    "evicted_pages": session.evicted_pages() },
        });
        if let Some(e) = &err {
            obj["error"] = json!(e.to_string());
        }
        writeln!(stdout, "{obj}").and_then(|()| stdout.flush()).map_err(stdout_error)?;
    } else {
        stdout
            .write_all(tail.as_bytes())
            .and_then(|()| writeln!(stdout))
            .and_then(|()| stdout.flush())
            .map_err(stdout_error)?;
        eprintln!(
            "load {:.2} s | prompt {} tokens, {:.1} t/s | generated {} tokens, {:.1} t/s | KV {} pages, {} bytes",
            loaded.load_time.as_secs_f64(),
            gen.prompt_tokens,
            gen.prompt_tps(),
            gen.tokens.len(),
            gen.gen_tps(),
            session.kv_pages_in_use(),
            session.kv_bytes_in_use(),
        );
    }
    match err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn timings(g: &Generation, load_s: f64) -> serde_json::Value {
    json!({
        "load_ms": load_s * 1e3,
        "prompt_n": g.prompt_tokens,
        "prompt_ms": g.prompt_time.as_secs_f64() * 1e3,
        "prompt_per_second": g.prompt_tps(),
        "predicted_n": g.tokens.len(),
        "predicted_ms": g.gen_time.as_secs_f64() * 1e3,
        "predicted_per_second": g.gen_tps(),
    })
}

/// `--samples N`: one request of N samples through the engine (prefill once, fork).
fn run_samples(
    a: &RunArgs,
    loaded: &Loaded,
    prompt_ids: Vec<u32>,
    sampler: SamplerConfig,
) -> CliResult {
    let tok = &loaded.tokenizer;
    let opts = a.ctx.session(2048);
    let n = a.samples as usize;
    if prompt_ids.len() >= opts.n_ctx {
        return Err(pagoda_cpu::model::ModelError::ContextFull {
            needed: prompt_ids.len() + 1,
            n_ctx: opts.n_ctx,
        }
        .into());
    }
    let room = opts.n_ctx - prompt_ids.len();
    let seed = sampler.seed;
    // `-n 0`: every sample is empty; the engine (at least one token a request) is not asked.
    let (samples, summary): (Vec<(Vec<u32>, FinishReason)>, Option<String>) = if a.n_predict == 0 {
        (vec![(Vec::new(), FinishReason::Length); n], None)
    } else {
        let max_tokens = if a.n_predict > 0 { (a.n_predict as usize).min(room) } else { room };
        // The shared prompt pages, plus each sample's own growth and its copy of the last page.
        let bs = opts.block_size;
        let kv_pages = prompt_ids.len().div_ceil(bs) + n * (max_tokens.div_ceil(bs) + 1);
        let config = EngineConfig {
            kv_pages,
            block_size: bs,
            kv_type: opts.kv_type,
            max_batch_tokens: opts.n_batch,
            prefix_caching: false,
        };
        let mut engine = Engine::new(&loaded.model, config)?;
        let stop_tokens = if a.ignore_eos { Vec::new() } else { tok.eog_ids().to_vec() };
        engine.submit(Request {
            id: RequestId(0),
            prompt: prompt_ids.clone(),
            max_tokens,
            sampler,
            n,
            stop_tokens,
            logprobs: None,
            stop: Vec::new(),
        })?;
        let t0 = std::time::Instant::now();
        let done = engine.run_to_completion()?;
        let wall = t0.elapsed().as_secs_f64();
        let out = done.into_iter().next().ok_or("the engine returned no output")?;
        let st = engine.stats();
        let summary = format!(
            "load {:.2} s | prompt {} tokens once | {n} samples, {} tokens, {:.1} t/s | \
             KV peak {} pages ({} bytes)",
            loaded.load_time.as_secs_f64(),
            prompt_ids.len(),
            st.generated_tokens,
            st.generated_tokens as f64 / wall.max(1e-9),
            st.peak_pages,
            st.peak_pages * engine.cache().page_bytes(),
        );
        (out.samples.into_iter().map(|s| (s.tokens, s.finish)).collect(), Some(summary))
    };
    let mut stdout = std::io::stdout().lock();
    let mut all = Vec::new();
    for (i, (tokens, finish)) in samples.iter().enumerate() {
        let mut d = tok.stream_decoder();
        let mut text = String::new();
        for &t in tokens {
            if a.ignore_eos || !tok.is_eog(t) {
                text.push_str(&d.push(t));
            }
        }
        text.push_str(&d.finish());
        let sample_seed = seed.wrapping_add(i as u64);
        let stop = match finish {
            FinishReason::Stop => "eog",
            _ => "length",
        };
        if a.json {
            all.push(json!({ "sample": i, "seed": sample_seed, "tokens": tokens,
                             "text": text, "stop": stop }));
        } else {
            writeln!(stdout, "--- sample {i} (seed {sample_seed}) ---")
                .and_then(|()| writeln!(stdout, "{text}"))
                .map_err(stdout_error)?;
        }
    }
    if a.json {
        writeln!(stdout, "{}", serde_json::Value::Array(all)).map_err(stdout_error)?;
    }
    stdout.flush().map_err(stdout_error)?;
    if let Some(summary) = summary {
        eprintln!("{summary}");
    }
    Ok(())
}
