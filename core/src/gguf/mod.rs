//! A zero-copy, bounds-checked GGUF reader over `&[u8]` (GGUF versions 2 and 3).
//!
//! ```text
//! | magic "GGUF" | version: u32 | tensor count: u64 | metadata count: u64 |
//! | metadata entries (see [`value`]) ...                                  |
//! | tensor infos (see [`tensor`]) ...                                     |
//! | padding to general.alignment (default 32)                             |
//! | data section: tensor bytes at their offsets                           |
//! ```
//!
//! [`Gguf::parse`] walks and validates the whole header once: every read is
//! bounds-checked, counts and lengths have named caps ([`MAX_TENSORS`], [`MAX_KV`],
//! [`MAX_STRING_LEN`], [`MAX_ARRAY_LEN`], [`MAX_NESTING`]), sizes use checked
//! arithmetic, all strings are UTF-8, every tensor's shape, type and data bounds are
//! checked. The parser allocates nothing: lookups re-scan the (validated) header
//! lazily, which is cheap next to loading a model (a key lookup walks the metadata,
//! about a millisecond for a 49 152-token vocabulary; a tensor lookup walks the
//! tensor infos).
//!
//! ```no_run
//! # fn f(bytes: &[u8]) -> Result<(), pagoda_core::gguf::GgufError> {
//! use pagoda_core::gguf::Gguf;
//! let gguf = Gguf::parse(bytes)?;
//! let n_layers = gguf.get_u32("llama.block_count")?;
//! let tokens = gguf.get_array("tokenizer.ggml.tokens")?.iter_str()?;
//! let embd = gguf.tensor("token_embd.weight")?; // dims [576, 49152], Q8_0
//! # let _ = (n_layers, tokens, embd); Ok(()) }
//! ```

mod cursor;
mod error;
pub mod tensor;
pub mod value;

pub use error::{GgufError, GgufErrorKind, Location, Name};
pub use tensor::{TensorView, MAX_DIMS};
pub use value::{ArrayIter, ArrayView, LeScalar, Numbers, StrIter, Value, ValueType};

use cursor::Cursor;
use tensor::TensorInfo;
use value::{read_value, Mode};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most tensors a file may declare (real models: a few hundred to a few thousand).
///
/// Also bounds the worst case of duplicate-name detection, which has no heap to sort
/// names in: a Bloom filter makes it linear for real files, but crafted colliding
/// names fall back to re-scanning earlier entries (quadratic in this cap).
pub const MAX_TENSORS: u64 = 1 << 14;
/// Most metadata entries a file may declare (real models: a few dozen).
pub const MAX_KV: u64 = 1 << 12;
/// Longest string (key, tensor name or value), in bytes.
pub const MAX_STRING_LEN: usize = 1 << 26;
/// Most elements in one metadata array.
pub const MAX_ARRAY_LEN: usize = 1 << 26;
/// Deepest array nesting (an array of arrays is depth 2).
pub const MAX_NESTING: u32 = 8;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 16;

/// A parsed GGUF file, borrowing the bytes. Cheap to copy.
///
/// Invariant: the whole header was validated by [`Gguf::parse`], so lookups and
/// iteration over these bytes cannot fail on malformed input.
#[derive(Clone, Copy, Debug)]
pub struct Gguf<'a> {
    bytes: &'a [u8],
    version: u32,
    n_kv: usize,
    n_tensors: usize,
    kv_start: usize,
    tensor_info_start: usize,
    data_start: u64,
    alignment: u64,
}

impl<'a> Gguf<'a> {
    /// Parses and validates the header, all metadata and every tensor info of `bytes`
    /// (a whole GGUF file).
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let header = |k| GgufError::new(Location::Header, k);
        let mut c = Cursor::new(bytes, 0);
        let magic: [u8; 4] = c.array("magic").map_err(header)?;
        if magic != MAGIC {
            return Err(header(GgufErrorKind::BadMagic(magic)));
        }
        let version = c.u32("version").map_err(header)?;
        if version != 2 && version != 3 {
            return Err(header(GgufErrorKind::UnsupportedVersion(version)));
        }
        let n_tensors = c.u64("tensor count").map_err(header)?;
        if n_tensors > MAX_TENSORS {
            return Err(header(GgufErrorKind::TooMany {
                what: "tensors",
                count: n_tensors,
                max: MAX_TENSORS,
            }));
        }
        let n_kv = c.u64("metadata count").map_err(header)?;
        if n_kv > MAX_KV {
            return Err(header(GgufErrorKind::TooMany {
                what: "metadata entries",
                count: n_kv,
                max: MAX_KV,
            }));
        }

