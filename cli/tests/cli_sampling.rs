//! The sampling flags llama.cpp users ask for (issue 19): each parses, changes the output
//! where it should, and a bad value is a usage error (exit 2) naming the flag.

mod common;

use common::{assert_error, assert_success, run};

/// `pagoda run -p PROMPT -n N --json ARGS`: the prompt's and the generated token ids.
fn tokens(prompt: &str, n: u32, args: &[&str]) -> (Vec<u32>, Vec<u32>) {
    let n = n.to_string();
    let mut all = vec!["run", "-p", prompt, "-n", &n, "--ignore-eos", "--json"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert_success(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let ids = |k: &str| -> Vec<u32> { serde_json::from_value(v[k].clone()).unwrap() };
    (ids("prompt_tokens"), ids("tokens"))
}

const PROMPT: &str = "The capital of France is";

#[test]
fn temp_minus_one_is_greedy_like_temp_zero() {
    let (_, zero) = tokens(PROMPT, 8, &["--temp", "0"]);
    let (_, minus_one) = tokens(PROMPT, 8, &["--temp", "-1"]);
    assert_eq!(minus_one, zero);
    // llama.cpp's greedy continuation (as in cli_generation.rs).
    assert_eq!(zero[..2], [7042, 30]);
}

#[test]
fn logit_bias_bans_and_forces_tokens_even_greedy() {
    let (_, greedy) = tokens(PROMPT, 4, &["--temp", "0"]);
    let first = greedy[0].to_string();
    let ban = format!("{first}-inf");
    let (_, banned) = tokens(PROMPT, 4, &["--temp", "0", "--logit-bias", &ban]);
    assert!(!banned.contains(&greedy[0]), "banned token {first} was generated: {banned:?}");
    // A large positive bias on an unlikely token makes greedy pick it every step; two
    // flags add up, and a negative bias parses as TOKEN-BIAS.
    let (_, forced) =
        tokens(PROMPT, 3, &["--temp", "-1", "--logit-bias", "1000+40", "--logit-bias", "1000-5"]);
    assert_eq!(forced, [1000, 1000, 1000]);
}

#[test]
fn presence_and_frequency_penalties_forbid_every_seen_token() {
    // A penalty of 100 per occurrence over the whole context: greedy never repeats a token
    // of the prompt or of its own output.
    let args = ["--temp", "0", "--repeat-last-n", "-1"];
    let (_, plain) = tokens("one two one two one two one two", 16, &args);
    let mut penalized_args = args.to_vec();
    penalized_args.extend(["--presence-penalty", "100", "--frequency-penalty", "100"]);
    let (prompt, out) = tokens("one two one two one two one two", 16, &penalized_args);
    assert_ne!(out, plain);
    for (i, t) in out.iter().enumerate() {
        assert!(!prompt.contains(t) && !out[..i].contains(t), "token {t} repeated: {out:?}");
    }
    // Negative penalties parse (they favour repeats).
    tokens(PROMPT, 2, &["--presence-penalty", "-0.5", "--frequency-penalty", "-0.5"]);
}

#[test]
fn dry_stops_greedy_repeating_itself() {
    let prompt = "one two three one two three one two three one two three";
    let greedy = ["--temp", "0"];
    let (_, plain) = tokens(prompt, 24, &greedy);
    let dry = [
        "--temp",
        "0",
        "--dry-multiplier",
        "1000",
        "--dry-allowed-length",
        "2",
        "--dry-penalty-last-n",
        "-1",
        "--dry-sequence-breaker",
        "none",
    ];
    let (p, out) = tokens(prompt, 24, &dry);
    assert_ne!(out, plain);
    // No generated token completes a 3-token sequence seen before (the penalty of 1000 is
    // more than any logit gap).
    let all: Vec<u32> = p.iter().chain(&out).copied().collect();
    for i in p.len()..all.len() {
        let tri = &all[i - 2..=i];
        let seen = (2..i).any(|j| &all[j - 2..=j] == tri);
        assert!(!seen, "token {} at {} repeats {:?}: {all:?}", all[i], i, tri);
    }
}

#[test]
fn typical_p_changes_sampling_and_mirostat_is_reproducible() {
    let sampled = ["--temp", "1.0", "--top-k", "0", "--top-p", "1", "--min-p", "0", "--seed", "5"];
    let (_, free) = tokens(PROMPT, 16, &sampled);
    let mut typical = sampled.to_vec();
    typical.extend(["--typical", "0.05"]);
    let (_, typical_out) = tokens(PROMPT, 16, &typical);
    assert_ne!(typical_out, free);
    // The `--typical-p` alias, greedy.
    tokens(PROMPT, 2, &["--temp", "0", "--typical-p", "0.5"]);

    let mirostat =
        ["--mirostat", "2", "--mirostat-ent", "3", "--mirostat-lr", "0.2", "--seed", "9"];
    let (_, a) = tokens(PROMPT, 16, &mirostat);
    let (_, b) = tokens(PROMPT, 16, &mirostat);
    assert_eq!(a, b, "same seed, same Mirostat output");
    assert_eq!(a.len(), 16);
    let (_, c) = tokens(PROMPT, 16, &["--mirostat", "2", "--mirostat-ent", "3", "--seed", "10"]);
    assert_ne!(a, c, "another seed, another Mirostat sample");
}

#[test]
fn bad_sampling_values_are_usage_errors_naming_the_flag() {
    for (flag, value) in [
        ("--logit-bias", "15043"),
        ("--logit-bias", "abc-1"),
        ("--logit-bias", "15043+inf"),
        ("--logit-bias", "15043+-1"),
        ("--logit-bias", "15043-nan"),
        ("--typical", "1.5"),
        ("--typical", "-0.1"),
        ("--mirostat", "1"),
        ("--mirostat", "3"),
        ("--mirostat-lr", "-1"),
        ("--mirostat-ent", "inf"),
        ("--dry-multiplier", "-1"),
        ("--dry-base", "0.5"),
        ("--dry-penalty-last-n", "-2"),
        ("--dry-allowed-length", "-1"),
        ("--repeat-last-n", "-3"),
        ("--temp", "nan"),
        ("--presence-penalty", "x"),
        ("--frequency-penalty", "inf"),
    ] {
        let o = run(&["run", "-p", "hi", "-n", "1", flag, value]);
        assert_error(&o, 2, flag);
    }
    let o = run(&["run", "-p", "hi", "-n", "1", "--mirostat", "1"]);
    assert_error(&o, 2, "Mirostat v1 is not implemented");
}
