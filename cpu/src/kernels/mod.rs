//! SIMD kernels with run-time dispatch, and the quantized matmul.
//!
//! A [`Kernels`] value is a proof that its [`SimdLevel`] runs on this CPU: it is made by
//! [`Kernels::detect`] (the level of [`simd_level`], i.e. `PAGODA_SIMD` or the widest
//! available) or [`Kernels::new`] (an explicit level, refused if unavailable). Every
//! method is safe and validates its arguments' shapes, returning [`KernelError`] on a
//! mismatch; the `unsafe` SIMD code sits behind that one check.
//!
//! | kernel                         | scalar | AVX2                | AVX-512           | NEON            |
//! |--------------------------------|--------|---------------------|-------------------|-----------------|
//! | f32 → Q8_0 / Q8_1 activations  | yes    | yes                 | yes               | scalar          |
//! | matmul Q4_1 (× Q8_1)           | yes    | `maddubs`           | VNNI `vpdpbusd`   | `vmull_s8`      |
//! | matmul Q4_0, Q8_0 (× Q8_0)     | yes    | `maddubs`           | VNNI `vpdpbusd`   | `vmull_s8`      |
//! | matmul F32                     | pulp   | pulp                | pulp              | pulp            |
//! | `dot_f32`, `rmsnorm`           | pulp   | pulp                | pulp              | pulp            |
//! | `silu_mul`                     | scalar | scalar              | scalar            | scalar          |
//!
//! Quantized activations are byte-identical at every level (llama.cpp's x86 rounding,
//! see [`Kernels::quantize_q8_1`]); dot products agree to float rounding (the order of
//! the float sums differs by level; scalar and NEON agree exactly).

mod activations;
mod error;
mod float;
mod level;
mod matmul;
mod matrix;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use activations::MatmulScratch;
pub use error::KernelError;
pub use level::{simd_level, SimdLevel};
pub use matrix::QuantMatrix;

use error::check_len;
use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

/// The kernels at one SIMD level this CPU supports. Cheap to copy; resolve once at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    level: SimdLevel,
}

impl Kernels {
    /// The kernels at [`simd_level`] (`PAGODA_SIMD`, else the widest available).
    pub fn detect() -> Self {
        Kernels { level: simd_level() }
    }

    /// The kernels at `level`, or [`KernelError::LevelUnavailable`] if this CPU lacks it.
    pub fn new(level: SimdLevel) -> Result<Self, KernelError> {
        if level.is_available() {
            Ok(Kernels { level })
        } else {
            Err(KernelError::LevelUnavailable(level))
        }
    }

    /// The level these kernels run at.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Quantize activations to Q8_0: `x.len() == 32 * out.len()`.
    ///
    /// Per block: `d = amax / 127`, `q = round_half_even(x * (127 / amax))` (0 when
    /// `amax == 0`) — what llama.cpp runs on x86, byte-identical at every level for
    /// finite input (non-finite input gives unspecified quants).
    pub fn quantize_q8_0(&self, x: &[f32], out: &mut [BlockQ8_0]) -> Result<(), KernelError> {
        check_len("x", out.len().checked_mul(QK).ok_or(KernelError::Overflow)?, x.len())?;
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this Kernels exists at Avx512 only after run-time detection.
            SimdLevel::Avx512 => unsafe { avx512::quantize_q8_0(x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this Kernels exists at Avx2 only after run-time detection.
            SimdLevel::Avx2 => unsafe { avx2::quantize_q8_0(x, out) },
            _ => scalar::quantize_q8_0(x, out),
        }
        Ok(())
    }

    /// Quantize activations to Q8_1: `x.len() == 32 * out.len()`. As
    /// [`quantize_q8_0`](Self::quantize_q8_0), plus `s = f16(d * sum(q))`.
    pub fn quantize_q8_1(&self, x: &[f32], out: &mut [BlockQ8_1]) -> Result<(), KernelError> {
        check_len("x", out.len().checked_mul(QK).ok_or(KernelError::Overflow)?, x.len())?;
        match self.level {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this Kernels exists at Avx512 only after run-time detection.
            SimdLevel::Avx512 => unsafe { avx512::quantize_q8_1(x, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this Kernels exists at Avx2 only after run-time detection.
            SimdLevel::Avx2 => unsafe { avx2::quantize_q8_1(x, out) },
            _ => scalar::quantize_q8_1(x, out),
        }
        Ok(())
    }

    /// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n_tokens` tokens:
    ///
    /// ```text
    /// x:   n_tokens × w.cols()  (row-major)      out: n_tokens × w.rows()  (row-major)
    /// ```
    ///
    /// Quantized weights pair with activations quantized once per call (Q4_1 with Q8_1,
    /// Q4_0 and Q8_0 with Q8_0, as llama.cpp does); F32 weights use f32 dot products.
    /// Rows are split over the current rayon pool; every weight block is read once per
    /// call for all tokens. Errors if `x` or `out` do not match the shape.
    pub fn matmul(
        &self,
        w: &QuantMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        matmul::matmul(self, w, x, n_tokens, out, scratch)
    }

    /// Several matrices against the same `x` in one call: `outs[m]` gets
    /// `ws[m] · x` (`n_tokens × ws[m].rows()`), as [`matmul`](Self::matmul) would, but the
    /// activations are quantized once and all rows share one parallel region (e.g. the
    /// Q, K, V projections, or FFN gate and up). All matrices must have the same type and
    /// `cols` ([`KernelError::Incompatible`] otherwise).
    pub fn matmul_multi(
        &self,
        ws: &[QuantMatrix<'_>],
        x: &[f32],
        n_tokens: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        matmul::matmul_multi(self, ws, x, n_tokens, outs, scratch)
    }

    /// `Σ a[i]·b[i]`; errors if the lengths differ.
    pub fn dot_f32(&self, a: &[f32], b: &[f32]) -> Result<f32, KernelError> {
        check_len("b", a.len(), b.len())?;
        Ok(float::run(self.level, float::Dot { a, b }))
    }

    /// RMSNorm: `out[i] = x[i] / sqrt(mean(x²) + eps) * w[i]`; all three the same length.
    pub fn rmsnorm(
        &self,
        x: &[f32],
        w: &[f32],
        eps: f32,
        out: &mut [f32],
    ) -> Result<(), KernelError> {
        check_len("w", x.len(), w.len())?;
        check_len("out", x.len(), out.len())?;
        if x.is_empty() {
            return Ok(());
        }
        let ss = float::run(self.level, float::Dot { a: x, b: x });
        let scale = 1.0 / (ss / x.len() as f32 + eps).sqrt();
        float::run(self.level, float::ScaleMul { x, w, scale, out });
        Ok(())
    }

    /// SwiGLU's gate: `gate[i] = silu(gate[i]) * up[i]`, `silu(g) = g / (1 + e^-g)`;
    /// errors if the lengths differ. (Scalar at every level for now.)
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
        check_len("up", gate.len(), up.len())?;
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        Ok(())
    }
}
