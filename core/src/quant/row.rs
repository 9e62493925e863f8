//! Run-time dispatch over [`GgmlType`]: [`dequantize_row`] (raw tensor bytes → `f32`,
//! for loaders) and its mirror [`quantize_row`] (`f32` → raw tensor bytes, for
//! quantizing tools).

use core::fmt;

use half::{bf16, f16};

use super::{
    BlockFormat, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1,
    BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, Quantize,
};

/// Why [`dequantize_row`] or [`quantize_row`] refused its input.
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
    /// Only [`dequantize_row`] returns it; [`quantize_row`] accepts any alignment.
    Misaligned {
        /// The tensor type.
        ty: GgmlType,
        /// Alignment the block type needs.
        align: usize,
    },
    /// [`quantize_row`]: the input is not a whole number of blocks of the type.
    PartialInput {
        /// The tensor type.
        ty: GgmlType,
        /// Length of the input (values).
        values: usize,
        /// Values per block of `ty`.
        block: usize,
    },
    /// [`quantize_row`]: `out` is not exactly the size of the quantized input.
    OutputSize {
        /// The tensor type.
        ty: GgmlType,
        /// Bytes the quantized input takes (blocks × bytes per block).
        bytes: usize,
        /// Length of the output slice.
        out: usize,
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
            Self::PartialInput { ty, values, block } => {
                write!(f, "{values} values are not a whole number of {ty} blocks of {block} values")
            }
            Self::OutputSize { ty, bytes, out } => {
                write!(f, "quantized {ty} data takes {bytes} bytes but the output holds {out}")
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
        GgmlType::Q2_K => dequantize_as::<BlockQ2K>(bytes, out),
        GgmlType::Q3_K => dequantize_as::<BlockQ3K>(bytes, out),
        GgmlType::Q4_K => dequantize_as::<BlockQ4K>(bytes, out),
        GgmlType::Q5_K => dequantize_as::<BlockQ5K>(bytes, out),
        GgmlType::Q6_K => dequantize_as::<BlockQ6K>(bytes, out),
        GgmlType::Q8_K => dequantize_as::<BlockQ8K>(bytes, out),
        GgmlType::IQ4_NL => dequantize_as::<BlockIq4Nl>(bytes, out),
        GgmlType::IQ4_XS => dequantize_as::<BlockIq4Xs>(bytes, out),
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

/// Quantizes `x`, a row (or any whole number of blocks) of values, to raw tensor data
/// of type `ty` in `out`, which must be exactly `x.len() / block values × block bytes`
/// long: the mirror of [`dequantize_row`], producing the bytes ggml's `quantize_row_*_ref`
/// (what llama-quantize writes without an importance matrix) would.
///
/// Supported: every type with a [`Quantize`] implementation (F32, F16, BF16, the legacy,
/// K-quant and IQ4 weight formats, and the activation formats Q8_1 and Q8_K).
///
/// Never panics: unsupported types ([`QuantError::Unsupported`]), an input that is not a
/// whole number of blocks ([`QuantError::PartialInput`]) and a wrong output length
/// ([`QuantError::OutputSize`]) are errors. `out` may have any alignment: when it is not
/// aligned for the block type (2 bytes for f16-scaled blocks, 4 for F32 and Q8_K), the
/// blocks are quantized into an aligned 2 KiB stack buffer a few at a time and copied
/// out (no heap, no `unsafe`; the bytes are the same either way).
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::F32 => quantize_as::<f32>(x, out),
        GgmlType::F16 => quantize_as::<f16>(x, out),
        GgmlType::BF16 => quantize_as::<bf16>(x, out),
        GgmlType::Q4_0 => quantize_as::<BlockQ4_0>(x, out),
        GgmlType::Q4_1 => quantize_as::<BlockQ4_1>(x, out),
        GgmlType::Q5_0 => quantize_as::<BlockQ5_0>(x, out),
        GgmlType::Q5_1 => quantize_as::<BlockQ5_1>(x, out),
        GgmlType::Q8_0 => quantize_as::<BlockQ8_0>(x, out),
        GgmlType::Q8_1 => quantize_as::<BlockQ8_1>(x, out),
        GgmlType::Q2_K => quantize_as::<BlockQ2K>(x, out),
        GgmlType::Q3_K => quantize_as::<BlockQ3K>(x, out),
        GgmlType::Q4_K => quantize_as::<BlockQ4K>(x, out),
        GgmlType::Q5_K => quantize_as::<BlockQ5K>(x, out),
        GgmlType::Q6_K => quantize_as::<BlockQ6K>(x, out),
        GgmlType::Q8_K => quantize_as::<BlockQ8K>(x, out),
        GgmlType::IQ4_NL => quantize_as::<BlockIq4Nl>(x, out),
        GgmlType::IQ4_XS => quantize_as::<BlockIq4Xs>(x, out),
        other => Err(QuantError::Unsupported(other)),
    }
}

