//! Constrained decoding: the generated text follows a grammar or a JSON schema.
//!
//! Built on [llguidance](https://github.com/guidance-ai/llguidance), the structured-output
//! library llama.cpp and others use. Four pieces:
//!
//! | item              | what it is                                                           | made           |
//! |-------------------|----------------------------------------------------------------------|----------------|
//! | [`TokenEnv`]      | the tokenizer's tokens as bytes in a trie, the EOS ids, llguidance's parser factory | once per model |
//! | [`ConstraintSpec`]| GBNF, Lark, a JSON schema or "any JSON object"                        | per request    |
//! | [`Grammar`]       | the spec compiled against a `TokenEnv` (`Send + Sync`, share in an `Arc`) | per request |
//! | [`Matcher`]       | one sample's position: [`Matcher::compute_mask`] → [`Mask`], [`Matcher::commit`] | per sample |
//!
//! Per token: compute the mask, [`Mask::apply`] it to the logits (disallowed tokens get
//! `-inf`), sample, commit the token; when [`Matcher::is_finished`] the grammar is
//! complete and the sample stops (finish reason `stop`). The mask of position t+1 depends
//! only on the tokens up to t, so it can be computed on another thread while the forward
//! pass of token t runs (`Matcher` and `Mask` are `Send`).
//!
//! Cost (`tests/grammar_mask.rs`, `tests/grammar_engine.rs`, `tests/grammar_token_env.rs`
//! print it; 2 busy cores): a mask takes about 30-100 µs per token on SmolLM2's 49k
//! vocabulary and 50-100 µs on Gemma 3's 262k, against 14 ms or more per forward pass
//! (under 1%). Computed on a thread beside the pass it is off the critical path (sampling
//! waits about 1 µs per mask), but when the pass already uses every core that thread slows
//! the pass about as much, so the engine overlaps only when a core is free
//! ([`Engine::with_mask_overlap`](crate::engine::Engine::with_mask_overlap)). Building a
//! [`TokenEnv`] takes about 0.1 s for 49k tokens and 0.3-0.9 s for 262k (most of it
//! llguidance's token-class tables).
//!
//! ```
//! use pagoda_cpu::grammar::{ConstraintSpec, Grammar, TokenEnv};
//! use pagoda_cpu::model_file::{workspace_model_path, ModelFile};
//! use pagoda_cpu::tokenizer::Tokenizer;
//! # let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
//! # let file = ModelFile::open(workspace_model_path(root))?;
//! # let tokenizer = Tokenizer::from_gguf(&file.gguf())?;
//!
//! let env = TokenEnv::new(&tokenizer)?;
//! let grammar = Grammar::compile(&env, ConstraintSpec::Gbnf(r#"root ::= "yes" | "no""#.into()))?;
//! let mut matcher = grammar.matcher();
//! let mut logits = vec![0.0f32; tokenizer.vocab_size()];
//! matcher.compute_mask()?.apply(&mut logits);
//! let first = logits.iter().position(|l| l.is_finite()).unwrap() as u32; // a stand-in for sampling
//! assert!(b"yes".starts_with(tokenizer.token_to_bytes(first).unwrap())
//!     || b"no".starts_with(tokenizer.token_to_bytes(first).unwrap()));
//! for t in tokenizer.encode("yes", false, false) {
//!     assert!(matcher.compute_mask()?.is_allowed(t));
//!     matcher.commit(t)?;
//! }
//! assert!(matcher.is_accepting());
//! let only_eos = matcher.compute_mask()?;
//! assert!(only_eos.allowed().iter().all(|&t| tokenizer.is_eog(t)));
//!
//! // Errors name what is wrong.
//! let bad = Grammar::compile(&env, ConstraintSpec::Gbnf("root ::= (\"a\"".into())).unwrap_err();
//! assert!(bad.to_string().contains("line 1"), "{bad}");
//! let none = Grammar::compile(
//!     &env,
//!     ConstraintSpec::JsonSchema(serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1})),
//! ).unwrap_err();
//! assert!(matches!(none, pagoda_cpu::grammar::GrammarError::Unsatisfiable { .. }), "{none}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compiled;
mod error;
mod gbnf;
mod mask;
mod matcher;
mod spec;
mod token_env;

pub use compiled::Grammar;
pub use error::GrammarError;
pub use gbnf::gbnf_to_lark;
pub use mask::Mask;
pub use matcher::{MaskStats, Matcher};
pub use spec::ConstraintSpec;
pub use token_env::{TokenEnv, SPECIAL_TOKEN_MARKER};
