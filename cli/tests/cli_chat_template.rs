//! `pagoda chat --chat-template FILE`: a base model (no template of its own) chats with the
//! given template, one BOS even though the template prints it; an unreadable or invalid file
//! is a one-line error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gemma3() -> PathBuf {
    let p = root().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(p.exists(), "model {} missing: run scripts/fetch-model.sh gemma3", p.display());
    p
}

fn chat(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .arg("chat")
        .arg("-m")
        .arg(gemma3())
        .args(["-n", "2", "--temp", "0", "-t", "1"])
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pagoda");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn chat_template_file_lets_a_base_model_chat() {
    let template = "tests/data/chat_templates/gemma3-it.jinja";
    let o = chat(&["--chat-template", template], "Hi\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // <bos> from the template, not twice: the prompt is exactly the rendered text's tokens.
    let file = pagoda_cpu::model_file::ModelFile::open(gemma3()).unwrap();
    let tok = pagoda_cpu::tokenizer::Tokenizer::from_gguf(&file.gguf()).unwrap();
    let want = tok.encode(
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
        false,
        true,
    );
    assert!(err.contains(&format!("prompt {} new tokens", want.len())), "{err}");

    // Without it the base model is refused, as before.
    let o = chat(&[], "Hi\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no chat template"));
}

#[test]
fn a_bad_chat_template_file_is_a_clear_error() {
    let o = chat(&["--chat-template", "tests/data/chat_templates/no-such-file.jinja"], "Hi\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read chat template") && !err.contains("panicked"), "{err}");

    let dir = std::env::temp_dir().join(format!("pagoda-chat-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.jinja");
    std::fs::write(&bad, "{% for m in messages %}\n{{ m.content }\n").unwrap();
    let o = chat(&["--chat-template", bad.to_str().unwrap()], "Hi\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("syntax error at line 2") && !err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
