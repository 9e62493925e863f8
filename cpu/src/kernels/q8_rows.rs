//! Activations quantized to Q8_0 for integer dot products, with what those kernels read
//! beside each block.

use pagoda_core::quant::BlockQ8_0;

use super::{KernelError, Kernels};

/// `x` quantized to Q8_0 blocks ([`Kernels::quantize_q8_0`]: llama.cpp's activation
/// quantizer, the same bytes at every level), plus per block its quant sum `Σ qs` (which
/// removes a weight or key offset from an integer dot product exactly) and its scale `d` as
/// f32. Kept as a scratch: [`Self::quantize`] reuses the buffers.
#[derive(Debug, Default)]
pub(crate) struct Q8Rows {
    /// `x.len() / 32` blocks, in `x`'s order.
    pub blocks: Vec<BlockQ8_0>,
    /// `Σ_i blocks[b].qs[i]`.
    pub sums: Vec<i32>,
    /// `blocks[b].d` as f32 (exact).
    pub scales: Vec<f32>,
}

impl Q8Rows {
    /// Quantizes `x` (a multiple of 32 floats, else [`KernelError`]) into `self`.
    pub(crate) fn quantize(&mut self, k: &Kernels, x: &[f32]) -> Result<(), KernelError> {
        self.blocks.clear();
        self.blocks.resize(x.len() / 32, bytemuck::Zeroable::zeroed());
        k.quantize_q8_0(x, &mut self.blocks)?;
        self.sums.clear();
        self.sums
            .extend(self.blocks.iter().map(|b| b.qs.iter().map(|&q| i32::from(q)).sum::<i32>()));
        self.scales.clear();
        self.scales.extend(self.blocks.iter().map(|b| b.d.to_f32()));
        Ok(())
    }
}
