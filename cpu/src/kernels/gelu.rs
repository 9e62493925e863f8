//! GELU (tanh form) as ggml computes it on the CPU: through a table of every f16 input.
//!
//! ```text
//! gelu(x) = 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²)))
//! table[h] = f16(gelu(f32(h)))                for each of the 65 536 f16 bit patterns h
//! geglu(x, g) = 0              if x ≤ -10
//!             = x · g          if x ≥ 10
//!             = f32(table[f16(x)]) · g   otherwise          (ggml_vec_geglu_f32)
//! ```
//!
//! The table is built once, on first use, with the rounding of llama.cpp's x86 build: GCC
//! contracts `1 + A·x·x` into one fused multiply-add, `fma(A·x, x, 1)`, and `tanhf` is the C
//! library's (Rust's `f32::tanh` calls it). `tests/kernels_float.rs` pins the table's SHA-256
//! to the one a C program compiled as ggml-cpu is (gcc -O3 -mfma) builds.

use std::sync::OnceLock;

use half::f16;

const GELU_COEF_A: f32 = 0.044715;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// `ggml_gelu_f32`, contracted as GCC contracts it under `-mfma`.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (GELU_COEF_A * x).mul_add(x, 1.0)).tanh())
}

/// ggml's `ggml_table_gelu_f16`: the f16 bits of [`gelu_f32`] at every f16 input, indexed by
/// the input's bits.
pub fn table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|h| f16::from_f32(gelu_f32(f16::from_bits(h).to_f32())).to_bits())
            .collect()
    })
}

/// `gate[i] = geglu(gate[i], up[i])` (see the module docs); lengths already checked equal.
pub(crate) fn gelu_mul(gate: &mut [f32], up: &[f32]) {
    let t = table();
    for (x, &g) in gate.iter_mut().zip(up) {
        *x = if *x <= -10.0 {
            0.0
        } else if *x >= 10.0 {
            *x * g
        } else {
            f16::from_bits(t[f16::from_f32(*x).to_bits() as usize]).to_f32() * g
        };
    }
}
