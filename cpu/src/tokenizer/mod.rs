//! Tokenizer built from a model file's `tokenizer.ggml.*` metadata, giving the
//! same ids as llama.cpp.
//!
//! Two families:
//!
//! | `tokenizer.ggml.model` | algorithm                                                     |
//! |------------------------|---------------------------------------------------------------|
//! | `gpt2`                 | byte-level BPE: pre-tokenizer split (`pretokenize` module: rules by  |
//! |                        | `tokenizer.ggml.pre`), bytes → GPT-2 characters, merges by rank |
//! | `llama`                | SentencePiece BPE: `▁` for spaces, merges by score,           |
//! |                        | `add_space_prefix`, byte-fallback tokens `<0xNN>`             |
//!
//! Encoding pipeline ([`Tokenizer::encode`]):
//!
//! ```text
//!  text ──special-token partition──► [Text | Token]* ──per Text──► BPE ──► ids
//!        (control tokens only with                    (+BOS/EOS per add_bos/add_eos
//!         parse_special; user-defined always)           when add_special)
//! ```
//!
//! Decoding renders each id's piece ([`Tokenizer::token_to_bytes`]): normal
//! tokens as the bytes they stand for, control / user-defined / unknown tokens
//! as their text; the bytes are then read as UTF-8 with U+FFFD for invalid
//! sequences. [`StreamDecoder`] does the same incrementally.
//!
//! Known differences from llama.cpp, all outside the ids of `encode`:
//! `decode` does not apply llama.cpp's `clean_up_tokenization_spaces` (so
//! `decode(encode(s)) == s`), renders control tokens as their text, and
//! renders ids outside the vocabulary as U+FFFD instead of failing; the
//! `lstrip`/`rstrip` attributes llama.cpp sets for a few model names (phi-3,
//! jina) are not implemented.

mod bpe;
mod error;
mod from_gguf;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod vocab;

pub use error::TokenizerError;
pub use stream::{StreamDecoder, Utf8Buffer};
pub use vocab::TokenType;

use pretokenize::{PreTokenizer, SplitScratch};
use special::Fragment;
use vocab::{FastMap, Vocab, NO_TOKEN};

/// Words longer than this (bytes) are not cached by `encode`.
const WORD_CACHE_MAX_LEN: usize = 32;
/// `encode`'s per-call word cache stops growing at this many entries.
const WORD_CACHE_MAX_ENTRIES: usize = 1 << 16;

