//! What goes into the engine (a [`Request`]) and what comes out (tokens as they are chosen,
//! a [`RequestOutput`] per request when all its samples are done).

use std::sync::Arc;

use crate::grammar::Grammar;
use crate::sampler::SamplerConfig;

/// The caller's name for a request; unique among the requests the engine is working on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {}", self.0)
    }
}

/// One prompt to complete, `n` times.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The caller's id for it (see [`RequestId`]).
    pub id: RequestId,
    /// Prompt token ids (at least one).
    pub prompt: Vec<u32>,
    /// Most tokens to generate per sample (at least one).
    pub max_tokens: usize,
    /// Sampling settings. Sample `i` draws from its own generator seeded with
    /// `sampler.seed + i` (wrapping), so sample 0 is what a single run with this seed gives.
    pub sampler: SamplerConfig,
    /// Number of samples (at least one). The prompt is prefilled once; the samples then
    /// share its pages through [`BlockTable::fork`](pagoda_core::table::BlockTable::fork)
    /// and copy only the partly filled last page on their first write (copy-on-write).
    pub n: usize,
    /// Tokens that end a sample (included in its output), e.g.
    /// [`Tokenizer::eog_ids`](crate::tokenizer::Tokenizer::eog_ids); empty: always run to
    /// `max_tokens`.
    pub stop_tokens: Vec<u32>,
    /// Report each chosen token's log-probability and this many most likely alternatives
    /// in its [`TokenEvent`] (`None`: no log-probabilities, the default).
    pub logprobs: Option<usize>,
    /// Strings that end a sample (OpenAI's `stop`): its text ends just before the earliest
    /// one, and the sample finishes with [`FinishReason::Stop`] at the token that completed
    /// it. Needs the engine's tokenizer ([`Engine::with_tokenizer`](super::Engine::with_tokenizer)).
    pub stop: Vec<String>,
    /// A grammar or JSON schema every sample's text must follow
    /// ([`Grammar::compile`](crate::grammar::Grammar::compile); `None`: free text, the
    /// default). Each sample follows it with its own [`Matcher`](crate::grammar::Matcher):
    /// disallowed tokens get `-inf` before sampling, and a sample whose grammar is complete
    /// (only an end-of-generation token could follow) finishes with [`FinishReason::Stop`]
    /// at its last token. The masks of a step are computed while its forward pass runs when
    /// a core is free, else right after it (see
    /// [`Engine::with_mask_overlap`](super::Engine::with_mask_overlap)).
    pub constraint: Option<Arc<Grammar>>,
}

impl Request {
    /// One greedy sample of `prompt`, at most `max_tokens` tokens, no stop tokens.
    pub fn greedy(id: u64, prompt: Vec<u32>, max_tokens: usize) -> Self {
        Request {
            id: RequestId(id),
            prompt,
            max_tokens,
            sampler: SamplerConfig::greedy(),
            n: 1,
            stop_tokens: Vec::new(),
            logprobs: None,
            stop: Vec::new(),
            constraint: None,
        }
    }
}

/// Why a sample stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced one of the request's stop tokens (the last token of its output), its
    /// grammar ([`Request::constraint`]) was complete, or the caller ended it with [`Engine::finish_sample`](super::Engine::finish_sample)
    /// (a stop string, for example).
    Stop,
    /// It generated `max_tokens` tokens.
    Length,
}

impl FinishReason {
    /// A short name for output (`"stop"`, `"length"`).
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The tokens of one finished sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleOutput {
    /// Generated token ids, in order.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// A finished request: every sample, in sample order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOutput {
    /// The request's id.
    pub id: RequestId,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache when the request first started
    /// (their prefill was skipped).
    pub cached_prompt_tokens: usize,
    /// Times one of its samples was preempted (and later recomputed).
    pub preemptions: usize,
    /// One entry per sample.
    pub samples: Vec<SampleOutput>,
}

/// A token just chosen for a sample (for streaming).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenEvent {
    /// The request.
    pub id: RequestId,
    /// Which of its samples.
    pub sample: usize,
    /// The token.
    pub token: u32,
    /// Its log-probability and the most likely alternatives, when the request asked for
    /// them ([`Request::logprobs`]).
    pub logprobs: Option<TokenLogprobs>,
    /// With the engine's tokenizer: the text this token adds to the sample's output, as it
    /// may be shown now — UTF-8 completed across tokens, text that could still become a
    /// stop string held back until decided, nothing of a stop token or a stop string; the
    /// last event of a sample flushes what was held. Concatenated, a sample's texts are its
    /// output text. `None` without a tokenizer.
    pub text: Option<String>,
    /// Set on a sample's last token: why it stopped.
    pub finish: Option<FinishReason>,
}

/// Log-probabilities of one sampling step, under the model's distribution (the softmax of
/// the logits, before penalties, filters and temperature), see
/// [`log_probs`](crate::sampler::log_probs).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// `ln p(chosen token)`.
    pub logprob: f32,
    /// The most likely tokens and their `ln p`, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// What one [`Engine::step`](super::Engine::step) produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// Every token chosen in this step, in batch order.
    pub tokens: Vec<TokenEvent>,
    /// Requests whose last sample finished in this step.
    pub finished: Vec<RequestOutput>,
    /// Tokens that went through the forward pass (decode tokens and prompt chunks).
    pub batch_tokens: usize,
}
