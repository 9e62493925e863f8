//! Gemma 3 270M (Q4_K_M, `scripts/fetch-model.sh gemma3`) against llama.cpp b11312
//! (tests/data/llamacpp/gemma3.json, made by scripts/gen_gemma3_refs.sh), and its
//! sliding-window layers on the paged cache.

mod common;

use pagoda::cpu::kernels::gelu;

/// ggml's GELU table, bit for bit: the SHA-256 of the 65 536 f16 results that
/// scripts/gelu_table.c computes when compiled as ggml-cpu is (gcc -O3 -mfma).
#[test]
fn gelu_table_equals_ggml_cpu() {
    let bytes: Vec<u8> = gelu::table().iter().flat_map(|h| h.to_le_bytes()).collect();
    assert_eq!(
        common::sha256::sha256_hex(&bytes),
        "5372503d4d69aabb589feee6b59e80bf08cbcd71ffb6c43a8210622729ad32bf"
    );
    // √(2/π) written to f32 precision.
    assert_eq!(gelu::gelu_f32(1.0), {
        let (a, s) = (0.044715f32, (2.0f64 / std::f64::consts::PI).sqrt() as f32);
        0.5 * (1.0 + (s * (a * 1.0f32).mul_add(1.0, 1.0)).tanh())
    });
}
