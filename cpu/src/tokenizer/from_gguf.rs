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

/// The `tokenizer.ggml.*` values of a file, found in one pass over its metadata (a lookup by key
/// walks every entry before it, and the 262,144-string token list of a large vocabulary is slow
/// to walk over and over).
struct Keys<'a> {
    values: Vec<(&'static str, Value<'a>)>,
}

/// Every key `from_gguf` reads.
const KEYS: [&str; 14] = [
    MODEL,
    PRE,
    TOKENS,
    TOKEN_TYPE,
    SCORES,
    MERGES,
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_space_prefix",
];

impl<'a> Keys<'a> {
    fn new(g: &Gguf<'a>) -> Self {
        let mut values = Vec::with_capacity(KEYS.len());
        for (k, v) in g.metadata() {
            if let Some(key) = KEYS.iter().find(|&&key| key == k) {
                // The parser rejects duplicate keys.
                values.push((*key, v));
            }
        }
        Self { values }
    }

    fn get(&self, key: &str) -> Option<Value<'a>> {
        self.values.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
    }

    fn string(&self, key: &'static str) -> Result<Option<String>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.to_owned())),
            Some(v) => Err(bad(key, format_args!("expected a string, found {:?}", v.value_type()))),
        }
    }

    fn strings(&self, key: &'static str) -> Result<Option<Vec<String>>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => {
                let iter = a.iter_str().map_err(|e| bad(key, e))?;
                let mut out = Vec::with_capacity(iter.size_hint().0);
                out.extend(iter.map(str::to_owned));
                Ok(Some(out))
            }
            Some(v) => Err(bad(
                key,
                format_args!("expected an array of strings, found {:?}", v.value_type()),
            )),
        }
    }

    /// A token id; a negative value (some converters write -1 for "none") counts as absent.
    fn id(&self, key: &'static str) -> Result<Option<u32>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_integer() {
                Some(i) if i < 0 => Ok(None),
                Some(i) => u32::try_from(i)
                    .map(Some)
                    .map_err(|_| bad(key, format_args!("{i} does not fit a token id"))),
                None => {
                    Err(bad(key, format_args!("expected an integer, found {:?}", v.value_type())))
                }
            },
        }
    }

    fn flag(&self, key: &'static str) -> Result<Option<bool>, TokenizerError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(bad(key, format_args!("expected a bool, found {:?}", v.value_type()))),
        }
    }
}

impl TokenizerData {
    /// Collects the `tokenizer.ggml.*` keys of a parsed GGUF file.
    ///
    /// # Errors
    /// `tokenizer.ggml.model` or `tokenizer.ggml.tokens` missing, or a key of the wrong type.
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, TokenizerError> {
        let keys = Keys::new(g);
        let model = keys.string(MODEL)?.ok_or(TokenizerError::MissingKey(MODEL))?;
        let tokens = keys.strings(TOKENS)?.ok_or(TokenizerError::MissingKey(TOKENS))?;
        let token_types = match keys.get(TOKEN_TYPE) {
            None => None,
            Some(Value::Array(a)) => Some(a.iter_i32().map_err(|e| bad(TOKEN_TYPE, e))?.collect()),
            Some(v) => {
                return Err(bad(
                    TOKEN_TYPE,
                    format_args!("expected an array of i32, found {:?}", v.value_type()),
                ))
            }
        };
        let scores = match keys.get(SCORES) {
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
            pre: keys.string(PRE)?,
            tokens,
            token_types,
            scores,
            merges: keys.strings(MERGES)?,
            bos: keys.id("tokenizer.ggml.bos_token_id")?,
            eos: keys.id("tokenizer.ggml.eos_token_id")?,
            eot: keys.id("tokenizer.ggml.eot_token_id")?,
            eom: keys.id("tokenizer.ggml.eom_token_id")?,
            unk: keys.id("tokenizer.ggml.unknown_token_id")?,
            add_bos: keys.flag("tokenizer.ggml.add_bos_token")?,
            add_eos: keys.flag("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: keys.flag("tokenizer.ggml.add_space_prefix")?,
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
