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
//! | matmul repacked (fast numerics: Q4/Q5/Q8_0, IQ4_NL/XS, Q3_K/Q4_K/Q5_K) | yes | `maddubs`, 8 rows/register | VNNI, 16 rows/register | scalar |
//! | matmul F16/BF16 repacked (fast numerics) | yes | scalar       | FMA / `vdpbf16ps`, 16 rows/register | scalar |
//! | matmul F32                     | pulp   | pulp                | pulp              | pulp            |
//! | `dot_f32`                      | pulp   | pulp                | pulp              | pulp            |
//! | `rmsnorm` (f64 sum, then scale)| scalar + pulp | scalar + pulp | scalar + pulp     | scalar + pulp   |
//! | `rope`                         | yes    | FMA                 | FMA               | yes             |
//! | `silu_mul`                     | yes    | yes                 | yes               | scalar          |
//!
//! Every level computes the same float operations in the same order as llama.cpp's x86
//! build, so results are bit-identical across levels (and with llama.cpp): quantized
//! activations (llama.cpp's x86 rounding, see [`Kernels::quantize_q8_1`]), the block dot
//! products (8 lanes, see `scalar::dot_q4_1`), `rmsnorm` and `silu_mul`. (`dot_f32` and
//! the F32 matmul are the exception: their sum order follows the vector width.)

mod activations;
mod error;
mod float;
pub mod gelu;
mod kquant;
mod level;
mod matmul;
mod matrix;
mod q8_rows;
pub(crate) use q8_rows::Q8Rows;
pub mod repacked;
pub mod repacked_float;
mod scalar;
pub mod silu;
mod table;
#[cfg(test)]
pub(crate) mod test_rng;
mod tinyblas;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod half_x86;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use activations::MatmulScratch;
pub use error::KernelError;
pub use kquant::TILED_MIN_TOKENS;
pub use level::{simd_level, SimdLevel};
pub use matrix::QuantMatrix;

use error::check_len;
use pagoda_core::ops::{rotate_pair, RopeTable};
use pagoda_core::quant::{BlockQ8_0, BlockQ8_1, QK};

