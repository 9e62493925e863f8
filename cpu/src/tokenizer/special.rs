//! Special-token partitioning: llama.cpp's `tokenizer_st_partition`.
//!
//! Before any BPE, the text is cut at occurrences of special tokens, longest
//! token text first; each token takes its non-overlapping occurrences left to
//! right inside the pieces still raw. Control and unknown tokens take part only
//! when special parsing is on; user-defined tokens always do.
//!
//! ```text
//!   "<|im_start|>user\nHi<|im_end|>\n"
//!   → [Token 1] [Text "user\nHi"] [Token 2] [Text "\n"]
//! ```

use super::vocab::TokenType;

/// One piece of the partitioned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment {
    /// Bytes `start..end` of the input, still to be tokenized.
    Text(usize, usize),
    /// A whole special token.
    Token(u32),
}

/// Cuts `text` at the special tokens `specials` (`(id, text, type)`, longest
/// first), into `out`. An empty input gives no fragment.
pub(crate) fn partition(
    text: &str,
    specials: &[(u32, String, TokenType)],
    parse_special: bool,
    out: &mut Vec<Fragment>,
) {
    out.clear();
    if text.is_empty() {
        return;
    }
    out.push(Fragment::Text(0, text.len()));
    let mut next = Vec::new();
    for (id, tok, ty) in specials {
        if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
            continue;
        }
        // Cheap pre-check: most special tokens never occur.
        if !out
            .iter()
            .any(|f| matches!(*f, Fragment::Text(a, b) if text[a..b].contains(tok.as_str())))
        {
            continue;
        }
        next.clear();
        for &frag in out.iter() {
            let Fragment::Text(mut start, end) = frag else {
                next.push(frag);
                continue;
            };
            while let Some(found) = text[start..end].find(tok.as_str()) {
                let at = start + found;
                if at > start {
                    next.push(Fragment::Text(start, at));
                }
                next.push(Fragment::Token(*id));
                start = at + tok.len();
            }
            if start < end {
                next.push(Fragment::Text(start, end));
            }
        }
        core::mem::swap(out, &mut next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> Vec<(u32, String, TokenType)> {
        vec![
            (1, "<|im_start|>".into(), TokenType::Control),
            (2, "<|im_end|>".into(), TokenType::Control),
            (7, "<u>".into(), TokenType::UserDefined),
        ]
    }

    #[test]
    fn splits_at_special_tokens() {
        let text = "<|im_start|>user\nHi<|im_end|>\n";
        let mut out = Vec::new();
        partition(text, &specials(), true, &mut out);
        assert_eq!(
            out,
            [
                Fragment::Token(1),
                Fragment::Text(12, 19),
                Fragment::Token(2),
                Fragment::Text(29, 30)
            ]
        );
    }

    #[test]
    fn control_tokens_are_text_without_special_parsing_but_user_defined_are_not() {
        let text = "a<|im_end|><u>b";
        let mut out = Vec::new();
        partition(text, &specials(), false, &mut out);
        assert_eq!(out, [Fragment::Text(0, 11), Fragment::Token(7), Fragment::Text(14, 15)]);
    }

    #[test]
    fn empty_text_has_no_fragment() {
        let mut out = vec![Fragment::Token(0)];
        partition("", &specials(), true, &mut out);
        assert!(out.is_empty());
    }
}
