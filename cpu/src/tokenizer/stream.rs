//! Streaming detokenization: text out as soon as it is whole.
//!
//! A token may end in the middle of a UTF-8 character (byte-level BPE and
//! byte-fallback tokens split characters freely). [`StreamDecoder`] keeps the
//! incomplete tail (at most 3 bytes) until a later token completes it; bytes
//! that can never become valid come out as U+FFFD at once.
//!
//! ```text
//!   push(<0xE6>) → ""     push(<0x97>) → ""     push(<0xA5>) → "日"
//!   push(<0xFF>) → "\u{FFFD}"                    finish()   → "" (nothing held)
//! ```
//!
//! Invariant: the concatenation of everything `push` returned plus `finish`
//! equals `String::from_utf8_lossy` of all the tokens' bytes.

use super::Tokenizer;

/// The UTF-8 bytes of U+FFFD, what an id outside the vocabulary renders as.
pub(crate) const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Incremental decoder over one token stream. Made by [`Tokenizer::stream_decoder`].
///
/// Pieces are rendered verbatim (unlike [`Tokenizer::decode`], the first
/// token's leading space is never stripped), as llama.cpp's generation loops do.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    buffer: Utf8Buffer,
}

impl<'t> StreamDecoder<'t> {
    pub(crate) fn new(tokenizer: &'t Tokenizer) -> Self {
        Self { tokenizer, buffer: Utf8Buffer::default() }
    }

    /// Adds one token; returns the text that is now complete (maybe empty).
    /// An id outside the vocabulary adds U+FFFD.
    pub fn push(&mut self, id: u32) -> String {
        self.buffer.push(self.tokenizer, id)
    }

    /// Ends the stream: a held incomplete sequence comes out as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.buffer.finish()
    }

    /// Whether bytes of an incomplete character are being held.
    pub fn has_pending(&self) -> bool {
        self.buffer.has_pending()
    }
}

/// The state of a [`StreamDecoder`] without the borrow of its tokenizer: for a struct that
/// owns (or shares) the tokenizer and decodes beside it. Pass the same tokenizer each call.
#[derive(Debug, Clone, Default)]
pub struct Utf8Buffer {
    /// Bytes received but not yet returned: an incomplete UTF-8 sequence.
    pending: Vec<u8>,
}

impl Utf8Buffer {
    /// Adds token `id` of `tokenizer`; returns the text that is now complete (maybe empty).
    /// An id outside the vocabulary adds U+FFFD.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tokenizer.token_to_bytes(id).unwrap_or(REPLACEMENT));
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match core::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` was just checked by from_utf8; this cannot fail.
                    out.push_str(core::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }

    /// Ends the stream: a held incomplete sequence comes out as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    /// Whether bytes of an incomplete character are being held.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
