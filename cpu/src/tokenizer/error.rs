//! The tokenizer's error type.

use core::fmt;

/// Why a tokenizer could not be built from model metadata.
///
/// Encoding never fails (any `&str` has a tokenization) and decoding is lossy
/// (an id outside the vocabulary renders as U+FFFD), so these errors all come
/// from [`Tokenizer::from_data`](super::Tokenizer::from_data) /
/// [`Tokenizer::from_gguf`](super::Tokenizer::from_gguf).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerError {
    /// A required `tokenizer.ggml.*` key is absent from the model file.
    MissingKey(&'static str),
    /// A metadata key is present but has the wrong type or a bad value.
    BadKey {
        /// The GGUF key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer family pagoda does not implement.
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer (split rules) pagoda does not implement.
    UnknownPre(String),
    /// Two per-token arrays disagree in length.
    LengthMismatch {
        /// The GGUF key of the shorter/longer array.
        key: &'static str,
        /// Its length.
        len: usize,
        /// The number of tokens (`tokenizer.ggml.tokens`).
        n_tokens: usize,
    },
    /// A special-token id key (`tokenizer.ggml.bos_token_id`, ...) points outside the vocabulary.
    SpecialIdOutOfRange {
        /// The GGUF key.
        key: &'static str,
        /// The id it holds.
        id: u32,
        /// The vocabulary size.
        n_tokens: usize,
    },
    /// The vocabulary is empty or larger than `u32` ids can address.
    BadVocabSize(usize),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingKey(key) => write!(f, "tokenizer metadata key `{key}` is missing"),
            Self::BadKey { key, reason } => write!(f, "tokenizer metadata key `{key}`: {reason}"),
            Self::UnknownModel(m) => write!(
                f,
                "unsupported tokenizer.ggml.model `{m}` (supported: `gpt2` byte-level BPE, `llama` SentencePiece)"
            ),
            Self::UnknownPre(p) => write!(
                f,
                "unsupported tokenizer.ggml.pre `{p}` (supported: `smollm`, `llama-bpe`/`llama3`/`llama-v3`, `gpt-2`/`gpt2`)"
            ),
            Self::LengthMismatch { key, len, n_tokens } => write!(
                f,
                "tokenizer metadata key `{key}` has {len} entries but tokenizer.ggml.tokens has {n_tokens}"
            ),
            Self::SpecialIdOutOfRange { key, id, n_tokens } => write!(
                f,
                "tokenizer metadata key `{key}` = {id} is outside the vocabulary of {n_tokens} tokens"
            ),
            Self::BadVocabSize(n) => write!(f, "tokenizer vocabulary has an unusable size {n}"),
        }
    }
}

impl core::error::Error for TokenizerError {}
