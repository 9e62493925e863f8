//! `pagoda bench`: llama-bench's table (prompt processing and generation tokens/s at a
//! context depth), and with `--scaling` the lecture's complexity experiment
//! (see [`scaling`]).
//!
//! One test, as llama-bench runs it:
//!
//! ```text
//!   cache: | depth d (pre-filled, untimed) | timed part                      |
//!   ppP:   | d random tokens               | P tokens in one eval (batched)  |
//!   tgN:   | d random tokens               | N evals of 1 token each         |
//! ```
//!
//! After each repetition the cache is truncated back to `d`, so the depth is filled
//! once per (threads, depth). Each thread count gets its own rayon pool (`install`),
//! never the global one. Tokens are pseudo-random ids from a fixed seed, as llama-bench
//! uses random tokens: the timing does not depend on what the tokens say.

mod batched;
mod scaling;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use pagoda_cpu::model::{KvType, Llama, Numerics, Session, SessionOptions};
use pagoda_cpu::model_file::default_model_path;
use serde_json::json;

use crate::common::{
    available_cores, check_writable_dir, init_threads, parse_kv_type, parse_numerics, usage_error,
    write_stdout, CliResult,
};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model file (GGUF). Default: $PAGODA_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf.
    #[arg(short = 'm', long = "model")]
    model: Option<PathBuf>,
    /// Memory-map the model file instead of reading it into huge-page memory (the default).
    #[arg(long = "mmap")]
    mmap: bool,
    /// Prompt lengths to time (comma-separated; 0 skips prompt processing).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Generated token counts to time (comma-separated; 0 skips generation).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Thread counts (comma-separated; default: all cores).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Context depths: tokens in the cache before the timed part (comma-separated).
    #[arg(short = 'd', long = "n-depth", value_delimiter = ',', default_value = "0")]
    depth: Vec<usize>,
    /// Repetitions per test (the median is reported).
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// Output format: md (llama-bench's markdown table), csv (a header line, then one line
    /// per test), json (an array of rows) or jsonl (one JSON row per line).
    #[arg(short = 'o', long = "output", value_enum, default_value = "md")]
    output: OutputFormat,
    /// The same as `-o json`.
    #[arg(long = "json", conflicts_with = "output")]
    json: bool,
    /// KV page element type: f32, f16, bf16, q8_0 or q4_0.
    #[arg(long = "kv-type", default_value = "f16", value_parser = parse_kv_type)]
    kv_type: KvType,
    /// Tokens per KV page.
    #[arg(long = "block-size", default_value_t = 16)]
    block_size: usize,
    /// Float order: fast (the default, batch-invariant) or exact (llama.cpp's bits).
    #[arg(long = "numerics", default_value = "fast", value_parser = parse_numerics)]
    numerics: Numerics,
    /// Tokens per forward pass while processing a prompt (and while filling the depth).
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    batch: usize,
    /// Measure the multi-sequence engine instead: aggregate throughput with B sequences
    /// at once for each B given (like llama-batched-bench), using the first -p and -n.
    #[arg(long = "batch", value_delimiter = ',')]
    engine_batch: Vec<usize>,
    /// Run the complexity experiment instead: generation time and KV bytes vs N, with
    /// the paged cache and without a cache; writes scaling.md and scaling.svg into the
    /// directory given with --out-dir (required).
    #[arg(long = "scaling", requires = "out_dir")]
    scaling: bool,
    /// With --scaling: the generated token counts N.
    #[arg(long = "n-list", value_delimiter = ',', default_value = "64,128,256,512,1024,2048")]
    n_list: Vec<usize>,
    /// With --scaling: the largest N run without a cache (its time grows as N³).
    #[arg(long = "no-cache-max", default_value_t = 256)]
    no_cache_max: usize,
    /// With --scaling: the directory scaling.md and scaling.svg are written to (created if
    /// missing; the repository's figures are made with `--out-dir docs`).
    #[arg(long = "out-dir", requires = "scaling")]
    out_dir: Option<PathBuf>,
}

