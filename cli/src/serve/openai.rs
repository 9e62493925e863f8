//! The OpenAI API's request bodies, read field by field into what the engine needs, and
//! its error object.
//!
//! Every wrong field is a 400 naming it (`param`), with OpenAI's `type` and `code`; unknown
//! fields are ignored, as OpenAI's clients send more than a server uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pagoda_cpu::chat::Message;
use pagoda_cpu::sampler::SamplerConfig;
use serde_json::{json, Map, Value};

use crate::constraint::{response_format, RequestConstraint};

/// An error as OpenAI's API reports it: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    /// A 400 about field `param`.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("invalid_value"),
            param: Some(param.to_string()),
            message: message.into(),
        }
    }

    /// An error of any status with no field.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, code: None, param: None, message: message.into() }
    }

    /// The JSON error object.
    pub fn body(&self) -> Value {
        json!({ "error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, json_body(&self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A JSON response body with its content type.
pub fn json_body(v: &Value) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], v.to_string())
}

/// What to complete: text (or token ids) for `/v1/completions`, messages for chat.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Chat(Vec<Message>),
}

/// A completion or chat request, checked.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Prompt,
    /// `max_tokens` (or chat's `max_completion_tokens`); `None`: the endpoint's default.
    pub max_tokens: Option<usize>,
    pub sampler: SamplerConfig,
    /// Whether the client gave a seed (otherwise each request draws its own).
    pub seeded: bool,
    pub n: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// `Some(k)`: report log-probabilities with the top `k` alternatives.
    pub logprobs: Option<usize>,
    /// `response_format`: free text, any JSON object, or a JSON schema.
    pub constraint: RequestConstraint,
}

/// Most samples per request (`n`).
pub const MAX_N: usize = 16;
/// Most stop strings, as OpenAI.
pub const MAX_STOP: usize = 4;
/// Most alternatives per token in `logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Parses a request body (already known to be JSON) for `/v1/completions` (`chat == false`)
/// or `/v1/chat/completions`.
pub fn parse(body: &Value, chat: bool) -> Result<GenRequest, ApiError> {
    let Value::Object(o) = body else {
        return Err(ApiError::field("body", "the request body must be a JSON object"));
    };
    if let Some(m) = o.get("model") {
        if !m.is_string() && !m.is_null() {
            return Err(ApiError::field("model", "model must be a string"));
        }
    }
    let prompt = if chat { Prompt::Chat(messages(o)?) } else { prompt(o)? };
    let mut sampler = SamplerConfig::default();
    if let Some(t) = number(o, "temperature", 0.0, 2.0)? {
        sampler.temperature = t as f32;
    }
    if let Some(p) = number(o, "top_p", 0.0, 1.0)? {
        if p == 0.0 {
            return Err(ApiError::field("top_p", "top_p must be in (0, 1]"));
        }
        sampler.top_p = p as f32;
    }
    if let Some(k) = integer(o, "top_k", 0, 1 << 20)? {
        sampler.top_k = k as usize;
    }
    if let Some(m) = number(o, "min_p", 0.0, 1.0)? {
        sampler.min_p = m as f32;
    }
    if let Some(p) = number(o, "presence_penalty", -2.0, 2.0)? {
        sampler.presence_penalty = p as f32;
    }
    if let Some(p) = number(o, "frequency_penalty", -2.0, 2.0)? {
        sampler.frequency_penalty = p as f32;
    }
    if let Some(p) = number(o, "repeat_penalty", 0.0, 10.0)? {
        if p == 0.0 {
            return Err(ApiError::field("repeat_penalty", "repeat_penalty must be > 0"));
        }
        sampler.repeat_penalty = p as f32;
    }
    // llama.cpp server's extensions: typical_p, mirostat, DRY, repeat_last_n, logit_bias…
    crate::sampling_fields::apply(o, &mut sampler).map_err(|(f, m)| ApiError::field(&f, m))?;
    let seed = match o.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_i64().map(|i| i as u64))
                .ok_or_else(|| ApiError::field("seed", "seed must be an integer"))?,
        ),
    };
    if let Some(s) = seed {
        sampler.seed = s;
    }
    let max_key = if chat && o.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = integer(o, max_key, 1, u32::MAX as i64)?.map(|m| m as usize);
    let n = integer(o, "n", 1, MAX_N as i64)?.map_or(1, |n| n as usize);
    let stream = boolean(o, "stream")?.unwrap_or(false);
    let include_usage = match o.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(so)) => boolean(so, "include_usage")
            .map_err(|_| {
                ApiError::field("stream_options.include_usage", "include_usage must be a boolean")
            })?
            .unwrap_or(false),
        Some(_) => {
            return Err(ApiError::field("stream_options", "stream_options must be an object"))
        }
    };
    let logprobs = if chat {
        let top = integer(o, "top_logprobs", 0, MAX_TOP_LOGPROBS as i64)?;
        match boolean(o, "logprobs")? {
            Some(true) => Some(top.unwrap_or(0) as usize),
            _ if top.is_some() => {
                return Err(ApiError::field("top_logprobs", "top_logprobs needs logprobs: true"))
            }
            _ => None,
        }
    } else {
        // The legacy field: how many alternatives (0: the chosen token's only).
        integer(o, "logprobs", 0, MAX_TOP_LOGPROBS as i64)?.map(|k| k as usize)
    };
    let constraint = match o.get("response_format") {
        None | Some(Value::Null) => RequestConstraint::Default,
        Some(v) => response_format(v).map_err(|(param, m)| ApiError::field(&param, m))?,
    };
    Ok(GenRequest {
        constraint,
        prompt,
        max_tokens,
        sampler,
        seeded: seed.is_some(),
        n,
        stop: stop(o)?,
        stream,
        include_usage,
        logprobs,
    })
}

