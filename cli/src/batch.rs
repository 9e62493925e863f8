//! `pagoda batch`: many requests from a JSONL file, run concurrently through the engine.
//!
//! Input, one request per line (blank lines are skipped):
//!
//! ```text
//! {"id": "a", "prompt": "Once upon a time", "n_predict": 64, "temperature": 0.8, "seed": 7}
//! ```
//!
//! Only `prompt` is required; `id` defaults to the line number, `n_predict` to `-n`, the
//! sampling fields to the command's flags. Output, one line per request as it finishes:
//!
//! ```text
//! {"id": "a", "text": "…", "tokens": […], "finish": "length", "prompt_tokens": 5,
//!  "cached_prompt_tokens": 0, "preemptions": 0}
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use pagoda_cpu::engine::{Engine, EngineConfig, EngineStats, Request, RequestId, RequestOutput};
use pagoda_cpu::model::KvType;
use pagoda_cpu::sampler::SamplerConfig;
use pagoda_cpu::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use crate::common::{
    load, parse_kv_policy, parse_kv_type, read_text_file, CliResult, ModelArgs, SamplingArgs,
};

#[derive(Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Requests, one JSON object per line.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Write results here instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Tokens to generate for lines without "n_predict".
    #[arg(short = 'n', long = "n-predict", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    n_predict: u32,
    /// Pages in the shared KV pool (all-layer pages; under pyramid the pool holds
    /// kv-pages × n_layers single-layer pages, the same bytes).
    #[arg(long = "kv-pages", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    kv_pages: u32,
    /// Most tokens per forward pass (decode tokens plus prompt chunks).
    #[arg(long = "max-batch-tokens", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_batch_tokens: u32,
    /// Tokens per KV page.
    #[arg(long = "block-size", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    block_size: u32,
    /// KV page format: f32, f16, bf16, q8_0 or q4_0.
    #[arg(long = "kv-type", default_value = "f16", value_parser = parse_kv_type)]
    kv_type: KvType,
    /// Turn off prefix caching.
    #[arg(long = "no-prefix-cache")]
    no_prefix_cache: bool,
    /// KV eviction policy of every sequence: full (default), sink:S,window:W, window:W,
    /// h2o:BUDGET or pyramid:BUDGET (tokens, or N% of the model's context length); each
    /// sequence evicts its own pages, never one another sequence shares. See
    /// docs/kv-eviction.md.
    #[arg(long = "kv-policy", default_value = "full", value_parser = parse_kv_policy)]
    kv_policy: pagoda_core::evict::KvPolicy,
    /// Keep generating past end-of-turn tokens.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// One parsed request line of a batch file.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRequest {
    /// 1-based line number in the file.
    pub line_no: usize,
    /// The caller's id (a JSON string or number; the line number when absent), echoed back.
    pub id: Value,
    /// The prompt (never empty).
    pub prompt: String,
    /// Tokens to generate (≥ 1).
    pub n_predict: usize,
    /// Sampler settings: the command's defaults with the line's fields applied (validated).
    pub sampler: SamplerConfig,
}

const FIELDS: &str = "id, prompt, n_predict, temperature, seed, top_k, top_p, min_p";

