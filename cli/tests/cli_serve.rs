//! End-to-end tests of `pagoda serve`: the official `openai` Python client, bad input,
//! 32 concurrent clients with disconnects, and shutdown by SIGTERM.
//!
//! Each test starts its own server on a free port (`--port 0`); they run one at a time
//! (a lock), as each server takes both cores. The HTTP client is a few lines over
//! `TcpStream` (HTTP/1.1, `Connection: close`), so what is tested is the wire format.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn model() -> PathBuf {
    let p = pagoda_cpu::model_file::workspace_model_path(&root());
    assert!(p.exists(), "model {} missing: run scripts/fetch-model.sh", p.display());
    p
}

/// One server at a time: each uses every core.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running `pagoda serve`; killed when dropped.
struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pagoda"))
            .args(["serve", "--port", "0", "--check-invariants"])
            .args(args)
            .env("PAGODA_MODEL", model())
            .current_dir(root())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pagoda serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {}", stderr.lock().unwrap());
            }
        };
        Server { child, addr, stderr }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        http(&self.addr, method, path, headers, body)
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.request("POST", path, &[], &body.to_string())
    }

    fn healthy(&self) -> bool {
        self.request("GET", "/health", &[], "").status == 200
    }

    /// A metric's value from /metrics.
    fn metric(&self, name: &str) -> f64 {
        let text = self.request("GET", "/metrics", &[], "").body;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{text}"))
    }

    /// Waits until no request is queued or in flight and no page is held by a sequence.
    fn wait_idle(&self) {
        let t0 = Instant::now();
        while self.metric("pagoda_queue_depth") != 0.0
            || self.metric("pagoda_requests_in_flight") != 0.0
            || self.metric("pagoda_kv_pages_used") != 0.0
        {
            assert!(t0.elapsed() < Duration::from_secs(60), "server never became idle");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn send_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // A server may answer (413) before reading a large body, then close: ignore write errors.
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body.as_bytes()));
    s
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut s = send_request(addr, method, path, headers, body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply { status, head: head.to_string(), body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The `data:` payloads of a server-sent event body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

/// The text of a streamed completion (its chunks' `text`), and whether it ended in [DONE].
fn streamed_text(body: &str) -> (String, bool) {
    let data = sse_data(body);
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let text = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    (text, done)
}

fn pagoda(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pagoda"))
        .args(args)
        .env("PAGODA_MODEL", model())
        .current_dir(root())
        .output()
        .expect("spawn pagoda")
}

/// A virtual environment with the `openai` package, made once under target/.
fn openai_python() -> PathBuf {
    const OPENAI: &str = "openai==3.63.0";
    let venv = root().join("target").join("openai-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(OPENAI);
    if !marker.exists() {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        assert!(ok.is_ok_and(|s| s.success()), "python3 -m venv {} failed", venv.display());
        let o = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", OPENAI])
            .output()
            .expect("run pip");
        assert!(o.status.success(), "pip install {OPENAI}: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(&marker, "").unwrap();
    }
    python
}

#[test]
fn the_openai_python_client_passes_every_check() {
    let python = openai_python();
    let _one = one_at_a_time();
    let prompt = "The capital of France is";
    let n = 24;
    let run = pagoda(&["run", "-p", prompt, "-n", &n.to_string(), "--temp", "0", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let run: Value = serde_json::from_slice(&run.stdout).unwrap();
    let expected = json!({
        "prompt": prompt, "n_predict": n, "text": run["text"],
        "prompt_tokens": run["prompt_tokens"].as_array().unwrap().len(),
    });
    let path =
        std::env::temp_dir().join(format!("pagoda-serve-expected-{}.json", std::process::id()));
    std::fs::write(&path, expected.to_string()).unwrap();
    let server = Server::start(&[]);
    let out = Command::new(python)
        .arg(root().join("cli/tests/server/openai_client.py"))
        .arg(format!("http://{}/v1", server.addr))
        .arg(&path)
        .output()
        .expect("run python");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr.lock().unwrap()
    );
    assert!(report.contains("7 of 7 checks passed"), "{report}");
    server.wait_idle();
    assert_eq!(server.metric("pagoda_invariant_violations_total"), 0.0);
}

#[test]
fn bad_input_gets_openai_errors_and_the_server_keeps_answering() {
    let _one = one_at_a_time();
    let server = Server::start(&[
        "--api-key",
        "sesame",
        "--max-body",
        "4096",
        "--max-queue",
        "1",
        "--max-batch-tokens",
        "16",
    ]);
    let auth = [("Authorization", "Bearer sesame")];
    let post = |body: &str| server.request("POST", "/v1/completions", &auth, body);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"prompt\": \"x\"".into(), 400, "invalid_json"),
        ("[1, 2]".into(), 400, "body"),
        ("{\"prompt\": 3}".into(), 400, "prompt"),
        ("{}".into(), 400, "prompt"),
        ("{\"prompt\": \"x\", \"temperature\": \"hot\"}".into(), 400, "temperature"),
        ("{\"prompt\": \"x\", \"top_p\": 1.5}".into(), 400, "top_p"),
        ("{\"prompt\": \"x\", \"n\": 99}".into(), 400, "n"),
        ("{\"prompt\": \"x\", \"max_tokens\": 0}".into(), 400, "max_tokens"),
        ("{\"prompt\": \"x\", \"stop\": 5}".into(), 400, "stop"),
        ("{\"prompt\": [999999999]}".into(), 400, "prompt"),
        ("{\"prompt\": \"x\", \"max_tokens\": 100000}".into(), 400, "context_length_exceeded"),
        (format!("{{\"prompt\": \"{}\"}}", "a".repeat(5000)), 413, ""),
    ];
    for (body, status, what) in &cases {
        let r = post(body);
        assert_eq!(r.status, *status, "{body:.80}: {r:?}");
        if *status == 400 {
            let e = &r.json()["error"];
            assert_eq!(e["type"], "invalid_request_error", "{r:?}");
            assert!(
                e["param"] == *what || e["code"] == *what,
                "{body:.80}: {e} should name {what}"
            );
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        } else {
            assert!(r.json()["error"]["message"].is_string(), "{r:?}");
        }
        assert!(server.healthy(), "after {body:.80}");
    }
    // Chat: a message without a role.
    let r = server.request(
        "POST",
        "/v1/chat/completions",
        &auth,
        "{\"messages\": [{\"content\": \"hi\"}]}",
    );
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("messages[0].role")));
    // Keys.
    let r = server.request("POST", "/v1/completions", &[], "{\"prompt\": \"x\"}");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = server.request("GET", "/v1/models", &[("Authorization", "Bearer wrong")], "");
    assert_eq!(r.status, 401);
    assert_eq!(server.request("GET", "/v1/models", &auth, "").json()["data"][0]["object"], "model");
    assert_eq!(server.request("GET", "/v1/nothing", &auth, "").status, 404);
    // A full queue: a long prompt is prefilled 16 tokens a step, so it waits for its first
    // token for seconds; with --max-queue 1 the next request is refused at once.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(60);
    let slow = send_request(
        &server.addr,
        "POST",
        "/v1/completions",
        &auth,
        &json!({"prompt": long, "max_tokens": 4, "stream": true}).to_string(),
    );
    let t0 = Instant::now();
    while server.metric("pagoda_queue_depth") < 1.0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the slow request never queued");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = post("{\"prompt\": \"x\", \"max_tokens\": 2}");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.head.to_ascii_lowercase().contains("retry-after: 1"), "{}", r.head);
    drop(slow); // a client that goes away: its request is cancelled, its pages freed
    server.wait_idle();
    assert_eq!(server.metric("pagoda_requests_total{outcome=\"disconnected\"}"), 1.0);
    assert_eq!(server.metric("pagoda_generated_tokens_total"), 0.0, "cancelled in its prefill");
    assert!(server.healthy());
    let r = post("{\"prompt\": \"x\", \"max_tokens\": 2}");
    assert_eq!(r.status, 200, "{r:?}\n{}", server.request("GET", "/metrics", &[], "").body);
    assert_eq!(server.metric("pagoda_invariant_violations_total"), 0.0);
    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn concurrent_clients_with_disconnects_get_their_solo_results_and_free_every_page() {
    let _one = one_at_a_time();
    let server = Server::start(&["--kv-pages", "96"]);
    let words = ["time", "the", "river", "a small cat", "numbers", "why", "and then", "snow"];
    let requests: Vec<Value> = (0..32)
        .map(|i| {
            let prompt = (0..1 + i % 5).map(|k| words[(i + k) % words.len()]).collect::<Vec<_>>().join(" ");
            json!({"prompt": prompt, "max_tokens": 4 + (i * 7) % 20, "temperature": 0, "stream": true})
        })
        .collect();
    // Solo: one at a time.
    let solo: Vec<String> = requests
        .iter()
        .map(|r| {
            let reply = server.post("/v1/completions", r);
            let (text, done) = streamed_text(&reply.body);
            assert!(done, "{reply:?}");
            text
        })
        .collect();
    server.wait_idle();
    let addr = server.addr.clone();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let addr = addr.clone();
                scope.spawn(move || {
                    let body = r.to_string();
                    if i % 4 == 3 {
                        // Disconnect after the first event.
                        let s = send_request(&addr, "POST", "/v1/completions", &[], &body);
                        let mut first = String::new();
                        let _ = BufReader::new(&s).read_line(&mut first);
                        drop(s);
                        None
                    } else {
                        Some(http(&addr, "POST", "/v1/completions", &[], &body))
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut completed = 0;
    for (i, r) in results.iter().enumerate() {
        let Some(r) = r else { continue };
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        let (text, done) = streamed_text(&r.body);
        assert!(done, "request {i} did not end with [DONE]: {}", r.body);
        assert_eq!(text, solo[i], "request {i} differs from its solo run");
        completed += 1;
    }
    assert_eq!(completed, 24);
    server.wait_idle();
    assert_eq!(server.metric("pagoda_invariant_violations_total"), 0.0);
    // Every page is free or held only by the prefix cache.
    let free = server.metric("pagoda_kv_pages_free");
    let cached = server.metric("pagoda_kv_pages_cached");
    assert_eq!(free + cached, server.metric("pagoda_kv_pages_total"));
}

#[test]
fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    let _one = one_at_a_time();
    let mut server = Server::start(&["--grace", "30"]);
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0, "stream": true});
    let s = send_request(&server.addr, "POST", "/v1/completions", &[], &body.to_string());
    let mut reader = BufReader::new(s);
    let mut first = String::new();
    while !first.starts_with("data: ") {
        first.clear();
        reader.read_line(&mut first).unwrap();
    }
    let kill = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let (_, done) = streamed_text(&format!("{first}{rest}"));
    assert!(done, "the request in flight was not finished: {rest}");
    let status = wait_exit(&mut server.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.stderr.lock().unwrap());
    assert!(server.stderr.lock().unwrap().contains("shutting down"));

    // A request longer than the grace period is cancelled when it ends: exit 0 still.
    let mut server = Server::start(&["--grace", "1", "--ignore-eos"]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 3000, "stream": true, "temperature": 0, "stop": []});
    let s = send_request(&server.addr, "POST", "/v1/completions", &[("X", "y")], &body.to_string());
    let mut reader = BufReader::new(s);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    let t0 = Instant::now();
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(rest.contains("shutting down"), "the cancelled stream says why: {rest:.300}");
    let status = wait_exit(&mut server.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", server.stderr.lock().unwrap());
    assert!(t0.elapsed() < Duration::from_secs(20));
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < limit, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}
