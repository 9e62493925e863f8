//! DRY ("don't repeat yourself", Koboldcpp's, as llama.cpp's `dry` sampler): a token that
//! would extend a sequence already seen earlier in the window is penalized, exponentially
//! in the sequence's length; sequence breakers (strings such as `"\n"`) end every repeat.

use std::collections::HashMap;
use std::sync::Arc;

use crate::tokenizer::Tokenizer;

/// What DRY needs of a vocabulary to find the tokens of its sequence-breaker strings.
pub trait BreakerVocabulary {
    /// Number of tokens; the ids are `0..n_tokens()`.
    fn n_tokens(&self) -> usize;
    /// The bytes token `id` alone renders as (special tokens as their text), as llama.cpp's
    /// `detokenize({id}, true)`.
    fn piece(&self, id: u32) -> Vec<u8>;
    /// The tokens of `text` (no BOS/EOS; special tokens as plain text).
    fn tokenize(&self, text: &[u8]) -> Vec<u32>;
}

impl BreakerVocabulary for Tokenizer {
    fn n_tokens(&self) -> usize {
        self.vocab_size()
    }

    fn piece(&self, id: u32) -> Vec<u8> {
        let bytes = self.token_to_bytes(id).unwrap_or_default();
        // `decode` drops the leading space SentencePiece's space prefix adds, as llama.cpp's
        // detokenize does: keep the raw bytes (a piece may be part of a UTF-8 character) and
        // drop that space the same way.
        match bytes {
            [b' ', rest @ ..] if !self.decode(&[id]).starts_with(' ') => rest.to_vec(),
            b => b.to_vec(),
        }
    }

    fn tokenize(&self, text: &[u8]) -> Vec<u32> {
        self.encode(&String::from_utf8_lossy(text), false, false)
    }
}

/// Longest breaker string used, in bytes (llama.cpp truncates longer ones).
const MAX_BREAKER_BYTES: usize = 40;
/// Most tokens of a breaker's tail kept (llama.cpp's bound on the restart-sequence scan).
const MAX_TAIL_TOKENS: usize = 20;

/// DRY's sequence breakers as token sequences: a head token and the tails that complete a
/// breaker after it (an empty tail: the head token alone contains a breaker string).
/// Cheap to clone (shared).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SequenceBreakers {
    by_head: Arc<HashMap<u32, Vec<Vec<u32>>>>,
}

impl SequenceBreakers {
    /// No breakers: repeats run across everything.
    pub fn none() -> Self {
        Self::default()
    }

    /// The token sequences of breaker strings, as llama.cpp finds them: every token whose
    /// text contains a breaker is a one-token breaker; a token whose text ends with a proper
    /// prefix of a breaker heads a sequence whose tail is the tokenization of the rest of
    /// the breaker (at most 20 tokens). Empty strings are skipped; strings are cut to 40
    /// bytes.
    pub fn from_strings<V: BreakerVocabulary + ?Sized>(breakers: &[String], vocab: &V) -> Self {
        let mut by_head: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        let mut add = |head: u32, tail: Vec<u32>| {
            let tails = by_head.entry(head).or_default();
            if !tails.contains(&tail) {
                tails.push(tail);
            }
        };
        for breaker in breakers {
            let s = &breaker.as_bytes()[..breaker.len().min(MAX_BREAKER_BYTES)];
            if s.is_empty() {
                continue;
            }
            for id in 0..vocab.n_tokens() as u32 {
                let word = vocab.piece(id);
                if word.windows(s.len()).any(|w| w == s) {
                    add(id, Vec::new());
                    continue;
                }
                for pos in (0..word.len()).filter(|&p| word[p] == s[0]) {
                    // The word's end from `pos` is a prefix of the breaker (shorter than it,
                    // or the word would contain it).
                    let n = word.len() - pos;
                    if n < s.len() && word[pos..] == s[..n] {
                        let mut tail = vocab.tokenize(&s[n..]);
                        tail.truncate(MAX_TAIL_TOKENS);
                        add(id, tail);
                    }
                }
            }
        }
        Self { by_head: Arc::new(by_head) }
    }

    /// Breakers given as token sequences (llama.cpp's `llama_sampler_init_dry_testing`): the
    /// first token is the head, the rest the tail. Empty sequences are skipped.
    pub fn from_token_sequences(seqs: &[Vec<u32>]) -> Self {
        let mut by_head: HashMap<u32, Vec<Vec<u32>>> = HashMap::new();
        for seq in seqs {
            if let Some((&head, tail)) = seq.split_first() {
                let tails = by_head.entry(head).or_default();
                if !tails.iter().any(|t| t == tail) {
                    tails.push(tail.to_vec());
                }
            }
        }
        Self { by_head: Arc::new(by_head) }
    }

    /// Whether there are no breakers.
    pub fn is_empty(&self) -> bool {
        self.by_head.is_empty()
    }

