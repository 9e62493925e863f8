//! `pagoda inspect`, run as a process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pagoda_cpu::model_file::workspace_model_path;

fn model() -> PathBuf {
    let path = workspace_model_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
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

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn text_lists_metadata_and_tensors() {
    let model = model();
    let o = pagoda(&["inspect", "-m", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("GGUF v3, 33 metadata entries, 272 tensors, alignment 32"), "{out}");
    let line = |needle: &str| {
        out.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}"))
    };
    assert!(line("llama.block_count").ends_with("u32     30"));
    assert!(line("tokenizer.ggml.tokens")
        .ends_with(r#"[49152 strings: "<|endoftext|>", "<|im_start|>", "<|im_end|>", …]"#));
    let cols: Vec<&str> = line("token_embd.weight").split_whitespace().collect();
    assert_eq!(cols, ["0", "token_embd.weight", "Q8_0", "576", "x", "49152", "30081024"]);
    assert!(out.contains("272 tensors, 96576768 bytes of tensor data"));
}

#[test]
fn json_is_complete() {
    let model = model();
    let o = pagoda(&["inspect", "--json", "-m", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["metadata"].as_object().unwrap().len(), 33);
    assert_eq!(doc["metadata"]["llama.embedding_length"], 576);
    assert_eq!(doc["metadata"]["general.architecture"], "llama");
    let tokens = &doc["metadata"]["tokenizer.ggml.tokens"];
    assert_eq!((tokens["array"].as_str(), tokens["len"].as_u64()), (Some("string"), Some(49152)));
    assert_eq!(tokens["head"][1], "<|im_start|>");
    let tensors = doc["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 272);
    let total: u64 = tensors.iter().map(|t| t["n_bytes"].as_u64().unwrap()).sum();
    assert_eq!(total, 96_576_768);
    assert_eq!(tensors[0]["shape"], serde_json::json!([576, 49152]));
}

#[test]
fn bad_file_exits_1_with_one_line() {
    let dir = std::env::temp_dir().join(format!("pagoda-inspect-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    let o = pagoda(&["inspect", "-m", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.gguf: header: 18 446 744 073 709 551 615 tensors"), "{err}");
    assert!(o.stdout.is_empty());

    // The default model missing (no -m, no PAGODA_MODEL, empty current directory).
    let o = Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .arg("inspect")
        .env_remove("PAGODA_MODEL")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_that_is_not_a_regular_file_is_refused_at_once() {
    let dir = std::env::temp_dir().join(format!("pagoda-inspect-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    for (path, kind) in [
        (fifo.to_str().unwrap(), "a FIFO"),
        ("/dev/null", "a character device"),
        (dir.to_str().unwrap(), "a directory"),
        ("/proc/self/status", "like a /proc file"),
    ] {
        for cmd in [&["inspect", "-m", path][..], &["tokenize", "-m", path, "hi"]] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_pagoda"))
                .args(cmd)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let t0 = std::time::Instant::now();
            while child.try_wait().unwrap().is_none() {
                if t0.elapsed() > std::time::Duration::from_secs(20) {
                    let _ = child.kill();
                    panic!("{cmd:?} hangs");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let o = child.wait_with_output().unwrap();
            assert_eq!(o.status.code(), Some(1), "{cmd:?}");
            let err = stderr(&o);
            assert!(err.contains("is not a regular file") && err.contains(kind), "{cmd:?}: {err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
