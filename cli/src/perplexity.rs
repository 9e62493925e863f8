//! `pagoda perplexity`: llama.cpp's perplexity over a text file.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::common::{load, read_text_file, CliResult, ContextArgs, ModelArgs, PolicyArgs};
use crate::progress::Progress;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file (UTF-8).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    ctx: ContextArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Score only the first N chunks (llama.cpp's --chunks).
    #[arg(long = "chunks", value_parser = clap::value_parser!(u32).range(1..))]
    chunks: Option<u32>,
    /// Print one JSON object at the end instead of llama.cpp's text.
    #[arg(long = "json")]
    json: bool,
}

pub fn main(a: PerplexityArgs) -> CliResult {
    let text = read_text_file(&a.file)?;
    let loaded = load(&a.model)?;
    let mut tokens = loaded.tokenizer.encode(&text, true, false);
    let opts = a.ctx.session_with(512, pagoda_cpu::perplexity::llama_perplexity_batch);
    if let Some(n) = a.chunks {
        tokens.truncate(tokens.len().min(n as usize * opts.n_ctx));
    }
    let t0 = Instant::now();
    if !a.json {
        eprintln!(
            "perplexity: {} tokens, {} chunks of {}, KV {} pages, policy {}",
            tokens.len(),
            tokens.len() / opts.n_ctx,
            opts.n_ctx,
            opts.kv_type,
            a.policy.kv_policy
        );
    }
    let json = a.json;
    let mut out = std::io::stdout().lock();
    let policy = a.policy.checked(&opts, loaded.model.config().n_layers);
    // On a terminal, chunks done and the time left, unless llama.cpp's `[i]ppl,` list is
    // going to the same terminal (it is its own progress there: a redrawn line would erase it).
    let show = std::io::stderr().is_terminal() && (json || !std::io::stdout().is_terminal());
    let chunks = tokens.len() / opts.n_ctx.max(1);
    let mut progress = Progress::with_output("perplexity", chunks, "chunks", show);
    progress.update(0);
    let r = pagoda_cpu::perplexity::perplexity_with_policy(
        &loaded.model,
        &tokens,
        &opts,
        policy,
        |i, ppl| {
            if !json {
                let _ = write!(out, "[{}]{ppl:.4},", i + 1);
                let _ = out.flush();
            }
            progress.update(i + 1);
        },
    )?;
    progress.clear();
    let bytes_per_token = opts.kv_type.bytes_per_token(loaded.model.config())?;
    if json {
        let obj = json!({
            "ppl": r.ppl, "ppl_stderr": r.ppl_stderr, "chunks": r.chunks, "ctx": r.n_ctx,
            "scored_tokens": r.scored, "running": r.running,
            "kv_type": opts.kv_type.name(), "kv_policy": policy.to_string(),
            "kv_bytes_per_token": bytes_per_token, "peak_kv_bytes": r.peak_kv_bytes,
            "seconds": t0.elapsed().as_secs_f64(),
        });
        writeln!(out, "{obj}")?;
    } else {
        writeln!(out)?;
        writeln!(out, "Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_stderr)?;
        eprintln!(
            "perplexity: peak KV {} bytes ({} tokens of {} bytes)",
            r.peak_kv_bytes,
            r.peak_kv_bytes / bytes_per_token.max(1),
            bytes_per_token
        );
        eprintln!("perplexity: {:.1} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}
