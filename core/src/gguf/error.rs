//! [`GgufError`]: what is wrong with a GGUF file, and where.
//!
//! The error owns everything it shows (no heap, no borrowed file bytes), so it is
//! `'static` and can travel up through `?` into `Box<dyn Error>`. Names of keys and
//! tensors are kept inline, truncated to [`Name::CAPACITY`] bytes.

use core::fmt;

use crate::ggml_type::GgmlType;

/// A key or tensor name copied into an error (at most [`Name::CAPACITY`] bytes kept).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; Name::CAPACITY],
    len: u8,
    truncated: bool,
}

impl Name {
    /// Bytes of a name an error keeps; longer names are cut and shown with `…`.
    pub const CAPACITY: usize = 64;

    /// Copies (a prefix of) `raw`. Shown ([`Display`](fmt::Display)) with control
    /// characters escaped, so a hostile file cannot send terminal escapes through an error.
    pub fn new(raw: &[u8]) -> Self {
        let n = raw.len().min(Self::CAPACITY);
        let mut bytes = [0; Self::CAPACITY];
        bytes[..n].copy_from_slice(&raw[..n]);
        Name { bytes, len: n as u8, truncated: raw.len() > n }
    }

    /// The kept bytes (valid UTF-8 up to the first invalid sequence).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show the longest valid UTF-8 prefix; a cut can land inside a character.
        let bytes = self.as_bytes();
        let valid = match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        // Control characters (terminal escapes among them) come from the file: show them
        // escaped (`\u{1b}`), never raw.
        for c in valid.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if self.truncated || valid.len() < bytes.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{self}'")
    }
}

/// Which part of the file an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The fixed header (magic, version, counts).
    Header,
    /// The `index`-th metadata entry, before its key could be read.
    MetadataEntry {
        /// Position in file order, from 0.
        index: u64,
    },
    /// The metadata entry with this key.
    MetadataKey(Name),
    /// The `index`-th tensor info, before its name could be read.
    TensorInfo {
        /// Position in file order, from 0.
        index: u64,
    },
    /// The tensor with this name.
    Tensor(Name),
}

