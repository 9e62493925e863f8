//! [`Error`]: every way the [`Model`](crate::Model) API can fail, one enum with sources.

use std::fmt;

use pagoda_cpu::chat::ChatTemplateError;
use pagoda_cpu::engine::EngineError;
use pagoda_cpu::model::ModelError;
use pagoda_cpu::sampler::SamplerError;
use pagoda_cpu::tokenizer::TokenizerError;

/// The result type of the [`Model`](crate::Model) API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Each variant keeps the lower-level error as its
/// [`source`](std::error::Error::source), so callers can match on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The model could not be loaded (unreadable file, not GGUF, unsupported model) or
    /// could not run (context full, KV pages exhausted).
    Model(ModelError),
    /// The model's tokenizer metadata is unusable.
    Tokenizer(TokenizerError),
    /// The model's chat template is not one pagoda renders.
    ChatTemplate(ChatTemplateError),
    /// A sampling option is out of range.
    Sampler(SamplerError),
    /// The batching engine refused a configuration or a request.
    Engine(EngineError),
    /// Generation failed part way; `text` holds what had been generated (and streamed)
    /// before the failure, so nothing produced is lost.
    Generation {
        /// What failed.
        source: Box<ModelError>,
        /// The text generated before it.
        text: String,
    },
    /// A token id outside the vocabulary.
    UnknownToken {
        /// The id.
        id: u32,
        /// The vocabulary's size.
        vocab_size: usize,
    },
}

/// Writes `s` with control characters escaped (`\u{1b}`): messages quote strings from
/// model files (architecture, tokenizer names, templates), which must not reach a
/// terminal as escape sequences.
fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.message())
    }
}

impl Error {
    /// The message, unescaped.
    fn message(&self) -> String {
        use std::fmt::Write;
        let mut m = String::new();
        let f = &mut m;
        let _ = match self {
            Error::Model(e) => write!(f, "{e}"),
            Error::Tokenizer(e) => write!(f, "tokenizer: {e}"),
            Error::ChatTemplate(e) => write!(f, "{e}"),
            Error::Sampler(e) => write!(f, "{e}"),
            Error::Engine(e) => write!(f, "{e}"),
            Error::Generation { source, text } => {
                write!(f, "{source} (after {} bytes of generated text)", text.len())
            }
            Error::UnknownToken { id, vocab_size } => {
                write!(f, "token id {id} is outside the vocabulary ({vocab_size} tokens)")
            }
        };
        m
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Model(e) => Some(e),
            Error::Generation { source, .. } => Some(&**source),
            Error::Tokenizer(e) => Some(e),
            Error::ChatTemplate(e) => Some(e),
            Error::Sampler(e) => Some(e),
            Error::Engine(e) => Some(e),
            Error::UnknownToken { .. } => None,
        }
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        Error::Model(e)
    }
}

impl From<TokenizerError> for Error {
    fn from(e: TokenizerError) -> Self {
        Error::Tokenizer(e)
    }
}

impl From<ChatTemplateError> for Error {
    fn from(e: ChatTemplateError) -> Self {
        Error::ChatTemplate(e)
    }
}

impl From<SamplerError> for Error {
    fn from(e: SamplerError) -> Self {
        Error::Sampler(e)
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        Error::Engine(e)
    }
}