/// Everything the tokenizer needs from the model file, as plain data (the
/// `tokenizer.ggml.*` keys). `None` means the key is absent; llama.cpp's
/// defaults then apply (noted per field).
#[derive(Debug, Clone, Default)]
pub struct TokenizerData {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a `gpt2` vocabulary (required there).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, index = id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (absent: every token normal).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.scores` (absent: all 0; used by `llama` only).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.merges`: `"left right"` rules, best first (required for `gpt2`).
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id` (absent: 1 for `llama`, 11 for `gpt2`, if in range).
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` (absent: 2 for `llama`, 11 for `gpt2`, if in range).
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (absent: found by text, e.g. `<|im_end|>`).
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id` (absent: 0 for `llama`).
    pub unk: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (absent: true for `llama` and Llama 3 pre, else false).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (absent: false).
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (absent: true for `llama`, false for `gpt2`).
    pub add_space_prefix: Option<bool>,
}

/// Which algorithm a vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerKind {
    /// `gpt2`: byte-level BPE.
    BytePairBpe,
    /// `llama`: SentencePiece BPE.
    SentencePiece,
}

enum Algorithm {
    Bpe { pre: PreTokenizer, merges: bpe::Merges },
    Spm { byte_fallback: Box<[u32; 256]> },
}

/// A tokenizer: immutable after construction, `Send + Sync`, cheap to share.
///
/// Invariant: every id it returns is `< vocab_size()`.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    /// Token ids that may appear in text as a whole (control, user-defined,
    /// unknown), longest text first, with their texts and types.
    specials: Vec<(u32, String, TokenType)>,
    /// Decoded pieces of all tokens, concatenated; token `i` is
    /// `pieces[piece_at[i]..piece_at[i + 1]]`.
    pieces: Vec<u8>,
    piece_at: Vec<usize>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

impl core::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind())
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .finish_non_exhaustive()
    }
}

/// Token texts llama.cpp (b11312, `llama_vocab::impl::load`) treats as end-of-generation
/// and, if they are not already, promotes to control tokens; in this order they are also the
/// candidates for the end-of-turn token when `tokenizer.ggml.eot_token_id` is absent (see
/// [`EOT_SKIP`]).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
];

/// [`EOG_TEXTS`] that are not end-of-turn candidates (`<|endoftext|>` is one only when
/// nothing else is).
const EOT_SKIP: &[&str] = &[
    "<|endoftext|>",
    "<|eom_id|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "</s>",
    "[EOS]",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "[e~[",
];

/// Tokens llama.cpp always makes user-defined (its gpt-oss workaround).
const ALWAYS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

impl Tokenizer {
    /// Builds a tokenizer from metadata.
    ///
    /// # Errors
    /// A missing required key, per-token arrays of the wrong length, an
    /// unknown `model` or `pre`, or a special-token id outside the vocabulary.
    pub fn from_data(data: TokenizerData) -> Result<Self, TokenizerError> {
        let n = data.tokens.len();
        if n == 0 || u32::try_from(n).is_err() || n == NO_TOKEN as usize {
            return Err(TokenizerError::BadVocabSize(n));
        }
        let types: Vec<TokenType> = match &data.token_types {
            Some(t) if t.len() != n => {
                return Err(TokenizerError::LengthMismatch {
                    key: "tokenizer.ggml.token_type",
                    len: t.len(),
                    n_tokens: n,
                })
            }
            Some(t) => t.iter().map(|&v| TokenType::from_i32(v)).collect(),
            None => vec![TokenType::Normal; n],
        };
        let scores = match data.scores {
            Some(s) if s.len() != n => {
                return Err(TokenizerError::LengthMismatch {
                    key: "tokenizer.ggml.scores",
                    len: s.len(),
                    n_tokens: n,
                })
            }
            Some(s) => s,
            None => vec![0.0; n],
        };
        let mut vocab = Vocab::new(data.tokens, types, scores);

        let spm = match data.model.as_str() {
            "llama" => true,
            "gpt2" => false,
            other => return Err(TokenizerError::UnknownModel(other.to_owned())),
        };
        let algorithm = if spm {
            let mut byte_fallback = Box::new([NO_TOKEN; 256]);
            let unk = data.unk.or(Some(0)).filter(|&u| (u as usize) < n).unwrap_or(NO_TOKEN);
            for (b, slot) in byte_fallback.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                let single = (b < 0x80).then(|| char::from(b as u8).to_string());
                *slot = vocab.id(&hex).or_else(|| single.and_then(|s| vocab.id(&s))).unwrap_or(unk);
            }
            Algorithm::Spm { byte_fallback }
        } else {
            let pre_name =
                data.pre.as_deref().ok_or(TokenizerError::MissingKey("tokenizer.ggml.pre"))?;
            let pre = PreTokenizer::from_name(pre_name)?;
            let rules = data
                .merges
                .as_deref()
                .ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
            Algorithm::Bpe { pre, merges: bpe::Merges::new(rules, &vocab) }
        };

        let check = |key: &'static str, id: Option<u32>| -> Result<Option<u32>, TokenizerError> {
            match id {
                Some(id) if id as usize >= n => {
                    Err(TokenizerError::SpecialIdOutOfRange { key, id, n_tokens: n })
                }
                other => Ok(other),
            }
        };
        let default_in_range = |id: u32| ((id as usize) < n).then_some(id);
        let bos = check("tokenizer.ggml.bos_token_id", data.bos)?
            .or_else(|| default_in_range(if spm { 1 } else { 11 }));
        let eos = check("tokenizer.ggml.eos_token_id", data.eos)?
            .or_else(|| default_in_range(if spm { 2 } else { 11 }));
        let mut eot = check("tokenizer.ggml.eot_token_id", data.eot)?;
        let eom = check("tokenizer.ggml.eom_token_id", data.eom)?;
        check("tokenizer.ggml.unknown_token_id", data.unk)?;

        // llama.cpp: tokens named like an end of turn are end-of-generation
        // and, if not already, control tokens.
        let mut eog: Vec<u32> = Vec::new();
        for text in EOG_TEXTS {
            if let Some(id) = vocab.id(text) {
                if eot.is_none() && !EOT_SKIP.contains(text) {
                    eot = Some(id);
                }
                eog.push(id);
                vocab.types[id as usize] = TokenType::Control;
            }
        }
        for text in ALWAYS_USER_DEFINED {
            if let Some(id) = vocab.id(text) {
                vocab.types[id as usize] = TokenType::UserDefined;
            }
        }
        if eot.is_none() {
            // llama.cpp also accepts `<|endoftext|>` as eot when nothing better exists.
            eot = vocab.id("<|endoftext|>");
        }
        eog.extend(eos.into_iter().chain(eot).chain(eom));
        eog.sort_unstable();
        eog.dedup();
        // llama.cpp's two exceptions: with `<|return|>` and `<|call|>` (or `<|call|>`/`<|calls|>`
        // and `<|flush|>`), `<|end|>` ends a message, not the generation, and is user-defined;
        // next to `<|tool_response>` or `<|plamo:eos|>`, `</s>` is an ordinary token.
        let [end, call, calls, ret, flush, end_s, tool_response, plamo_eos] = [
            "<|end|>",
            "<|call|>",
            "<|calls|>",
            "<|return|>",
            "<|flush|>",
            "</s>",
            "<|tool_response>",
            "<|plamo:eos|>",
        ]
        .map(|text| vocab.id(text).filter(|id| eog.binary_search(id).is_ok()));
        if let Some(end) = end {
            if (call.is_some() || calls.is_some()) && (ret.is_some() || flush.is_some()) {
                eog.retain(|&id| id != end);
                vocab.types[end as usize] = TokenType::UserDefined;
            }
        }
        if let Some(end_s) = end_s {
            if tool_response.is_some() || plamo_eos.is_some() {
                eog.retain(|&id| id != end_s);
                vocab.types[end_s as usize] = TokenType::Normal;
            }
        }

        let is_llama3 = matches!(&algorithm, Algorithm::Bpe { pre, .. } if pre.ignore_merges());
        let add_bos = data.add_bos.unwrap_or(spm || is_llama3);
        let add_eos = data.add_eos.unwrap_or(false);
        let add_space_prefix = data.add_space_prefix.unwrap_or(spm);

        let mut specials: Vec<(u32, String, TokenType)> = (0..n as u32)
            .filter(|&id| {
                matches!(
                    vocab.token_type(id),
                    TokenType::Control | TokenType::UserDefined | TokenType::Unknown
                )
            })
            .map(|id| (id, vocab.texts[id as usize].clone(), vocab.token_type(id)))
            .collect();
        // Stable: equal lengths keep id order.
        specials.sort_by_key(|s| core::cmp::Reverse(s.1.len()));

        let mut pieces = Vec::new();
        let mut piece_at = Vec::with_capacity(n + 1);
        for id in 0..n {
            piece_at.push(pieces.len());
            render_piece(&vocab.texts[id], vocab.types[id], spm, &mut pieces);
        }
        piece_at.push(pieces.len());

        Ok(Self {
            vocab,
            algorithm,
            specials,
            pieces,
            piece_at,
            bos,
            eos,
            eot,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
        })
    }

    /// Encodes `text` into token ids.
    ///
    /// * `add_special`: prepend BOS if the model's `add_bos_token` says so,
    ///   append EOS if `add_eos_token` says so.
    /// * `parse_special`: control tokens written in the text (`<|im_start|>`)
    ///   become their ids; when false they are tokenized as plain text.
    ///   User-defined tokens are matched either way (as in llama.cpp).
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        let mut frags = Vec::new();
        if self.specials.is_empty() {
            if !text.is_empty() {
                frags.push(Fragment::Text(0, text.len()));
            }
        } else {
            special::partition(text, &self.specials, parse_special, &mut frags);
        }
        match &self.algorithm {
            Algorithm::Bpe { pre, merges } => {
                let mut split = SplitScratch::default();
                let mut words = Vec::new();
                let mut scratch = bpe::BpeScratch::default();
                // Words repeat (1 MB of English has ~200k words but a few
                // thousand distinct ones): remember short words' ids for this call.
                let mut cache: FastMap<&[u8], (usize, usize)> = FastMap::default();
                let mut cached_ids: Vec<u32> = Vec::new();
                let ignore_merges = pre.ignore_merges();
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(a, b) => {
                            words.clear();
                            pre.split(&text[a..b], &mut split, &mut words);
                            let bytes = &text.as_bytes()[a..b];
                            for &(s, e) in &words {
                                let word = &bytes[s..e];
                                let cacheable = word.len() <= WORD_CACHE_MAX_LEN
                                    && cache.len() < WORD_CACHE_MAX_ENTRIES;
                                if let Some(&(from, to)) = cache.get(word) {
                                    out.extend_from_slice(&cached_ids[from..to]);
                                    continue;
                                }
                                let first = out.len();
                                bpe::encode_word(
                                    word,
                                    &self.vocab,
                                    merges,
                                    ignore_merges,
                                    &mut scratch,
                                    &mut out,
                                );
                                if cacheable {
                                    let from = cached_ids.len();
                                    cached_ids.extend_from_slice(&out[first..]);
                                    cache.insert(word, (from, cached_ids.len()));
                                }
                            }
                        }
                    }
                }
            }
            Algorithm::Spm { byte_fallback } => {
                // A space prefix goes before text that starts the input or follows a special token.
                let mut prev_special = true;
                let mut escaped = String::new();
                for frag in frags {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(a, b) => {
                            escaped.clear();
                            if self.add_space_prefix && prev_special {
                                escaped.push('▁');
                            }
                            for c in text[a..b].chars() {
                                escaped.push(if c == ' ' { '▁' } else { c });
                            }
                            spm::encode(&escaped, &self.vocab, byte_fallback, &mut out);
                            prev_special = false;
                        }
                    }
                }
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Decodes ids to text: the pieces' bytes, read as UTF-8 with U+FFFD for
    /// invalid sequences. Ids outside the vocabulary render as U+FFFD.
    ///
    /// Like llama.cpp's `llama_detokenize`, when the vocabulary adds a space
    /// prefix (SentencePiece) one leading space of the first piece is
    /// dropped, so `decode(encode(s, false, false)) == s`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_to_bytes(id).unwrap_or(stream::REPLACEMENT);
            let piece = match piece {
                [b' ', rest @ ..] if i == 0 && self.add_space_prefix => rest,
                p => p,
            };
            bytes.extend_from_slice(piece);
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The bytes token `id` stands for (`None` outside the vocabulary). May be
    /// a fragment of a UTF-8 character; control tokens give their text.
    pub fn token_to_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (a, b) = (*self.piece_at.get(i)?, *self.piece_at.get(i + 1)?);
        Some(&self.pieces[a..b])
    }

    /// The token that stands for the single byte `b`: byte-level BPE's
    /// one-character token for it, or SentencePiece's `<0xNN>`.
    ///
    /// `None` means text containing this byte cannot be fully encoded: llama.cpp
    /// (and so `encode`) drops such a byte. SmolLM2's vocabulary, for one, has
    /// no token for 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D or the UTF-8 lead bytes
    /// 0xF1/0xF2 (code points U+40000..U+BFFFF); `decode(encode(s)) == s` holds
    /// exactly for the texts whose bytes all have one.
    pub fn byte_to_token(&self, b: u8) -> Option<u32> {
        let id = match &self.algorithm {
            Algorithm::Bpe { .. } => self.vocab.byte_token(b),
            Algorithm::Spm { byte_fallback } => byte_fallback[usize::from(b)],
        };
        (id != NO_TOKEN).then_some(id)
    }

    /// A decoder for a stream of ids (e.g. generated tokens).
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// The token's text as stored in the vocabulary (`Ġ`/`▁` markers and all).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.texts.get(id as usize).map(String::as_str)
    }

    /// The id whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The token's type (after llama.cpp's end-of-generation promotions to control).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.vocab.types.get(id as usize).copied()
    }

    /// Number of tokens; every valid id is below it.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Which algorithm this vocabulary uses.
    pub fn kind(&self) -> TokenizerKind {
        match self.algorithm {
            Algorithm::Bpe { .. } => TokenizerKind::BytePairBpe,
            Algorithm::Spm { .. } => TokenizerKind::SentencePiece,
        }
    }

    /// Beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn token (`<|im_end|>`, `<|eot_id|>`, ...).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Whether `encode(.., add_special = true, ..)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(.., add_special = true, ..)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// Whether generation should stop at `id`: EOS, EOT, EOM, or a token whose
    /// text llama.cpp treats as end-of-generation (`<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
}

