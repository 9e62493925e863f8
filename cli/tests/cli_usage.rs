//! The small things that trip people: llama.cpp's flags, tokenize/detokenize, usage
//! errors (exit 2), bench's output formats and --scaling's directory.

mod common;

use common::{assert_error, assert_success, run, run_with_stdin, stderr, stdout};

#[test]
fn llama_cpp_gpu_flags_are_accepted_with_a_note_and_change_nothing() {
    let base = run(&["run", "-p", "The capital of France is", "-n", "5", "--temp", "0", "--json"]);
    assert_success(&base);
    let with = run(&[
        "run",
        "-ngl",
        "99",
        "-fa",
        "on",
        "--no-mmap",
        "-p",
        "The capital of France is",
        "-n",
        "5",
        "--temp",
        "0",
        "--json",
    ]);
    assert_success(&with);
    let err = stderr(&with);
    for flag in ["note: -ngl 99:", "note: -fa on:", "note: --no-mmap:"] {
        assert!(err.contains(flag), "{flag} should be noted: {err}");
    }
    let text = |o: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["tokens"].clone(), v["text"].clone())
    };
    assert_eq!(text(&base), text(&with), "the flags must not change the output");
}

#[test]
fn llama_cpp_flags_pagoda_lacks_are_refused_by_name_never_misparsed() {
    // Without the filter, clap would read these as -c tk, -i (unknown), -n p, -t b.
    for (args, named) in [
        (&["run", "-ctk", "q8_0", "-p", "x"][..], "-ctk"),
        (&["run", "-i", "-p", "x"], "-i"),
        (&["batch", "-np", "4", "-f", "x"], "-np"),
        (&["run", "--mlock", "-p", "x"], "--mlock"),
        (&["run", "-tb", "2", "-p", "x"], "-tb"),
    ] {
        let o = run(args);
        assert_error(&o, 2, &format!("error: {named} is a llama.cpp flag pagoda does not have"));
        assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    }
    // A prompt may be anything, flags included.
    let o = run(&["tokenize", "--", "-ngl"]);
    assert_success(&o);
}

#[test]
fn tokenize_pieces_stdin_and_detokenize_round_trip() {
    let text = "Hello world, ünïcödé 🎉\n  spaces\t<|im_end|>";
    let ids = run(&["tokenize", text]);
    assert_success(&ids);
    let ids: Vec<u32> = serde_json::from_slice(&ids.stdout).unwrap();
    assert!(ids.len() > 5);

    let from_stdin = run_with_stdin(&["tokenize", "--stdin"], text);
    assert_success(&from_stdin);
    assert_eq!(serde_json::from_slice::<Vec<u32>>(&from_stdin.stdout).unwrap(), ids);

    let pieces = run(&["tokenize", "--pieces", text]);
    assert_success(&pieces);
    let lines: Vec<String> = stdout(&pieces).lines().map(String::from).collect();
    assert_eq!(lines.len(), ids.len(), "one line per token: {lines:?}");
    for (line, id) in lines.iter().zip(&ids) {
        let (n, piece) = line.split_once(" -> ").expect("ID -> 'PIECE'");
        assert_eq!(n.trim().parse::<u32>().unwrap(), *id);
        assert!(piece.starts_with('\'') && piece.ends_with('\''), "{line}");
    }
    assert!(lines.iter().any(|l| l.ends_with("'<|im_end|>'")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(r"\n")), "newlines are escaped: {lines:?}");

    let json = run(&["tokenize", "--pieces", "--json", text]);
    let arr: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(arr.iter().map(|o| o["id"].as_u64().unwrap() as u32).collect::<Vec<_>>(), ids);
    let ascii = "Hello world,\n  spaces\t<|im_end|>";
    let json = run(&["tokenize", "--pieces", "--json", ascii]);
    let arr: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let joined: String = arr.iter().map(|o| o["piece"].as_str().unwrap()).collect();
    assert_eq!(joined, ascii, "ASCII pieces are whole characters");

    // detokenize: as separate arguments, as tokenize's JSON array, from stdin.
    let id_args: Vec<String> = ids.iter().map(u32::to_string).collect();
    let mut args = vec!["detokenize"];
    args.extend(id_args.iter().map(String::as_str));
    let back = run(&args);
    assert_success(&back);
    assert_eq!(stdout(&back), format!("{text}\n"));
    let array = serde_json::to_string(&ids).unwrap();
    assert_eq!(stdout(&run(&["detokenize", &array])), format!("{text}\n"));
    assert_eq!(stdout(&run_with_stdin(&["detokenize", "--stdin"], &array)), format!("{text}\n"));
    let plain = run(&["detokenize", "--no-special", &array]);
    assert_eq!(stdout(&plain), format!("{}\n", text.trim_end_matches("<|im_end|>")));
}

