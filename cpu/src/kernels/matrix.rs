//! A borrowed, validated weight matrix: ggml type, shape and row-major bytes.

use pagoda_core::ggml_type::GgmlType;

use super::error::KernelError;

/// A weight matrix `rows × cols` stored row-major in ggml's layout (as in a GGUF file):
///
/// ```text
/// data: | row 0: cols/32 blocks | row 1 | … | row rows-1 |     (F32: cols floats per row)
///       `---- row_bytes -------'
/// ```
///
/// In ggml's GGUF shape notation this is a tensor of shape `[cols, rows]` (`ne0 = cols`).
/// Invariants, checked by [`QuantMatrix::new`]: the type has a matmul kernel
/// ([`supported_weight_types`](super::supported_weight_types)), `cols` is a whole number of
/// blocks, `data.len() == rows * row_bytes`, and `data` is aligned to the block struct
/// (2 bytes; 4 for F32).
#[derive(Clone, Copy, Debug)]
pub struct QuantMatrix<'a> {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
}

impl<'a> QuantMatrix<'a> {
    /// A view of `data` as a `rows × cols` matrix of type `ty`, or the reason it is not one.
    pub fn new(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        // Every level has a kernel for a type the scalar table lists (see `table`).
        let align = super::table::lookup(super::SimdLevel::Scalar, ty)
            .ok_or(KernelError::UnsupportedType(ty))?
            .align;
        let row_bytes =
            ty.row_bytes(cols as u64).ok_or(KernelError::ColsNotWholeBlocks { ty, cols })?;
        let row_bytes = usize::try_from(row_bytes).map_err(|_| KernelError::Overflow)?;
        let total = row_bytes.checked_mul(rows).ok_or(KernelError::Overflow)?;
        super::error::check_len("weights", total, data.len())?;
        if !(data.as_ptr() as usize).is_multiple_of(align) {
            return Err(KernelError::Misaligned { ty, align });
        }
        Ok(QuantMatrix { ty, rows, cols, row_bytes, data })
    }

    /// The weight type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Number of rows (outputs per token).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs per token).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw bytes, row-major.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }
}