fn prompt(o: &Map<String, Value>) -> Result<Prompt, ApiError> {
    let bad = || {
        ApiError::field(
            "prompt",
            "prompt must be a string, an array of one string, or an array of token ids",
        )
    };
    match o.get("prompt") {
        None | Some(Value::Null) => Err(ApiError::field("prompt", "prompt is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Ok(Prompt::Text(a[0].as_str().unwrap_or_default().to_string()))
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) && !a.is_empty() => {
            Err(ApiError::field("prompt", "one prompt per request: send the prompts separately"))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_u64().filter(|&t| t <= u32::MAX as u64).map(|t| t as u32))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)
            .map(Prompt::Tokens),
        Some(_) => Err(bad()),
    }
}

fn messages(o: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let Some(Value::Array(list)) = o.get("messages") else {
        return Err(ApiError::field("messages", "messages must be an array of messages"));
    };
    if list.is_empty() {
        return Err(ApiError::field("messages", "messages must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}]{f}");
        let Value::Object(m) = m else {
            return Err(ApiError::field(&at(""), "a message must be an object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => return Err(ApiError::field(&at(".role"), "role must be a string")),
        };
        let content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            // Content parts: the text ones, concatenated.
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => s.push_str(t),
                        _ => {
                            return Err(ApiError::field(
                                &at(&format!(".content[{j}]")),
                                "only text content parts ({\"type\": \"text\", \"text\": …}) are supported",
                            ))
                        }
                    }
                }
                s
            }
            Some(_) => return Err(ApiError::field(&at(".content"), "content must be a string")),
        };
        out.push(Message::new(role, content));
    }
    Ok(out)
}

fn stop(o: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match o.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::field("stop", "stop must be a string or an array of strings")
            })?,
        Some(_) => {
            return Err(ApiError::field("stop", "stop must be a string or an array of strings"))
        }
    };
    if stops.len() > MAX_STOP {
        return Err(ApiError::field("stop", format!("at most {MAX_STOP} stop strings")));
    }
    Ok(stops)
}

fn number(o: &Map<String, Value>, k: &str, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            Some(x) => Err(ApiError::field(k, format!("{k} must be in [{lo}, {hi}], got {x}"))),
            None => Err(ApiError::field(k, format!("{k} must be a number"))),
        },
    }
}

fn integer(o: &Map<String, Value>, k: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
            Some(x) => Err(ApiError::field(k, format!("{k} must be in [{lo}, {hi}], got {x}"))),
            None => Err(ApiError::field(k, format!("{k} must be an integer"))),
        },
    }
}

fn boolean(o: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::field(k, format!("{k} must be a boolean"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_and_named() {
        let err = |v: Value, chat| parse(&v, chat).unwrap_err().param.unwrap();
        assert_eq!(err(json!({"prompt": "x", "temperature": "hot"}), false), "temperature");
        assert_eq!(err(json!({"prompt": "x", "temperature": 3}), false), "temperature");
        assert_eq!(err(json!({"prompt": "x", "n": 0}), false), "n");
        assert_eq!(err(json!({"prompt": "x", "max_tokens": -1}), false), "max_tokens");
        assert_eq!(err(json!({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), false), "stop");
        assert_eq!(err(json!({"prompt": 5}), false), "prompt");
        assert_eq!(err(json!({"prompt": "x", "logit_bias": {"a": 1}}), false), "logit_bias");
        assert_eq!(err(json!({"prompt": "x", "mirostat": 1}), false), "mirostat");
        let r = parse(
            &json!({"prompt": "x", "typical_p": 0.5, "logit_bias": {"42": -100},
                    "dry_multiplier": 0.8, "repeat_last_n": -1}),
            false,
        )
        .unwrap();
        assert_eq!((r.sampler.typical_p, r.sampler.dry_multiplier), (0.5, 0.8));
        assert_eq!(
            (r.sampler.logit_bias.clone(), r.sampler.repeat_last_n),
            (vec![(42, -100.0)], usize::MAX)
        );
        assert_eq!(err(json!({"messages": []}), true), "messages");
        assert_eq!(err(json!({"messages": [{"role": 1}]}), true), "messages[0].role");
        assert_eq!(
            err(json!({"messages": [{"role": "user"}], "top_logprobs": 2}), true),
            "top_logprobs"
        );
        assert_eq!(err(json!([1, 2]), true), "body");
    }

    #[test]
    fn a_full_chat_request_parses() {
        let r = parse(
            &json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                    "temperature": 0, "seed": 5, "n": 3, "stop": "\n", "stream": true,
                    "stream_options": {"include_usage": true}, "logprobs": true, "top_logprobs": 2,
                    "max_completion_tokens": 9, "presence_penalty": 0.5}),
            true,
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![Message::user("hi")]));
        assert_eq!((r.n, r.max_tokens, r.logprobs, r.seeded), (3, Some(9), Some(2), true));
        assert_eq!(
            (r.sampler.seed, r.sampler.temperature, r.sampler.presence_penalty),
            (5, 0.0, 0.5)
        );
        assert!(r.stream && r.include_usage);
        assert_eq!(r.stop, vec!["\n".to_string()]);
    }
}
