//! The token environment: every token's bytes in a trie, as llguidance needs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llguidance::toktrie::{self, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::ParserFactory;

use super::error::GrammarError;
use crate::tokenizer::{TokenType, Tokenizer};

/// A tokenizer's vocabulary as llguidance sees it: each token id's bytes in a byte trie,
/// the end-of-generation ids, and the parser factory grammars are compiled with.
///
/// Built once per tokenizer ([`TokenEnv::new`]) and shared (cloning is an `Arc` clone).
/// Token bytes:
/// - ordinary, user-defined and byte-fallback tokens: the bytes they decode to
///   ([`Tokenizer::token_to_bytes`]; `<0x41>` is the byte `A`, SentencePiece's `▁` a space);
/// - control, unknown and unused tokens (`<|im_start|>`, `<unk>`, `<unused5>`):
///   llguidance's special-token marker byte `0xFF` then their text, so no grammar over
///   text matches them;
/// - a non-special token whose bytes start with `0xFF` (a byte that never occurs in UTF-8
///   text): no bytes, so no grammar allows it.
///
/// End of generation: [`Tokenizer::eog_ids`] are llguidance's EOS tokens; the grammar
/// allows them exactly where the text may end.
#[derive(Clone)]
pub struct TokenEnv {
    inner: Arc<Inner>,
}

struct Inner {
    factory: ParserFactory,
    env: toktrie::TokEnv,
    stop_tokens: Vec<u32>,
    trie_time: Duration,
    factory_time: Duration,
}

/// llguidance's view of the tokenizer: the trie, and greedy (longest-token-first)
/// tokenization of bytes, which llguidance uses only for text the grammar forces.
struct TrieEnv {
    trie: TokTrie,
}

impl TokenizerEnv for TrieEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for TokenEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEnv")
            .field("vocab_size", &self.vocab_size())
            .field("stop_tokens", &self.inner.stop_tokens)
            .finish_non_exhaustive()
    }
}

impl TokenEnv {
    /// Builds the trie of `tokenizer`'s tokens and llguidance's parser factory (its
    /// per-vocabulary tables). Takes tens of milliseconds for a 49k vocabulary and a few
    /// hundred for 262k ([`TokenEnv::build_time`]); build it once per model.
    ///
    /// # Errors
    /// [`GrammarError::Tokenizer`] when the tokenizer has no end-of-generation token (a
    /// grammar could then never end the text), or llguidance refuses the vocabulary.
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, GrammarError> {
        let start = Instant::now();
        let n = tokenizer.vocab_size();
        let stop_tokens = tokenizer.eog_ids().to_vec();
        let first_stop = tokenizer
            .eos()
            .filter(|e| stop_tokens.contains(e))
            .or_else(|| stop_tokens.first().copied())
            .ok_or_else(|| GrammarError::Tokenizer {
                message: "the tokenizer has no end-of-generation token".into(),
            })?;
        let mut words = Vec::with_capacity(n);
        for id in 0..n as u32 {
            words.push(token_bytes(tokenizer, id));
        }
        let vocab_size = u32::try_from(n).map_err(|_| GrammarError::Tokenizer {
            message: format!("vocabulary of {n} tokens is too large"),
        })?;
        let info = TokRxInfo::new(vocab_size, first_stop);
        let mut eos = vec![first_stop];
        eos.extend(stop_tokens.iter().copied().filter(|&t| t != first_stop));
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos);
        let env: toktrie::TokEnv = Arc::new(TrieEnv { trie });
        let trie_time = start.elapsed();

        let start = Instant::now();
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| GrammarError::Tokenizer {
            message: super::error::first_line(&e.to_string()),
        })?;
        factory.quiet();
        factory.limits_mut().verbose_errors = false;
        let factory_time = start.elapsed();
        Ok(TokenEnv {
            inner: Arc::new(Inner { factory, env, stop_tokens, trie_time, factory_time }),
        })
    }

    /// Number of token ids (the tokenizer's vocabulary size).
    pub fn vocab_size(&self) -> usize {
        self.inner.env.tok_trie().vocab_size()
    }

    /// The bytes the grammar sees for token `id` (see the type's documentation), `None`
    /// outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        ((id as usize) < self.vocab_size()).then(|| self.inner.env.tok_trie().token(id))
    }

    /// The end-of-generation ids (the tokenizer's [`Tokenizer::eog_ids`]).
    pub fn stop_tokens(&self) -> &[u32] {
        &self.inner.stop_tokens
    }

    /// How long [`TokenEnv::new`] took: building the token trie, then llguidance's parser
    /// factory (its token-class tables).
    pub fn build_time(&self) -> (Duration, Duration) {
        (self.inner.trie_time, self.inner.factory_time)
    }

    pub(crate) fn factory(&self) -> &ParserFactory {
        &self.inner.factory
    }
}

/// The special-token marker byte of llguidance's trie.
pub const SPECIAL_TOKEN_MARKER: u8 = TokTrie::SPECIAL_TOKEN_MARKER;

/// Token `id`'s bytes in the trie (see [`TokenEnv`]).
fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    let bytes = tokenizer.token_to_bytes(id).unwrap_or(&[]);
    match tokenizer.token_type(id) {
        Some(TokenType::Control | TokenType::Unknown | TokenType::Unused) => {
            let text = tokenizer.token_text(id).unwrap_or("");
            let mut out = Vec::with_capacity(text.len() + 1);
            out.push(SPECIAL_TOKEN_MARKER);
            out.extend_from_slice(text.as_bytes());
            out
        }
        _ if bytes.first() == Some(&SPECIAL_TOKEN_MARKER) => Vec::new(),
        _ => bytes.to_vec(),
    }
}
