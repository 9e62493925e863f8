//! End-to-end tests of `pagoda run`, `tokenize` and `perplexity` (`chat`'s are in
//! cli_chat.rs), and of every kind of bad input: one-line error, exit code 1 (2 for usage),
//! no panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> PathBuf {
    let p = pagoda_cpu::model_file::workspace_model_path(&root());
    assert!(p.exists(), "model {} missing: run scripts/fetch-model.sh", p.display());
    p
}

fn pagoda(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pagoda"));
    c.args(args).env("PAGODA_MODEL", model()).current_dir(root());
    c
}

fn run(args: &[&str]) -> Output {
    pagoda(args).output().expect("spawn pagoda")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: the exit code, one `error:` line, and no panic.
fn assert_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
}

#[test]
fn run_streams_greedy_text_and_stats() {
    let o = run(&["run", "-p", "The capital of France is", "-n", "8", "--temp", "0", "-t", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with(" Paris."), "stdout: {out:?}");
    for field in ["load", "prompt 5 tokens", "generated 8 tokens", "KV 1 pages"] {
        assert!(err.contains(field), "stats line lacks {field:?}: {err}");
    }
}

#[test]
fn run_json_has_ids_text_and_timings() {
    let o = run(&[
        "run",
        "-p",
        "The capital of France is",
        "-n",
        "6",
        "--temp",
        "0",
        "--json",
        "--numerics",
        "exact",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["prompt_tokens"], serde_json::json!([504, 3575, 282, 4649, 314]));
    // llama.cpp's greedy continuation (tests/data/llamacpp/greedy_dev.json).
    assert_eq!(v["tokens"], serde_json::json!([7042, 30, 198, 198, 504, 1797]));
    assert!(v["text"].as_str().unwrap().starts_with(" Paris.\n\nThe"));
    assert!(v["timings"]["predicted_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["stop"], "length");
}

#[test]
fn same_seed_same_text_sampling() {
    let args =
        ["run", "-p", "Once upon a time", "-n", "12", "--temp", "0.9", "--seed", "7", "--json"];
    let a: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&run(&args).stdout).unwrap();
    assert_eq!(a["tokens"], b["tokens"]);
}

#[test]
fn tokenize_prints_ids() {
    let o = run(&["tokenize", "Hello world<|im_end|>"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), "[19556,905,2]");
    let o = run(&["tokenize", "--no-special", "<|im_end|>"]);
    let ids: Vec<u32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(ids.len() > 1, "special text must be split when --no-special: {ids:?}");
}

#[test]
fn missing_model_says_how_to_fetch_it() {
    let o = Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .args(["run", "-p", "hi"])
        .env_remove("PAGODA_MODEL")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_error(&o, 1, "scripts/fetch-model.sh");
    let o = run(&["run", "-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_error(&o, 1, "/nonexistent/model.gguf");
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("pagoda-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(model()).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["run", "-m", truncated.to_str().unwrap(), "-p", "hi"]);
    assert_error(&o, 1, "past the end of the file");
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"not a gguf file at all").unwrap();
    let o = run(&["run", "-m", garbage.to_str().unwrap(), "-p", "hi"]);
    assert_error(&o, 1, "magic");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prompt_longer_than_context_is_refused() {
    let long = "word ".repeat(100);
    let o = run(&["run", "-p", &long, "-c", "32", "-n", "4"]);
    assert_error(&o, 1, "context");
}

#[test]
fn non_utf8_prompt_file_is_refused() {
    let p = std::env::temp_dir().join(format!("pagoda-bad-{}.txt", std::process::id()));
    std::fs::write(&p, b"hello \xff\xfe world").unwrap();
    let o = run(&["run", "-f", p.to_str().unwrap(), "-n", "4"]);
    std::fs::remove_file(&p).ok();
    assert_error(&o, 1, "not valid UTF-8");
}

#[test]
fn invalid_flags_are_usage_errors() {
    for args in [
        &["run", "-p", "hi", "-n", "-5"][..],
        &["run", "-p", "hi", "-c", "0"],
        &["run", "-p", "hi", "--kv-type", "q3"],
        &["run", "-p", "hi", "-t", "0"],
        &["run", "-p", "hi", "--temp", "warm"],
        &["frobnicate"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // Out-of-range sampler values are runtime errors with a message.
    let o = run(&["run", "-p", "hi", "--top-p", "1.5"]);
    assert_error(&o, 1, "top-p");
}

#[test]
fn text_already_streamed_stays_when_the_context_fills() {
    let o =
        run(&["run", "-p", "The capital of France is", "-c", "12", "--temp", "0", "--ignore-eos"]);
    assert!(o.status.success(), "a full context is a normal stop: {}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.starts_with(" Paris."), "{out:?}");
}

/// Runs `pagoda args` with stdout a pipe whose reader is already gone.
fn run_into_closed_pipe(args: &[&str]) -> (Output, std::time::Duration) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let t0 = std::time::Instant::now();
    let o = pagoda(args).stdout(writer).output().expect("spawn pagoda");
    (o, t0.elapsed())
}

#[test]
fn closed_stdout_exits_quietly_with_141() {
    for args in [
        &["inspect"][..],
        &["inspect", "--json"],
        &["tokenize", "hello"],
        &["bench", "--json", "-p", "4", "-n", "2", "-r", "1"],
        &["bench", "-p", "4", "-n", "2", "-r", "1"],
    ] {
        let (o, _) = run_into_closed_pipe(args);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn run_stops_generating_at_the_first_failed_write() {
    // Reference: how long 20 tokens take (load included).
    let t0 = std::time::Instant::now();
    let o = run(&["run", "-p", "Once upon a time", "-n", "20", "--temp", "0", "--ignore-eos"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let twenty = t0.elapsed();
    // 2000 tokens into a closed pipe must stop after the first, not generate them all.
    let (o, took) = run_into_closed_pipe(&[
        "run",
        "-p",
        "Once upon a time",
        "-n",
        "2000",
        "-c",
        "4096",
        "--temp",
        "0",
        "--ignore-eos",
    ]);
    assert_eq!(o.status.code(), Some(141), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "quiet: no stats line, no error");
    assert!(took < twenty * 5, "took {took:?}; 20 tokens take {twenty:?}");
}

#[test]
fn bench_scaling_checks_out_dir_before_the_experiment() {
    let blocker = std::env::temp_dir().join(format!("pagoda-outdir-file-{}", std::process::id()));
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    let out_dir = blocker.join("sub");
    let o = run(&[
        "bench",
        "--scaling",
        "--n-list",
        "8",
        "--no-cache-max",
        "8",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_error(&o, 1, "--out-dir");
    assert!(!stderr(&o).contains("scaling: N="), "ran first: {}", stderr(&o));
    std::fs::remove_file(&blocker).unwrap();
}

#[test]
fn threads_above_the_cores_are_clamped_with_a_warning() {
    let o = run(&["tokenize", "-t", "1024", "hi"]);
    assert!(o.status.success(), "{}", stderr(&o));
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 1024 {
        assert!(stderr(&o).contains("warning: -t 1024: only"), "{}", stderr(&o));
    }
}

#[test]
fn n_predict_zero_generates_nothing_alone_or_with_samples() {
    let o = run(&["run", "-p", "The capital of France is", "-n", "0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["tokens"], serde_json::json!([]), "{v}");
    assert_eq!(v["text"], "");
    let o = run(&["run", "-p", "The capital of France is", "-n", "0", "--samples", "2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let samples = v.as_array().unwrap();
    assert_eq!(samples.len(), 2, "{v}");
    assert!(samples.iter().all(|s| s["tokens"] == serde_json::json!([]) && s["text"] == ""), "{v}");
}

/// Whether `pagoda --version` runs at all under `ulimit -v kib`.
fn starts_under(bin: &str, kib: u32) -> bool {
    let script = format!("ulimit -v {kib}; exec \"$0\" --version");
    let o = Command::new("sh").args(["-c", &script, bin]).output().expect("run sh");
    o.status.success()
}

/// The smallest `ulimit -v` (KiB, to 100 KiB) under which `pagoda --version` runs: the
/// address space of the mapped program and its libraries. It depends on the build (a debug
/// binary with or without incremental artefacts differs by megabytes).
fn smallest_limit_that_starts(bin: &str) -> u32 {
    let (mut lo, mut hi) = (1_000, 1_000_000);
    assert!(starts_under(bin, hi), "pagoda --version fails under ulimit -v {hi}");
    while hi - lo > 100 {
        let mid = (lo + hi) / 2;
        if starts_under(bin, mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Under a memory limit, every failure is a one-line error and exit 1 — never a panic or an
/// abort: the command checks its startup headroom before it parses arguments, the thread
/// pool is built up front (rayon's lazily built pool panicked), the model and the KV cache
/// are allocated fallibly. The sweep crosses each of those failure points: fixed limits, and
/// 100 KiB steps just above the size of the program itself, where argument parsing used to
/// abort on a heap that could not grow.
#[test]
fn memory_limits_give_errors_not_panics_or_aborts() {
    let bin = env!("CARGO_BIN_EXE_pagoda");
    let model = model();
    let base = smallest_limit_that_starts(bin);
    let near_start = (0..=60).map(|step| base + 100 * step);
    let fixed = [4_000, 6_000, 8_000, 10_000, 12_000, 16_000, 24_000, 32_000, 64_000, 128_000];
    let mut seen_threads = false;
    let mut seen_startup = false;
    for kib in fixed.into_iter().chain(near_start) {
        let script =
            format!("ulimit -v {kib}; exec \"$0\" run -m \"$1\" -p hi -n 2 --temp 0 --mmap");
        let o = Command::new("sh")
            .args(["-c", &script, bin, model.to_str().unwrap()])
            .output()
            .expect("run sh");
        let err = stderr(&o);
        let code = o.status.code();
        if code == Some(127) && err.contains("error while loading shared libraries") {
            continue; // too little to start the program at all: the loader's failure
        }
        if code.is_none() && !starts_under(bin, kib) {
            // Killed before main: the kernel could not map the program itself (exec fails
            // past its point of no return with SIGSEGV), as `--version` shows.
            continue;
        }
        assert!(
            code == Some(0) || code == Some(1),
            "ulimit -v {kib}: status {:?}: {err}",
            o.status
        );
        if code == Some(1) {
            assert!(
                err.starts_with("error: ") && err.trim_end().lines().count() == 1,
                "{kib}: {err}"
            );
            seen_threads |= err.contains("worker threads");
            seen_startup |= err.contains("not enough memory to start");
        }
    }
    assert!(seen_threads, "no limit in the sweep made the thread pool fail");
    assert!(seen_startup, "no limit in the sweep (from {base} KiB) failed the startup check");
}
