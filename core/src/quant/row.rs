//! Run-time dispatch for loaders: dequantize a row of raw tensor bytes of any
//! supported [`GgmlType`].

use core::fmt;

use half::{bf16, f16};

use super::{
    BlockFormat, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
};

/// Why [`dequantize_row`] refused its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantError {
    /// pagoda has no kernels for this tensor type.
    Unsupported(GgmlType),
    /// `bytes` is not a whole number of blocks of the type.
    PartialBlock {
        /// The tensor type.
        ty: GgmlType,
        /// Length of the byte slice.
        bytes: usize,
        /// Bytes per block of `ty`.
        block_bytes: usize,
    },
    /// `out` does not hold exactly the number of values `bytes` encodes.
    LengthMismatch {
        /// The tensor type.
        ty: GgmlType,
        /// Values encoded by the bytes.
        values: usize,
        /// Length of the output slice.
        out: usize,
    },
    /// The bytes are not aligned for the block type: 2 bytes for F16, BF16 and the
    /// f16-scaled blocks, 4 for F32 and Q8_K. (GGUF tensor data is 32-byte aligned.)
    Misaligned {
        /// The tensor type.
        ty: GgmlType,
        /// Alignment the block type needs.
        align: usize,
    },
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unsupported(ty) => {
                write!(f, "tensor type {ty} (id {}) is not supported by pagoda", ty.id())
            }
            Self::PartialBlock { ty, bytes, block_bytes } => write!(
                f,
                "{bytes} bytes of {ty} data is not a whole number of {block_bytes}-byte blocks"
            ),
            Self::LengthMismatch { ty, values, out } => {
                write!(f, "{ty} data holds {values} values but the output has room for {out}")
            }
            Self::Misaligned { ty, align } => {
                write!(f, "{ty} data is not aligned to {align} bytes")
            }
        }
    }
}

impl core::error::Error for QuantError {}

/// Dequantizes `bytes`, a row (or any whole number of blocks) of raw tensor data of
/// type `ty`, into `out`, which must hold exactly the number of values encoded.
///
/// The one run-time dispatch point over types; kernels that know their format use
/// [`BlockFormat::dequantize`] directly. Never panics: unsupported types, partial
/// blocks, wrong output lengths and misaligned data are errors.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => dequantize_as::<f32>(bytes, out),
        GgmlType::F16 => dequantize_as::<f16>(bytes, out),
        GgmlType::BF16 => dequantize_as::<bf16>(bytes, out),
        GgmlType::Q4_0 => dequantize_as::<BlockQ4_0>(bytes, out),
        GgmlType::Q4_1 => dequantize_as::<BlockQ4_1>(bytes, out),
        GgmlType::Q5_0 => dequantize_as::<BlockQ5_0>(bytes, out),
        GgmlType::Q5_1 => dequantize_as::<BlockQ5_1>(bytes, out),
        GgmlType::Q8_0 => dequantize_as::<BlockQ8_0>(bytes, out),
        GgmlType::Q8_1 => dequantize_as::<BlockQ8_1>(bytes, out),
        GgmlType::Q4_K => dequantize_as::<BlockQ4K>(bytes, out),
        GgmlType::Q5_K => dequantize_as::<BlockQ5K>(bytes, out),
        GgmlType::Q6_K => dequantize_as::<BlockQ6K>(bytes, out),
        GgmlType::Q8_K => dequantize_as::<BlockQ8K>(bytes, out),
        other => Err(QuantError::Unsupported(other)),
    }
}

fn dequantize_as<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let block_bytes = core::mem::size_of::<B>();
    if bytes.len() % block_bytes != 0 {
        return Err(QuantError::PartialBlock { ty: B::TYPE, bytes: bytes.len(), block_bytes });
    }
    let values = bytes.len() / block_bytes * B::BLOCK;
    if values != out.len() {
        return Err(QuantError::LengthMismatch { ty: B::TYPE, values, out: out.len() });
    }
    let blocks: &[B] = bytemuck::try_cast_slice(bytes)
        .map_err(|_| QuantError::Misaligned { ty: B::TYPE, align: core::mem::align_of::<B>() })?;
    B::dequantize(blocks, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_type_is_named() {
        let e = dequantize_row(GgmlType::IQ2_XXS, &[], &mut []).unwrap_err();
        assert_eq!(e, QuantError::Unsupported(GgmlType::IQ2_XXS));
        let msg = std::format!("{e}");
        assert!(msg.contains("IQ2_XXS") && msg.contains("16"), "{msg}");
    }

    #[test]
    fn bad_lengths_are_errors() {
        let words = [0u32; 10];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let mut out = [0.0f32; 64];
        assert_eq!(dequantize_row(GgmlType::Q4_1, bytes, &mut out), Ok(()));
        assert!(matches!(
            dequantize_row(GgmlType::Q4_1, &bytes[..39], &mut out),
            Err(QuantError::PartialBlock { bytes: 39, block_bytes: 20, .. })
        ));
        assert!(matches!(
            dequantize_row(GgmlType::Q4_1, bytes, &mut out[..63]),
            Err(QuantError::LengthMismatch { values: 64, out: 63, .. })
        ));
    }

    #[test]
    fn misaligned_f32_is_an_error() {
        let words = [0u32; 3];
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let mut out = [0.0f32; 2];
        assert!(matches!(
            dequantize_row(GgmlType::F32, &bytes[1..9], &mut out),
            Err(QuantError::Misaligned { align: 4, .. })
        ));
    }

    #[test]
    fn every_supported_type_dispatches() {
        let all = (0..64).filter_map(GgmlType::from_id);
        for ty in all.filter(|t| t.is_supported()) {
            let (n, b) = ty.geometry().unwrap();
            let words = [0u32; 292 / 4];
            let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..b];
            let mut out = [1.0f32; 256];
            assert_eq!(dequantize_row(ty, bytes, &mut out[..n]), Ok(()), "{ty}");
            assert!(out[..n].iter().all(|&v| v == 0.0), "{ty}: zero bytes are zeros");
        }
    }
}
