//! End-to-end tests of `pagoda batch` and `pagoda run --samples`.

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

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .args(args)
        .env("PAGODA_MODEL", model())
        .current_dir(root())
        .output()
        .expect("spawn pagoda")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pagoda-cli-batch-{}-{name}", std::process::id()));
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn batch_writes_one_result_per_request_and_a_summary() {
    let input = temp_file(
        "ok.jsonl",
        "{\"id\":\"fr\",\"prompt\":\"The capital of France is\",\"n_predict\":6,\"temperature\":0}\n\
         \n\
         {\"prompt\":\"Once upon a time\",\"n_predict\":5,\"temperature\":0.8,\"seed\":3}\n",
    );
    let output = temp_file("ok.out.jsonl", "");
    let o = run(&["batch", "-f", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 2);
    let fr = lines.iter().find(|v| v["id"] == "fr").expect("id echoed");
    // llama.cpp's greedy continuation (tests/data/llamacpp/greedy_dev.json).
    assert_eq!(fr["tokens"], serde_json::json!([7042, 30, 198, 198, 504, 1797]));
    assert_eq!(fr["finish"], "length");
    let other = lines.iter().find(|v| v["id"] == 3).expect("id defaults to the line number");
    assert_eq!(other["tokens"].as_array().unwrap().len(), 5);
    let err = stderr(&o);
    for field in ["requests 2", "generated 11 tokens", "tokens/s aggregate", "KV utilisation"] {
        assert!(err.contains(field), "summary lacks {field:?}: {err}");
    }
}

#[test]
fn bad_lines_are_named() {
    for (contents, needle) in [
        ("{\"prompt\":\"x\"}\n{\"prompt\":\"y\",\"temp\":1}\n", "line 2: unknown field \"temp\""),
        ("{\"prompt\":\"x\"}\nnot json\n", "line 2: not valid JSON"),
        ("{\"id\":1,\"prompt\":\"x\"}\n{\"id\":1,\"prompt\":\"y\"}\n", "line 2: duplicate id 1"),
        ("{\"prompt\":\"x\",\"n_predict\":0}\n", "line 1: \"n_predict\" must be an integer"),
        ("{\"prompt\":\"x\",\"n_predict\":64}\n", "line 1 (id 1): request 0 can never fit"),
    ] {
        let input = temp_file("bad.jsonl", contents);
        let o = run(&["batch", "-f", input.to_str().unwrap(), "--kv-pages", "2"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{contents:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(needle), "{contents:?}: stderr should contain {needle:?}: {err}");
    }
}

#[test]
fn run_samples_prints_each_sample_with_its_own_seed() {
    let p = "Once upon a time";
    let o = run(&[
        "run",
        "-p",
        p,
        "-n",
        "6",
        "--temp",
        "0.9",
        "--seed",
        "7",
        "--samples",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON array");
    let samples = v.as_array().unwrap();
    assert_eq!(samples.len(), 3);
    // Sample 1 (seed 8) is exactly a single run with seed 8.
    assert_eq!(samples[1]["seed"], 8);
    let single = run(&["run", "-p", p, "-n", "6", "--temp", "0.9", "--seed", "8", "--json"]);
    let single: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();
    assert_eq!(samples[1]["tokens"], single["tokens"]);
    let text = run(&["run", "-p", p, "-n", "4", "--temp", "0", "--samples", "2"]);
    let out = String::from_utf8(text.stdout).unwrap();
    assert!(out.contains("--- sample 0") && out.contains("--- sample 1"), "{out}");
}

/// `batch --kv-policy pyramid:…` (single-layer pages, one table per layer) in a pool small
/// enough to preempt: each request's greedy tokens equal `run`'s under the same policy (the
/// engine takes percentage budgets of the model's context, so `run` gets `-c 8192`); the
/// model read with `--mmap` gives the same tokens as the default in-memory copy.
#[test]
fn batch_under_pyramid_equals_run_under_pyramid() {
    let prompts = ["Once upon a time", "The capital of France is"];
    let lines: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!("{{\"id\":{i},\"prompt\":{p:?},\"n_predict\":80,\"temperature\":0}}\n")
        })
        .collect();
    let input = temp_file("pyramid.jsonl", &lines);
    let output = temp_file("pyramid.out.jsonl", "");
    let o = run(&[
        "batch",
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--kv-policy",
        "pyramid:64",
        "--kv-pages",
        "8",
        "--ignore-eos",
        "--mmap",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("single-layer pages"), "summary should name the page kind: {err}");
    let text = std::fs::read_to_string(&output).unwrap();
    let results: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(results.len(), prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let r = results.iter().find(|v| v["id"] == i).expect("every id answered");
        let o = run(&[
            "run",
            "-p",
            p,
            "-n",
            "80",
            "--temp",
            "0",
            "--ignore-eos",
            "--json",
            "-c",
            "8192",
            "--kv-policy",
            "pyramid:64",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let single: serde_json::Value = serde_json::from_slice(&o.stdout).expect("run --json");
        assert!(single["kv"]["evicted_pages"].as_u64().unwrap() > 0, "the test must evict");
        assert_eq!(r["tokens"], single["tokens"], "request {i} ({p:?})");
    }
}
