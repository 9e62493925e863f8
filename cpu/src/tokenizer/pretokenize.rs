//! Pre-tokenizers: split text into words before byte-level BPE, exactly as
//! llama.cpp does for each `tokenizer.ggml.pre` value.
//!
//! llama.cpp runs a list of regexes one after another, each re-splitting the
//! pieces of the previous one; text between matches is kept as a piece too.
//! The two big patterns are not run through a regex engine there but through
//! hand-written scanners (`unicode_regex_split_custom_gpt2` / `_llama3`),
//! and it is those scanners (including how they look past a piece's end) that
//! define the ids. We port the scanners rather than use a regex crate: the
//! result is exact by construction, needs no look-ahead support, and runs at
//! memory speed over a per-character flag array.
//!
//! | `pre`                                   | regexes (in order)                                   |
//! |-----------------------------------------|------------------------------------------------------|
//! | `smollm` (and starcoder-family aliases) | `\p{N}`, then the GPT-2 pattern                      |
//! | `gpt-2` / `gpt2`                        | the GPT-2 pattern                                    |
//! | `llama-bpe` / `llama3` / `llama-v3`     | the Llama 3 pattern (also: whole-word vocab lookup)  |
//!
//! GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!
//! Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

use super::unicode::{flags, LETTER, NUMBER, PRESENT, WHITESPACE};
use super::TokenizerError;

/// The split rules of a byte-level BPE vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// GPT-2's pattern.
    Gpt2,
    /// Every `\p{N}` code point on its own, then GPT-2's pattern.
    Smollm,
    /// Llama 3's pattern.
    Llama3,
}

impl PreTokenizer {
    /// Maps a `tokenizer.ggml.pre` value to its rules, as llama.cpp's
    /// `llama_vocab::impl::load` does for the families implemented here.
    pub(crate) fn from_name(pre: &str) -> Result<Self, TokenizerError> {
        Ok(match pre {
            "gpt-2" | "gpt2" => Self::Gpt2,
            // llama.cpp gives these the same two regexes as smollm.
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => Self::Smollm,
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => Self::Llama3,
            other => return Err(TokenizerError::UnknownPre(other.to_owned())),
        })
    }

    /// llama.cpp's `ignore_merges`: a word that is a vocabulary entry as a
    /// whole becomes that token without running the merges.
    pub(crate) fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    /// Splits `text` into words, appending their byte ranges to `out`.
    ///
    /// `scratch` is reused between calls to avoid allocation.
    pub(crate) fn split(
        self,
        text: &str,
        scratch: &mut SplitScratch,
        out: &mut Vec<(usize, usize)>,
    ) {
        let SplitScratch { cpts, flags: fl, byte_at, segs, next } = scratch;
        cpts.clear();
        fl.clear();
        byte_at.clear();
        for (i, c) in text.char_indices() {
            cpts.push(c);
            fl.push(flags(c));
            byte_at.push(i);
        }
        byte_at.push(text.len());
        let n = cpts.len();
        segs.clear();
        if n == 0 {
            return;
        }
        segs.push((0, n));
        if self == Self::Smollm {
            // `\p{N}` through std::regex: each number on its own, the runs
            // between kept as pieces.
            next.clear();
            for &(ini, end) in segs.iter() {
                let mut prev = ini;
                for (pos, &f) in fl.iter().enumerate().take(end).skip(ini) {
                    if f & NUMBER != 0 {
                        if pos > prev {
                            next.push((prev, pos));
                        }
                        next.push((pos, pos + 1));
                        prev = pos + 1;
                    }
                }
                if prev < end {
                    next.push((prev, end));
                }
            }
            core::mem::swap(segs, next);
        }
        next.clear();
        for &(ini, end) in segs.iter() {
            let scan = Scan { cpts, flags: fl, ini, end };
            match self {
                Self::Gpt2 | Self::Smollm => scan.gpt2(next),
                Self::Llama3 => scan.llama3(next),
            }
        }
        out.extend(next.iter().map(|&(a, b)| (byte_at[a], byte_at[b])));
    }
}