/// Size of the aligned bounce buffer for misaligned [`quantize_row`] output, in `u64`s.
const BOUNCE_WORDS: usize = 256;

fn quantize_as<B: Quantize>(x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    if x.len() % B::BLOCK != 0 {
        return Err(QuantError::PartialInput { ty: B::TYPE, values: x.len(), block: B::BLOCK });
    }
    let block_bytes = core::mem::size_of::<B>();
    let blocks = x.len() / B::BLOCK;
    let bytes = blocks.saturating_mul(block_bytes);
    if out.len() != bytes {
        return Err(QuantError::OutputSize { ty: B::TYPE, bytes, out: out.len() });
    }
    if let Ok(blocks) = bytemuck::try_cast_slice_mut::<u8, B>(out) {
        B::quantize(x, blocks);
        return Ok(());
    }
    // Misaligned output: quantize through an 8-byte-aligned buffer, as many whole
    // blocks at a time as fit (every block type is at most 292 bytes).
    let misaligned = QuantError::Misaligned { ty: B::TYPE, align: core::mem::align_of::<B>() };
    let mut bounce = [0u64; BOUNCE_WORDS];
    let per_chunk = (BOUNCE_WORDS * 8 / block_bytes).max(1);
    if per_chunk * block_bytes > BOUNCE_WORDS * 8 {
        return Err(misaligned);
    }
    for (xs, os) in x.chunks(per_chunk * B::BLOCK).zip(out.chunks_mut(per_chunk * block_bytes)) {
        let tmp = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut bounce)[..os.len()];
        let blocks = bytemuck::try_cast_slice_mut::<u8, B>(&mut *tmp).map_err(|_| misaligned)?;
        B::quantize(xs, blocks);
        os.copy_from_slice(tmp);
    }
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
    fn quantize_row_checks_its_arguments() {
        let x = [0.5f32; 64];
        let mut out = [0u8; 41];
        assert_eq!(quantize_row(GgmlType::Q4_1, &x, &mut out[..40]), Ok(()));
        assert_eq!(
            quantize_row(GgmlType::Q4_1, &x[..63], &mut out[..40]),
            Err(QuantError::PartialInput { ty: GgmlType::Q4_1, values: 63, block: 32 })
        );
        assert_eq!(
            quantize_row(GgmlType::Q4_1, &x, &mut out),
            Err(QuantError::OutputSize { ty: GgmlType::Q4_1, bytes: 40, out: 41 })
        );
        assert_eq!(
            quantize_row(GgmlType::IQ2_XXS, &x[..0], &mut []),
            Err(QuantError::Unsupported(GgmlType::IQ2_XXS))
        );
        let msg = std::format!("{}", quantize_row(GgmlType::Q8_0, &x[..3], &mut []).unwrap_err());
        assert!(msg.contains("Q8_0") && msg.contains("32"), "{msg}");
        assert_eq!(quantize_row(GgmlType::Q6_K, &[], &mut []), Ok(()), "zero blocks");
    }

    /// Misaligned output gives the same bytes as aligned output, for every type (several
    /// bounce-buffer chunks for the 256-value formats).
    #[test]
    fn quantize_row_misaligned_output_is_the_same() {
        // Under miri (some 1000× slower) 8 super-blocks: still two bounce-buffer chunks of
        // Q8_K's 7.
        let blocks = if cfg!(miri) { 8 } else { 20 };
        let x = crate::quant::test_util::pseudo_random(blocks * 256, 7, 2.0);
        let all = (0..64).filter_map(GgmlType::from_id);
        for ty in all.filter(|t| t.is_supported()) {
            let n = ty.row_bytes(x.len() as u64).unwrap() as usize;
            let mut a = std::vec![0u32; n / 4 + 2];
            let mut b = a.clone();
            let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut a)[..n];
            assert_eq!(quantize_row(ty, &x, aligned), Ok(()), "{ty}");
            let shifted = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut b)[1..n + 1];
            assert_eq!(quantize_row(ty, &x, shifted), Ok(()), "{ty} misaligned");
            assert_eq!(aligned, shifted, "{ty}");
            // And the round trip through dequantize_row lands near the input.
            let mut y = std::vec![0.0f32; x.len()];
            assert_eq!(dequantize_row(ty, aligned, &mut y), Ok(()), "{ty}");
            let se: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
            let rmse = (se / x.len() as f32).sqrt();
            // Values in [-2, 2): Q2_K's four levels per 16 values give ~0.27.
            assert!(rmse < 0.35, "{ty}: rmse {rmse}");
        }
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
