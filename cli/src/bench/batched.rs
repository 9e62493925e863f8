//! `pagoda bench --batch 1,4,8,16`: aggregate throughput of the engine by batch size, in the manner of
//! llama.cpp's `llama-batched-bench`: B sequences of P prompt tokens each are prefilled
//! (PP), then generate N tokens each (TG). Prompts are distinct pseudo-random tokens, so
//! no prefix is shared. Each configuration runs `--reps` times; medians are printed.
//!
//! ```text
//! |    B |    P |    N |  PP t/s |  TG t/s | TG speed-up | KV util |
//! ```

use std::time::Instant;

use pagoda_cpu::engine::{Engine, EngineConfig, Request};
use pagoda_cpu::model::{KvType, Llama};
use serde_json::json;

use super::{msg, InPool, OutputFormat};

/// One run: prompt and generation rates, KV utilisation.
struct Run {
    pp_tps: f64,
    tg_tps: f64,
    kv_util: f64,
}

fn pseudo_prompt(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (200 + x % (vocab as u64 - 200).max(1)) as u32
        })
        .collect()
}

fn one_run(model: &Llama, b: usize, p: usize, n: usize, rep: usize) -> InPool<Run> {
    let bs = 16;
    let pages = b * (p + n).div_ceil(bs);
    let config = EngineConfig {
        kv_pages: pages,
        block_size: bs,
        kv_type: KvType::F16,
        max_batch_tokens: (b * p).max(1),
        prefix_caching: false,
    };
    let mut engine = Engine::new(model, config).map_err(msg)?;
    let vocab = model.config().vocab_size.min(20_000);
    for i in 0..b {
        let seed = (rep * 1000 + i) as u64 + 1;
        engine.submit(Request::greedy(i as u64, pseudo_prompt(seed, p, vocab), n)).map_err(msg)?;
    }
    // PP: until every sequence has its first token (the prompt logits).
    let t0 = Instant::now();
    let mut first = 0;
    while first < b {
        first += engine.step().map_err(msg)?.tokens.len();
    }
    let pp = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut generated = 0;
    while engine.has_unfinished() {
        generated += engine.step().map_err(msg)?.tokens.len();
    }
    let tg = t1.elapsed().as_secs_f64();
    Ok(Run {
        pp_tps: (b * p) as f64 / pp.max(1e-9),
        tg_tps: generated as f64 / tg.max(1e-9),
        kv_util: engine.stats().kv_utilisation().unwrap_or(0.0),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints one line to stdout; a closed pipe stays an `io::Error` (a quiet exit).
fn out(line: String) -> InPool<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").and_then(|()| o.flush())?;
    Ok(())
}

/// Runs every batch size in `batch`, `reps` times each, in the current rayon pool, and
/// prints the table (or JSON lines).
pub fn run(
    model: &Llama,
    batch: &[usize],
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
    format: OutputFormat,
) -> InPool<()> {
    if batch.contains(&0) || n_prompt == 0 || n_gen < 2 || reps == 0 {
        return Err("--batch sizes, -p and -r must be ≥ 1, -n ≥ 2".into());
    }
    match format {
        OutputFormat::Md => out(String::from(
            "|    B |    P |    N |   PP t/s |   TG t/s | TG vs B=first | KV util |\n\
             |------|------|------|----------|----------|---------------|---------|",
        ))?,
        OutputFormat::Csv => out(String::from(
            "batch,n_prompt,n_gen,reps,pp_tps_median,tg_tps_median,tg_speedup,kv_utilisation",
        ))?,
        OutputFormat::Json | OutputFormat::Jsonl => {}
    }
    let mut base = None;
    let mut rows = Vec::new();
    for &b in batch {
        let runs: Vec<Run> =
            (0..reps).map(|rep| one_run(model, b, n_prompt, n_gen, rep)).collect::<InPool<_>>()?;
        let pp = median(runs.iter().map(|r| r.pp_tps).collect());
        let tg = median(runs.iter().map(|r| r.tg_tps).collect());
        let util = median(runs.iter().map(|r| r.kv_util).collect());
        let base_tg = *base.get_or_insert(tg);
        let row = json!({ "batch": b, "n_prompt": n_prompt, "n_gen": n_gen, "reps": reps,
                          "pp_tps_median": pp, "tg_tps_median": tg,
                          "tg_speedup": tg / base_tg, "kv_utilisation": util });
        match format {
            // Each row as soon as it is measured (a run over many sizes takes minutes).
            OutputFormat::Jsonl => out(row.to_string())?,
            OutputFormat::Json => rows.push(row),
            OutputFormat::Csv => out(format!(
                "{b},{n_prompt},{n_gen},{reps},{pp:.4},{tg:.4},{:.4},{util:.4}",
                tg / base_tg
            ))?,
            OutputFormat::Md => out(format!(
                "| {b:4} | {:4} | {:4} | {pp:8.1} | {tg:8.1} | {:12.2}× | {:6.1}% |",
                n_prompt,
                n_gen,
                tg / base_tg,
                100.0 * util
            ))?,
        }
    }
    if format == OutputFormat::Json {
        out(serde_json::to_string_pretty(&serde_json::Value::Array(rows)).map_err(msg)?)?;
    }
    Ok(())
}