    /// Whether `token` alone is a breaker (DRY never penalizes those).
    pub fn is_single_token(&self, token: u32) -> bool {
        self.by_head.get(&token).is_some_and(|tails| tails.iter().any(Vec::is_empty))
    }

    /// The tails of breakers headed by `token`.
    fn tails(&self, token: u32) -> &[Vec<u32>] {
        self.by_head.get(&token).map_or(&[], Vec::as_slice)
    }
}

/// DRY's settings, as the sampler passes them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dry {
    pub multiplier: f32,
    pub base: f32,
    pub allowed_length: usize,
}

/// Lowers the logit of every token that would extend a repeat: `window` is the last
/// `dry_penalty_last_n` tokens, oldest first. For each earlier position `j`, `len(j)` is the
/// length of the longest common suffix of `window[..=j]` and `window`, capped by the number
/// of tokens after the most recent sequence breaker; token `window[j + 1]` would extend that
/// repeat. A token whose longest such `len >= allowed_length` loses
/// `multiplier × base^(len − allowed_length)` (exponent capped so the power stays finite),
/// unless it is a one-token breaker. Tokens outside `logits` are skipped.
pub(super) fn apply(logits: &mut [f32], window: &[u32], dry: Dry, breakers: &SequenceBreakers) {
    let n = window.len();
    if n <= dry.allowed_length {
        return;
    }
    let from_end = |i: usize| window[n - 1 - i];
    // Step 1: the most recent breaker (its head closest to the end, then its longest tail)
    // limits how long a repeat can be: only the tokens after it count.
    let mut rep_limit = n;
    for i in 0..n {
        let mut longest: Option<usize> = None;
        for tail in breakers.tails(from_end(i)) {
            let len = tail.len();
            if longest.is_none_or(|l| len > l)
                && len <= i
                && tail.iter().enumerate().all(|(o, &t)| t == from_end(i - o - 1))
            {
                longest = Some(len);
            }
        }
        if let Some(len) = longest {
            rep_limit = i - len;
            break;
        }
    }
    if rep_limit < dry.allowed_length {
        return;
    }
    // Step 2: z[k] = how many tokens the window ending k tokens before the end shares
    // with the window's end (the Z-function of the reversed window: linear time).
    let reversed: Vec<u32> = window.iter().rev().copied().collect();
    let z = z_function(&reversed);
    // Step 3: the longest repeat each token would extend.
    let mut longest_repeat: HashMap<u32, usize> = HashMap::new();
    for (k, &zk) in z.iter().enumerate().skip(1) {
        let len = zk.min(rep_limit);
        if len >= dry.allowed_length {
            let token = window[n - k];
            let e = longest_repeat.entry(token).or_insert(len);
            *e = (*e).max(len);
        }
    }
    // Step 4: the penalties; the exponent is capped so that base^exponent stays finite.
    const FLOAT_MAX_LOG: f32 = 88.722_84;
    let max_exponent =
        if dry.base > 1.000_001 { (FLOAT_MAX_LOG / dry.base.ln()) as usize } else { 0 };
    for (&token, &len) in &longest_repeat {
        if breakers.is_single_token(token) {
            continue;
        }
        let Some(l) = logits.get_mut(token as usize) else { continue };
        let mut exponent = len - dry.allowed_length;
        if max_exponent > 0 {
            exponent = exponent.min(max_exponent);
        }
        let penalty = f64::from(dry.multiplier) * f64::from(dry.base).powf(exponent as f64);
        *l -= penalty as f32;
    }
}

