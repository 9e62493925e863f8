//! pagoda: fast CPU inference of quantized LLMs on a paged KV cache.
//!
//! Five lines to generate text:
//!
//! ```
//! let model = pagoda::Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let opts = pagoda::Options::greedy().max_tokens(32);
//! println!("{}", model.generate("The capital of France is", &opts)?);
//! # Ok::<(), pagoda::Error>(())
//! ```
//!
//! - [`Model`]: load from a path or from bytes; [`generate`](Model::generate),
//!   [`stream`](Model::stream) (an iterator of text pieces), [`chat`](Model::chat),
//!   [`tokenize`](Model::tokenize) / [`detokenize`](Model::detokenize),
//!   [`session`](Model::session) for multi-turn KV reuse, [`engine`](Model::engine) for
//!   many requests in one page pool.
//! - [`Options`]: length, sampling, context, KV page type. [`Error`]: one enum with
//!   sources.
//!
//! The two library crates underneath stay available for those who need pages and
//! kernels:
//! - [`core`] (`pagoda-core`): `no_std` page pool, block tables, KV pages, reference
//!   attention, GGUF reader, quantized formats, small ops.
//! - [`cpu`] (`pagoda-cpu`): SIMD kernels, the Llama model, tokenizer, sampler, engine.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod error;
mod model;
mod options;
mod session;

pub use pagoda_core as core;
pub use pagoda_cpu as cpu;

pub use decode::Completion;
pub use error::{Error, Result};
pub use model::{Model, ModelBytes, Stream};
pub use options::Options;
pub use pagoda_cpu::chat::Message;
pub use pagoda_cpu::engine::{EngineConfig, Request, RequestId};
pub use pagoda_cpu::generate::StopReason;
pub use pagoda_cpu::model::{KvType, Numerics};
pub use session::{Reply, Session};
