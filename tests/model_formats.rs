//! Weight formats at the model level: a model whose matrices are any of the formats pagoda
//! has kernels for, or a mix of them (every llama.cpp preset mixes types per tensor), loads
//! and gives the logits of its F32 twin (the same weights, dequantized) up to the
//! activation rounding of the quantized matmuls; embeddings of any type are looked up by
//! dequantizing one row. A tensor of a type without kernels, or with rows that are not
//! whole blocks, is refused at load with an error naming the tensor and the type.

mod common;

use common::synthetic::SyntheticLlama;
use pagoda::core::ggml_type::GgmlType;
use pagoda::core::quant::{dequantize_row, quantize_row};
use pagoda::cpu::kernels::supported_weight_types;
use pagoda::cpu::model::{KvType, Session, SessionOptions};

/// 2 layers, dim 256 and FFN 512 (K-quant rows are 256-value super-blocks), vocab 64.
fn model() -> SyntheticLlama {
    SyntheticLlama::with_shape(2, 256, 512, 4, 2, 64)
}

/// Every 2-D tensor name of `m`.
fn matrices(m: &SyntheticLlama) -> Vec<String> {
    m.tensors().into_iter().filter(|(_, d, _)| d.len() == 2).map(|(n, _, _)| n).collect()
}

/// `m` with every typed tensor replaced by F32 values equal to its dequantized weights.
fn f32_twin(m: &SyntheticLlama) -> SyntheticLlama {
    let mut twin = m.clone();
    twin.types.clear();
    for (name, dims, values) in m.tensors() {
        let ty = m.type_of(&name);
        if ty == GgmlType::F32 {
            continue;
        }
        let cols = dims[0] as usize;
        let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; row_bytes];
        let mut deq = vec![0.0f32; values.len()];
        for (x, d) in values.chunks(cols).zip(deq.chunks_mut(cols)) {
            quantize_row(ty, x, &mut bytes).unwrap();
            // Aligned copy for the dequantizer.
            let words: Vec<u32> = bytes
                .chunks(4)
                .map(|c| {
                    let mut w = [0u8; 4];
                    w[..c.len()].copy_from_slice(c);
                    u32::from_le_bytes(w)
                })
                .collect();
            dequantize_row(ty, &bytemuck::cast_slice(&words)[..row_bytes], d).unwrap();
        }
        twin.set_tensor(&name, deq);
    }
    twin
}

fn logits(m: &SyntheticLlama) -> Vec<f32> {
    let model = m.load().unwrap_or_else(|e| panic!("load: {e}"));
    let opts = SessionOptions { n_ctx: 32, kv_type: KvType::F32, ..Default::default() };
    let mut s = Session::new(&model, opts).unwrap();
    s.eval(&[1, 7, 30, 12, 5, 44, 3]).unwrap()
}

/// The logits of `m` are those of its F32 twin within `tol` × their spread, and the twin's
/// logits are not all alike (so the comparison means something).
fn assert_close_to_twin(m: &SyntheticLlama, what: &str, tol: f32) {
    let got = logits(m);
    let want = logits(&f32_twin(m));
    let mean = want.iter().sum::<f32>() / want.len() as f32;
    let spread = (want.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / want.len() as f32).sqrt();
    assert!(spread > 1e-3, "{what}: the twin's logits are flat ({spread})");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("{what}: max |Δlogit| {worst:.5} (spread {spread:.4})");
    assert!(got.iter().all(|x| x.is_finite()), "{what}: non-finite logits");
    assert!(worst <= tol * spread, "{what}: max |Δlogit| {worst} > {tol} × spread {spread}");
}

#[test]
fn every_weight_format_runs_as_its_dequantized_f32_twin() {
    for ty in supported_weight_types().filter(|&t| t != GgmlType::F32) {
        let mut m = model();
        for name in matrices(&m) {
            m.set_type(&name, ty);
        }
        // 8-bit activations (Q8_*) cost more than f16/bf16 ones.
        let tol = match ty {
            GgmlType::F16 | GgmlType::BF16 => 0.02,
            _ => 0.1,
        };
        assert_close_to_twin(&m, &format!("all {ty}"), tol);
    }
}

#[test]
fn a_file_mixing_formats_per_tensor_runs_as_its_f32_twin() {
    let mut m = model();
    let plan = [
        ("token_embd", GgmlType::Q8_0),
        ("attn_q", GgmlType::Q4_K),
        ("attn_k", GgmlType::Q5_0),
        ("attn_v", GgmlType::Q6_K),
        ("attn_output", GgmlType::IQ4_NL),
        ("ffn_gate", GgmlType::Q2_K),
        ("ffn_up", GgmlType::Q3_K),
        ("ffn_down", GgmlType::IQ4_XS),
        ("output", GgmlType::BF16),
    ];
    for name in matrices(&m) {
        let (_, ty) = plan.iter().find(|(k, _)| name.contains(&format!("{k}.weight"))).unwrap();
        m.set_type(&name, *ty);
    }
    // Layer 1 differs from layer 0, as _M presets bump some layers.
    m.set_type("blk.1.attn_v.weight", GgmlType::Q5_1);
    m.set_type("blk.1.ffn_down.weight", GgmlType::Q5_K);
    assert_close_to_twin(&m, "mixed", 0.1);
}

#[test]
fn embeddings_of_every_format_are_looked_up_by_dequantizing_a_row() {
    for ty in supported_weight_types() {
        let mut m = model();
        m.set_type("token_embd.weight", ty);
        // Only the lookup is quantized: the twin's logits must be met to float rounding.
        assert_close_to_twin(&m, &format!("token_embd {ty}"), 1e-4);
    }
}

#[test]
fn a_tensor_of_a_type_without_kernels_is_refused_naming_the_tensor_and_type() {
    let mut m = model();
    m.set_type("blk.1.ffn_up.weight", GgmlType::IQ2_XXS);
    let err = m.load().map(|_| ()).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("blk.1.ffn_up.weight") && err.contains("IQ2_XXS"), "{err}");
}

#[test]
fn rows_that_are_not_whole_blocks_are_refused_at_load() {
    // dim 48: Q4_0 rows of 48 values are 1.5 blocks.
    let mut m = SyntheticLlama::with_shape(1, 48, 64, 2, 1, 16);
    m.set_type("blk.0.attn_q.weight", GgmlType::Q4_0);
    let err = m.load().map(|_| ()).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("Q4_0"), "{err}");
    // K-quants need 256-value rows: dim 64 is a quarter super-block.
    let mut m = SyntheticLlama::tiny();
    m.set_type("blk.0.ffn_gate.weight", GgmlType::Q4_K);
    let err = m.load().map(|_| ()).unwrap_err().to_string();
    eprintln!("{err}");
    assert!(err.contains("blk.0.ffn_gate.weight") && err.contains("Q4_K"), "{err}");
}
