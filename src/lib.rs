//! pagoda: fast CPU inference of quantized Llama models on a paged KV cache.
//!
//! This facade re-exports the two library crates:
//! - [`core`] (`pagoda-core`): `no_std` page pool, block tables, KV pages, reference
//!   attention, GGUF reader, quantized formats, small ops.
//! - [`cpu`] (`pagoda-cpu`): SIMD kernels, the Llama model, tokenizer, sampler, engine.
#![forbid(unsafe_code)]

pub use pagoda_core as core;
pub use pagoda_cpu as cpu;