/// How `pagoda bench` prints its results (`-o`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// llama-bench's markdown table.
    Md,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of rows.
    Json,
    /// One JSON object per row and line.
    Jsonl,
}

/// `s` as one CSV field: quoted (with doubled quotes) when it holds a comma, a quote or a
/// line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn main(a: BenchArgs) -> CliResult {
    let threads = if a.threads.is_empty() {
        vec![std::thread::available_parallelism().map_or(1, |n| n.get())]
    } else {
        a.threads.clone()
    };
    if let Some(&bad) = threads.iter().find(|&&t| t == 0 || t > 1024) {
        return Err(usage_error(&format!("-t: thread count {bad} out of range 1..=1024")));
    }
    if a.reps == 0 {
        return Err(usage_error("-r: at least one repetition is needed"));
    }
    if a.block_size == 0 || a.batch == 0 {
        return Err(usage_error("--block-size and --batch-size must be at least 1"));
    }
    if !a.engine_batch.is_empty() {
        let (p, n) =
            (a.n_prompt.first().copied().unwrap_or(0), a.n_gen.first().copied().unwrap_or(0));
        if a.engine_batch.contains(&0) || p == 0 || n < 2 {
            return Err(usage_error("--batch: batch sizes and -p must be ≥ 1, -n ≥ 2"));
        }
    }
    if a.scaling && (a.n_list.is_empty() || a.n_list.contains(&0)) {
        return Err(usage_error("--n-list: give positive token counts, e.g. 64,128,256"));
    }
    let format = if a.json { OutputFormat::Json } else { a.output };
    if let Some(dir) = &a.out_dir {
        // Checked now, not after an experiment of many minutes.
        check_writable_dir(dir).map_err(|e| format!("--out-dir: {e}"))?;
    }
    if let Some(&t) = threads.iter().find(|&&t| t > available_cores()) {
        log::warn!(
            "-t {t}: more threads than the {} available cores (kept: bench measures what it is told)",
            available_cores()
        );
    }
    // The global pool (used while loading) is built now, so a failure is an error, not a panic.
    init_threads(None)?;
    let path = a.model.clone().unwrap_or_else(default_model_path);
    let model = load_model(&path, a.model.is_some(), a.mmap, a.numerics)?;
    let info = ModelInfo::of(&model, &path);
    if !a.engine_batch.is_empty() {
        let p = a.n_prompt.first().copied().unwrap_or(0);
        let n = a.n_gen.first().copied().unwrap_or(0);
        let pool = thread_pool(threads[0])?;
        return pool
            .install(|| batched::run(&model, &a.engine_batch, p, n, a.reps, format))
            .map_err(from_pool);
    }
    if let (true, Some(out_dir)) = (a.scaling, &a.out_dir) {
        let opts = scaling::ScalingOptions {
            n_list: a.n_list.clone(),
            no_cache_max: a.no_cache_max,
            threads: threads[0],
            kv_type: a.kv_type,
            block_size: a.block_size,
            batch: a.batch,
            out_dir: out_dir.clone(),
        };
        return scaling::run(&model, &info, &opts);
    }
    let mut rows = Vec::new();
    for &t in &threads {
        let pool = thread_pool(t)?;
        for &d in &a.depth {
            rows.extend(pool.install(|| bench_depth(&model, &a, t, d)).map_err(from_pool)?);
        }
    }
    let row_json = |r: &Row| {
        json!({
            "model": info.name, "size_bytes": info.bytes, "params": info.params,
            "types": info.types.to_string(),
            "simd": model.kernels().level().name(), "kv_type": kv_name(a.kv_type), "numerics": a.numerics.name(),
            "test": r.test, "threads": r.threads, "depth": r.depth,
            "tokens_per_s": r.tps, "stdev": r.stdev, "reps": r.samples.len(),
            "samples_tokens_per_s": r.samples,
        })
    };
    let mut out = String::new();
    match format {
        OutputFormat::Json => {
            let arr: Vec<_> = rows.iter().map(row_json).collect();
            out = format!("{}\n", serde_json::to_string_pretty(&arr)?);
        }
        OutputFormat::Jsonl => {
            for r in &rows {
                let _ = writeln!(out, "{}", row_json(r));
            }
        }
        OutputFormat::Csv => {
            out.push_str(
                "model,types,size_bytes,params,simd,kv_type,threads,test,depth,tokens_per_s,stdev,reps\n",
            );
            for r in &rows {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{:.4},{:.4},{}",
                    csv_field(&info.name),
                    csv_field(&info.types.to_string()),
                    info.bytes,
                    info.params,
                    model.kernels().level().name(),
                    kv_name(a.kv_type),
                    r.threads,
                    r.test,
                    r.depth,
                    r.tps,
                    r.stdev,
                    r.samples.len()
                );
            }
        }
        OutputFormat::Md => {
            out.push_str("| model | size | params | simd | threads | test | t/s |\n");
            out.push_str("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
            for r in &rows {
                let test = if r.depth == 0 {
                    r.test.clone()
                } else {
                    format!("{} @ d{}", r.test, r.depth)
                };
                let _ = writeln!(
                    out,
                    "| {} ({}) | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |",
                    info.name,
                    info.types,
                    info.bytes as f64 / (1024.0 * 1024.0),
                    info.params as f64 / 1e6,
                    model.kernels().level().name(),
                    r.threads,
                    test,
                    r.tps,
                    r.stdev
                );
            }
            let _ = writeln!(out, "\nmedian of {} repetitions ± sample standard deviation", a.reps);
        }
    }
    write_stdout(&out)?;
    Ok(())
}

