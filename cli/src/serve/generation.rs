//! One request's life on the handler side: submit it to the engine thread, turn its token
//! events into text per sample (UTF-8 completed across tokens, stop strings held back and
//! cut), and cancel it if the handler goes away before it is done.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use axum::http::StatusCode;
use pagoda_cpu::engine::{EngineError, FinishReason, Request, RequestId, TokenLogprobs};
use pagoda_cpu::stop::StopMatcher;
use pagoda_cpu::tokenizer::{Tokenizer, Utf8Buffer};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::metrics::Metrics;
use super::openai::ApiError;
use super::worker::{Command, Event};

/// What a request produced since the last call of [`Generation::next`].
#[derive(Debug)]
pub enum Update {
    /// New text (maybe empty when a token only completed part of a character or of a
    /// possible stop string) for a sample, with the token's log-probabilities if asked.
    Text { sample: usize, text: String, token: Option<TokenInfo> },
    /// A sample finished: the last of its text, and why.
    Finished { sample: usize, text: String, reason: &'static str },
    /// Every sample finished.
    Done(Usage),
}

/// A generated token, for `logprobs`.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: u32,
    pub logprobs: Option<TokenLogprobs>,
}

/// Token counts for `usage`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

struct Sample {
    utf8: Utf8Buffer,
    stop: StopMatcher,
    tokens: usize,
    finished: bool,
}

/// A submitted request (see the module docs). Dropping it before [`Update::Done`] cancels
/// the request in the engine: its pages return to the pool.
pub struct Generation {
    id: RequestId,
    events: UnboundedReceiver<Event>,
    commands: Sender<Command>,
    tokenizer: Arc<Tokenizer>,
    eog: Vec<u32>,
    samples: Vec<Sample>,
    prompt_tokens: usize,
    pending: std::collections::VecDeque<Update>,
    done: bool,
}

impl Generation {
    /// Submits `request` to the engine thread, or refuses with 503 when `--max-queue`
    /// requests already wait for their first token.
    pub fn submit(
        request: Request,
        stop: &[String],
        commands: &Sender<Command>,
        tokenizer: Arc<Tokenizer>,
        metrics: &Metrics,
        max_queue: usize,
    ) -> Result<Generation, ApiError> {
        let queued = metrics.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            (q < max_queue).then_some(q + 1)
        });
        if queued.is_err() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("the queue is full ({max_queue} requests wait); retry later"),
            ));
        }
        let (tx, rx) = unbounded_channel();
        let id = request.id;
        let n = request.n;
        let eog = request.stop_tokens.clone();
        let prompt_tokens = request.prompt.len();
        if commands.send(Command::Submit { request, events: tx }).is_err() {
            metrics.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the engine has stopped",
            ));
        }
        metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        let samples = (0..n)
            .map(|_| Sample {
                utf8: Utf8Buffer::default(),
                stop: StopMatcher::new(stop.iter().cloned()),
                tokens: 0,
                finished: false,
            })
            .collect();
        Ok(Generation {
            id,
            events: rx,
            commands: commands.clone(),
            tokenizer,
            eog,
            samples,
            prompt_tokens,
            pending: Default::default(),
            done: false,
        })
    }

    /// The next update; `Ok(None)` after [`Update::Done`]. Errors: the engine refused the
    /// request (400), failed (500) or was shut down (503).
    pub async fn next(&mut self) -> Result<Option<Update>, ApiError> {
        loop {
            if let Some(u) = self.pending.pop_front() {
                return Ok(Some(u));
            }
            if self.done {
                return Ok(None);
            }
            let Some(event) = self.events.recv().await else {
                self.done = true;
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the engine stopped",
                ));
            };
            self.apply(event)?;
        }
    }

    fn apply(&mut self, event: Event) -> Result<(), ApiError> {
        match event {
            Event::Token(t) => {
                let Some(s) = self.samples.get_mut(t.sample) else { return Ok(()) };
                if s.finished {
                    return Ok(()); // ended by a stop string; the engine had one more step
                }
                s.tokens += 1;
                let token = Some(TokenInfo { id: t.token, logprobs: t.logprobs });
                if self.eog.contains(&t.token) {
                    // End of generation: its piece is not text; Done says "stop".
                    self.pending.push_back(Update::Text {
                        sample: t.sample,
                        text: String::new(),
                        token,
                    });
                    return Ok(());
                }
                let piece = s.utf8.push(&self.tokenizer, t.token);
                let (text, stopped) = s.stop.push(&piece);
                self.pending.push_back(Update::Text { sample: t.sample, text, token });
                if stopped {
                    s.finished = true;
                    let _ = self.commands.send(Command::FinishSample(self.id, t.sample));
                    self.pending.push_back(Update::Finished {
                        sample: t.sample,
                        text: String::new(),
                        reason: "stop",
                    });
                }
            }
            Event::Done(out) => {
                self.done = true;
                let mut completion = 0;
                for (i, (s, o)) in self.samples.iter_mut().zip(&out.samples).enumerate() {
                    completion += s.tokens;
                    if s.finished {
                        continue;
                    }
                    s.finished = true;
                    let tail = s.utf8.finish();
                    let (mut text, stopped) = s.stop.push(&tail);
                    if !stopped {
                        text.push_str(&s.stop.finish());
                    }
                    let reason = match o.finish {
                        _ if stopped => "stop",
                        FinishReason::Stop => "stop",
                        FinishReason::Length => "length",
                    };
                    self.pending.push_back(Update::Finished { sample: i, text, reason });
                }
                self.pending.push_back(Update::Done(Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: completion,
                    cached_tokens: out.cached_prompt_tokens,
                }));
            }
            Event::Refused(e) => {
                self.done = true;
                return Err(refused(e));
            }
            Event::Failed(m) => {
                self.done = true;
                return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", m));
            }
            Event::Cancelled => {
                self.done = true;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "the server is shutting down; the request was cancelled",
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Cancel(self.id));
        }
    }
}

/// An `add_request` refusal as a 400.
fn refused(e: EngineError) -> ApiError {
    let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string());
    if matches!(e, EngineError::TooLarge { .. }) {
        err.code = Some("context_length_exceeded");
    }
    err
}
