//! Tensor infos and zero-copy [`TensorView`]s.
//!
//! On disk, after the metadata, one tensor info per tensor:
//!
//! ```text
//! | name: u64 len + UTF-8 | n_dims: u32 | ne[0..n_dims]: u64 each | type: u32 | offset: u64 |
//! ```
//!
//! `ne[0]` is the row length (ggml order: the fastest-varying dimension first), so a
//! `[576, 49152]` embedding has 49152 rows of 576 values. `offset` is relative to the
//! data section, which starts at the first multiple of `general.alignment` after the
//! last tensor info:
//!
//! ```text
//! | header | metadata | tensor infos | pad | data section ...................... |
//!                                          ^ data_start (aligned)
//!                                          |<- offset ->| tensor bytes |
//! ```

use bytemuck::Pod;

use super::cursor::Cursor;
use super::error::{GgufError, GgufErrorKind, Location, Name};
use crate::ggml_type::GgmlType;

/// ggml's maximum number of dimensions.
pub const MAX_DIMS: usize = 4;

/// A tensor in the file: name, type, shape and its bytes, borrowed from the file.
///
/// Invariants (checked once by [`Gguf::parse`](super::Gguf::parse)): at most 4
/// dimensions, the element count and byte size fit `u64`, the row length is a whole
/// number of blocks of the type, and the data lies inside the file at an offset that
/// is a multiple of `general.alignment` from the aligned data section start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorView<'a> {
    name: &'a str,
    ggml_type: GgmlType,
    dims: [u64; MAX_DIMS],
    n_dims: usize,
    offset: u64,
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The tensor's name, e.g. `"blk.0.attn_q.weight"`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The element type (may be one pagoda cannot compute with; see [`Self::check_supported`]).
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// The shape in ggml order: `dims()[0]` is the row length. 0 to 4 entries.
    pub fn dims(&self) -> &[u64] {
        &self.dims[..self.n_dims]
    }

    /// The row length `ne[0]` (1 for a 0-dimensional tensor).
    pub fn row_len(&self) -> u64 {
        if self.n_dims == 0 {
            1
        } else {
            self.dims[0]
        }
    }

    /// Number of rows: the product of all dimensions but the first.
    pub fn n_rows(&self) -> u64 {
        // Checked in parse: this product fits u64 (even when ne[0] is 0).
        self.dims().iter().skip(1).product()
    }

    /// Number of values: the product of all dimensions.
    pub fn n_elements(&self) -> u64 {
        self.dims().iter().product()
    }

    /// Offset of the data relative to the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The tensor's bytes, whatever its type (`n_rows × row bytes`).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// `Ok` if pagoda has kernels for the type, else
    /// [`GgufErrorKind::UnsupportedTensorType`] naming the type and this tensor.
    pub fn check_supported(&self) -> Result<(), GgufError> {
        if self.ggml_type.is_supported() {
            Ok(())
        } else {
            Err(self.error(GgufErrorKind::UnsupportedTensorType(self.ggml_type)))
        }
    }

    /// The data as a slice of `T` (a float or a block type such as `BlockQ4_1`).
    ///
    /// Errors if the type is unsupported, if `size_of::<T>()` is not the byte size of
    /// one block of the tensor's type (so a Q4_1 tensor cannot be read as `f32`), or if
    /// the data is not aligned for `T` (checked by `bytemuck::try_cast_slice`; the data
    /// section is aligned, so this holds when the file buffer is, e.g. an mmap).
    pub fn try_cast<T: Pod>(&self) -> Result<&'a [T], GgufError> {
        self.check_supported()?;
        let size = core::mem::size_of::<T>();
        let align = core::mem::align_of::<T>();
        let cast_err = |reason| self.error(GgufErrorKind::Cast { reason, size, align });
        if Some(size) != self.ggml_type.type_size() {
            return Err(cast_err("element size"));
        }
        bytemuck::try_cast_slice(self.data).map_err(|_| cast_err("alignment"))
    }

    fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(Location::Tensor(Name::new(self.name.as_bytes())), kind)
    }
}

/// One tensor info as read from the file, validated except for the file bounds.
pub(crate) struct TensorInfo<'a> {
    pub(crate) name: &'a str,
    pub(crate) ggml_type: GgmlType,
    pub(crate) dims: [u64; MAX_DIMS],
    pub(crate) n_dims: usize,
    pub(crate) offset: u64,
    pub(crate) n_bytes: u64,
}

