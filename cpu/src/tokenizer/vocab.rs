//! The vocabulary: token texts, types, scores and the text → id index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::unicode::BYTE_TO_CHAR;

/// "No such token" inside hot loops (ids are `u32`, vocabularies far smaller).
pub(crate) const NO_TOKEN: u32 = u32::MAX;

/// A token's type as stored in `tokenizer.ggml.token_type` (llama.cpp's
/// `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenType {
    /// 0, or any value outside 1..=6.
    Undefined,
    /// 1: ordinary text.
    Normal,
    /// 2: the unknown token (`<unk>`).
    Unknown,
    /// 3: control tokens (`<s>`, `<|im_start|>`): matched in text only with special parsing on.
    Control,
    /// 4: user-defined tokens: always matched as whole tokens in text.
    UserDefined,
    /// 5: unused slots.
    Unused,
    /// 6: byte-fallback tokens `<0xNN>` (SentencePiece).
    Byte,
}

impl TokenType {
    /// From the GGUF integer.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

/// A small multiplicative hasher for integer keys (the merge table is looked
/// up several times per word; SipHash would dominate encoding time).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        let rest = chunks.remainder();
        w[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(w) ^ (rest.len() as u64) << 59);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A `HashMap` keyed by integers, hashed with [`IdHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Token texts and the reverse index.
pub(crate) struct Vocab {
    /// Token texts as stored (llama.cpp replaces an empty text by `[EMPTY_<id>]`; so do we).
    pub(crate) texts: Vec<String>,
    pub(crate) types: Vec<TokenType>,
    /// SentencePiece scores (0 where absent).
    pub(crate) scores: Vec<f32>,
    /// Text → id. On duplicate texts the last id wins, as in llama.cpp.
    index: TextIndex,
    /// Byte-level BPE: id of the one-character text for each byte, or `NO_TOKEN`.
    byte_tokens: [u32; 256],
}

impl Vocab {
    pub(crate) fn new(mut texts: Vec<String>, types: Vec<TokenType>, scores: Vec<f32>) -> Self {
        for (id, text) in texts.iter_mut().enumerate() {
            if text.is_empty() {
                *text = format!("[EMPTY_{id}]");
            }
        }
        let index = TextIndex::new(&texts);
        let mut byte_tokens = [NO_TOKEN; 256];
        let mut buf = [0u8; 4];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let s: &str = BYTE_TO_CHAR[b].encode_utf8(&mut buf);
            *slot = index.get(&texts, s).unwrap_or(NO_TOKEN);
        }
        Self { texts, types, scores, index, byte_tokens }
    }

    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    #[inline]
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.index.get(&self.texts, text)
    }

    pub(crate) fn id_of_concat(&self, a: &str, b: &str) -> Option<u32> {
        let mut s = String::with_capacity(a.len() + b.len());
        s.push_str(a);
        s.push_str(b);
        self.id(&s)
    }

    /// Byte-level BPE: the id of byte `b`'s one-character text, or `NO_TOKEN`.
    #[inline]
    pub(crate) fn byte_token(&self, b: u8) -> u32 {
        self.byte_tokens[usize::from(b)]
    }

    pub(crate) fn token_type(&self, id: u32) -> TokenType {
        self.types.get(id as usize).copied().unwrap_or(TokenType::Undefined)
    }
}

/// Text → id without a second copy of the texts: an open-addressing table (linear probing,
/// at most half full) of ids, compared against `texts[id]`. Building it for Gemma 3's
/// 262,144 pieces takes a few milliseconds, a `HashMap<String, u32>` (a clone per text) several
/// times that.
struct TextIndex {
    /// `NO_TOKEN` or an id; length a power of two.
    slots: Box<[u32]>,
    /// `64 - log2(slots.len())`: the hash's top bits pick the first slot.
    shift: u32,
}

impl TextIndex {
    fn new(texts: &[String]) -> Self {
        let n_slots = (texts.len() * 2).next_power_of_two().max(2);
        let mut slots = vec![NO_TOKEN; n_slots].into_boxed_slice();
        let shift = 64 - n_slots.trailing_zeros();
        let mask = n_slots - 1;
        for (id, text) in texts.iter().enumerate() {
            let mut i = (hash(text.as_bytes()) >> shift) as usize;
            loop {
                let slot = &mut slots[i];
                if *slot == NO_TOKEN || texts[*slot as usize] == *text {
                    // Duplicate texts: the later id replaces the earlier one.
                    *slot = id as u32;
                    break;
                }
                i = (i + 1) & mask;
            }
        }
        Self { slots, shift }
    }

    #[inline]
    fn get(&self, texts: &[String], text: &str) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = (hash(text.as_bytes()) >> self.shift) as usize;
        loop {
            let id = self.slots[i];
            if id == NO_TOKEN {
                return None;
            }
            if texts[id as usize] == text {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }
}

/// [`IdHasher`] over the bytes, finished with a final multiply so the top bits (the table's
/// index) depend on every byte.
#[inline]
fn hash(bytes: &[u8]) -> u64 {
    let mut h = IdHasher::default();
    h.write(bytes);
    (h.finish() ^ (h.finish() >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}
