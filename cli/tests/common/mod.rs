//! What the CLI tests share: where the repository and the model are, running `pagoda`,
//! reading its output, scratch files, and Python virtual environments for the tests that
//! check pagoda's output with a third-party package (`openai`, `jsonschema`).
//!
//! Each test crate includes it with `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default model (SmolLM2-135M-Instruct Q4_1); fails loudly when it is missing.
pub fn model() -> PathBuf {
    let p = pagoda_cpu::model_file::workspace_model_path(&root());
    assert!(p.exists(), "model {} missing: run scripts/fetch-model.sh", p.display());
    p
}

/// Gemma 3 270M Q4_K_M; fails loudly when it is missing.
pub fn gemma3() -> PathBuf {
    let p = root().join("models").join("gemma-3-270m-q4_k_m.gguf");
    assert!(p.exists(), "model {} missing: run scripts/fetch-model.sh gemma3", p.display());
    p
}

/// `pagoda ARGS` with the default model (`$PAGODA_MODEL`), run from the repository root.
pub fn pagoda(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pagoda"));
    c.args(args).env("PAGODA_MODEL", model()).current_dir(root());
    c
}

/// Runs `pagoda ARGS` to completion (stdin empty).
pub fn run(args: &[&str]) -> Output {
    pagoda(args).stdin(Stdio::null()).output().expect("spawn pagoda")
}

/// Runs `pagoda ARGS` with `input` on stdin.
pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = pagoda(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pagoda");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    // A writer thread: a large input must not deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for pagoda");
    writer.join().unwrap();
    out
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run: the exit code, a message containing `needle`, and no panic.
pub fn assert_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "stderr should mention {needle:?}: {err}");
}

/// A successful run (exit 0), or a panic showing stderr.
#[track_caller]
pub fn assert_success(o: &Output) {
    assert!(o.status.success(), "exit {:?}; stderr: {}", o.status.code(), stderr(o));
}

/// A file in the temporary directory, unique to this process and `name`, holding `contents`.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pagoda-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, contents).unwrap();
    p
}

/// A Python virtual environment under target/ with `packages` (pinned `name==version`)
/// installed by pip, made once; returns its interpreter. Fails loudly when Python or pip
/// cannot make it.
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = root().join("target").join(name);
    let python = venv.join("bin").join("python");
    let marker = venv.join(format!("installed-{}", packages.join("+")));
    if !marker.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(ok.is_ok_and(|s| s.success()), "python3 -m venv {} failed", venv.display());
        let o = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .output()
            .expect("run pip");
        assert!(
            o.status.success(),
            "pip install {}: {}",
            packages.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::write(&marker, "").unwrap();
    }
    python
}

/// A running `pagoda serve` on a free port (`--port 0`) with the default model; killed when
/// dropped. Its stderr is collected in `log`.
pub struct Server {
    child: std::process::Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Its stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `pagoda serve --port 0 ARGS` and waits (up to 60 s) for its "listening on" line.
    pub fn start(args: &[&str]) -> Server {
        use std::io::BufRead;
        let mut child = pagoda(&["serve", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pagoda serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(addr) => Server { child, addr, log },
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {}", log.lock().unwrap());
            }
        }
    }

    /// POSTs `body` as JSON to `path` (HTTP/1.1, `Connection: close`); returns the status and
    /// the response body.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        self.request("POST", path, &body.to_string())
    }

    /// GETs `path`; returns the response body (whatever the status).
    pub fn get(&self, path: &str) -> String {
        self.request("GET", path, "").1
    }

    /// One HTTP/1.1 request (`Connection: close`); the status and the response body.
    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(300))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: \
             application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes())).expect("send");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
