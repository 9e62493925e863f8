//! Which float order the forward pass computes in (`--numerics`).
//!
//! - [`Numerics::Exact`]: llama.cpp's order in every kernel, so logits equal
//!   llama.cpp's bit for bit (docs/numerics.md); f16 pages go through the one-key-at-a-time
//!   kernel `paged_attention_f16`, or, for a sequence with at least 64 rows in the forward
//!   pass, llama.cpp's tiled kernel `paged_attention_f16_tiled` (llama.cpp chooses by the
//!   same count, so exact numerics depend on how a prompt is batched, as llama.cpp does).
//! - [`Numerics::Fast`] (the default): pagoda's own order where it is faster, with one guarantee llama.cpp
//!   does not give: **batch invariance**. A sequence's logits are bit-identical whether it
//!   runs alone or in any batch, with its prompt in chunks of any size, at any page placement
//!   and on any number of threads. Today: attention over every page format (f16 included)
//!   is the page-blocked kernel with f32 accumulation, its keys cut into ranges of
//!   `attention::ALIGNED_RANGE_TOKENS` (256) aligned at position 0 (`Split::Aligned`), whose
//!   partials are merged in order. At AVX-512 and AVX2, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
//!   IQ4_XS, Q3_K, Q4_K, Q5_K and Q6_K matmuls run on rows repacked at load in groups of 16
//!   ([`crate::kernels::repacked`]: one float multiply-add per block and cell, no horizontal
//!   sums; about 2× the exact kernels' prompt speed), and at AVX-512 so do F16 and BF16
//!   matmuls ([`crate::kernels::repacked_float`]: F16 weights widened exactly to f32 against
//!   f32 activations, one fma chain per cell over the columns in order; BF16 in `vdpbf16ps`
//!   pairs against activations rounded to bf16, as llama.cpp's BF16 does); the other
//!   formats, and every format at other levels, keep the exact kernels, whose per-row order
//!   never depended on the batch.

use core::fmt;
use core::str::FromStr;

/// The forward pass's float order: see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Numerics {
    /// llama.cpp's order, bit-identical logits.
    Exact,
    /// Faster, batch-invariant, not llama.cpp's bits (the default).
    #[default]
    Fast,
}

impl Numerics {
    /// Every mode, in `--numerics` order.
    pub const ALL: [Numerics; 2] = [Numerics::Exact, Numerics::Fast];

    /// The `--numerics` name.
    pub fn name(self) -> &'static str {
        match self {
            Numerics::Exact => "exact",
            Numerics::Fast => "fast",
        }
    }
}

impl fmt::Display for Numerics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--numerics` name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownNumerics(pub String);

impl fmt::Display for UnknownNumerics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown numerics '{}' (expected exact or fast)", self.0)
    }
}

impl std::error::Error for UnknownNumerics {}

impl FromStr for Numerics {
    type Err = UnknownNumerics;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Numerics::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| UnknownNumerics(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_named() {
        for n in Numerics::ALL {
            assert_eq!(n.name().parse::<Numerics>(), Ok(n));
        }
        let e = "quick".parse::<Numerics>().unwrap_err();
        assert_eq!(e.to_string(), "unknown numerics 'quick' (expected exact or fast)");
        assert_eq!(Numerics::default(), Numerics::Fast);
    }
}
