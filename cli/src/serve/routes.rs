//! The HTTP endpoints: `/v1/completions`, `/v1/chat/completions` (JSON or server-sent
//! events), `/v1/models`, `/health`, `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use pagoda_cpu::chat::ChatTemplate;
use pagoda_cpu::engine::{Request, RequestId};
use pagoda_cpu::grammar::{Grammar, TokenEnv};
use pagoda_cpu::tokenizer::Tokenizer;
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use super::generation::{Generation, TokenInfo, Update, Usage};
use super::metrics::Metrics;
use super::openai::{self, json_body, ApiError, GenRequest, Prompt};
use super::worker::Command;
use crate::constraint::RequestConstraint;

/// What every handler shares.
pub struct AppState {
    pub commands: Sender<Command>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: ChatTemplate,
    pub model_id: String,
    /// Longest prompt + max_tokens a request may ask for (model context, pool size).
    pub max_context: usize,
    /// Whether the KV policy evicts (then only the pool bounds a request; the engine checks).
    pub evicting: bool,
    pub max_queue: usize,
    pub api_key: Option<String>,
    pub metrics: Arc<Metrics>,
    pub stop_tokens: Vec<u32>,
    /// The token environment for `response_format` grammars, built by the first request
    /// that needs it (or at start with `--grammar` / `--json-schema` / `--json-object`).
    pub grammar_env: OnceLock<Result<TokenEnv, String>>,
    /// The grammar of requests without `response_format` (the command's flags).
    pub default_constraint: Option<Arc<Grammar>>,
    pub next_id: AtomicU64,
    pub shutting_down: AtomicBool,
    pub started: u64,
}

type Shared = Arc<AppState>;

/// The router, with `body_limit` bytes as the most a request body may hold.
pub fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "no such endpoint")
        .into_response()
}

async fn health(State(s): State<Shared>) -> Response {
    if s.shutting_down.load(Ordering::Relaxed) {
        let body = json!({"status": "shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, json_body(&body)).into_response();
    }
    json_body(&json!({"status": "ok"})).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let ct = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (ct, s.metrics.render()).into_response()
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&s, &headers) {
        return e.into_response();
    }
    let body = json!({"object": "list", "data": [{
        "id": s.model_id, "object": "model", "created": s.started, "owned_by": "pagoda",
    }]});
    json_body(&body).into_response()
}

async fn completions(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(s, headers, body, false).await.unwrap_or_else(|e| e.into_response())
}

async fn chat_completions(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(s, headers, body, true).await.unwrap_or_else(|e| e.into_response())
}

fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &s.api_key else { return Ok(()) };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        return Ok(());
    }
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        if given.is_none() {
            "missing API key (Authorization: Bearer KEY)"
        } else {
            "incorrect API key"
        },
    );
    e.code = Some("invalid_api_key");
    Err(e)
}