/// Parses one request line (`{"id":…,"prompt":…,…}`) of a batch file: `line_no` is named in
/// every error, `defaults` are the sampler settings of fields the line leaves out, `n_predict`
/// the default number of tokens. Never panics, whatever `text` holds; an error says what is
/// wrong with the line (`line 3: missing "prompt"`).
pub fn parse_request_line(
    text: &str,
    line_no: usize,
    defaults: &SamplerConfig,
    n_predict: usize,
) -> Result<ParsedRequest, String> {
    let at = |m: String| format!("line {line_no}: {m}");
    let v: Value = serde_json::from_str(text).map_err(|e| at(format!("not valid JSON ({e})")))?;
    let Value::Object(obj) = v else {
        return Err(at("expected a JSON object".into()));
    };
    if let Some(k) = obj.keys().find(|k| !FIELDS.split(", ").any(|f| f == k.as_str())) {
        return Err(at(format!("unknown field {} (known: {FIELDS})", json!(k))));
    }
    let prompt = match obj.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(at("\"prompt\" is empty".into())),
        Some(_) => return Err(at("\"prompt\" must be a string".into())),
        None => return Err(at("missing \"prompt\"".into())),
    };
    let id = match obj.get("id") {
        None => json!(line_no),
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        Some(_) => return Err(at("\"id\" must be a string or a number".into())),
    };
    let uint = |k: &str, min: u64| -> Result<Option<u64>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) if x >= min => Ok(Some(x)),
                _ => Err(at(format!("\"{k}\" must be an integer ≥ {min}, got {v}"))),
            },
        }
    };
    let float = |k: &str| -> Result<Option<f32>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && (x as f32).is_finite() => Ok(Some(x as f32)),
                _ => Err(at(format!("\"{k}\" must be a finite number, got {v}"))),
            },
        }
    };
    let mut sampler = defaults.clone();
    if let Some(t) = float("temperature")? {
        sampler.temperature = t;
    }
    if let Some(s) = uint("seed", 0)? {
        sampler.seed = s;
    }
    if let Some(k) = uint("top_k", 0)? {
        sampler.top_k = usize::try_from(k).unwrap_or(usize::MAX);
    }
    if let Some(p) = float("top_p")? {
        sampler.top_p = p;
    }
    if let Some(p) = float("min_p")? {
        sampler.min_p = p;
    }
    sampler.validate().map_err(|e| at(e.to_string()))?;
    let n_predict = match uint("n_predict", 1)? {
        None => n_predict,
        Some(x) => usize::try_from(x).unwrap_or(usize::MAX),
    };
    Ok(ParsedRequest { line_no, id, prompt, n_predict, sampler })
}

fn read_lines(path: &Path, defaults: &SamplerConfig, n: usize) -> CliResult<Vec<ParsedRequest>> {
    let text = read_text_file(path)?;
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line = parse_request_line(raw, i + 1, defaults, n)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !seen.insert(line.id.to_string()) {
            return Err(
                format!("{}: line {}: duplicate id {}", path.display(), i + 1, line.id).into()
            );
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(format!("{}: no requests", path.display()).into());
    }
    Ok(lines)
}

/// The text of a sample, without a final end-of-generation token.
fn text_of(tok: &Tokenizer, tokens: &[u32], hide_eog: bool) -> String {
    let mut d = tok.stream_decoder();
    let mut s = String::new();
    for &t in tokens {
        if hide_eog && tok.is_eog(t) {
            continue;
        }
        s.push_str(&d.push(t));
    }
    s.push_str(&d.finish());
    s
}

