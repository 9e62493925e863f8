//! `pagoda quantize`, run as a process: progress lines, the summary, llama-quantize's
//! argument forms, exit statuses, and that the output appears whole or not at all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use pagoda_cpu::model_file::workspace_model_path;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> PathBuf {
    let path = workspace_model_path(&root());
    assert!(
        path.exists(),
        "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
        path.display()
    );
    path
}

fn pagoda(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pagoda")).args(args).output().expect("pagoda runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// llama-quantize's SHA-256 for a preset (tests/data/quantize/llamacpp.json).
fn reference_sha(preset: &str) -> String {
    let path = root().join("tests/data/quantize/llamacpp.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["presets"][preset]["sha256"].as_str().unwrap().to_string()
}

fn sha256sum(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    String::from_utf8(o.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("pagoda-cli-quantize-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn progress_lines_summary_and_llama_quantize_bytes() {
    let model = model();
    let dir = Scratch::new("ok");
    let out = dir.path("q8.gguf");
    let o = pagoda(&[
        "quantize",
        "--allow-requantize",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
        "q8_0",
        "2",
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(o.stdout.is_empty());
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 272, "{err}");
    assert!(progress[0].starts_with("[   1/ 272] output_norm.weight "), "{}", progress[0]);
    let line = |name: &str| *progress.iter().find(|l| l.contains(name)).unwrap();
    let embd = line(" token_embd.weight ");
    assert!(embd.contains("[   576,  49152,      1,      1]"), "{embd}");
    assert!(embd.contains("Q8_0") && embd.contains("(kept)"), "{embd}");
    let k = line(" blk.0.attn_k.weight ");
    assert!(k.contains("Q4_1 -> Q8_0") && k.contains("MiB ->"), "{k}");
    assert!(err.contains("quantize: model size =    92.10 MiB"), "{err}");
    assert!(err.contains("quantize: quant size ="), "{err}");
    assert!(err.contains("quantize: types: 211 × Q8_0, 61 × F32"), "{err}");
    assert!(err.contains("as Q8_0 (ftype 7): 144811072 bytes"), "{err}");
    assert_eq!(sha256sum(&out), reference_sha("Q8_0"));
    assert_eq!(dir.files(), ["q8.gguf"]);

    // The output's type mix, as inspect shows it.
    let o = pagoda(&["inspect", "-m", out.to_str().unwrap()]);
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.lines().any(|l| l == "types: 211 × Q8_0, 61 × F32"), "{text}");
}

#[test]
fn without_out_the_file_is_ggml_model_type_beside_the_input() {
    let dir = Scratch::new("default-out");
    let input = dir.path("in.gguf");
    std::os::unix::fs::symlink(model(), &input).unwrap();
    // An ftype id; the alias "Q4_K" is the first name with id 15, as in llama-quantize.
    let o = pagoda(&["quantize", "--allow-requantize", input.to_str().unwrap(), "15"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(dir.files(), ["ggml-model-Q4_K.gguf", "in.gguf"]);
    assert_eq!(sha256sum(&dir.path("ggml-model-Q4_K.gguf")), reference_sha("Q4_K_M"));
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let model = model();
    let m = model.to_str().unwrap();
    let dir = Scratch::new("bad");
    let out = dir.path("out.gguf");
    let o_ = out.to_str().unwrap();

    // Unknown type: a usage error (2) naming it.
    let o = pagoda(&["quantize", "--allow-requantize", m, o_, "Q4_Z"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown quantization type 'Q4_Z'"), "{err}");
    // A type llama.cpp has but pagoda does not write.
    let o = pagoda(&["quantize", "--allow-requantize", m, o_, "IQ2_XXS"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("IQ2_XXS (ftype 19) is not supported"), "{}", stderr(&o));
    // OUT given, TYPE missing.
    let o = pagoda(&["quantize", m, o_]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing TYPE"), "{}", stderr(&o));

    // Requantizing without --allow-requantize: a runtime error (1) naming the flag.
    let o = pagoda(&["quantize", m, o_, "Q4_K_M"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: tensor blk.0.attn_k.weight is already quantized (Q4_1)"),
        "{err}"
    );
    assert!(err.contains("--allow-requantize"), "{err}");

    // OUT = IN.
    let o = pagoda(&["quantize", "--allow-requantize", m, m, "Q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is the input file"), "{err}");

    // A missing input.
    let missing = dir.path("missing.gguf");
    let o = pagoda(&["quantize", missing.to_str().unwrap(), o_, "Q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.gguf"), "{}", stderr(&o));

    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn sigint_leaves_the_old_output_and_no_temporary_file() {
    let model = model();
    let dir = Scratch::new("sigint");
    let out = dir.path("out.gguf");
    std::fs::write(&out, b"old").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .args([
            "quantize",
            "--allow-requantize",
            "-t",
            "1",
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "IQ4_XS",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        let started = l.starts_with("[  10/ 272]");
        seen.push(l);
        if started {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.starts_with("[  10/ 272]")), "{seen:?}");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(err.lines().filter(|l| l.starts_with('[')).count() < 272, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(dir.files(), ["out.gguf"]);
}