        let kv_start = c.pos();
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut seen = NameFilter::new();
        for index in 0..n_kv {
            let (key, value) = read_entry(&mut c, index, Mode::Validate)?;
            if seen.maybe_contains_then_insert(key) {
                let mut earlier = Cursor::new(bytes, kv_start);
                for i in 0..index {
                    if read_entry(&mut earlier, i, Mode::Trusted)?.0 == key {
                        return Err(GgufError::new(
                            Location::MetadataKey(Name::new(key.as_bytes())),
                            GgufErrorKind::Duplicate,
                        ));
                    }
                }
            }
            if key == "general.alignment" {
                alignment = match value.as_integer() {
                    Some(a)
                        if a > 0 && a as u64 <= MAX_ALIGNMENT && (a as u64).is_power_of_two() =>
                    {
                        a as u64
                    }
                    Some(a) => {
                        return Err(GgufError::new(
                            Location::MetadataKey(Name::new(key.as_bytes())),
                            GgufErrorKind::BadAlignment {
                                value: a.clamp(0, u64::MAX as i128) as u64,
                            },
                        ))
                    }
                    None => {
                        return Err(GgufError::new(
                            Location::MetadataKey(Name::new(key.as_bytes())),
                            GgufErrorKind::WrongType {
                                expected: "u32",
                                found: value.value_type().name(),
                            },
                        ))
                    }
                };
            }
        }

        let tensor_info_start = c.pos();
        seen = NameFilter::new(); // reuse the 8 KiB of stack
        for index in 0..n_tensors {
            let info = TensorInfo::read(&mut c, index, alignment)?;
            if seen.maybe_contains_then_insert(info.name) {
                let mut earlier = Cursor::new(bytes, tensor_info_start);
                for _ in 0..index {
                    let name = TensorInfo::skip_to_name(&mut earlier)
                        .map_err(|k| GgufError::new(Location::TensorInfo { index }, k))?;
                    if name == info.name.as_bytes() {
                        return Err(GgufError::new(
                            Location::Tensor(Name::new(info.name.as_bytes())),
                            GgufErrorKind::Duplicate,
                        ));
                    }
                }
            }
        }
        // pos ≤ len and alignment ≤ 2^16: no overflow in u64.
        let data_start = (c.pos() as u64).next_multiple_of(alignment);