/// `z[k]`: the length of the longest common prefix of `s` and `s[k..]` (`z[0] = len`).
fn z_function(s: &[u32]) -> Vec<usize> {
    let n = s.len();
    let mut z = vec![0; n];
    if n == 0 {
        return z;
    }
    z[0] = n;
    let (mut left, mut right) = (0, 0);
    for k in 1..n {
        if k < right {
            z[k] = (right - k).min(z[k - left]);
        }
        while k + z[k] < n && s[z[k]] == s[k + z[k]] {
            z[k] += 1;
        }
        if k + z[k] > right {
            left = k;
            right = k + z[k];
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// DRY by its definition, quadratic and direct: breakers as whole token sequences found
    /// anywhere in the window, repeats by comparing suffixes token by token.
    fn reference(window: &[u32], dry: Dry, breakers: &[Vec<u32>], n_vocab: usize) -> Vec<f32> {
        let n = window.len();
        let mut out = vec![0.0f32; n_vocab];
        // Tokens after the end of the breaker occurrence whose head is the most recent
        // (the longest of those starting there).
        let mut limit = n;
        'scan: for start in (0..n).rev() {
            let mut best: Option<usize> = None;
            for seq in breakers.iter().filter(|s| !s.is_empty()) {
                if start + seq.len() <= n && window[start..start + seq.len()] == seq[..] {
                    best = Some(best.map_or(seq.len(), |b: usize| b.max(seq.len())));
                }
            }
            if let Some(len) = best {
                limit = n - start - len;
                break 'scan;
            }
        }
        let single = |t: u32| breakers.iter().any(|s| s.len() == 1 && s[0] == t);
        let mut longest: HashMap<u32, usize> = HashMap::new();
        for j in 0..n.saturating_sub(1) {
            let mut len = 0;
            while len <= j && window[j - len] == window[n - 1 - len] {
                len += 1;
            }
            let len = len.min(limit);
            if len >= dry.allowed_length {
                let e = longest.entry(window[j + 1]).or_insert(len);
                *e = (*e).max(len);
            }
        }
        for (t, len) in longest {
            if single(t) || t as usize >= n_vocab {
                continue;
            }
            let max_exp =
                if dry.base > 1.000_001 { (88.722_84f32 / dry.base.ln()) as usize } else { 0 };
            let mut e = len - dry.allowed_length;
            if max_exp > 0 {
                e = e.min(max_exp);
            }
            out[t as usize] =
                (f64::from(dry.multiplier) * f64::from(dry.base).powf(e as f64)) as f32;
        }
        out
    }

    proptest! {
        /// The penalty of every token is the definition's, over small alphabets (many repeats)
        /// with one- and multi-token breakers.
        #[test]
        fn penalties_follow_the_definition(
            window in proptest::collection::vec(0u32..5, 0..60),
            multiplier in 0.1f32..3.0,
            base in 1.0f32..3.0,
            allowed in 0usize..5,
            breakers in proptest::collection::vec(proptest::collection::vec(0u32..6, 1..4), 0..3),
        ) {
            let dry = Dry { multiplier, base, allowed_length: allowed };
            let table = SequenceBreakers::from_token_sequences(&breakers);
            let mut logits = vec![0.0f32; 6];
            apply(&mut logits, &window, dry, &table);
            let want = reference(&window, dry, &breakers, 6);
            for t in 0..6 {
                prop_assert_eq!((0.0 - logits[t]).to_bits(), want[t].to_bits(), "token {}", t);
            }
        }
    }

    #[test]
    fn llama_cpp_worked_example() {
        // llama.cpp's comment: "a b c c b c y a b c": repeat counts 0 0 3 1 0 2 0 0 0 —
        // c would extend "a b c" (3), y "b c" (2), b "c" (1).
        let (a, b, c, y) = (0, 1, 2, 3);
        let window = [a, b, c, c, b, c, y, a, b, c];
        let dry = Dry { multiplier: 1.0, base: 2.0, allowed_length: 1 };
        let mut logits = vec![0.0; 4];
        apply(&mut logits, &window, dry, &SequenceBreakers::none());
        assert_eq!(logits, vec![0.0, -1.0, -4.0, -2.0]);
        // "y" as a breaker is never penalized itself, and only the 3 tokens after it
        // ("a b c") can repeat: c still extends a 3-token repeat.
        let mut logits = vec![0.0; 4];
        apply(&mut logits, &window, dry, &SequenceBreakers::from_token_sequences(&[vec![y]]));
        assert_eq!(logits, vec![0.0, -1.0, -4.0, 0.0]);
        // "b" as a breaker: only the final "c" follows the last b, so every repeat is cut
        // to 1 token (base^0 = 1), and b itself is exempt.
        let mut logits = vec![0.0; 4];
        apply(&mut logits, &window, dry, &SequenceBreakers::from_token_sequences(&[vec![b]]));
        assert_eq!(logits, vec![0.0, 0.0, -1.0, -1.0]);
    }

    /// A vocabulary of single characters plus a few longer tokens.
    struct Chars(Vec<&'static str>);
    impl BreakerVocabulary for Chars {
        fn n_tokens(&self) -> usize {
            self.0.len()
        }
        fn piece(&self, id: u32) -> Vec<u8> {
            self.0[id as usize].as_bytes().to_vec()
        }
        fn tokenize(&self, text: &[u8]) -> Vec<u32> {
            text.iter()
                .map(|&b| self.0.iter().position(|t| t.as_bytes() == [b]).unwrap() as u32)
                .collect()
        }
    }

    #[test]
    fn breaker_strings_become_token_sequences() {
        let vocab = Chars(vec!["a", "b", ":", "x:", "ab", "zzab", "q"]);
        let got =
            SequenceBreakers::from_strings(&["abq".into(), ":".into(), String::new()], &vocab);
        // ":" is in ":" and "x:" (one-token breakers); "a" is a prefix of "abq" (tail "b q"),
        // "ab" and "zzab" end with its prefix "ab" (tail "q"); the empty string is skipped.
        assert!(got.is_single_token(2) && got.is_single_token(3));
        assert_eq!(got.tails(0), &[vec![1, 6]]);
        assert_eq!(got.tails(4), &[vec![6]]);
        assert_eq!(got.tails(5), &[vec![6]]);
        assert!(got.tails(1).is_empty() && got.tails(6).is_empty());
    }
}
