//! One request's life on the handler side: submit it to the engine thread, turn its token
//! events (the engine gives each its text, stop strings already found and cut) into
//! updates per sample, and cancel it if the handler goes away before it is done.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;

use axum::http::StatusCode;
use pagoda_cpu::engine::{EngineError, Request, RequestId, TokenLogprobs};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::metrics::Metrics;
use super::openai::ApiError;
use super::worker::{Command, Event};

/// What a request produced since the last call of [`Generation::next`].
#[derive(Debug)]
pub enum Update {
    /// New text (maybe empty when a token only completed part of a character or of a
    /// possible stop string) for a sample, with the token (and its log-probabilities if
    /// asked). The engine's text: a sample's last token flushes what was held back.
    Text { sample: usize, text: String, token: TokenInfo },
    /// A sample finished, and why.
    Finished { sample: usize, reason: &'static str },
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

/// A submitted request (see the module docs). Dropping it before [`Update::Done`] cancels
/// the request in the engine: its pages return to the pool.
pub struct Generation {
    id: RequestId,
    events: UnboundedReceiver<Event>,
    commands: Sender<Command>,
    /// Whether each sample has finished.
    finished: Vec<bool>,
    prompt_tokens: usize,
    pending: std::collections::VecDeque<Update>,
    done: bool,
}

impl Generation {
    /// Submits `request` to the engine thread, or refuses with 503 when `--max-queue`
    /// requests already wait for their first token.
    pub fn submit(
        request: Request,
        commands: &Sender<Command>,
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
        let prompt_tokens = request.prompt.len();
        if commands.send(Command::Submit { request: Box::new(request), events: tx }).is_err() {
            metrics.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the engine has stopped",
            ));
        }
        metrics.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        let finished = vec![false; n];
        Ok(Generation {
            id,
            events: rx,
            commands: commands.clone(),
            finished,
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
                let Some(done) = self.finished.get_mut(t.sample) else { return Ok(()) };
                if *done {
                    return Ok(());
                }
                let token = TokenInfo { id: t.token, logprobs: t.logprobs };
                let text = t.text.unwrap_or_default();
                self.pending.push_back(Update::Text { sample: t.sample, text, token });
                if let Some(f) = t.finish {
                    *done = true;
                    self.pending
                        .push_back(Update::Finished { sample: t.sample, reason: f.as_str() });
                }
            }
            Event::Done(out) => {
                self.done = true;
                for (i, (done, o)) in self.finished.iter_mut().zip(&out.samples).enumerate() {
                    if !*done {
                        *done = true;
                        let reason = o.finish.as_str();
                        self.pending.push_back(Update::Finished { sample: i, reason });
                    }
                }
                self.pending.push_back(Update::Done(Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: out.samples.iter().map(|s| s.tokens.len()).sum(),
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

/// An `submit` refusal as a 400.
fn refused(e: EngineError) -> ApiError {
    let mut err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string());
    if matches!(e, EngineError::TooLarge { .. }) {
        err.code = Some("context_length_exceeded");
    }
    err
}
