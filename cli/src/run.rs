//! `pagoda run`: generate from a prompt, streaming to stdout.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use pagoda_cpu::generate::{generate, GenerateOptions, Generation};
use pagoda_cpu::model::Session;
use pagoda_cpu::sampler::Sampler;
use serde_json::json;

use crate::common::{load, read_text_file, CliResult, ContextArgs, ModelArgs, SamplingArgs};

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
    sampling: SamplingArgs,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Recompute the whole sequence every step (the O(N³) baseline).
    #[arg(long = "no-kv-cache")]
    no_kv_cache: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long = "json")]
    json: bool,
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
    let mut session = Session::new(&loaded.model, a.ctx.session(2048))?;
    let opts = GenerateOptions {
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        ignore_eos: a.ignore_eos,
        no_kv_cache: a.no_kv_cache,
    };
    let mut decoder = tok.stream_decoder();
    let mut text = String::new();
    let mut stdout = std::io::stdout().lock();
    let json = a.json;
    let result = generate(
        &mut session,
        &mut sampler,
        &prompt_ids,
        &opts,
        |t| tok.is_eog(t),
        |t| {
            if tok.is_eog(t) && !a.ignore_eos {
                return;
            }
            let piece = decoder.push(t);
            if !json {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
            text.push_str(&piece);
        },
    );
    let tail = decoder.finish();
    text.push_str(&tail);
    let (gen, err) = match result {
        Ok(g) => (g, None),
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
                    "block_size": session.cache().block_size() },
        });
        if let Some(e) = &err {
            obj["error"] = json!(e.to_string());
        }
        writeln!(stdout, "{obj}")?;
    } else {
        stdout.write_all(tail.as_bytes())?;
        writeln!(stdout)?;
        stdout.flush()?;
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