/// What work inside `pool.install` returns: its error must cross threads (and keeps its
/// type: a closed stdout stays an `io::Error`).
pub(crate) type InPool<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub(crate) fn msg(e: impl std::fmt::Display) -> Box<dyn std::error::Error + Send + Sync> {
    e.to_string().into()
}

/// An [`InPool`] error as the command's error.
pub(crate) fn from_pool(e: Box<dyn std::error::Error + Send + Sync>) -> Box<dyn std::error::Error> {
    e
}

/// A rayon pool of `t` threads, for `install`.
pub(crate) fn thread_pool(t: usize) -> CliResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .map_err(|e| format!("cannot set up {t} threads: {e}").into())
}

pub(crate) fn kv_name(k: KvType) -> &'static str {
    k.name()
}

fn load_model(path: &Path, explicit: bool, mmap: bool, numerics: Numerics) -> CliResult<Llama> {
    if !path.exists() {
        let hint = if explicit {
            ""
        } else {
            " (fetch the default model with scripts/fetch-model.sh, or pass -m / set PAGODA_MODEL)"
        };
        return Err(format!("model file '{}' not found{hint}", path.display()).into());
    }
    Ok(if mmap {
        Llama::load_mapped_with(path, numerics)?
    } else {
        Llama::load_with(path, numerics)?
    })
}

/// What the table's first columns say about the model.
pub(crate) struct ModelInfo {
    /// File stem.
    pub name: String,
    /// Bytes of all tensors.
    pub bytes: u64,
    /// Values in all tensors.
    pub params: u64,
    /// Tensor counts by type (`120 × Q5_0, 61 × F32, 30 × Q4_K`).
    pub types: pagoda_cpu::quantize::TypeMix,
}

impl ModelInfo {
    fn of(model: &Llama, path: &Path) -> Self {
        let (mut bytes, mut params) = (0u64, 0u64);
        for t in model.gguf().tensors() {
            bytes += t.data().len() as u64;
            params += t.n_elements();
        }
        let name = path
            .file_stem()
            .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned());
        let types = pagoda_cpu::quantize::TypeMix::of_gguf(model.gguf());
        ModelInfo { name, bytes, params, types }
    }
}

