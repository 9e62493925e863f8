//! The engine: many sequences in one page pool.
//!
//! ```text
//!   submit(request) ──► waiting (FIFO) ──admit when the pool has pages──► running
//!                       ▲                                                 │
//!                       └─── preempt the newest started (pages freed) ────┘
//!   step(): one forward pass over [next token of every running sequence | prompt chunks]
//!           within max_batch_tokens → sample → stream tokens (+ text, logprobs) → finished
//!   cancel(id): its pages back at once      finish_sample(id, k): one sample ends now
//! ```
//!
//! A sample ends at a stop token, at `max_tokens`, or — with the engine's tokenizer
//! ([`Engine::with_tokenizer`]) — at the token that completes one of its stop strings; every
//! [`TokenEvent`] then carries the text it adds, with what could still become a stop string
//! held back. The engine owns its model when built with [`Engine::shared`] (an `Arc`), so it
//! can live on a thread of its own (`pagoda serve` does).
//!
//! | file              | what it holds                                                      |
//! |-------------------|--------------------------------------------------------------------|
//! | [`scheduler`]     | [`Engine`]: queue, admission, preemption, cancellation, the step loop |
//! | [`KvManager`]     | pool, pages, prefix index, each sequence's tables (in `model`)     |
//! | [`PrefixIndex`]   | chained page keys → cached pages, LRU reclaim (in `model`)         |
//! | `sequence`        | one sample's tokens, block table(s), eviction state and sampler    |
//! | [`request`]       | [`Request`] in; [`TokenEvent`], [`RequestOutput`] out              |
//! | [`stats`]         | [`EngineStats`]: tokens, pages, utilisation, cache hits, preemptions |
//! | [`error`]         | [`EngineError`]                                                    |
//!
//! The page pool ([`pagoda_core::pool::BlockPool`]), the per-sequence block tables
//! ([`pagoda_core::table::BlockTable`]) and the prefix index are three separate types; the
//! [`KvManager`] keeps them in step (the engine reaches the pool only through it): a page's
//! refcount is the number of tables holding it, plus one if the prefix index caches it.
//!
//! Results do not depend on batching: every token's K/V and logits are computed by the
//! same per-token arithmetic whatever else is in the batch, so a greedy request gives the
//! same tokens alone, in any batch, after a preemption, or from cached prefix pages.

pub mod error;
pub mod request;
pub mod scheduler;
mod sequence;
pub mod stats;

pub use crate::model::{KvManager, PrefixIndex, PrefixKey};
pub use error::EngineError;
pub use request::{
    FinishReason, Request, RequestId, RequestOutput, SampleOutput, StepOutput, TokenEvent,
    TokenLogprobs,
};
pub use scheduler::{Engine, EngineConfig};
pub use stats::EngineStats;
