//! Byte-level BPE (`tokenizer.ggml.model = gpt2`): llama.cpp's
//! `llm_tokenizer_bpe_session::tokenize` for one pre-tokenized word.
//!
//! A word's bytes are first mapped through GPT-2's byte → character table, so
//! the initial symbols are single bytes. Then, repeatedly, the adjacent pair
//! with the lowest merge rank (ties: leftmost) is merged, until no adjacent
//! pair is a merge rule. Each final symbol becomes its vocabulary id.
//!
//! ```text
//!   word  "Ġlower"   symbols  Ġ l o w e r
//!   merges by rank:          Ġl o w e r  →  Ġl ow e r  →  Ġl ow er  →  Ġlow er  →  Ġlower
//! ```
//!
//! Symbols carry their (canonical) vocabulary id so the hot path looks merges
//! up by id pair; the rare symbol whose text is not in the vocabulary (a merge
//! result missing from it) falls back to a lookup by text, as llama.cpp does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::unicode::BYTE_TO_CHAR;
use super::vocab::{FastMap, Vocab, NO_TOKEN};

/// Merge rules, ranked by their position in `tokenizer.ggml.merges`.
pub(crate) struct Merges {
    /// `(left id, right id)` packed in a `u64` → `(rank, merged id or NO_TOKEN)`.
    by_ids: FastMap<u64, (u32, u32)>,
    /// Rules whose left or right side is not a vocabulary entry, by text.
    by_text: HashMap<(String, String), u32>,
}

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Merges {
    /// Parses `"left right"` rules, split at the first space after the first
    /// character as llama.cpp does. A rule listed twice keeps its first rank
    /// (llama.cpp's `std::map::emplace` does not overwrite).
    pub(crate) fn new(rules: &[String], vocab: &Vocab) -> Self {
        let mut by_ids = FastMap::default();
        let mut by_text = HashMap::new();
        for (rank, rule) in rules.iter().enumerate() {
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            let split = rule.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
            let (left, right) = match split {
                Some(i) => (&rule[..i], &rule[i + 1..]),
                None => ("", ""),
            };
            match (vocab.id(left), vocab.id(right)) {
                (Some(l), Some(r)) => {
                    let merged = vocab.id_of_concat(left, right).unwrap_or(NO_TOKEN);
                    by_ids.entry(pair_key(l, r)).or_insert((rank, merged));
                }
                _ => {
                    by_text.entry((left.to_owned(), right.to_owned())).or_insert(rank);
                }
            }
        }
        Self { by_ids, by_text }
    }
}

/// One symbol of the word being merged: bytes `start..start + len` of the word.
#[derive(Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: u32,
    next: u32,
    /// Canonical vocabulary id of the symbol's text, or `NO_TOKEN`.
    id: u32,
}

const NONE: u32 = u32::MAX;

/// A candidate merge in the queue: min-heap on `(rank, left)`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    rank: u32,
    left: u32,
    /// Symbol lengths when queued; a changed length means the candidate is stale.
    left_len: u32,
    right_len: u32,
    merged: u32,
}

/// Reusable buffers for [`encode_word`].
#[derive(Default)]
pub(crate) struct BpeScratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<Candidate>>,
    text: String,
}

/// The byte-level text of `bytes` (each byte through GPT-2's map) into `out`.
fn byte_level(bytes: &[u8], out: &mut String) {
    out.clear();
    out.extend(bytes.iter().map(|&b| BYTE_TO_CHAR[usize::from(b)]));
}

/// Encodes one pre-tokenized word (raw UTF-8 bytes), appending ids to `out`.
pub(crate) fn encode_word(
    word: &[u8],
    vocab: &Vocab,
    merges: &Merges,
    ignore_merges: bool,
    s: &mut BpeScratch,
    out: &mut Vec<u32>,
) {
    if word.is_empty() {
        return;
    }
    if ignore_merges {
        byte_level(word, &mut s.text);
        if let Some(id) = vocab.id(&s.text) {
            out.push(id);
            return;
        }
    }
    if word.len() == 1 {
        push_symbol(word, vocab.byte_token(word[0]), vocab, s, out);
        return;
    }
    let n = word.len() as u32;
    s.symbols.clear();
    s.symbols.extend((0..n).map(|i| Symbol {
        start: i,
        len: 1,
        prev: if i == 0 { NONE } else { i - 1 },
        next: if i + 1 == n { NONE } else { i + 1 },
        id: vocab.byte_token(word[i as usize]),
    }));
    s.heap.clear();
    for i in 1..n {
        add_candidate(i - 1, i, word, vocab, merges, s);
    }
    while let Some(Reverse(c)) = s.heap.pop() {
        let left = s.symbols[c.left as usize];
        if left.len != c.left_len || left.next == NONE {
            continue;
        }
        let right = s.symbols[left.next as usize];
        if right.len != c.right_len {
            continue;
        }
        let (li, ri) = (c.left as usize, left.next as usize);
        s.symbols[li].len += right.len;
        s.symbols[li].next = right.next;
        s.symbols[li].id = c.merged;
        s.symbols[ri].len = 0;
        if right.next != NONE {
            s.symbols[right.next as usize].prev = c.left;
        }
        if left.prev != NONE {
            add_candidate(left.prev, c.left, word, vocab, merges, s);
        }
        if right.next != NONE {
            add_candidate(c.left, right.next, word, vocab, merges, s);
        }
    }
    let mut i = 0u32;
    while i != NONE {
        let sym = s.symbols[i as usize];
        let bytes = &word[sym.start as usize..(sym.start + sym.len) as usize];
        push_symbol(bytes, sym.id, vocab, s, out);
        i = sym.next;
    }
}

/// Emits a final symbol: its id, or (llama.cpp's fallback for a text missing
/// from the vocabulary) the ids of the single bytes of its byte-level text
/// that are vocabulary entries.
fn push_symbol(bytes: &[u8], id: u32, vocab: &Vocab, s: &mut BpeScratch, out: &mut Vec<u32>) {
    if id != NO_TOKEN {
        out.push(id);
        return;
    }
    byte_level(bytes, &mut s.text);
    for &b in s.text.as_bytes() {
        if b.is_ascii() {
            if let Some(id) = vocab.id(core::str::from_utf8(&[b]).unwrap_or_default()) {
                out.push(id);
            }
        }
    }
}

fn add_candidate(
    left: u32,
    right: u32,
    word: &[u8],
    vocab: &Vocab,
    merges: &Merges,
    s: &mut BpeScratch,
) {
    let l = s.symbols[left as usize];
    let r = s.symbols[right as usize];
    let found = if l.id != NO_TOKEN && r.id != NO_TOKEN {
        merges.by_ids.get(&pair_key(l.id, r.id)).copied()
    } else if merges.by_text.is_empty() {
        None
    } else {
        let mut lt = String::new();
        let mut rt = String::new();
        byte_level(&word[l.start as usize..(l.start + l.len) as usize], &mut lt);
        byte_level(&word[r.start as usize..(r.start + r.len) as usize], &mut rt);
        let merged = vocab.id_of_concat(&lt, &rt).unwrap_or(NO_TOKEN);
        merges.by_text.get(&(lt, rt)).map(|&rank| (rank, merged))
    };
    if let Some((rank, merged)) = found {
        s.heap.push(Reverse(Candidate { rank, left, left_len: l.len, right_len: r.len, merged }));
    }
}