/// One line of the table.
struct Row {
    test: String,
    threads: usize,
    depth: usize,
    tps: f64,
    stdev: f64,
    samples: Vec<f64>,
}

/// All tests at one (threads, depth); runs inside the pool of `threads`.
fn bench_depth(model: &Llama, a: &BenchArgs, threads: usize, depth: usize) -> InPool<Vec<Row>> {
    let longest = a.n_prompt.iter().chain(&a.n_gen).copied().max().unwrap_or(0);
    if longest == 0 {
        return Ok(Vec::new());
    }
    let n_ctx = (depth + longest).next_multiple_of(a.block_size);
    let vocab = model.config().vocab_size as u64;
    let mut session = Session::new(
        model,
        SessionOptions { n_ctx, kv_type: a.kv_type, block_size: a.block_size, n_batch: a.batch },
    )
    .map_err(msg)?;
    let mut rng = SplitMix64(0x5EED ^ depth as u64);
    if depth > 0 {
        let fill: Vec<u32> = (0..depth).map(|_| rng.token(vocab)).collect();
        session.eval(&fill).map_err(msg)?;
    }
    let mut rows = Vec::new();
    for &p in a.n_prompt.iter().filter(|&&p| p > 0) {
        let prompt: Vec<u32> = (0..p).map(|_| rng.token(vocab)).collect();
        // Warm-up run (llama-bench does one too): page faults, caches, pool threads.
        session.eval(&prompt).map_err(msg)?;
        session.truncate(depth);
        let mut samples = Vec::with_capacity(a.reps);
        for _ in 0..a.reps {
            let t0 = Instant::now();
            session.eval(&prompt).map_err(msg)?;
            samples.push(p as f64 / t0.elapsed().as_secs_f64());
            session.truncate(depth);
        }
        rows.push(Row::new(format!("pp{p}"), threads, depth, samples));
    }
    for &n in a.n_gen.iter().filter(|&&n| n > 0) {
        let tokens: Vec<u32> = (0..n).map(|_| rng.token(vocab)).collect();
        session.eval(&tokens[..1]).map_err(msg)?;
        session.truncate(depth);
        let mut samples = Vec::with_capacity(a.reps);
        for _ in 0..a.reps {
            let t0 = Instant::now();
            for t in &tokens {
                session.eval(std::slice::from_ref(t)).map_err(msg)?;
            }
            samples.push(n as f64 / t0.elapsed().as_secs_f64());
            session.truncate(depth);
        }
        rows.push(Row::new(format!("tg{n}"), threads, depth, samples));
    }
    Ok(rows)
}

impl Row {
    fn new(test: String, threads: usize, depth: usize, samples: Vec<f64>) -> Self {
        Row { test, threads, depth, tps: median(&samples), stdev: stdev(&samples), samples }
    }
}

/// The median (mean of the middle two for an even count); NaN for no samples.
pub(crate) fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Sample standard deviation (n − 1); 0 for fewer than two samples.
pub(crate) fn stdev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    var.sqrt()
}

/// A small seeded generator for benchmark tokens (SplitMix64).
pub(crate) struct SplitMix64(pub u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A token id below `vocab`.
    pub(crate) fn token(&mut self, vocab: u64) -> u32 {
        (self.next() % vocab) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn stdev_is_the_sample_deviation() {
        assert_eq!(stdev(&[5.0]), 0.0);
        assert!((stdev(&[1.0, 2.0, 3.0, 4.0]) - 1.290_994_448_7).abs() < 1e-9);
    }

    #[test]
    fn tokens_are_deterministic_and_in_range() {
        let a: Vec<u32> = (0..100).scan(SplitMix64(7), |r, _| Some(r.token(49152))).collect();
        let b: Vec<u32> = (0..100).scan(SplitMix64(7), |r, _| Some(r.token(49152))).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t < 49152));
        assert!(a.windows(2).any(|w| w[0] != w[1]));
    }
}
