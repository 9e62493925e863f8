//! `pagoda run`'s generation controls: `--stop` (the text ends before the earliest stop
//! string, finish_reason "stop"), `--logprobs N`, `--json-stream` (a line per token and a
//! summary), the prompt's progress line (only on a terminal), and usage errors (exit 2).

mod common;

use serde_json::Value;

const PROMPT: &str = "The capital of France is";

/// `pagoda run -p PROMPT --temp 0 ARGS`, which must succeed; its stdout. In exact numerics:
/// the tests rely on its greedy text (" Paris.\n\nThe United …", 40 tokens without an end
/// of generation).
fn greedy(args: &[&str]) -> String {
    let mut all = vec!["run", "-p", PROMPT, "--temp", "0", "-t", "1", "--numerics", "exact"];
    all.extend_from_slice(args);
    let o = common::run(&all);
    common::assert_success(&o);
    common::stdout(&o)
}

/// `greedy(ARGS + --json)` parsed.
fn greedy_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = greedy(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn text(v: &Value) -> &str {
    v["text"].as_str().expect("text")
}

fn tokens(v: &Value) -> Vec<u64> {
    v["tokens"].as_array().expect("tokens").iter().map(|t| t.as_u64().unwrap()).collect()
}

#[test]
fn stop_cuts_the_greedy_text_before_the_string() {
    let free = greedy_json(&["-n", "40"]);
    assert_eq!(free["finish_reason"], "length");
    let full = text(&free);
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 4).collect();
    assert!(words.len() >= 3, "{full:?}");
    let stop = words[2];
    let cut = full.find(stop).unwrap();
    let stopped = greedy_json(&["-n", "40", "--stop", stop]);
    assert_eq!(text(&stopped), &full[..cut], "--stop {stop:?}");
    assert_eq!(stopped["finish_reason"], "stop");
    assert_eq!(stopped["stop"], "stop");
    let (all, some) = (tokens(&free), tokens(&stopped));
    assert!(some.len() < all.len() && all.starts_with(&some), "{some:?} vs {all:?}");
    // The streamed text is the same cut.
    let streamed = greedy(&["-n", "40", "--stop", stop]);
    assert_eq!(streamed, format!("{}\n", &full[..cut]));
}

#[test]
fn several_stops_the_earliest_wins() {
    let free = greedy_json(&["-n", "40"]);
    let full = text(&free);
    let words: Vec<&str> = full.split_whitespace().filter(|w| w.len() >= 4).collect();
    assert!(words.len() >= 4, "{full:?}");
    let (early, late) = (words[1], words[3]);
    let cut = full.find(early).unwrap().min(full.find(late).unwrap());
    let stopped = greedy_json(&["-n", "40", "--stop", late, "--stop", early]);
    assert_eq!(text(&stopped), &full[..cut]);
    assert_eq!(stopped["finish_reason"], "stop");
    // A stop string that never occurs changes nothing.
    let unmatched = greedy_json(&["-n", "40", "--stop", "\u{7}never\u{7}"]);
    assert_eq!((text(&unmatched), tokens(&unmatched)), (full, tokens(&free)));
    assert_eq!(unmatched["finish_reason"], "length");
}

/// Checks one `--logprobs N` entry for `token`: N alternatives sorted most likely first, the
/// greedy token the first of them with its own log-probability, all ≤ 0.
fn check_logprobs(entry: &Value, token: u64, n: usize) {
    assert_eq!(entry["token"].as_u64(), Some(token), "{entry}");
    let lp = entry["logprob"].as_f64().expect("logprob");
    assert!(lp <= 0.0, "{entry}");
    let top = entry["top_logprobs"].as_array().expect("top_logprobs");
    assert_eq!(top.len(), n, "{entry}");
    let values: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "sorted: {values:?}");
    assert!(values.iter().all(|&v| v <= 0.0), "{values:?}");
    assert!(values.iter().map(|v| v.exp()).sum::<f64>() <= 1.0 + 1e-4, "{values:?}");
    assert_eq!(top[0]["token"].as_u64(), Some(token), "greedy picks the most likely: {entry}");
    assert!((values[0] - lp).abs() < 1e-6, "{entry}");
    assert!(top.iter().all(|t| t["piece"].is_string()), "{entry}");
}

#[test]
fn logprobs_give_n_sorted_alternatives_led_by_the_greedy_token() {
    let v = greedy_json(&["-n", "12", "--logprobs", "4"]);
    let toks = tokens(&v);
    let lps = v["logprobs"].as_array().expect("logprobs");
    assert_eq!(lps.len(), toks.len());
    for (entry, &t) in lps.iter().zip(&toks) {
        check_logprobs(entry, t, 4);
    }
    // " Paris" after "The capital of France is", most likely by far.
    assert_eq!(lps[0]["piece"], " Paris");
    assert!(lps[0]["logprob"].as_f64().unwrap() > -1.0, "{}", lps[0]);
    // Without --logprobs there are none, and the tokens are the same.
    let plain = greedy_json(&["-n", "12"]);
    assert!(plain.get("logprobs").is_none());
    assert_eq!(tokens(&plain), toks);
}