impl<'a> TensorInfo<'a> {
    /// Reads and validates the `index`-th tensor info at the cursor.
    pub(crate) fn read(c: &mut Cursor<'a>, index: u64, alignment: u64) -> Result<Self, GgufError> {
        let name = c.string().map_err(|k| GgufError::new(Location::TensorInfo { index }, k))?;
        let at = |kind| GgufError::new(Location::Tensor(Name::new(name.as_bytes())), kind);
        let n_dims = c.u32("dimension count").map_err(at)?;
        if n_dims as usize > MAX_DIMS {
            return Err(at(GgufErrorKind::TooManyDims { n_dims }));
        }
        let mut dims = [1u64; MAX_DIMS];
        let mut n_elements: u64 = 1;
        for (i, d) in dims.iter_mut().enumerate().take(n_dims as usize) {
            let value = c.u64("dimension").map_err(at)?;
            if value > i64::MAX as u64 {
                return Err(at(GgufErrorKind::BadDim { index: i as u32, value }));
            }
            *d = value;
            n_elements =
                n_elements.checked_mul(value).ok_or_else(|| at(GgufErrorKind::SizeOverflow))?;
        }
        if n_elements > i64::MAX as u64 {
            return Err(at(GgufErrorKind::SizeOverflow));
        }
        let type_id = c.u32("tensor type").map_err(at)?;
        let ggml_type = GgmlType::from_id(type_id)
            .ok_or_else(|| at(GgufErrorKind::UnknownTensorType { id: type_id }))?;
        let offset = c.u64("tensor data offset").map_err(at)?;

        let Some(block_size) = ggml_type.block_size() else {
            // A type ggml defines but whose block size is not known: its extent
            // cannot be checked, so the file cannot be validated.
            return Err(at(GgufErrorKind::UnsupportedTensorType(ggml_type)));
        };
        let row_len = dims[0];
        let row_bytes = ggml_type.row_bytes(row_len).ok_or_else(|| {
            at(if row_len % block_size as u64 != 0 {
                GgufErrorKind::PartialBlock { ggml_type, row_len, block_size: block_size as u64 }
            } else {
                GgufErrorKind::SizeOverflow
            })
        })?;
        // Not bounded by n_elements: with ne[0] = 0 the other dimensions may be anything.
        let n_rows = dims[1..]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| at(GgufErrorKind::SizeOverflow))?;
        let n_bytes =
            row_bytes.checked_mul(n_rows).ok_or_else(|| at(GgufErrorKind::SizeOverflow))?;
        if offset % alignment != 0 {
            return Err(at(GgufErrorKind::MisalignedOffset { offset, alignment }));
        }
        Ok(TensorInfo { name, ggml_type, dims, n_dims: n_dims as usize, offset, n_bytes })
    }

    /// Skips a tensor info that [`TensorInfo::read`] has already validated, returning
    /// only its name (a cheap walk for duplicate detection).
    pub(crate) fn skip_to_name(c: &mut Cursor<'a>) -> Result<&'a [u8], GgufErrorKind> {
        let name = c.string_bytes()?;
        let n_dims = c.u32("dimension count")?;
        // dims, type, offset
        c.skip(u64::from(n_dims) * 8 + 4 + 8, "tensor info")?;
        Ok(name)
    }

    /// The view, once the data section start is known; checks the file bounds.
    pub(crate) fn view(self, file: &'a [u8], data_start: u64) -> Result<TensorView<'a>, GgufError> {
        let at = |kind| GgufError::new(Location::Tensor(Name::new(self.name.as_bytes())), kind);
        let file_len = file.len() as u64;
        let start =
            data_start.checked_add(self.offset).ok_or_else(|| at(GgufErrorKind::SizeOverflow))?;
        let end = start.checked_add(self.n_bytes).ok_or_else(|| at(GgufErrorKind::SizeOverflow))?;
        if end > file_len {
            return Err(at(GgufErrorKind::DataPastEnd { end, file_len }));
        }
        // end ≤ file_len ≤ usize::MAX, so both fit usize.
        let data = &file[start as usize..end as usize];
        Ok(TensorView {
            name: self.name,
            ggml_type: self.ggml_type,
            dims: self.dims,
            n_dims: self.n_dims,
            offset: self.offset,
            data,
        })
    }
}
