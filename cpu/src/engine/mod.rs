//! The engine: many sequences in one page pool.
//!
//! ```text
//!   add_request ──► waiting (FIFO) ──admit when the pool holds the next chunk──► running
//!                      ▲                                                           │
//!                      └──────── preempt the most recently started (pages freed) ──┘
//!   step(): one forward pass over [next token of every running sequence | prompt chunks]
//!           within max_batch_tokens → sample → stream tokens → finished requests
//! ```
//!
//! | file              | what it holds                                                      |
//! |-------------------|--------------------------------------------------------------------|
//! | [`scheduler`]     | [`Engine`]: queue, admission, preemption, cancellation, the step loop |
//! | [`kv_manager`]    | [`KvManager`]: pool, pages and prefix index; every page operation  |
//! | [`prefix_index`]  | [`PrefixIndex`]: chained page keys → cached pages, LRU reclaim     |
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
pub mod kv_manager;
pub mod prefix_index;
pub mod request;
pub mod scheduler;
mod sequence;
pub mod stats;

pub use error::EngineError;
pub use kv_manager::KvManager;
pub use prefix_index::{PrefixIndex, PrefixKey};
pub use request::{
    FinishReason, Request, RequestId, RequestOutput, SampleOutput, StepOutput, TokenEvent,
    TokenLogprobs,
};
pub use scheduler::{Engine, EngineConfig};
pub use stats::EngineStats;