#[test]
fn detokenize_names_a_bad_id() {
    assert_error(&run(&["detokenize", "1", "x2", "3"]), 2, "'x2' is not a token id");
    assert_error(
        &run(&["detokenize", "1", "4000000000"]),
        1,
        "token id 4000000000 is outside the vocabulary (0..49152)",
    );
    assert_error(&run(&["tokenize"]), 2, "required");
}

#[test]
fn bench_output_formats_carry_the_same_rows() {
    let args = ["bench", "-p", "8", "-n", "4", "-r", "1", "-t", "1"];
    let with = |extra: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(extra);
        let o = run(&a);
        assert_success(&o);
        stdout(&o)
    };
    let csv = with(&["-o", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0]
        .starts_with("model,types,size_bytes,params,simd,kv_type,threads,test,depth,tokens_per_s"));
    assert!(lines[1].contains(",pp8,0,") && lines[2].contains(",tg4,0,"), "{csv}");
    // The type mix holds commas: quoted as one field.
    assert!(lines[1].contains("\"") || !lines[1].contains(" × "), "{csv}");
    let jsonl = with(&["-o", "jsonl"]);
    let rows: Vec<serde_json::Value> =
        jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        rows.iter().map(|r| r["test"].as_str().unwrap()).collect::<Vec<_>>(),
        ["pp8", "tg4"]
    );
    let json: Vec<serde_json::Value> = serde_json::from_str(&with(&["-o", "json"])).unwrap();
    let legacy: Vec<serde_json::Value> = serde_json::from_str(&with(&["--json"])).unwrap();
    assert_eq!((json.len(), legacy.len()), (2, 2));
    let md = with(&[]);
    assert!(
        md.starts_with("| model |") && md.contains("| pp8 |") && md.contains("| tg4 |"),
        "{md}"
    );
    assert_error(&run(&["bench", "-o", "xml"]), 2, "invalid value 'xml'");
}

#[test]
fn bench_scaling_writes_only_where_it_is_told() {
    let o = run(&["bench", "--scaling", "--n-list", "8"]);
    assert_error(&o, 2, "--out-dir");
    let o = run(&["bench", "--out-dir", "/tmp/x"]);
    assert_error(&o, 2, "--scaling");
    let o = run(&["bench", "--scaling", "--out-dir", "/tmp/x", "--n-list", "0"]);
    assert_error(&o, 2, "--n-list");
    let o = run(&["bench", "-r", "0"]);
    assert_error(&o, 2, "-r: at least one repetition");
}

#[test]
fn numerics_is_exact_or_fast_on_every_command() {
    let bad = "unknown numerics 'quick' (expected exact or fast)";
    for cmd in [&["run", "-p", "hi"][..], &["perplexity", "-f", "x"], &["bench"], &["batch"]] {
        let mut args = cmd.to_vec();
        args.extend(["--numerics", "quick"]);
        assert_error(&run(&args), 2, bad);
    }
    // Both orders generate.
    for n in ["exact", "fast"] {
        let o = run(&[
            "run",
            "-p",
            "The GNU General Public License",
            "-n",
            "4",
            "--temp",
            "0",
            "--numerics",
            n,
        ]);
        assert_success(&o);
        assert!(!stdout(&o).is_empty(), "{n}: no text");
    }
}
