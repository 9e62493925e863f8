//! pagoda's block formats against reference data from the `gguf` Python package
//! (tests/data/quant/, made by scripts/gen_quant_refs.py; provenance inside the files).
//!
//! - model_rows.json: rows of real tensors of the default model (Q4_1, Q8_0, F32).
//! - synthetic.json: every supported format; where the file has the `input` values,
//!   pagoda's `quantize` must also reproduce the reference bytes.
//!
//! All comparisons are bit-exact.

use pagoda::core::quant::{
    dequantize_row, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType, Quantize,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/quant/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (regenerate with scripts/gen_quant_refs.py)"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn hex_f32(s: &str) -> Vec<f32> {
    hex(s).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn ggml_type(name: &str) -> GgmlType {
    (0..64)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type name {name}"))
}

/// `bytes` copied into 8-byte-aligned storage (F32 and Q8_K blocks need 4).
fn aligned(bytes: &[u8]) -> Vec<u64> {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

fn quantize_as<B: Quantize>(x: &[f32]) -> Vec<u8> {
    let mut blocks = vec![B::zeroed(); x.len() / B::BLOCK];
    B::quantize(x, &mut blocks);
    bytemuck::cast_slice(&blocks).to_vec()
}

fn quantize_bytes(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => quantize_as::<f32>(x),
        GgmlType::F16 => quantize_as::<half::f16>(x),
        GgmlType::BF16 => quantize_as::<half::bf16>(x),
        GgmlType::Q4_0 => quantize_as::<BlockQ4_0>(x),
        GgmlType::Q4_1 => quantize_as::<BlockQ4_1>(x),
        GgmlType::Q5_0 => quantize_as::<BlockQ5_0>(x),
        GgmlType::Q5_1 => quantize_as::<BlockQ5_1>(x),
        GgmlType::Q8_0 => quantize_as::<BlockQ8_0>(x),
        GgmlType::Q8_1 => quantize_as::<BlockQ8_1>(x),
        GgmlType::Q4_K => quantize_as::<BlockQ4K>(x),
        GgmlType::Q5_K => quantize_as::<BlockQ5K>(x),
        GgmlType::Q6_K => quantize_as::<BlockQ6K>(x),
        GgmlType::Q8_K => quantize_as::<BlockQ8K>(x),
        other => panic!("no quantizer for {other}"),
    }
}

/// Checks every case of `file`; returns the types covered.
fn check_file(file: &str) -> Vec<String> {
    let doc = load(file);
    let cases = doc["cases"].as_array().expect("cases array");
    assert!(!cases.is_empty(), "{file}: no cases");
    let mut types = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let ty = ggml_type(case["type"].as_str().unwrap());
        let bytes = hex(case["bytes"].as_str().unwrap());
        let want = hex_f32(case["dequantized"].as_str().unwrap());

        let words = aligned(&bytes);
        let bytes_aligned = &bytemuck::cast_slice::<u64, u8>(&words)[..bytes.len()];
        let mut got = vec![f32::NAN; want.len()];
        dequantize_row(ty, bytes_aligned, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bad: Vec<_> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "{file} / {name}: dequantization differs at (index, (got, want)) {bad:?}"
        );

        if let Some(input) = case.get("input").and_then(Value::as_str) {
            let x = hex_f32(input);
            let ours = quantize_bytes(ty, &x);
            assert_eq!(ours.len(), bytes.len(), "{name}: quantized length");
            if let Some(i) = ours.iter().zip(&bytes).position(|(a, b)| a != b) {
                let (bs, _) = ty.geometry().unwrap();
                let block_bytes = ty.type_size().unwrap();
                let blk = i / block_bytes;
                panic!(
                    "{file} / {name}: quantized bytes differ first at byte {i} (block {blk}, \
                     values {}..{}): ours {:02x?} reference {:02x?}",
                    blk * bs,
                    (blk + 1) * bs,
                    &ours[blk * block_bytes..(blk + 1) * block_bytes],
                    &bytes[blk * block_bytes..(blk + 1) * block_bytes],
                );
            }
        }
        types.push(ty.name().to_string());
    }
    types
}

#[test]
fn model_rows_match_gguf_dequantization() {
    let mut types = check_file("model_rows.json");
    types.sort();
    types.dedup();
    assert_eq!(types, ["F32", "Q4_1", "Q8_0"], "every tensor type of the default model");
}

#[test]
fn synthetic_data_matches_reference_quantize_and_dequantize() {
    let mut types = check_file("synthetic.json");
    types.sort();
    types.dedup();
    let mut want: Vec<_> = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1"]
        .into_iter()
        .chain(["Q4_K", "Q5_K", "Q6_K", "Q8_K"])
        .collect();
    want.sort();
    assert_eq!(types, want);
}