/// Buffers reused across [`PreTokenizer::split`] calls.
#[derive(Default)]
pub(crate) struct SplitScratch {
    cpts: Vec<char>,
    flags: Vec<u8>,
    byte_at: Vec<usize>,
    segs: Vec<(usize, usize)>,
    next: Vec<(usize, usize)>,
}

/// One segment `ini..end` (code point indices) being scanned.
struct Scan<'a> {
    cpts: &'a [char],
    flags: &'a [u8],
    ini: usize,
    end: usize,
}

/// What llama.cpp's `_get_cpt` returns outside the segment.
const OUT_OF_RANGE: char = '\u{10FFFF}';

impl Scan<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> Option<char> {
        (self.ini <= pos && pos < self.end).then(|| self.cpts[pos])
    }

    #[inline]
    fn fl(&self, pos: usize) -> u8 {
        if self.ini <= pos && pos < self.end {
            self.flags[pos]
        } else {
            0
        }
    }

    #[inline]
    fn cpt_or_oor(&self, pos: usize) -> char {
        self.cpt(pos).unwrap_or(OUT_OF_RANGE)
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` at `pos` (case-folded when `fold`): the
    /// length of the contraction, if any.
    #[inline]
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.cpts[pos] != '\'' || pos + 1 >= self.end {
            return None;
        }
        let low = |c: char| if fold { c.to_ascii_lowercase() } else { c };
        let next = low(self.cpts[pos + 1]);
        if matches!(next, 's' | 't' | 'm' | 'd') {
            return Some(2);
        }
        if pos + 2 < self.end {
            let next2 = low(self.cpts[pos + 2]);
            if matches!((next, next2), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                return Some(3);
            }
        }
        None
    }

    /// Port of llama.cpp's `unicode_regex_split_custom_gpt2`.
    fn gpt2(&self, out: &mut Vec<(usize, usize)>) {
        let mut prev_end = self.ini;
        let mut add = |end: usize, out: &mut Vec<(usize, usize)>| {
            if end > prev_end {
                out.push((prev_end, end));
            }
            prev_end = end;
        };
        let mut pos = self.ini;
        while pos < self.end {
            let cpt = self.cpts[pos];
            let fl = self.flags[pos];

            if let Some(len) = self.contraction(pos, false) {
                pos += len;
                add(pos, out);
                continue;
            }

            let space = usize::from(cpt == ' ');
            let mut fl2 = if cpt == ' ' { self.fl(pos + 1) } else { fl };
            // <space>?\p{L}+
            if fl2 & LETTER != 0 {
                pos += space;
                while fl2 & LETTER != 0 {
                    pos += 1;
                    fl2 = self.fl(pos);
                }
                add(pos, out);
                continue;
            }
            // <space>?\p{N}+
            if fl2 & NUMBER != 0 {
                pos += space;
                while fl2 & NUMBER != 0 {
                    pos += 1;
                    fl2 = self.fl(pos);
                }
                add(pos, out);
                continue;
            }
            // <space>?[^\s\p{L}\p{N}]+
            let other = |f: u8| f & (WHITESPACE | LETTER | NUMBER) == 0 && f & PRESENT != 0;
            if other(fl2) {
                pos += space;
                while other(fl2) {
                    pos += 1;
                    fl2 = self.fl(pos);
                }
                add(pos, out);
                continue;
            }

            let mut num_ws = 0;
            while self.fl(pos + num_ws) & WHITESPACE != 0 {
                num_ws += 1;
            }
            // \s+(?!\S)
            if num_ws > 1 && self.cpt(pos + num_ws).is_some() {
                pos += num_ws - 1;
                add(pos, out);
                continue;
            }
            // \s+
            if num_ws > 0 {
                pos += num_ws;
                add(pos, out);
                continue;
            }
            // no match
            pos += 1;
            add(pos, out);
        }
    }

    /// Port of llama.cpp's `unicode_regex_split_custom_llama3`.
    fn llama3(&self, out: &mut Vec<(usize, usize)>) {
        let mut prev_end = self.ini;
        let mut add = |end: usize, out: &mut Vec<(usize, usize)>| {
            if end > prev_end {
                out.push((prev_end, end));
            }
            prev_end = end;
        };
        let mut pos = self.ini;
        while pos < self.end {
            let cpt = self.cpts[pos];
            let fl = self.flags[pos];

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if let Some(len) = self.contraction(pos, true) {
                pos += len;
                add(pos, out);
                continue;
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(cpt == '\r' || cpt == '\n' || fl & NUMBER != 0)
                && (fl & LETTER != 0 || self.fl(pos + 1) & LETTER != 0)
            {
                pos += 1;
                while self.fl(pos) & LETTER != 0 {
                    pos += 1;
                }
                add(pos, out);
                continue;
            }

            // \p{N}{1,3}
            if fl & NUMBER != 0 {
                let mut ini = pos;
                while self.fl(pos) & NUMBER != 0 {
                    pos += 1;
                    if pos - ini >= 3 {
                        add(pos, out);
                        ini = pos;
                    }
                }
                add(pos, out);
                continue;
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            let other = |f: u8| f & (WHITESPACE | LETTER | NUMBER) == 0 && f & PRESENT != 0;
            let mut fl2 = if cpt == ' ' { self.fl(pos + 1) } else { fl };
            // llama.cpp tests `flags` (not `flags2`) for presence here.
            if fl2 & (WHITESPACE | LETTER | NUMBER) == 0 && fl & PRESENT != 0 {
                pos += usize::from(cpt == ' ');
                while other(fl2) {
                    pos += 1;
                    fl2 = self.fl(pos);
                }
                let mut c2 = self.cpt_or_oor(pos);
                while c2 == '\r' || c2 == '\n' {
                    pos += 1;
                    c2 = self.cpt_or_oor(pos);
                }
                add(pos, out);
                continue;
            }

            let mut num_ws = 0;
            let mut last_end_r_or_n = 0;
            while self.fl(pos + num_ws) & WHITESPACE != 0 {
                let c2 = self.cpts[pos + num_ws];
                if c2 == '\r' || c2 == '\n' {
                    last_end_r_or_n = pos + num_ws + 1;
                }
                num_ws += 1;
            }
            // \s*[\r\n]+
            if last_end_r_or_n > 0 {
                pos = last_end_r_or_n;
                add(pos, out);
                continue;
            }
            // \s+(?!\S)
            if num_ws > 1 && self.cpt(pos + num_ws).is_some() {
                pos += num_ws - 1;
                add(pos, out);
                continue;
            }
            // \s+
            if num_ws > 0 {
                pos += num_ws;
                add(pos, out);
                continue;
            }
            // no match
            pos += 1;
            add(pos, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        pre.split(text, &mut SplitScratch::default(), &mut out);
        out.iter().map(|&(a, b)| &text[a..b]).collect()
    }

    #[test]
    fn gpt2_splits() {
        let w = words(PreTokenizer::Gpt2, "Hello world's  end 123 !!x\n\n y ");
        assert_eq!(
            w,
            ["Hello", " world", "'s", " ", " end", " 123", " !!", "x", "\n\n", " y", " "]
        );
    }

    #[test]
    fn smollm_splits_digits() {
        let w = words(PreTokenizer::Smollm, "and 3.14 x");
        assert_eq!(w, ["and", " ", "3", ".", "1", "4", " x"]);
    }

    #[test]
    fn llama3_splits() {
        let w = words(PreTokenizer::Llama3, "Hello WORLD'S 12345 ...\n\n  x\t");
        assert_eq!(w, ["Hello", " WORLD", "'S", " ", "123", "45", " ...\n\n", " ", " x", "\t"]);
    }

    #[test]
    fn unknown_pre_is_an_error() {
        assert_eq!(PreTokenizer::from_name("nope"), Err(TokenizerError::UnknownPre("nope".into())));
    }
}