pub fn main(a: BatchArgs) -> CliResult {
    let defaults = a.sampling.config();
    let lines = read_lines(&a.file, &defaults, a.n_predict as usize)?;
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let config = EngineConfig {
        kv_pages: a.kv_pages as usize,
        block_size: a.block_size as usize,
        kv_type: a.kv_type,
        max_batch_tokens: a.max_batch_tokens as usize,
        prefix_caching: !a.no_prefix_cache,
    };
    let mut engine = Engine::with_policy(&loaded.model, config, a.kv_policy)?;
    let stop_tokens = if a.ignore_eos { Vec::new() } else { tok.eog_ids().to_vec() };
    for (i, l) in lines.iter().enumerate() {
        let req = Request {
            id: RequestId(i as u64),
            prompt: tok.encode(&l.prompt, true, true),
            max_tokens: l.n_predict,
            sampler: l.sampler.clone(),
            n: 1,
            stop_tokens: stop_tokens.clone(),
        };
        engine
            .add_request(req)
            .map_err(|e| format!("{}: line {} (id {}): {e}", a.file.display(), l.line_no, l.id))?;
    }

    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).map_err(|e| format!("cannot create '{}': {e}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let progress = std::io::stderr().is_terminal();
    // Page counts are in the pool's pages: single-layer pages under a per-layer policy.
    let pool_pages = engine.cache().pool().capacity();
    let unit = if engine.tables_per_sequence() > 1 { "single-layer pages" } else { "pages" };
    let t0 = Instant::now();
    let mut done = 0usize;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    while engine.has_unfinished() {
        let step = engine.step()?;
        for r in &step.finished {
            writeln!(out, "{}", result_json(&lines[r.id.0 as usize], r, tok, !a.ignore_eos))?;
            done += 1;
        }
        if !step.finished.is_empty() {
            out.flush()?;
        }
        if progress && last_draw.elapsed() >= Duration::from_millis(200) {
            last_draw = Instant::now();
            let s = engine.stats();
            eprint!(
                "\r\x1b[2K[{done}/{}] requests | {:.1} tokens/s | {} / {pool_pages} {unit}",
                lines.len(),
                s.generated_tokens as f64 / t0.elapsed().as_secs_f64(),
                engine.pages_held(),
            );
        }
    }
    out.flush()?;
    if progress {
        eprint!("\r\x1b[2K");
    }
    eprintln!("{}", summary(lines.len(), engine.stats(), t0.elapsed(), pool_pages, unit));
    Ok(())
}

fn result_json(line: &ParsedRequest, r: &RequestOutput, tok: &Tokenizer, hide_eog: bool) -> Value {
    let s = &r.samples[0];
    let mut m = Map::new();
    m.insert("id".into(), line.id.clone());
    m.insert("text".into(), json!(text_of(tok, &s.tokens, hide_eog)));
    m.insert("tokens".into(), json!(s.tokens));
    m.insert("finish".into(), json!(s.finish.as_str()));
    m.insert("prompt_tokens".into(), json!(r.prompt_tokens));
    m.insert("cached_prompt_tokens".into(), json!(r.cached_prompt_tokens));
    m.insert("preemptions".into(), json!(r.preemptions));
    Value::Object(m)
}

/// The closing line; `unit` names the pool's pages ("pages", or "single-layer pages" under a
/// per-layer policy, in which peak and KV utilisation are counted).
fn summary(requests: usize, s: &EngineStats, wall: Duration, pages: usize, unit: &str) -> String {
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{:.1}%", 100.0 * v));
    format!(
        "requests {requests} | generated {} tokens | wall {:.2} s | {:.1} tokens/s aggregate | \
         peak {} / {pages} {unit} | KV utilisation {} | prefix-cache hits {} ({} / {} pages, \
         {} prompt tokens skipped, {} computed) | preemptions {}",
        s.generated_tokens,
        wall.as_secs_f64(),
        s.generated_tokens as f64 / wall.as_secs_f64().max(1e-9),
        s.peak_pages,
        pct(s.kv_utilisation()),
        pct(s.prefix_hit_rate()),
        s.prefix_hits,
        s.prefix_lookups,
        s.prefill_skipped,
        s.prefill_computed,
        s.preemptions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_request_line_rejects_hostile_lines_without_panicking() {
        let d = SamplerConfig::default();
        let deep = "[".repeat(100_000);
        for bad in [
            "",
            "null",
            "[]",
            deep.as_str(),
            "{\"prompt\":\"x\",\"temperature\":1e300}",
            "{\"prompt\":\"x\",\"top_p\":-1}",
            "{\"prompt\":\"x\",\"n_predict\":0}",
            "{\"prompt\":\"x\",\"seed\":-1}",
            "{\"prompt\":\"x\",\"id\":[1]}",
            "{\"prompt\":\"\"}",
            "{\"prompt\":\"x\",\"\\u001b[31m\":1}",
        ] {
            let e = parse_request_line(bad, 7, &d, 3).unwrap_err();
            assert!(e.starts_with("line 7: "), "{e}");
            assert!(!e.contains('\u{1b}'), "raw escape in {e:?}");
        }
        let ok = parse_request_line(
            "{\"id\":\"a\",\"prompt\":\"hi\",\"n_predict\":18446744073709551615,\"top_k\":5}",
            1,
            &d,
            3,
        )
        .unwrap();
        assert_eq!(ok.id, json!("a"));
        assert_eq!(ok.sampler.top_k, 5);
        assert_eq!(parse_request_line("{\"prompt\":\"hi\"}", 4, &d, 3).unwrap().n_predict, 3);
    }
}
