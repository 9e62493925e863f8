//! `pagoda-cpu`: the std side of pagoda.
//!
//! | module          | what it holds                                                  |
//! |-----------------|----------------------------------------------------------------|
//! | [`model_file`]  | a GGUF file memory-mapped, validated once, zero-copy views     |
//! | [`tokenizer`]   | byte-level BPE and SentencePiece from GGUF metadata            |
//! | [`kernels`]     | SIMD kernels (pulp, run-time dispatch) and quantized matmul    |
//! | [`model`]       | the Llama forward pass on the paged KV cache                   |
//! | [`sampler`]     | logit bias, penalties, DRY, top-k/typical/top-p/min-p,         |
//! |                 | temperature, Mirostat 2.0 (llama.cpp's chain)                  |
//! | [`grammar`]     | constrained decoding (llguidance): GBNF, JSON schema, masks    |
//! | [`stop`]        | stop strings found in streamed text, held back until decided   |
//! | [`chat`]        | chat templates (Jinja) and conversations                       |
//! | [`engine`]      | many sequences in one page pool: batching, prefix cache, forks |
//!
//! One sequence, token by token: a [`Session`](model::Session) owns the sequence's KV
//! pages, [`generate`](generate::generate) runs the prompt then samples until a stop.
//!
//! ```
//! use pagoda_cpu::generate::{generate, GenerateOptions};
//! use pagoda_cpu::model::{Llama, Session, SessionOptions};
//! use pagoda_cpu::sampler::{Sampler, SamplerConfig};
//! use pagoda_cpu::tokenizer::Tokenizer;
//! # let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
//! # let path = pagoda_cpu::model_file::workspace_model_path(root);
//!
//! let model = Llama::load(path)?;
//! let tokenizer = Tokenizer::from_gguf(&model.gguf())?;
//! let mut session = Session::new(&model, SessionOptions { n_ctx: 256, ..Default::default() })?;
//! let mut sampler = Sampler::new(SamplerConfig::greedy())?;
//! let prompt = tokenizer.encode("The capital of France is", true, true);
//! let opts = GenerateOptions { n_predict: Some(4), ..Default::default() };
//! let out = generate(&mut session, &mut sampler, &prompt, &opts, |t| tokenizer.is_eog(t), |_| {})?;
//! assert_eq!(tokenizer.decode(&out.tokens), " Paris.\n\n");
//! assert_eq!(session.len(), prompt.len() + 3); // the last token is sampled, not yet run
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
pub mod chat;
pub mod engine;
pub mod generate;
pub mod grammar;
pub mod kernels;
pub mod model;
pub mod model_file;
pub mod perplexity;
pub mod quantize;
pub mod sampler;
pub mod stop;
pub mod tokenizer;