/// A completion or chat request, start to end.
async fn serve(
    s: Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Result<Response, ApiError> {
    let result = serve_checked(&s, headers, body, chat).await;
    if let Err(e) = &result {
        s.metrics.count_outcome(&format!("http_{}", e.status.as_u16()));
    }
    result
}

async fn serve_checked(
    s: &Shared,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Result<Response, ApiError> {
    authorize(s, &headers)?;
    if s.shutting_down.load(Ordering::Relaxed) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is shutting down",
        ));
    }
    let body = body.map_err(|e| {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is too large".to_string()
        } else {
            format!("cannot read the request body: {e}")
        };
        ApiError::new(status, "invalid_request_error", message)
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        let mut err = ApiError::field("body", format!("the request body is not valid JSON: {e}"));
        err.code = Some("invalid_json");
        err
    })?;
    let req = openai::parse(&value, chat)?;
    let prompt = tokens_of(s, &req.prompt)?;
    let vocab = s.tokenizer.vocab_size();
    if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::field(
            "prompt",
            format!("token {t} is outside the vocabulary ({vocab})"),
        ));
    }
    if prompt.is_empty() {
        return Err(ApiError::field("prompt", "the prompt is empty (no tokens)"));
    }
    let room = s.max_context.saturating_sub(prompt.len());
    let max_tokens = match req.max_tokens {
        Some(m) => m,
        None if chat || s.evicting => room.max(1),
        None => 16.min(room.max(1)),
    };
    if !s.evicting && prompt.len() + max_tokens > s.max_context {
        let mut e = ApiError::field(
            if req.max_tokens.is_some() { "max_tokens" } else { "messages" },
            format!(
                "this model's context holds {} tokens; the request needs {} (prompt {}, \
                 max_tokens {max_tokens})",
                s.max_context,
                prompt.len() + max_tokens,
                prompt.len()
            ),
        );
        if !chat && req.max_tokens.is_none() {
            e.param = Some("prompt".into());
        }
        e.code = Some("context_length_exceeded");
        return Err(e);
    }
    let constraint = match &req.constraint {
        RequestConstraint::Default => s.default_constraint.clone(),
        RequestConstraint::Text => None,
        RequestConstraint::Spec(spec) => {
            // Off the runtime's one thread: the first use builds the token environment
            // (up to a second for a 262k vocabulary), and a schema may take milliseconds.
            let (state, spec) = (s.clone(), spec.clone());
            let compiled = tokio::task::spawn_blocking(move || {
                let env = state
                    .grammar_env
                    .get_or_init(|| TokenEnv::new(&state.tokenizer).map_err(|e| e.to_string()));
                let env = env.as_ref().map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.clone())
                })?;
                Grammar::compile(env, spec).map_err(|e| {
                    ApiError::field("response_format", format!("response_format: {e}"))
                })
            })
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    format!("compiling the response_format failed: {e}"),
                )
            })??;
            Some(Arc::new(compiled))
        }
    };
    let mut sampler = req.sampler.clone();
    if !req.seeded {
        sampler.seed = fresh_seed(s);
    }
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let request = Request {
        id: RequestId(id),
        prompt,
        max_tokens,
        sampler,
        n: req.n,
        stop_tokens: s.stop_tokens.clone(),
        logprobs: req.logprobs,
        stop: req.stop.clone(),
        constraint,
    };
    let gen = Generation::submit(request, &s.commands, &s.metrics, s.max_queue)?;
    let head = Head {
        id: format!("{}-{id}", if chat { "chatcmpl" } else { "cmpl" }),
        created: now_secs(),
        model: s.model_id.clone(),
        chat,
    };
    if req.stream {
        Ok(stream(s.clone(), gen, head, req).into_response())
    } else {
        whole(s, gen, head, &req).await
    }
}

/// A seed for a request that gave none: different for every request.
fn fresh_seed(s: &AppState) -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let n = s.next_id.load(Ordering::Relaxed);
    (t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).rotate_left(17)
}

fn tokens_of(s: &AppState, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
    match prompt {
        Prompt::Tokens(t) => Ok(t.clone()),
        Prompt::Text(t) => Ok(s.tokenizer.encode(t, true, true)),
        Prompt::Chat(messages) => {
            let text = s.template.render(messages, true).map_err(|e| {
                ApiError::field("messages", format!("the chat template failed: {e}"))
            })?;
            // A template that writes the BOS text itself gets no second BOS.
            let add_bos = !s.template.starts_with_bos(&text);
            Ok(s.tokenizer.encode(&text, add_bos, true))
        }
    }
}

/// What every response object repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
    chat: bool,
}

impl Head {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn wrap(&self, chunk: bool, choices: Value) -> Value {
        json!({
            "id": self.id, "object": self.object(chunk), "created": self.created,
            "model": self.model, "choices": choices,
        })
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// A token's piece as text (lossy for partial UTF-8, as OpenAI's `token` field) and bytes.
fn piece(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok.token_to_bytes(id).unwrap_or_default().to_vec();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Per-sample log-probabilities, accumulated in the shape each endpoint reports.
#[derive(Default)]
struct Logprobs {
    /// Chat: `content` entries.
    content: Vec<Value>,
    /// Completions: parallel arrays.
    tokens: Vec<Value>,
    token_logprobs: Vec<Value>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<Value>,
}

impl Logprobs {
    fn add(&mut self, tok: &Tokenizer, t: &TokenInfo, chat: bool, offset: usize) {
        let Some(lp) = &t.logprobs else { return };
        let (text, bytes) = piece(tok, t.id);
        if chat {
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| {
                    let (text, bytes) = piece(tok, id);
                    json!({"token": text, "logprob": l, "bytes": bytes})
                })
                .collect();
            self.content.push(json!({
                "token": text, "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top,
            }));
        } else {
            let mut top = serde_json::Map::new();
            for &(id, l) in &lp.top {
                top.insert(piece(tok, id).0, json!(l));
            }
            self.tokens.push(json!(text));
            self.token_logprobs.push(json!(lp.logprob));
            self.top_logprobs.push(Value::Object(top));
            self.text_offset.push(json!(offset));
        }
    }

    fn take(&mut self, chat: bool) -> Value {
        let t = std::mem::take(self);
        if chat {
            json!({"content": t.content})
        } else {
            json!({
                "tokens": t.tokens, "token_logprobs": t.token_logprobs,
                "top_logprobs": t.top_logprobs, "text_offset": t.text_offset,
            })
        }
    }
}

/// A non-streaming response: every sample to its end, then one JSON object.
async fn whole(
    s: &Shared,
    mut gen: Generation,
    head: Head,
    req: &GenRequest,
) -> Result<Response, ApiError> {
    let n = req.n;
    let mut texts = vec![String::new(); n];
    let mut reasons = vec!["length"; n];
    let mut logprobs: Vec<Logprobs> = (0..n).map(|_| Logprobs::default()).collect();
    let mut usage = None;
    while let Some(u) = gen.next().await? {
        match u {
            Update::Text { sample, text, token } => {
                if req.logprobs.is_some() {
                    logprobs[sample].add(&s.tokenizer, &token, head.chat, texts[sample].len());
                }
                texts[sample].push_str(&text);
            }
            Update::Finished { sample, reason } => reasons[sample] = reason,
            Update::Done(u) => usage = Some(u),
        }
    }
    let usage = usage.ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "no result")
    })?;
    s.metrics.count_outcome("completed");
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            let lp = if req.logprobs.is_some() { logprobs[i].take(head.chat) } else { Value::Null };
            if head.chat {
                json!({"index": i, "message": {"role": "assistant", "content": texts[i]},
                       "logprobs": lp, "finish_reason": reasons[i]})
            } else {
                json!({"index": i, "text": texts[i], "logprobs": lp, "finish_reason": reasons[i]})
            }
        })
        .collect();
    let mut body = head.wrap(false, Value::Array(choices));
    body["usage"] = usage_json(&usage);
    Ok(json_body(&body).into_response())
}

