//! End-to-end tests of `pagoda batch` and `pagoda run --samples`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
    let o = run(&[
        "batch",
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--numerics",
        "exact",
    ]);
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
fn bad_lines_are_named_under_strict() {
    for (contents, needle) in [
        ("{\"prompt\":\"x\"}\n{\"prompt\":\"y\",\"temp\":1}\n", "line 2: unknown field \"temp\""),
        ("{\"prompt\":\"x\"}\nnot json\n", "line 2: not valid JSON"),
        ("{\"id\":1,\"prompt\":\"x\"}\n{\"id\":1,\"prompt\":\"y\"}\n", "line 2: duplicate id 1"),
        ("{\"prompt\":\"x\",\"n_predict\":0}\n", "line 1: \"n_predict\" must be an integer"),
        ("{\"prompt\":\"x\",\"n_predict\":64}\n", "line 1 (id 1): request 0 can never fit"),
    ] {
        let input = temp_file("bad.jsonl", contents);
        let o = run(&["batch", "-f", input.to_str().unwrap(), "--kv-pages", "2", "--strict"]);
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

fn lines_of(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "cut last line: {text:?}");
    text.lines().map(|l| serde_json::from_str(l).expect("complete JSON line")).collect()
}

#[test]
fn batch_output_is_replaced_only_at_the_end_and_never_the_input_or_model() {
    let input = temp_file("atomic.jsonl", "{\"id\":\"a\",\"prompt\":\"Hi\",\"n_predict\":2}\n");
    let output = temp_file("atomic.out.jsonl", "{\"id\":\"old\",\"text\":\"kept\"}\n");
    // The model fails to load: the old results must survive (today: truncated at once).
    let o = run(&[
        "batch",
        "-m",
        "/nonexistent/model.gguf",
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "{\"id\":\"old\",\"text\":\"kept\"}\n");

    // -o naming the input or the model (also through another path) is refused.
    let input_text = std::fs::read_to_string(&input).unwrap();
    let o = run(&["batch", "-f", input.to_str().unwrap(), "-o", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the input file"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), input_text);
    let model_len = std::fs::metadata(model()).unwrap().len();
    let via_dot =
        root().join(".").join(pagoda_cpu::model_file::workspace_model_path(Path::new("")));
    let o = run(&["batch", "-f", input.to_str().unwrap(), "-o", via_dot.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the model file"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(model()).unwrap().len(), model_len);

    // A full device: the error names it.
    let o = run(&["batch", "-f", input.to_str().unwrap(), "-o", "/dev/full"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("'/dev/full'"), "{}", stderr(&o));

    // Success: complete lines, and no temporary file left beside the output.
    let o = run(&["batch", "-f", input.to_str().unwrap(), "-o", output.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = lines_of(&output);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "a");
    let dir = output.parent().unwrap();
    let name = output.file_name().unwrap().to_string_lossy().into_owned();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn batch_append_keeps_old_results_and_skips_their_ids() {
    let input = temp_file(
        "append.jsonl",
        "{\"id\":\"a\",\"prompt\":\"Hi\",\"n_predict\":2}\n{\"id\":\"b\",\"prompt\":\"Yo\",\"n_predict\":2}\n",
    );
    let output = temp_file(
        "append.out.jsonl",
        "{\"id\":\"a\",\"text\":\"from before\"}\n{\"id\":\"b\",\"error\":\"failed before\"}\n",
    );
    let o =
        run(&["batch", "-f", input.to_str().unwrap(), "-o", output.to_str().unwrap(), "--append"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = lines_of(&output);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], serde_json::json!({"id": "a", "text": "from before"}));
    assert_eq!(lines[1]["id"], "b");
    assert!(lines[1].get("error").is_none(), "a failed request runs again: {lines:?}");
    assert!(stderr(&o).contains("1 of 2 requests already have results"), "{}", stderr(&o));
}

#[test]
fn batch_reports_a_bad_line_as_failed_and_runs_the_rest() {
    let input = temp_file(
        "partial.jsonl",
        "{\"id\":\"ok\",\"prompt\":\"Hi\",\"n_predict\":2}\n\
         not json\n\
         {\"id\":\"huge\",\"prompt\":\"x\",\"n_predict\":64}\n\
         {\"id\":\"ok2\",\"prompt\":\"Yo\",\"n_predict\":2}\n",
    );
    let output = temp_file("partial.out.jsonl", "");
    let o = run(&[
        "batch",
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--kv-pages",
        "2",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("2 of 4 requests failed"), "{err}");
    let lines = lines_of(&output);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let by_id = |id: serde_json::Value| lines.iter().find(|l| l["id"] == id).cloned().unwrap();
    assert!(by_id("ok".into())["tokens"].is_array());
    assert!(by_id("ok2".into())["tokens"].is_array());
    assert!(by_id(2.into())["error"].as_str().unwrap().contains("line 2: not valid JSON"));
    assert!(by_id("huge".into())["error"].as_str().unwrap().contains("can never fit"));
}

#[test]
fn batch_sigint_writes_completed_results_and_lists_unfinished_ids() {
    // Short requests finish first; the long ones are still running at the interrupt.
    let mut requests = String::new();
    for i in 0..2 {
        requests += &format!("{{\"id\":\"short{i}\",\"prompt\":\"Hi\",\"n_predict\":1}}\n");
    }
    for i in 0..4 {
        requests +=
            &format!("{{\"id\":\"long{i}\",\"prompt\":\"Once upon a time\",\"n_predict\":4000}}\n");
    }
    let input = temp_file("sigint.jsonl", &requests);
    let output = temp_file("sigint.out.jsonl", "");
    let _ = std::fs::remove_file(&output);
    let mut child = pagoda(&[
        "batch",
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--ignore-eos",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn pagoda");
    // The results accumulate in `.NAME.PID.tmp` beside the output until the end.
    let tmp = output.with_file_name(format!(
        ".{}.{}.tmp",
        output.file_name().unwrap().to_string_lossy(),
        child.id()
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&tmp).is_ok_and(|t| t.contains('\n')) {
        assert!(Instant::now() < deadline, "no result line within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "pagoda exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut err = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        err += &line.unwrap();
        err.push('\n');
    }
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "{err}");
    let lines = lines_of(&output);
    assert!(lines.iter().any(|l| l["id"] == "short0"), "{lines:?}");
    assert!(lines.iter().all(|l| l["tokens"].is_array()), "{lines:?}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    for i in 0..4 {
        assert!(err.contains(&format!("\"long{i}\"")), "long{i} not listed: {err}");
    }
    assert!(!tmp.exists());
}

#[test]
fn batch_second_run_on_the_same_output_is_refused_while_the_first_runs() {
    let long = "{\"id\":\"long\",\"prompt\":\"Once upon a time\",\"n_predict\":4000}\n";
    let input = temp_file("lock.jsonl", long);
    let output = temp_file("lock.out.jsonl", "");
    let _ = std::fs::remove_file(&output);
    let args = ["batch", "-f", input.to_str().unwrap(), "-o", output.to_str().unwrap()];
    let mut first = pagoda(&[&args[..], &["--ignore-eos"]].concat())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pagoda");
    let name = output.file_name().unwrap().to_string_lossy().into_owned();
    let lock = output.with_file_name(format!(".{name}.lock"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lock.exists() {
        assert!(Instant::now() < deadline, "no lock file within 120 s");
        assert!(first.try_wait().unwrap().is_none(), "pagoda exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = pagoda(&args).output().expect("run pagoda");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("is being written by another pagoda process"), "{err}");
    Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(130));
    assert!(!lock.exists(), "the lock file is removed at the end");
    // The first run's result file is its own: complete lines only.
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
}

#[test]
fn batch_lines_carry_stop_strings_logprobs_and_every_sampler_field() {
    let p = "The capital of France is";
    let line =
        |extra: &str| format!("{{\"prompt\":\"{p}\",\"n_predict\":12,\"temperature\":0{extra}}}\n");
    let input = temp_file(
        "fields.jsonl",
        &[
            line(",\"id\":\"plain\""),
            line(",\"id\":\"stop\",\"stop\":[\"zzz\",\"Paris\"]"),
            line(",\"id\":\"lp\",\"logprobs\":3"),
            line(",\"id\":\"ban\",\"logit_bias\":{\"7042\":false}"),
            line(",\"id\":\"samplers\",\"typical_p\":0.9,\"repeat_last_n\":-1,\"dry_multiplier\":0.8,\"mirostat\":0"),
            line(",\"id\":\"bad\",\"mirostat\":1"),
            line(",\"id\":\"oov\",\"logit_bias\":[[4000000,1]]"),
        ]
        .concat(),
    );
    let o = run(&["batch", "-f", input.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "two lines fail: {}", stderr(&o));
    let out: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let get =
        |id: &str| out.iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("{id}: {out:?}"));
    let plain = get("plain");
    let text = plain["text"].as_str().unwrap();
    assert_eq!(plain["tokens"][0], 7042, "llama.cpp's greedy first token");
    // Cut before the earliest stop string, and ended there.
    let at = text.find("Paris").expect("greedy text mentions Paris");
    let stop = get("stop");
    assert_eq!(
        (stop["text"].as_str().unwrap(), stop["finish"].as_str()),
        (&text[..at], Some("stop"))
    );
    // Log-probabilities: one per token, three alternatives, the greedy token first.
    let lp = get("lp");
    assert_eq!(lp["tokens"], plain["tokens"]);
    let lps = lp["logprobs"].as_array().unwrap();
    assert_eq!(lps.len(), lp["tokens"].as_array().unwrap().len());
    for (entry, tok) in lps.iter().zip(lp["tokens"].as_array().unwrap()) {
        assert_eq!(&entry["token"], tok);
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(&top[0]["token"], tok);
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
    }
    assert!(plain.get("logprobs").is_none());
    // A banned token is never chosen, even greedily.
    assert_ne!(get("ban")["tokens"][0], 7042);
    assert_eq!(get("samplers")["tokens"].as_array().unwrap().len(), 12);
    let bad = get("bad")["error"].as_str().unwrap();
    assert!(bad.contains("mirostat 1 is not supported"), "{bad}");
    let oov = get("oov")["error"].as_str().unwrap();
    assert!(oov.contains("4000000"), "{oov}");
}

#[test]
fn batch_stop_and_logprobs_flags_are_the_lines_defaults() {
    let input = temp_file(
        "flags.jsonl",
        "{\"id\":1,\"prompt\":\"The capital of France is\",\"n_predict\":12,\"temperature\":0}\n\
         {\"id\":2,\"prompt\":\"The capital of France is\",\"n_predict\":12,\"temperature\":0,\"stop\":[]}\n",
    );
    let o = run(&["batch", "-f", input.to_str().unwrap(), "--stop", "Paris", "--logprobs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let one = out.iter().find(|v| v["id"] == 1).unwrap();
    let two = out.iter().find(|v| v["id"] == 2).unwrap();
    assert_eq!(one["finish"], "stop");
    assert!(!one["text"].as_str().unwrap().contains("Paris"));
    assert_eq!(two["finish"], "length", "a line's own empty stop list overrides --stop");
    assert!(two["text"].as_str().unwrap().contains("Paris"));
    assert_eq!(one["logprobs"][0]["top_logprobs"].as_array().unwrap().len(), 1);
}

/// Gemma 3 (sliding-window layers) keeps the prefix cache in `batch`: two requests with the
/// same 700-odd-token prompt (longer than the 512-token window); the second, admitted after
/// the first's first 512-token chunk, reuses its cached pages and gives the same tokens.
#[test]
fn batch_on_gemma3_reuses_cached_prompt_pages() {
    let gemma = root().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(gemma.exists(), "model {} missing: run scripts/fetch-model.sh gemma3", gemma.display());
    let text = std::fs::read_to_string(root().join("tests/data/text/GPL-3")).unwrap();
    let prompt: String = text.chars().take(3500).collect();
    let line = |id: u32| {
        serde_json::json!({"id": id, "prompt": prompt, "n_predict": 3, "temperature": 0})
            .to_string()
    };
    let input = temp_file("gemma.jsonl", &format!("{}\n{}\n", line(1), line(2)));
    let output = temp_file("gemma.out.jsonl", "");
    let o = run(&[
        "batch",
        "-m",
        gemma.to_str().unwrap(),
        "-f",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = lines_of(&output);
    assert_eq!(lines.len(), 2);
    let cached: Vec<u64> =
        lines.iter().map(|v| v["cached_prompt_tokens"].as_u64().expect("a count")).collect();
    let prompt_tokens = lines[0]["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(prompt_tokens > 600, "the prompt is {prompt_tokens} tokens: not past the window");
    assert!(cached.iter().any(|&c| c >= 512), "no cached prompt tokens: {cached:?}");
    assert_eq!(lines[0]["tokens"], lines[1]["tokens"]);
    let err = stderr(&o);
    assert!(!err.contains("pages, 0 prompt tokens skipped"), "{err}");
}