        let gguf = Gguf {
            bytes,
            version,
            n_kv: n_kv as usize,
            n_tensors: n_tensors as usize,
            kv_start,
            tensor_info_start,
            data_start,
            alignment,
        };
        // Second pass: file bounds, now that the data section start is known.
        let mut c = Cursor::new(bytes, tensor_info_start);
        for index in 0..n_tensors {
            TensorInfo::read(&mut c, index, alignment)?.view(bytes, data_start)?;
        }
        Ok(gguf)
    }

    /// The validated layout, detached from the borrow, so an owner of the bytes (e.g. a
    /// memory map) can rebuild this view in O(1) with [`Gguf::from_layout`].
    pub fn layout(&self) -> GgufLayout {
        GgufLayout {
            addr: self.bytes.as_ptr() as usize,
            len: self.bytes.len(),
            version: self.version,
            n_kv: self.n_kv,
            n_tensors: self.n_tensors,
            kv_start: self.kv_start,
            tensor_info_start: self.tensor_info_start,
            data_start: self.data_start,
            alignment: self.alignment,
        }
    }

    /// Rebuilds the view `layout` came from, without re-parsing. `None` unless `bytes`
    /// is the very same slice (same address and length) that was parsed.
    pub fn from_layout(bytes: &'a [u8], layout: GgufLayout) -> Option<Gguf<'a>> {
        if bytes.as_ptr() as usize != layout.addr || bytes.len() != layout.len {
            return None;
        }
        Some(Gguf {
            bytes,
            version: layout.version,
            n_kv: layout.n_kv,
            n_tensors: layout.n_tensors,
            kv_start: layout.kv_start,
            tensor_info_start: layout.tensor_info_start,
            data_start: layout.data_start,
            alignment: layout.alignment,
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section (a multiple of the alignment; may equal the
    /// file length when there is no tensor data).
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Number of metadata entries.
    pub fn metadata_len(&self) -> usize {
        self.n_kv
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.n_tensors
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> MetadataIter<'a> {
        MetadataIter { cursor: Cursor::new(self.bytes, self.kv_start), index: 0, len: self.n_kv }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.metadata().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<Value<'a>, GgufError> {
        self.get(key).ok_or_else(|| GgufError::new(key_location(key), GgufErrorKind::MissingKey))
    }

    fn integer(&self, key: &str, expected: &'static str) -> Result<i128, GgufError> {
        let v = self.require(key)?;
        v.as_integer().ok_or_else(|| wrong_type(key, expected, v))
    }

    /// `key` as a `u32`. Any integer type is accepted if the value fits (a count
    /// stored as `i32` ≥ 0, or as `u64` < 2^32).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.integer(key, "u32")?;
        u32::try_from(v).map_err(|_| out_of_range(key, "u32"))
    }

    /// `key` as a `u64`; any integer type whose value is ≥ 0 is accepted.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.integer(key, "u64")?;
        u64::try_from(v).map_err(|_| out_of_range(key, "u64"))
    }

    /// `key` as an `i32`; any integer type whose value fits is accepted.
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        let v = self.integer(key, "i32")?;
        i32::try_from(v).map_err(|_| out_of_range(key, "i32"))
    }

    /// `key` as an `f32`; an `f64` value is rounded to `f32`. Integers are not accepted.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            Value::F32(v) => Ok(v),
            Value::F64(v) => Ok(v as f32),
            v => Err(wrong_type(key, "f32", v)),
        }
    }

    /// `key` as a `bool`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(v) => Ok(v),
            v => Err(wrong_type(key, "bool", v)),
        }
    }

    /// `key` as a string borrowed from the file.
    pub fn get_str(&self, key: &str) -> Result<&'a str, GgufError> {
        match self.require(key)? {
            Value::Str(v) => Ok(v),
            v => Err(wrong_type(key, "string", v)),
        }
    }

    /// `key` as an array view.
    pub fn get_array(&self, key: &str) -> Result<ArrayView<'a>, GgufError> {
        match self.require(key)? {
            Value::Array(v) => Ok(v),
            v => Err(wrong_type(key, "array", v)),
        }
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> TensorIter<'a> {
        TensorIter {
            cursor: Cursor::new(self.bytes, self.tensor_info_start),
            index: 0,
            len: self.n_tensors,
            alignment: self.alignment,
            data_start: self.data_start,
        }
    }

    /// The tensor called `name`, or [`GgufErrorKind::MissingTensor`].
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>, GgufError> {
        self.tensors().find(|t| t.name() == name).ok_or_else(|| {
            GgufError::new(
                Location::Tensor(Name::new(name.as_bytes())),
                GgufErrorKind::MissingTensor,
            )
        })
    }
}

fn key_location(key: &str) -> Location {
    Location::MetadataKey(Name::new(key.as_bytes()))
}

fn wrong_type(key: &str, expected: &'static str, found: Value<'_>) -> GgufError {
    GgufError::new(
        key_location(key),
        GgufErrorKind::WrongType { expected, found: found.value_type().name() },
    )
}

fn out_of_range(key: &str, expected: &'static str) -> GgufError {
    GgufError::new(key_location(key), GgufErrorKind::OutOfRange { expected })
}

/// Reads the `index`-th metadata entry (key, type, value) at the cursor.
fn read_entry<'a>(
    c: &mut Cursor<'a>,
    index: u64,
    mode: Mode,
) -> Result<(&'a str, Value<'a>), GgufError> {
    let key = c.string().map_err(|k| GgufError::new(Location::MetadataEntry { index }, k))?;
    let at = |k| GgufError::new(key_location(key), k);
    let type_offset = c.pos() as u64;
    let type_id = c.u32("value type").map_err(at)?;
    let t = ValueType::from_id(type_id)
        .ok_or_else(|| at(GgufErrorKind::UnknownValueType { id: type_id, offset: type_offset }))?;
    let value = read_value(c, t, key, 0, mode).map_err(at)?;
    Ok((key, value))
}

/// The offsets and counts [`Gguf::parse`] validated, tied to the address of the parsed
/// bytes (see [`Gguf::layout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgufLayout {
    addr: usize,
    len: usize,
    version: u32,
    n_kv: usize,
    n_tensors: usize,
    kv_start: usize,
    tensor_info_start: usize,
    data_start: u64,
    alignment: u64,
}

/// Iterator over `(key, value)` metadata entries in file order.
#[derive(Clone, Debug)]
pub struct MetadataIter<'a> {
    cursor: Cursor<'a>,
    index: usize,
    len: usize,
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (&'a str, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.len {
            return None;
        }
        // Validated by `parse`: cannot fail; an error would end the iteration.
        match read_entry(&mut self.cursor, self.index as u64, Mode::Trusted) {
            Ok(entry) => {
                self.index += 1;
                Some(entry)
            }
            Err(_) => {
                self.index = self.len;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.index;
        (n, Some(n))
    }
}