/// A streaming response: one server-sent event per update, then `data: [DONE]`. The
/// generation runs in its own task; when the client goes away the event channel closes,
/// the task ends and dropping the generation cancels the request.
fn stream(s: Shared, mut gen: Generation, head: Head, req: GenRequest) -> Response {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let chat = head.chat;
        let mut sent_role = vec![false; req.n];
        let mut offsets = vec![0usize; req.n];
        let send = |v: Value| tx.send(v.to_string()).is_ok();
        loop {
            // A client that goes away while nothing is sent (a long prefill) is noticed too.
            let next = tokio::select! {
                n = gen.next() => n,
                _ = tx.closed() => return,
            };
            let update = match next {
                Ok(Some(u)) => u,
                Ok(None) => break,
                Err(e) => {
                    let _ = send(e.body());
                    break;
                }
            };
            let chunk = match update {
                Update::Text { sample, text, token } => {
                    let mut lp = Logprobs::default();
                    if req.logprobs.is_some() {
                        lp.add(&s.tokenizer, &token, chat, offsets[sample]);
                    }
                    if text.is_empty() && lp.content.is_empty() && lp.tokens.is_empty() {
                        continue;
                    }
                    offsets[sample] += text.len();
                    let lp = if req.logprobs.is_some() { lp.take(chat) } else { Value::Null };
                    choice(chat, sample, &text, lp, Value::Null, &mut sent_role)
                }
                Update::Finished { sample, reason } => {
                    choice(chat, sample, "", Value::Null, json!(reason), &mut sent_role)
                }
                Update::Done(u) => {
                    s.metrics.count_outcome("completed");
                    if req.include_usage {
                        let mut last = head.wrap(true, json!([]));
                        last["usage"] = usage_json(&u);
                        if !send(last) {
                            return;
                        }
                    }
                    continue;
                }
            };
            if !send(head.wrap(true, json!([chunk]))) {
                return; // the client went away: dropping `gen` cancels the request
            }
        }
        let _ = tx.send("[DONE]".to_string());
    });
    let events = UnboundedReceiverStream::new(rx)
        .map(|data| Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)));
    // A comment line now and then: a client that went away during a long prefill is
    // noticed by the failed write, and its request cancelled.
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(250)).text(""))
        .into_response()
}

/// One choice of a streamed chunk; the first of each chat sample carries the role.
fn choice(
    chat: bool,
    sample: usize,
    text: &str,
    logprobs: Value,
    finish: Value,
    sent_role: &mut [bool],
) -> Value {
    if chat {
        let mut delta = json!({});
        if !sent_role[sample] {
            sent_role[sample] = true;
            delta["role"] = json!("assistant");
        }
        if !text.is_empty() || finish.is_null() {
            delta["content"] = json!(text);
        }
        json!({"index": sample, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
    } else {
        json!({"index": sample, "text": text, "logprobs": logprobs, "finish_reason": finish})
    }
}
