//! Metadata values: [`ValueType`], [`Value`] and borrowed [`ArrayView`]s.
//!
//! On disk a metadata entry is
//!
//! ```text
//! | key: u64 len + UTF-8 bytes | value type: u32 | value |
//!
//! value =  scalar (1, 2, 4 or 8 bytes, little-endian)
//!       |  string: u64 len + UTF-8 bytes
//!       |  array:  element type: u32 | count: u64 | count × value of that type
//! ```
//!
//! Arrays may nest (an array of arrays), at most [`MAX_NESTING`] deep. Values borrow
//! from the file: strings are `&'a str`, arrays are views that decode on iteration.

use core::marker::PhantomData;

use super::cursor::Cursor;
use super::error::{GgufError, GgufErrorKind, Location, Name};
use super::{MAX_ARRAY_LEN, MAX_NESTING};

/// The type of a metadata value, by its GGUF id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// id 0
    U8,
    /// id 1
    I8,
    /// id 2
    U16,
    /// id 3
    I16,
    /// id 4
    U32,
    /// id 5
    I32,
    /// id 6
    F32,
    /// id 7: one byte, 0 or 1
    Bool,
    /// id 8: u64 length + UTF-8 bytes
    String,
    /// id 9: element type, u64 count, elements
    Array,
    /// id 10
    U64,
    /// id 11
    I64,
    /// id 12
    F64,
}

impl ValueType {
    /// The type for a GGUF value type id, or `None`.
    pub const fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The GGUF id.
    pub const fn id(self) -> u32 {
        use ValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// A short name: `"u32"`, `"string"`, `"array"`, …
    pub const fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Bytes of a value of this type, or `None` for strings and arrays.
    pub const fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// The fewest bytes a value of this type takes (used to reject absurd array
    /// counts before walking them).
    const fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            _ => match self.fixed_size() {
                Some(n) => n,
                None => 1,
            },
        }
    }
}

/// One metadata value, borrowing from the file.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum Value<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(&'a str),
    Array(ArrayView<'a>),
}

impl<'a> Value<'a> {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F32(_) => ValueType::F32,
            Value::F64(_) => ValueType::F64,
            Value::Bool(_) => ValueType::Bool,
            Value::Str(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
        }
    }

    /// Any integer value as `i128` (so every GGUF integer fits), else `None`.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }
}

/// A borrowed metadata array: element type, count, and the validated element bytes.
///
/// Created only by the parser, which has already walked every element (strings are
/// UTF-8, bools are 0/1, nesting is within [`MAX_NESTING`]), so iteration cannot fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArrayView<'a> {
    key: &'a str,
    elem_type: ValueType,
    len: usize,
    /// The whole file; elements are at `file[start..end]`.
    file: &'a [u8],
    start: usize,
    end: usize,
    depth: u32,
}

impl<'a> ArrayView<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type (`Array` for nested arrays).
    pub fn elem_type(&self) -> ValueType {
        self.elem_type
    }

    /// The metadata key this array belongs to (for nested arrays, the outer key).
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// The encoded elements as they lie in the file (little-endian scalars; strings and
    /// arrays with their length prefixes).
    pub fn raw_bytes(&self) -> &'a [u8] {
        &self.file[self.start..self.end]
    }

    /// Every element as a [`Value`].
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter { array: *self, cursor: Cursor::new(self.file, self.start), remaining: self.len }
    }

    fn expect(&self, t: ValueType, expected: &'static str) -> Result<(), GgufError> {
        if self.elem_type == t {
            Ok(())
        } else {
            Err(GgufError::new(
                Location::MetadataKey(Name::new(self.key.as_bytes())),
                GgufErrorKind::WrongType { expected, found: array_of(self.elem_type) },
            ))
        }
    }

    /// The elements of an array of strings.
    pub fn iter_str(&self) -> Result<StrIter<'a>, GgufError> {
        self.expect(ValueType::String, "array of string")?;
        Ok(StrIter { cursor: Cursor::new(self.file, self.start), remaining: self.len })
    }

    /// The elements of an array of `i32`.
    pub fn iter_i32(&self) -> Result<Numbers<'a, i32>, GgufError> {
        self.expect(ValueType::I32, "array of i32")?;
        Ok(Numbers::new(self.raw_bytes()))
    }

    /// The elements of an array of `u32`.
    pub fn iter_u32(&self) -> Result<Numbers<'a, u32>, GgufError> {
        self.expect(ValueType::U32, "array of u32")?;
        Ok(Numbers::new(self.raw_bytes()))
    }

    /// The elements of an array of `f32`.
    pub fn iter_f32(&self) -> Result<Numbers<'a, f32>, GgufError> {
        self.expect(ValueType::F32, "array of f32")?;
        Ok(Numbers::new(self.raw_bytes()))
    }
}

const fn array_of(t: ValueType) -> &'static str {
    match t {
        ValueType::U8 => "array of u8",
        ValueType::I8 => "array of i8",
        ValueType::U16 => "array of u16",
        ValueType::I16 => "array of i16",
        ValueType::U32 => "array of u32",
        ValueType::I32 => "array of i32",
        ValueType::F32 => "array of f32",
        ValueType::Bool => "array of bool",
        ValueType::String => "array of string",
        ValueType::Array => "array of array",
        ValueType::U64 => "array of u64",
        ValueType::I64 => "array of i64",
        ValueType::F64 => "array of f64",
    }
}