/// What is wrong.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum GgufErrorKind {
    /// `what` at byte `offset` needs `needed` bytes but the file has `file_len`.
    PastEnd {
        /// What was being read (e.g. `"tensor count"`).
        what: &'static str,
        /// Absolute byte offset of the read.
        offset: u64,
        /// Bytes the read needed.
        needed: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A string at byte `offset` claims `len` bytes, past the end of the file.
    StringPastEnd {
        /// Absolute byte offset of the string's length prefix.
        offset: u64,
        /// The claimed length.
        len: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// The first four bytes are not `GGUF`.
    BadMagic([u8; 4]),
    /// A GGUF version other than 2 or 3.
    UnsupportedVersion(u32),
    /// A count above its cap (e.g. [`MAX_TENSORS`](super::MAX_TENSORS)).
    TooMany {
        /// What was counted (`"tensors"`, `"metadata entries"`, `"array elements"`).
        what: &'static str,
        /// The count found in the file.
        count: u64,
        /// The cap.
        max: u64,
    },
    /// A string longer than its cap.
    StringTooLong {
        /// Absolute byte offset of the string's length prefix.
        offset: u64,
        /// The claimed length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// Arrays nested deeper than [`MAX_NESTING`](super::MAX_NESTING).
    NestingTooDeep {
        /// The cap.
        max: u32,
    },
    /// A metadata value type id GGUF does not define.
    UnknownValueType {
        /// The id found.
        id: u32,
        /// Absolute byte offset of the id.
        offset: u64,
    },
    /// A string (key, name or value) that is not UTF-8.
    InvalidUtf8 {
        /// Absolute byte offset of the string's bytes.
        offset: u64,
    },
    /// A bool byte other than 0 or 1.
    InvalidBool {
        /// Absolute byte offset.
        offset: u64,
        /// The byte found.
        value: u8,
    },
    /// The same key or tensor name twice.
    Duplicate,
    /// `general.alignment` is not a power of two in `1..=MAX_ALIGNMENT`.
    BadAlignment {
        /// The value found (0 if it had the wrong type).
        value: u64,
    },
    /// More than 4 dimensions.
    TooManyDims {
        /// The dimension count found.
        n_dims: u32,
    },
    /// A dimension that does not fit ggml's `int64_t`.
    BadDim {
        /// Which dimension (0 = row length).
        index: u32,
        /// The value found.
        value: u64,
    },
    /// The element count or byte size of a tensor overflows 64 bits.
    SizeOverflow,
    /// A tensor type id ggml does not define.
    UnknownTensorType {
        /// The id found.
        id: u32,
    },
    /// A type ggml defines but pagoda has no kernels for (only raised when data is requested).
    UnsupportedTensorType(GgmlType),
    /// A row length that is not a whole number of blocks of the type.
    PartialBlock {
        /// The tensor type.
        ggml_type: GgmlType,
        /// Values per row (`ne[0]`).
        row_len: u64,
        /// Values per block of `ggml_type`.
        block_size: u64,
    },
    /// A tensor data offset that is not a multiple of the alignment.
    MisalignedOffset {
        /// Offset relative to the data section.
        offset: u64,
        /// `general.alignment`.
        alignment: u64,
    },
    /// A tensor's data ends at byte `end`, past the end of the file.
    DataPastEnd {
        /// Absolute byte offset of the first byte after the data.
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// A metadata key that is not there.
    MissingKey,
    /// A tensor name that is not there.
    MissingTensor,
    /// A metadata value of another type than asked for.
    WrongType {
        /// The type asked for (e.g. `"u32"`, `"array of string"`).
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// An integer that does not fit the type asked for.
    OutOfRange {
        /// The type asked for.
        expected: &'static str,
    },
    /// Tensor bytes cannot be viewed as the requested element type.
    Cast {
        /// What failed: `"element size"` (size differs from the ggml block) or
        /// `"alignment"` (data not aligned for the type).
        reason: &'static str,
        /// `size_of` of the requested type.
        size: usize,
        /// `align_of` of the requested type.
        align: usize,
    },
    /// A number that does not fit `usize` on this platform.
    TooLargeForPlatform,
}

/// A GGUF file is malformed, or a lookup failed: what, and where.
///
/// Displays as one line, e.g.
/// `tensor 'blk.3.attn_q.weight': data ends at byte 98 400 000, past the end of the file (98 362 432)`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GgufError {
    /// Where in the file.
    pub location: Location,
    /// What is wrong.
    pub kind: GgufErrorKind,
}

impl GgufError {
    /// An error of `kind` at `location`.
    pub const fn new(location: Location, kind: GgufErrorKind) -> Self {
        GgufError { location, kind }
    }
}

/// Formats `n` with a space every three digits (`98 362 432`), as in the messages above.
pub(crate) struct Grouped(pub u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 20];
        let mut n = self.0;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in (0..len).rev() {
            f.write_str(core::str::from_utf8(&digits[i..i + 1]).unwrap_or("?"))?;
            if i > 0 && i % 3 == 0 {
                f.write_str(" ")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Header => f.write_str("header"),
            Location::MetadataEntry { index } => write!(f, "metadata entry {index}"),
            Location::MetadataKey(key) => write!(f, "metadata key '{key}'"),
            Location::TensorInfo { index } => write!(f, "tensor info {index}"),
            Location::Tensor(name) => write!(f, "tensor '{name}'"),
        }
    }
}

impl fmt::Display for GgufErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use GgufErrorKind::*;
        match *self {
            PastEnd { what, offset, needed, file_len } => write!(
                f,
                "{what} at offset {} needs {} bytes, past the end of the file ({})",
                Grouped(offset),
                Grouped(needed),
                Grouped(file_len)
            ),
            StringPastEnd { offset, len, file_len } => write!(
                f,
                "string at offset {} has length {}, past the end of the file ({})",
                Grouped(offset),
                Grouped(len),
                Grouped(file_len)
            ),
            BadMagic(m) => write!(
                f,
                "not a GGUF file: magic is {:02x} {:02x} {:02x} {:02x}, expected 'GGUF' (47 47 55 46)",
                m[0], m[1], m[2], m[3]
            ),
            UnsupportedVersion(1) => {
                f.write_str("GGUF version 1 is not supported (only versions 2 and 3); re-convert the model")
            }
            UnsupportedVersion(v) if matches!(v.swap_bytes(), 2 | 3) => write!(
                f,
                "GGUF version {} in big-endian byte order is not supported (only little-endian)",
                v.swap_bytes()
            ),
            UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (only versions 2 and 3 are supported)")
            }
            TooMany { what, count, max } => {
                write!(f, "{} {what}, more than the limit of {}", Grouped(count), Grouped(max))
            }
            StringTooLong { offset, len, max } => write!(
                f,
                "string at offset {} has length {}, more than the limit of {}",
                Grouped(offset),
                Grouped(len),
                Grouped(max)
            ),
            NestingTooDeep { max } => write!(f, "arrays nested more than {max} deep"),
            UnknownValueType { id, offset } => {
                write!(f, "unknown metadata value type {id} at offset {}", Grouped(offset))
            }
            InvalidUtf8 { offset } => {
                write!(f, "string at offset {} is not valid UTF-8", Grouped(offset))
            }
            InvalidBool { offset, value } => {
                write!(f, "bool at offset {} has value {value} (must be 0 or 1)", Grouped(offset))
            }
            Duplicate => f.write_str("appears more than once"),
            BadAlignment { value } => write!(
                f,
                "alignment {value} is invalid (general.alignment must be a power of two from 1 to {})",
                Grouped(super::MAX_ALIGNMENT)
            ),
            TooManyDims { n_dims } => write!(f, "{n_dims} dimensions, more than ggml's 4"),
            BadDim { index, value } => {
                write!(f, "dimension {index} is {value}, more than ggml's int64 maximum")
            }
            SizeOverflow => f.write_str("element count or byte size overflows 64 bits"),
            UnknownTensorType { id } => write!(f, "unknown ggml type id {id}"),
            UnsupportedTensorType(t) => {
                write!(f, "type {t} (id {}) is not supported by pagoda", t.id())
            }
            PartialBlock { ggml_type, row_len, block_size } => write!(
                f,
                "row length {row_len} is not a whole number of {ggml_type} blocks of {block_size} values"
            ),
            MisalignedOffset { offset, alignment } => write!(
                f,
                "data offset {} is not a multiple of the alignment {alignment}",
                Grouped(offset)
            ),
            DataPastEnd { end, file_len } => write!(
                f,
                "data ends at byte {}, past the end of the file ({})",
                Grouped(end),
                Grouped(file_len)
            ),
            MissingKey => f.write_str("not found"),
            MissingTensor => f.write_str("not found"),
            WrongType { expected, found } => write!(f, "expected {expected}, found {found}"),
            OutOfRange { expected } => write!(f, "value does not fit {expected}"),
            Cast { reason, size, align } => write!(
                f,
                "cannot view data as a type of size {size} and alignment {align}: {reason} mismatch"
            ),
            TooLargeForPlatform => f.write_str("a size does not fit this platform's usize"),
        }
    }
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