/// Appends the bytes token `text` of type `ty` stands for.
fn render_piece(text: &str, ty: TokenType, spm: bool, out: &mut Vec<u8>) {
    if matches!(ty, TokenType::Control | TokenType::UserDefined | TokenType::Unknown) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    if spm {
        if ty == TokenType::Byte {
            if let Some(b) = parse_byte_token(text) {
                out.push(b);
                return;
            }
        }
        let mut rest = text;
        while let Some(at) = rest.find('▁') {
            out.extend_from_slice(&rest.as_bytes()[..at]);
            out.push(b' ');
            rest = &rest[at + '▁'.len_utf8()..];
        }
        out.extend_from_slice(rest.as_bytes());
    } else {
        let mut buf = [0u8; 4];
        for c in text.chars() {
            match unicode::char_to_byte(c) {
                Some(b) => out.push(b),
                // Not a GPT-2 byte character: keep it as its own UTF-8.
                None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
    }
}

/// `<0xNN>` → the byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SentencePiece vocabulary of `tokens`, all normal except the listed user-defined ones.
    fn spm(tokens: &[&str], user_defined: &[&str]) -> Tokenizer {
        let types = tokens.iter().map(|t| if user_defined.contains(t) { 4 } else { 1 }).collect();
        Tokenizer::from_data(TokenizerData {
            model: "llama".into(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: Some(types),
            bos: Some(0),
            eos: Some(1),
            add_space_prefix: Some(false),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn end_of_generation_texts_as_llama_cpp() {
        // Gemma 3: the user-defined </s> becomes a control, end-of-generation token, so it is
        // text without special parsing; <s> stays user-defined (always a token).
        let tok = spm(&["<bos>", "<eos>", "<end_of_turn>", "</s>", "<s>", "a"], &["</s>", "<s>"]);
        assert_eq!(tok.eog_ids(), [1, 2, 3]);
        assert_eq!(tok.eot(), Some(2));
        assert_eq!(tok.token_type(3), Some(TokenType::Control));
        assert_eq!(tok.token_type(4), Some(TokenType::UserDefined));
        assert_eq!(tok.encode("</s>a<s>", false, true), [3, 5, 4]);
        assert!(!tok.encode("</s>a<s>", false, false).contains(&3));
        assert_eq!(tok.encode("</s>a<s>", false, false).last(), Some(&4));
        // Next to <|tool_response> (Gemma 4), </s> is an ordinary token.
        let tok = spm(&["<bos>", "<eos>", "<|tool_response>", "</s>"], &["</s>"]);
        assert_eq!(tok.eog_ids(), [1, 2]);
        assert_eq!(tok.token_type(3), Some(TokenType::Normal));
        // gpt-oss: with <|return|> and <|call|>, <|end|> ends a message, not the generation.
        let names = ["<bos>", "<eos>", "<|end|>", "<|return|>", "<|call|>", "<|channel|>"];
        let tok = spm(&names, &[]);
        assert_eq!(tok.eog_ids(), [1, 3, 4]);
        assert_eq!(tok.token_type(2), Some(TokenType::UserDefined));
        assert_eq!(tok.token_type(5), Some(TokenType::UserDefined));
        let tok = spm(&names[..3], &[]);
        assert_eq!(tok.eog_ids(), [1, 2]);
        assert_eq!(tok.eot(), Some(2));
    }

    #[test]
    fn text_index_finds_every_text_and_the_last_of_duplicates() {
        let mut texts: Vec<String> = (0..5000).map(|i| format!("t{i}▁")).collect();
        texts.push("t7▁".into());
        texts.push(String::new());
        let vocab = Vocab::new(texts, vec![TokenType::Normal; 5002], vec![0.0; 5002]);
        for i in 0..5000u32 {
            let want = if i == 7 { 5000 } else { i };
            assert_eq!(vocab.id(&format!("t{i}▁")), Some(want));
        }
        assert_eq!(vocab.id("[EMPTY_5001]"), Some(5001));
        assert_eq!(vocab.id(""), None);
        assert_eq!(vocab.id("t5000▁"), None);
        assert_eq!(vocab.id_of_concat("t4", "2▁"), Some(42));
    }
}