/// Every weight type [`Kernels::matmul`] runs, at every level.
pub fn supported_weight_types() -> impl Iterator<Item = pagoda_core::ggml_type::GgmlType> {
    table::supported()
}

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

    /// [`matmul_multi`](Self::matmul_multi) in the order llama.cpp computes a batch of
    /// `n_tokens` tokens (exact numerics): the same per-row order, except K-quant matrices
    /// (Q2_K…Q6_K, IQ4_XS) in batches of at least [`TILED_MIN_TOKENS`] tokens, which take
    /// llama.cpp's tiled kernel's order (`kquant/tiled.rs`), and F16/BF16 matrices in
    /// batches of at least 2 tokens, which take llama.cpp's tinyBLAS order (`tinyblas.rs`)
    /// where every matrix has a multiple of 4 rows and of its step (16, 32) columns. So
    /// unlike `matmul_multi` a token's result depends on its batch's size, as llama.cpp's
    /// does.
    ///
    /// `repacked_by_llamacpp`: the matrices are ones llama.cpp repacks at load (Q4_K and
    /// Q2_K with a row count that is a multiple of 8, other than the token embedding; the
    /// caller knows which tensor it is): they take its repacked kernels' order at every
    /// batch size instead (`kquant/llama_repacked.rs`).
    pub fn matmul_multi_exact(
        &self,
        ws: &[QuantMatrix<'_>],
        x: &[f32],
        n_tokens: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut MatmulScratch,
        repacked_by_llamacpp: bool,
    ) -> Result<(), KernelError> {
        let order =
            if repacked_by_llamacpp { matmul::Order::LlamaRepacked } else { matmul::Order::Llama };
        matmul::matmul_multi_in(self, ws, x, n_tokens, outs, scratch, order)
    }

    /// [`matmul_multi_exact`](Self::matmul_multi_exact) over one matrix.
    pub fn matmul_exact(
        &self,
        w: &QuantMatrix<'_>,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
        repacked_by_llamacpp: bool,
    ) -> Result<(), KernelError> {
        let ws = core::slice::from_ref(w);
        self.matmul_multi_exact(ws, x, n_tokens, &mut [out], scratch, repacked_by_llamacpp)
    }

    /// [`matmul`](Self::matmul) on a repacked matrix, in fast numerics' float
    /// order ([`repacked`]: batch-invariant, not llama.cpp's bits).
    pub fn matmul_repacked(
        &self,
        w: &repacked::Repacked,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        repacked::matmul_repacked(self, w, x, n_tokens, out, &mut scratch.repacked)
    }

    /// [`matmul`](Self::matmul) on an F16 or BF16 matrix repacked for fast numerics
    /// ([`repacked_float`]: batch-invariant, not llama.cpp's bits).
    pub fn matmul_repacked_float(
        &self,
        w: &repacked_float::RepackedFloat,
        x: &[f32],
        n_tokens: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        repacked_float::matmul_repacked_float(self, w, x, n_tokens, out, &mut scratch.bf16)
    }

    /// [`matmul_repacked_float`](Self::matmul_repacked_float) of several matrices against
    /// the same `x` in one call (`outs[m]` gets `ws[m] · x`, the same bits as one call each):
    /// one parallel region for all. All matrices must have the same type and `cols`
    /// ([`KernelError::Incompatible`] otherwise).
    pub fn matmul_repacked_float_multi(
        &self,
        ws: &[&repacked_float::RepackedFloat],
        x: &[f32],
        n_tokens: usize,
        outs: &mut [&mut [f32]],
        scratch: &mut MatmulScratch,
    ) -> Result<(), KernelError> {
        repacked_float::matmul_repacked_float_multi(self, ws, x, n_tokens, outs, &mut scratch.bf16)
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
        // ggml's float order: f32 squares summed in f64 (in order), the mean rounded to
        // f32, `1 / sqrtf(mean + eps)`, then `(x · scale) · w`.
        let ss: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
        let mean = (ss / x.len() as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        float::run(self.level, float::ScaleMul { x, w, scale, out });
        Ok(())
    }

    /// RoPE on every head of `x` (`n_heads × head_dim`, heads contiguous) with `table`:
    /// the same bits as `pagoda_core::ops::rope_inplace` (llama.cpp's fused rotation, see
    /// `pagoda_core::ops::rotate_pair`), with the CPU's FMA instruction where the level
    /// has one.
    pub fn rope<const P: usize>(&self, x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.level, SimdLevel::Avx2 | SimdLevel::Avx512) {
            // SAFETY: a Kernels at these levels exists only after AVX2 + FMA were detected.
            return unsafe { rope_fma(x, head_dim, table) };
        }
        rope_body(x, head_dim, table)
    }

    /// [`rope`](Self::rope) in the NeoX pairing (`x[i]` with `x[i + pairs]`): the same bits as
    /// `pagoda_core::ops::rope_neox_inplace`.
    pub fn rope_neox<const P: usize>(&self, x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.level, SimdLevel::Avx2 | SimdLevel::Avx512) {
            // SAFETY: a Kernels at these levels exists only after AVX2 + FMA were detected.
            return unsafe { rope_neox_fma(x, head_dim, table) };
        }
        rope_neox_body(x, head_dim, table)
    }

    /// GeGLU's gate: `gate[i] = gelu(gate[i]) * up[i]` with ggml's GELU (tanh form, looked
    /// up in a table of every f16 input: `x` is rounded to f16, its GELU rounded to f16 and
    /// widened; `x ≤ -10` gives 0 and `x ≥ 10` gives `x`), as `ggml_vec_geglu_f32`. Errors if
    /// the lengths differ.
    pub fn gelu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
        check_len("up", gate.len(), up.len())?;
        gelu::gelu_mul(gate, up);
        Ok(())
    }

    /// SwiGLU's gate: `gate[i] = silu(gate[i]) * up[i]`, `silu(g) = g / (1 + e^-g)` with
    /// ggml's vectorized `e^x` ([`silu::exp`]); bit-identical at every level. Errors if the
    /// lengths differ.
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), KernelError> {
        check_len("up", gate.len(), up.len())?;
        silu::silu_mul(self.level, gate, up);
        Ok(())
    }
}

/// The rotation loop of [`Kernels::rope`]; `f32::mul_add` is one instruction where the
/// caller enables FMA (and a correct `fmaf` call otherwise).
#[inline(always)]
fn rope_body<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    if head_dim == 0 {
        return;
    }
    let pairs = table.pairs().min(head_dim / 2);
    let (cos, sin) = (&table.cos()[..pairs], &table.sin()[..pairs]);
    for head in x.chunks_exact_mut(head_dim) {
        for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
            let (y0, y1) = rotate_pair(head[2 * i], head[2 * i + 1], c, s, f32::mul_add);
            head[2 * i] = y0;
            head[2 * i + 1] = y1;
        }
    }
}

/// The rotation loop of [`Kernels::rope_neox`] (see [`rope_body`]).
#[inline(always)]
fn rope_neox_body<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    if head_dim == 0 {
        return;
    }
    let pairs = table.pairs().min(head_dim / 2);
    let (cos, sin) = (&table.cos()[..pairs], &table.sin()[..pairs]);
    for head in x.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(pairs);
        for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
            let (y0, y1) = rotate_pair(*a, *b, c, s, f32::mul_add);
            *a = y0;
            *b = y1;
        }
    }
}

/// # Safety
/// The CPU has FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_neox_fma<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    rope_neox_body(x, head_dim, table)
}

/// # Safety
/// The CPU has FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_fma<const P: usize>(x: &mut [f32], head_dim: usize, table: &RopeTable<P>) {
    rope_body(x, head_dim, table)
}