impl core::error::Error for GgufError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn grouped_digits() {
        assert_eq!(format!("{}", Grouped(0)), "0");
        assert_eq!(format!("{}", Grouped(999)), "999");
        assert_eq!(format!("{}", Grouped(1000)), "1 000");
        assert_eq!(format!("{}", Grouped(98_362_432)), "98 362 432");
        assert_eq!(format!("{}", Grouped(u64::MAX)), "18 446 744 073 709 551 615");
    }

    #[test]
    fn message_names_tensor_and_bytes() {
        let e = GgufError::new(
            Location::Tensor(Name::new(b"blk.3.attn_q.weight")),
            GgufErrorKind::DataPastEnd { end: 98_400_000, file_len: 98_362_432 },
        );
        assert_eq!(
            format!("{e}"),
            "tensor 'blk.3.attn_q.weight': data ends at byte 98 400 000, past the end of the file (98 362 432)"
        );
    }

    #[test]
    fn long_names_are_cut_on_a_char_boundary() {
        let long = "é".repeat(40); // 80 bytes
        let n = Name::new(long.as_bytes());
        let shown = format!("{n}");
        assert!(shown.ends_with('…'));
        assert_eq!(shown.trim_end_matches('…'), "é".repeat(32));
    }

    #[test]
    fn names_from_the_file_reach_the_terminal_escaped() {
        let n = Name::new(b"tok\x1b[2J\x1b]0;pwned\x07en.\nx");
        let shown = format!("{n}");
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert_eq!(shown, "tok\\u{1b}[2J\\u{1b}]0;pwned\\u{7}en.\\u{a}x");
    }
}