/// `--json-stream` output: the token lines and the summary.
fn json_stream(args: &[&str]) -> (Vec<Value>, Value) {
    let mut all = args.to_vec();
    all.push("--json-stream");
    let out = greedy(&all);
    let mut lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    (lines, summary["summary"].clone())
}

#[test]
fn json_stream_lines_add_up_to_the_summary_and_match_json() {
    let (lines, summary) = json_stream(&["-n", "16", "--stop", "United"]);
    assert!(summary.is_object(), "the last line is {{\"summary\": {{...}}}}");
    let json = greedy_json(&["-n", "16", "--stop", "United"]);
    let pieces: String = lines.iter().map(|l| l["piece"].as_str().expect("piece")).collect();
    assert_eq!(pieces, text(&summary));
    let streamed: Vec<u64> = lines.iter().map(|l| l["token"].as_u64().unwrap()).collect();
    assert_eq!(streamed, tokens(&summary));
    assert_eq!((text(&summary), tokens(&summary)), (text(&json), tokens(&json)));
    assert_eq!(summary["finish_reason"], json["finish_reason"]);
    for field in ["timings", "kv", "prompt_tokens", "stop"] {
        assert!(summary.get(field).is_some(), "summary lacks {field}: {summary}");
    }
    for l in &lines {
        assert!(l["logprob"].as_f64().expect("logprob") <= 0.0, "{l}");
        assert!(l.get("top_logprobs").is_none(), "only with --logprobs: {l}");
    }
    // With --logprobs N each line has N alternatives, and the summary the whole list.
    let (lines, summary) = json_stream(&["-n", "6", "--logprobs", "2"]);
    assert_eq!(lines.len(), 6);
    for (l, t) in lines.iter().zip(tokens(&summary)) {
        check_logprobs(l, t, 2);
    }
    assert_eq!(summary["logprobs"].as_array().map(Vec::len), Some(6));
}