/// Iterator over an array's elements as [`Value`]s.
#[derive(Clone, Debug)]
pub struct ArrayIter<'a> {
    array: ArrayView<'a>,
    cursor: Cursor<'a>,
    remaining: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // The parser validated these bytes; an error here cannot happen, and would end
        // the iteration rather than panic.
        match read_value(
            &mut self.cursor,
            self.array.elem_type,
            self.array.key,
            self.array.depth,
            Mode::Trusted,
        ) {
            Ok(v) => {
                self.remaining -= 1;
                Some(v)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// Iterator over an array of strings.
#[derive(Clone, Debug)]
pub struct StrIter<'a> {
    cursor: Cursor<'a>,
    remaining: usize,
}

impl<'a> Iterator for StrIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.remaining == 0 {
            return None;
        }
        match self.cursor.string() {
            Ok(s) => {
                self.remaining -= 1;
                Some(s)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StrIter<'_> {}

/// A little-endian scalar GGUF arrays hold.
pub trait LeScalar: Copy + sealed::Sealed {
    /// Bytes per value.
    const SIZE: usize;
    /// Decodes `bytes` (exactly `SIZE` of them).
    fn from_le(bytes: &[u8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}
    impl Sealed for f32 {}
}

macro_rules! le_scalar {
    ($t:ty) => {
        impl LeScalar for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
        }
    };
}
le_scalar!(i32);
le_scalar!(u32);
le_scalar!(f32);

/// Iterator over an array of little-endian numbers (no alignment needed).
#[derive(Clone, Debug)]
pub struct Numbers<'a, T> {
    chunks: core::slice::ChunksExact<'a, u8>,
    _t: PhantomData<T>,
}

impl<'a, T: LeScalar> Numbers<'a, T> {
    fn new(bytes: &'a [u8]) -> Self {
        Numbers { chunks: bytes.chunks_exact(T::SIZE), _t: PhantomData }
    }
}

impl<T: LeScalar> Iterator for Numbers<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.chunks.next().map(T::from_le)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl<T: LeScalar> ExactSizeIterator for Numbers<'_, T> {}

/// Whether a walk must validate (first pass, untrusted) or may trust bytes the parser
/// has already validated (lookups, iteration).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Validate,
    Trusted,
}

/// Reads one value of type `t` at the cursor. `depth` is the array nesting depth of
/// the value (0 for a top-level value).
pub(crate) fn read_value<'a>(
    c: &mut Cursor<'a>,
    t: ValueType,
    key: &'a str,
    depth: u32,
    mode: Mode,
) -> Result<Value<'a>, GgufErrorKind> {
    Ok(match t {
        ValueType::U8 => Value::U8(c.u8("u8 value")?),
        ValueType::I8 => Value::I8(c.u8("i8 value")? as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array("u16 value")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array("i16 value")?)),
        ValueType::U32 => Value::U32(c.u32("u32 value")?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array("i32 value")?)),
        ValueType::U64 => Value::U64(c.u64("u64 value")?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array("i64 value")?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array("f32 value")?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array("f64 value")?)),
        ValueType::Bool => {
            let offset = c.pos() as u64;
            match c.u8("bool value")? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                value => return Err(GgufErrorKind::InvalidBool { offset, value }),
            }
        }
        ValueType::String => Value::Str(c.string()?),
        ValueType::Array => Value::Array(read_array(c, key, depth + 1, mode)?),
    })
}

/// Reads an array header and walks (validating, in `Mode::Validate`) its elements.
fn read_array<'a>(
    c: &mut Cursor<'a>,
    key: &'a str,
    depth: u32,
    mode: Mode,
) -> Result<ArrayView<'a>, GgufErrorKind> {
    if depth > MAX_NESTING {
        return Err(GgufErrorKind::NestingTooDeep { max: MAX_NESTING });
    }
    let type_offset = c.pos() as u64;
    let type_id = c.u32("array element type")?;
    let elem_type = ValueType::from_id(type_id)
        .ok_or(GgufErrorKind::UnknownValueType { id: type_id, offset: type_offset })?;
    let count = c.u64("array length")?;
    if count > MAX_ARRAY_LEN as u64 {
        return Err(GgufErrorKind::TooMany {
            what: "array elements",
            count,
            max: MAX_ARRAY_LEN as u64,
        });
    }
    // Reject counts the rest of the file cannot hold before walking anything, so an
    // absurd count costs nothing.
    let min_bytes = count * elem_type.min_size() as u64; // ≤ 2^26 × 12: no overflow
    if min_bytes > c.remaining() as u64 {
        return Err(GgufErrorKind::PastEnd {
            what: "array elements",
            offset: c.pos() as u64,
            needed: min_bytes,
            file_len: c.file_len() as u64,
        });
    }
    let len = count as usize;
    let start = c.pos();
    match elem_type.fixed_size() {
        Some(size) if elem_type != ValueType::Bool || mode == Mode::Trusted => {
            c.skip(count * size as u64, "array elements")?;
        }
        _ => {
            for _ in 0..len {
                match (elem_type, mode) {
                    (ValueType::String, Mode::Trusted) => {
                        c.string_bytes()?;
                    }
                    (ValueType::String, Mode::Validate) => {
                        c.string()?;
                    }
                    _ => {
                        read_value(c, elem_type, key, depth, mode)?;
                    }
                }
            }
        }
    }
    Ok(ArrayView { key, elem_type, len, file: c.file(), start, end: c.pos(), depth })
}
