//! SentencePiece-style BPE (`tokenizer.ggml.model = llama`): llama.cpp's
//! `llm_tokenizer_spm_session::tokenize` for one text fragment.
//!
//! The caller has already replaced spaces by `▁` (U+2581) and, with
//! `add_space_prefix`, put one `▁` in front. Initial symbols are the UTF-8
//! characters; repeatedly the adjacent pair whose concatenation is the
//! vocabulary entry with the highest score (ties: leftmost) is merged. A final
//! symbol that is not an entry (a character outside the vocabulary) is
//! emitted as byte-fallback tokens `<0xNN>`, one per UTF-8 byte.

use std::collections::BinaryHeap;

use super::vocab::{Vocab, NO_TOKEN};

#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// A candidate merge: max-heap on score, then on the smaller left index.
struct Candidate {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.score.total_cmp(&other.score).then_with(|| other.left.cmp(&self.left))
    }
}

/// Encodes `text` (spaces already escaped), appending ids to `out`.
///
/// `byte_fallback[b]` is the id for byte `b` when a character has no token.
pub(crate) fn encode(text: &str, vocab: &Vocab, byte_fallback: &[u32; 256], out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    let n_chars = text.chars().count() as u32;
    for (i, (start, c)) in text.char_indices().enumerate() {
        let i = i as u32;
        symbols.push(Symbol {
            start: start as u32,
            len: c.len_utf8() as u32,
            prev: if i == 0 { NONE } else { i - 1 },
            next: if i + 1 == n_chars { NONE } else { i + 1 },
        });
    }
    let mut heap = BinaryHeap::new();
    let try_add = |heap: &mut BinaryHeap<Candidate>, symbols: &[Symbol], left: u32, right: u32| {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let piece = &text[l.start as usize..(l.start + l.len + r.len) as usize];
        if let Some(id) = vocab.id(piece) {
            let score = vocab.scores.get(id as usize).copied().unwrap_or(0.0);
            heap.push(Candidate { score, left, right, size: l.len + r.len });
        }
    };
    for i in 1..n_chars {
        try_add(&mut heap, &symbols, i - 1, i);
    }
    while let Some(c) = heap.pop() {
        let (l, r) = (symbols[c.left as usize], symbols[c.right as usize]);
        if l.len == 0 || r.len == 0 || l.len + r.len != c.size {
            continue;
        }
        symbols[c.left as usize].len += r.len;
        symbols[c.left as usize].next = r.next;
        symbols[c.right as usize].len = 0;
        if r.next != NONE {
            symbols[r.next as usize].prev = c.left;
        }
        try_add(&mut heap, &symbols, l.prev, c.left);
        try_add(&mut heap, &symbols, c.left, r.next);
    }
    let mut i = if symbols.is_empty() { NONE } else { 0 };
    while i != NONE {
        let s = symbols[i as usize];
        let piece = &text[s.start as usize..(s.start + s.len) as usize];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(
                piece.bytes().map(|b| byte_fallback[usize::from(b)]).filter(|&id| id != NO_TOKEN),
            ),
        }
        i = s.next;
    }
}