#[test]
fn samples_honour_stop_and_logprobs_through_the_engine() {
    let single = greedy_json(&["-n", "24", "--stop", "United", "--logprobs", "2"]);
    assert_eq!(single["finish_reason"], "stop", "{single}");
    let out =
        greedy(&["-n", "24", "--stop", "United", "--logprobs", "2", "--samples", "2", "--json"]);
    let samples: Vec<Value> = serde_json::from_str(&out).expect("a JSON array");
    assert_eq!(samples.len(), 2);
    for s in &samples {
        assert_eq!(text(s), text(&single), "greedy samples are the single run");
        assert_eq!(tokens(s), tokens(&single));
        assert_eq!(s["finish_reason"], "stop");
        let lps = s["logprobs"].as_array().expect("logprobs");
        for (entry, t) in lps.iter().zip(tokens(s)) {
            check_logprobs(entry, t, 2);
        }
        assert_eq!(lps.len(), tokens(s).len());
    }
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "-n", "4"], "--prompt"),
        (&["run", "-p", "x", "-f", "README.md"], "cannot be used with"),
        (&["run", "-p", "x", "--logprobs", "3"], "--json"),
        (&["run", "-p", "x", "--logprobs", "101", "--json"], "101"),
        (&["run", "-p", "x", "--stop", ""], "--stop"),
        (&["run", "-p", "x", "--json", "--json-stream"], "cannot be used with"),
        (&["run", "-p", "x", "--json-stream", "--samples", "2"], "cannot be used with"),
    ];
    for (args, needle) in cases {
        let o = common::run(args);
        common::assert_error(&o, 2, needle);
        assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

/// A prompt of about 60 tokens: more than one batch of 8.
fn long_prompt() -> String {
    "one two three four five six seven eight nine ten ".repeat(6)
}

#[test]
fn prompt_progress_only_on_a_terminal() {
    let prompt = long_prompt();
    let args = ["run", "-p", prompt.as_str(), "-n", "2", "--temp", "0", "-b", "8"];
    // stderr is a pipe here: no progress line.
    let o = common::run(&args);
    common::assert_success(&o);
    let err = common::stderr(&o);
    assert!(!err.contains("prompt:") && !err.contains('\r'), "{err:?}");
    // Under a pseudo-terminal (util-linux `script`): redrawn in place, then erased.
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_pagoda"))
        .chain(args)
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let o = std::process::Command::new("script")
        .args(["-qefc", &quoted.join(" "), "/dev/null"])
        .env("PAGODA_MODEL", common::model())
        .current_dir(common::root())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run `script` (util-linux) to give pagoda a terminal");
    common::assert_success(&o);
    let tty = common::stdout(&o);
    let n = pagoda_cpu::tokenizer::Tokenizer::from_gguf(
        &pagoda_cpu::model::Llama::load(common::model()).unwrap().gguf(),
    )
    .unwrap()
    .encode(&prompt, true, true)
    .len();
    assert!(n > 16, "{n} prompt tokens");
    for done in [8, 16] {
        let line = format!("\rprompt: {done}/{n} tokens ({}%)", done * 100 / n);
        assert!(tty.contains(&line), "{line:?} missing from {tty:?}");
    }
    assert!(tty.contains("\r\x1b[2K"), "the progress line is erased: {tty:?}");
}

#[test]
fn json_object_mode_prints_a_json_object_and_reports_mask_costs() {
    let args = ["run", "-p", "A cat named Tom, aged 3, as JSON: ", "-n", "100", "--temp", "0"];
    let o = common::run(&[&args[..], &["--json-object", "--json"]].concat());
    common::assert_success(&o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["finish_reason"], "stop", "{v}");
    let out: Value = serde_json::from_str(text(&v)).expect("the text is JSON");
    assert!(out.is_object(), "{out}");
    let c = &v["timings"]["constraint"];
    assert_eq!(c["masks"].as_u64(), Some(tokens(&v).len() as u64), "one mask per token: {c}");
    for field in ["mask_us_per_token", "critical_us_per_token", "wait_us_per_token"] {
        assert!(c[field].as_f64().is_some_and(|us| us >= 0.0), "{field}: {c}");
    }
    // The text output says what the masks cost.
    let o = common::run(&[&args[..], &["--json-object"]].concat());
    common::assert_success(&o);
    assert!(common::stderr(&o).contains("µs/token on the critical path"), "{}", common::stderr(&o));
}

#[test]
fn json_schema_output_validates_in_run_and_in_samples() {
    let schema = common::root().join("tests/data/grammars/schemas/01_person.json");
    let schema = schema.to_str().unwrap();
    let check = |text: &str| {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(v["name"].is_string(), "{v}");
        assert!(v["age"].as_u64().is_some_and(|a| a <= 150), "{v}");
    };
    let single = greedy_json(&["-n", "120", "--json-schema", schema]);
    assert_eq!(single["finish_reason"], "stop", "{single}");
    check(text(&single));
    // Through the engine (--samples): every sample follows the schema.
    let out = greedy(&["-n", "120", "--json-schema", schema, "--samples", "2", "--json"]);
    let samples: Vec<Value> = serde_json::from_str(&out).expect("a JSON array");
    for s in &samples {
        assert_eq!(s["finish_reason"], "stop", "{s}");
        check(text(s));
    }
}

#[test]
fn arithmetic_grammar_output_uses_only_its_characters() {
    let gbnf = common::root().join("tests/data/grammars/arithmetic.gbnf");
    for seed in ["1", "2"] {
        let o = common::run(&[
            "run",
            "-p",
            "Write a sum of two numbers: ",
            "-n",
            "60",
            "-s",
            seed,
            "--json",
            "--grammar",
            gbnf.to_str().unwrap(),
        ]);
        common::assert_success(&o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let t = text(&v);
        assert!(!t.is_empty() && t.chars().all(|c| "0123456789+-*/() ".contains(c)), "{t:?}");
        assert!(!t.contains("  ") && !t.starts_with(' '), "one optional space: {t:?}");
        for op in ["++", "**", "//", "+*", "*/", "+)", "(*"] {
            assert!(!t.replace(' ', "").contains(op), "{op} in {t:?}");
        }
        if v["finish_reason"] == "stop" {
            assert_eq!(t.matches('(').count(), t.matches(')').count(), "{t:?}");
        }
    }
    // A grammar that does not parse is a one-line error naming the flag.
    let bad = common::temp_file("bad.gbnf", "root ::= (\"a\"");
    let o = common::run(&["run", "-p", "x", "--grammar", bad.to_str().unwrap()]);
    common::assert_error(&o, 1, "--grammar");
    assert_eq!(common::stderr(&o).trim_end().lines().count(), 1, "{}", common::stderr(&o));
}

#[test]
fn the_sampler_knows_the_vocabulary() {
    // DRY's default sequence breakers are strings, matched against the model's vocabulary.
    let dry = greedy_json(&["-n", "8", "--dry-multiplier", "0.8"]);
    assert_eq!(tokens(&dry).len(), 8);
    let o = common::run(&["run", "-p", "x", "--logit-bias", "999999+1"]);
    common::assert_error(&o, 2, "--logit-bias");
}
