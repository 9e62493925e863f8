//! The error of the kernels' safe API: a shape or layout the caller got wrong.

use core::fmt;

use pagoda_core::ggml_type::GgmlType;

use super::SimdLevel;

/// What a kernel refused to compute, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelError {
    /// The SIMD level was asked for explicitly but this CPU cannot run it.
    LevelUnavailable(SimdLevel),
    /// The weight type has no matmul kernel (see [`supported_weight_types`](super::supported_weight_types)).
    UnsupportedType(GgmlType),
    /// `cols` is not a whole number of the type's blocks.
    ColsNotWholeBlocks {
        /// The weight type.
        ty: GgmlType,
        /// The number of columns given.
        cols: usize,
    },
    /// A buffer has the wrong number of elements (or bytes, for weight data).
    Length {
        /// Which argument (`"weights"`, `"x"`, `"out"`, …).
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Weight data is not aligned for its block type.
    Misaligned {
        /// The weight type.
        ty: GgmlType,
        /// The alignment required, in bytes.
        align: usize,
    },
    /// The matrices of one `matmul_multi` call differ in `what` (`"weight type"`, `"cols"`).
    Incompatible {
        /// What differs.
        what: &'static str,
    },
    /// A shape whose size overflows `usize`.
    Overflow,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::LevelUnavailable(l) => {
                write!(f, "SIMD level {l} is not available on this CPU")
            }
            KernelError::UnsupportedType(t) => {
                write!(f, "no matmul kernel for weight type {t} (supported:")?;
                for (i, s) in super::supported_weight_types().enumerate() {
                    write!(f, "{}{s}", if i == 0 { " " } else { ", " })?;
                }
                write!(f, ")")
            }
            KernelError::ColsNotWholeBlocks { ty, cols } => write!(
                f,
                "{cols} columns is not a whole number of {ty} blocks of {} values",
                ty.block_size().unwrap_or(1)
            ),
            KernelError::Length { what, expected, got } => {
                write!(f, "`{what}` has length {got}, the shape needs {expected}")
            }
            KernelError::Misaligned { ty, align } => {
                write!(f, "{ty} weight data is not aligned to {align} bytes")
            }
            KernelError::Incompatible { what } => {
                write!(f, "the matrices of one matmul_multi call differ in {what}")
            }
            KernelError::Overflow => f.write_str("shape size overflows usize"),
        }
    }
}

impl core::error::Error for KernelError {}

/// `Err(Length)` unless `got == expected`.
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length { what, expected, got })
    }
}
