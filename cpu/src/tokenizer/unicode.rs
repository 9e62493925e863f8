//! Unicode facts the pre-tokenizers need, matching llama.cpp's `unicode.cpp`.
//!
//! * [`flags`]: is a code point a letter (`\p{L}` = Lu Ll Lt Lm Lo), a number
//!   (`\p{N}` = Nd Nl No) or white space (`\s` = the Unicode `White_Space`
//!   property, the same list as llama.cpp's `unicode_ranges_whitespace`)?
//!   General categories come from the `unicode-general-category` crate.
//! * [`BYTE_TO_CHAR`] / [`char_to_byte`]: GPT-2's reversible byte ↔ character
//!   map (`bytes_to_unicode` in OpenAI's encoder.py), which lets byte-level BPE
//!   vocabularies store arbitrary bytes as printable text.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

/// `\p{L}`.
pub(crate) const LETTER: u8 = 1;
/// `\p{N}`.
pub(crate) const NUMBER: u8 = 2;
/// `\s`.
pub(crate) const WHITESPACE: u8 = 4;
/// Set for every real code point. llama.cpp's scanners read positions outside
/// the current segment as "no flags at all" (0), which no real code point has.
pub(crate) const PRESENT: u8 = 8;

const fn ascii_flags(b: u8) -> u8 {
    let class = if b.is_ascii_alphabetic() {
        LETTER
    } else if b.is_ascii_digit() {
        NUMBER
    } else if matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ') {
        WHITESPACE
    } else {
        0
    };
    class | PRESENT
}

const ASCII_FLAGS: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = ascii_flags(i as u8);
        i += 1;
    }
    t
};

/// The category flags of one code point (always includes [`PRESENT`]).
#[inline]
pub(crate) fn flags(c: char) -> u8 {
    if c.is_ascii() {
        return ASCII_FLAGS[c as usize];
    }
    if c.is_whitespace() {
        return WHITESPACE | PRESENT;
    }
    let class = match get_general_category(c) {
        Gc::UppercaseLetter
        | Gc::LowercaseLetter
        | Gc::TitlecaseLetter
        | Gc::ModifierLetter
        | Gc::OtherLetter => LETTER,
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber => NUMBER,
        _ => 0,
    };
    class | PRESENT
}

/// GPT-2's byte → character map: printable Latin-1 bytes map to themselves,
/// the other 68 bytes to U+0100.. in byte order.
pub(crate) const BYTE_TO_CHAR: [char; 256] = {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let printable =
            (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        let cp = if printable {
            b as u32
        } else {
            n += 1;
            255 + n
        };
        t[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    t
};

/// The inverse of [`BYTE_TO_CHAR`]; `None` for characters outside its image.
#[inline]
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(cp as u8),
        0x100..=0x143 => {
            // The 68 non-printable bytes in increasing order.
            let k = (cp - 0x100) as usize;
            (0u16..256)
                .map(|b| b as u8)
                .filter(|&b| !matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF))
                .nth(k)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(BYTE_TO_CHAR[b as usize]), Some(b), "byte {b:#04x}");
        }
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn categories() {
        assert_eq!(flags('a') & LETTER, LETTER);
        assert_eq!(flags('é') & LETTER, LETTER);
        assert_eq!(flags('日') & LETTER, LETTER);
        assert_eq!(flags('7') & NUMBER, NUMBER);
        assert_eq!(flags('½') & NUMBER, NUMBER);
        assert_eq!(flags('Ⅻ') & NUMBER, NUMBER);
        assert_eq!(flags('\u{3000}') & WHITESPACE, WHITESPACE);
        assert_eq!(flags('\u{85}') & WHITESPACE, WHITESPACE);
        assert_eq!(flags('😀') & (LETTER | NUMBER | WHITESPACE), 0);
        assert_eq!(flags('\u{301}') & (LETTER | NUMBER | WHITESPACE), 0);
        assert_ne!(flags('\u{378}') & PRESENT, 0, "unassigned code points are still present");
    }
}
