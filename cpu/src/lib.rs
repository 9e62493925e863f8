//! `pagoda-cpu`: the std side of pagoda.
//!
//! | module          | what it holds                                                  |
//! |-----------------|----------------------------------------------------------------|
//! | [`model_file`]  | a GGUF file memory-mapped, validated once, zero-copy views     |
//! | [`tokenizer`]   | byte-level BPE and SentencePiece from GGUF metadata            |
//! | [`kernels`]     | SIMD kernels (pulp, run-time dispatch) and quantized matmul    |
//! | [`model`]       | the Llama forward pass on the paged KV cache                   |
//! | [`sampler`]     | greedy, temperature, top-k/top-p/min-p, repetition penalty     |
//! | [`engine`]      | many sequences in one page pool: batching, prefix cache, forks |
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
pub mod chat;
pub mod engine;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod model_file;
pub mod perplexity;
pub mod sampler;
pub mod tokenizer;