impl ExactSizeIterator for MetadataIter<'_> {}

/// Iterator over the tensors in file order.
#[derive(Clone, Debug)]
pub struct TensorIter<'a> {
    cursor: Cursor<'a>,
    index: usize,
    len: usize,
    alignment: u64,
    data_start: u64,
}

impl<'a> Iterator for TensorIter<'a> {
    type Item = TensorView<'a>;

    fn next(&mut self) -> Option<TensorView<'a>> {
        if self.index >= self.len {
            return None;
        }
        // Validated by `parse`: cannot fail; an error would end the iteration.
        let file = self.cursor.file();
        match TensorInfo::read(&mut self.cursor, self.index as u64, self.alignment)
            .and_then(|info| info.view(file, self.data_start))
        {
            Ok(t) => {
                self.index += 1;
                Some(t)
            }
            Err(_) => {
                self.index = self.len;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len - self.index;
        (n, Some(n))
    }
}

impl ExactSizeIterator for TensorIter<'_> {}

/// A 65 536-bit Bloom filter of names (8 KiB on the stack) so duplicate detection is
/// linear for real files; only a possible hit triggers an exact re-scan.
struct NameFilter {
    bits: [u64; 1024],
}

impl NameFilter {
    fn new() -> Self {
        NameFilter { bits: [0; 1024] }
    }

    /// Whether `name` may have been inserted before; inserts it.
    fn maybe_contains_then_insert(&mut self, name: &str) -> bool {
        // FNV-1a, 64-bit; two 16-bit probes from its halves.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in name.as_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut hit = true;
        for probe in [h as u16, (h >> 32) as u16] {
            let (word, bit) = ((probe >> 6) as usize, probe & 63);
            hit &= self.bits[word] & (1 << bit) != 0;
            self.bits[word] |= 1 << bit;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use std::vec::Vec;

    /// A v3 file: one u32 key, one string-array key, one 4-value F32 tensor.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // metadata entries
        s(&mut b, "llama.block_count");
        b.extend(ValueType::U32.id().to_le_bytes());
        b.extend(30u32.to_le_bytes());
        s(&mut b, "tokens");
        b.extend(ValueType::Array.id().to_le_bytes());
        b.extend(ValueType::String.id().to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "bc");
        s(&mut b, "w");
        b.extend(1u32.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(GgmlType::F32.id().to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.resize(b.len().next_multiple_of(32), 0);
        for x in [1.0f32, 2.0, 3.0, 4.0] {
            b.extend(x.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_a_tiny_file() {
        let bytes = tiny();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!((g.version(), g.metadata_len(), g.tensor_count()), (3, 2, 1));
        assert_eq!(g.get_u32("llama.block_count"), Ok(30));
        assert_eq!(g.get_u64("llama.block_count"), Ok(30));
        let tokens = g.get_array("tokens").unwrap();
        assert!(tokens.iter_str().unwrap().eq(["a", "bc"]));
        let w = g.tensor("w").unwrap();
        assert_eq!((w.ggml_type(), w.dims(), w.data().len()), (GgmlType::F32, &[4u64][..], 16));
        assert_eq!(w.data()[..4], 1.0f32.to_le_bytes());
        assert_eq!(g.data_start() as usize, bytes.len() - 16);
    }

    #[test]
    fn every_prefix_is_an_error() {
        let bytes = tiny();
        for cut in 0..bytes.len() {
            assert!(Gguf::parse(&bytes[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
    }

    #[test]
    fn layout_rebuilds_only_for_the_same_bytes() {
        let bytes = tiny();
        let g = Gguf::parse(&bytes).unwrap();
        let again = Gguf::from_layout(&bytes, g.layout()).unwrap();
        assert_eq!(again.tensor("w").unwrap(), g.tensor("w").unwrap());
        let copy = bytes.clone();
        assert!(Gguf::from_layout(&copy, g.layout()).is_none());
        assert!(Gguf::from_layout(&bytes[..bytes.len() - 1], g.layout()).is_none());
    }

    #[test]
    fn name_filter_remembers() {
        let mut f = NameFilter::new();
        assert!(!f.maybe_contains_then_insert("blk.0.attn_q.weight"));
        assert!(!f.maybe_contains_then_insert("blk.0.attn_k.weight"));
        assert!(f.maybe_contains_then_insert("blk.0.attn_q.weight"));
    }
}
