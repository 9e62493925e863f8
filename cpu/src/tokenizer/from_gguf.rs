//! Reading [`TokenizerData`] from a GGUF file's `tokenizer.ggml.*` keys.

use pagoda_core::gguf::{Gguf, Value};

use super::{Tokenizer, TokenizerData, TokenizerError};

const MODEL: &str = "tokenizer.ggml.model";
const PRE: &str = "tokenizer.ggml.pre";
const TOKENS: &str = "tokenizer.ggml.tokens";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const SCORES: &str = "tokenizer.ggml.scores";
const MERGES: &str = "tokenizer.ggml.merges";

fn bad(key: &'static str, reason: impl core::fmt::Display) -> TokenizerError {
    TokenizerError::BadKey { key, reason: reason.to_string() }
}

fn string(g: &Gguf<'_>, key: &'static str) -> Result<Option<String>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.to_owned())),
        Some(v) => Err(bad(key, format_args!("expected a string, found {:?}", v.value_type()))),
    }
}

fn strings(g: &Gguf<'_>, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => {
            Ok(Some(a.iter_str().map_err(|e| bad(key, e))?.map(str::to_owned).collect()))
        }
        Some(v) => {
            Err(bad(key, format_args!("expected an array of strings, found {:?}", v.value_type())))
        }
    }
}

/// A token id; a negative value (some converters write -1 for "none") counts as absent.
fn id(g: &Gguf<'_>, key: &'static str) -> Result<Option<u32>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => match v.as_integer() {
            Some(i) if i < 0 => Ok(None),
            Some(i) => u32::try_from(i)
                .map(Some)
                .map_err(|_| bad(key, format_args!("{i} does not fit a token id"))),
            None => Err(bad(key, format_args!("expected an integer, found {:?}", v.value_type()))),
        },
    }
}

fn flag(g: &Gguf<'_>, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match g.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(v) => Err(bad(key, format_args!("expected a bool, found {:?}", v.value_type()))),
    }
}

impl TokenizerData {
    /// Collects the `tokenizer.ggml.*` keys of a parsed GGUF file.
    ///
    /// # Errors
    /// `tokenizer.ggml.model` or `tokenizer.ggml.tokens` missing, or a key of the wrong type.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        let model = string(g, MODEL)?.ok_or(TokenizerError::MissingKey(MODEL))?;
        let tokens = strings(g, TOKENS)?.ok_or(TokenizerError::MissingKey(TOKENS))?;
        let token_types = match g.get(TOKEN_TYPE) {
            None => None,
            Some(Value::Array(a)) => Some(a.iter_i32().map_err(|e| bad(TOKEN_TYPE, e))?.collect()),
            Some(v) => {
                return Err(bad(
                    TOKEN_TYPE,
                    format_args!("expected an array of i32, found {:?}", v.value_type()),
                ))
            }
        };
        let scores = match g.get(SCORES) {
            None => None,
            Some(Value::Array(a)) => Some(a.iter_f32().map_err(|e| bad(SCORES, e))?.collect()),
            Some(v) => {
                return Err(bad(
                    SCORES,
                    format_args!("expected an array of f32, found {:?}", v.value_type()),
                ))
            }
        };
        Ok(Self {
            model,
            pre: string(g, PRE)?,
            tokens,
            token_types,
            scores,
            merges: strings(g, MERGES)?,
            bos: id(g, "tokenizer.ggml.bos_token_id")?,
            eos: id(g, "tokenizer.ggml.eos_token_id")?,
            eot: id(g, "tokenizer.ggml.eot_token_id")?,
            eom: id(g, "tokenizer.ggml.eom_token_id")?,
            unk: id(g, "tokenizer.ggml.unknown_token_id")?,
            add_bos: flag(g, "tokenizer.ggml.add_bos_token")?,
            add_eos: flag(g, "tokenizer.ggml.add_eos_token")?,
            add_space_prefix: flag(g, "tokenizer.ggml.add_space_prefix")?,
        })
    }
}

impl Tokenizer {
    /// Builds the tokenizer of a parsed GGUF file (see [`TokenizerData::from_gguf`]
    /// and [`Tokenizer::from_data`]).
    ///
    /// # Errors
    /// As those two.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        Self::from_data(TokenizerData::from_gguf(g)?)
    }
}
