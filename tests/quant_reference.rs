//! pagoda's block formats against reference data from the `gguf` Python package
//! (tests/data/quant/, made by scripts/gen_quant_refs.py; provenance inside the files).
//!
//! - model_rows.json: rows of real tensors of the default model (Q4_1, Q8_0, F32).
//! - synthetic.json: every supported format; where the file has the `input` values,
//!   pagoda's `quantize` must also reproduce the reference bytes (the K-quants and IQ4
//!   formats are random blocks, dequantization only: the gguf package cannot quantize
//!   them).
//! - llamacpp_quantize.json (scripts/gen_llamacpp_quant_refs.py): llama.cpp's own C
//!   quantizers (`ggml_quantize_chunk` without an importance matrix, as llama-quantize
//!   calls it) on rows with zeros, tiny, large, constant and one-signed values, for
//!   every type pagoda can write; pagoda must reproduce every byte, and ggml's
//!   dequantization where the file records it.
//!
//! All comparisons are bit-exact.

use pagoda::core::quant::{
    dequantize_row, quantize_row, BlockIq4Nl, BlockIq4Xs, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0, BlockQ8_1, GgmlType,
    Quantize,
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
        GgmlType::Q2_K => quantize_as::<BlockQ2K>(x),
        GgmlType::Q3_K => quantize_as::<BlockQ3K>(x),
        GgmlType::Q4_K => quantize_as::<BlockQ4K>(x),
        GgmlType::Q5_K => quantize_as::<BlockQ5K>(x),
        GgmlType::Q6_K => quantize_as::<BlockQ6K>(x),
        GgmlType::Q8_K => quantize_as::<BlockQ8K>(x),
        GgmlType::IQ4_NL => quantize_as::<BlockIq4Nl>(x),
        GgmlType::IQ4_XS => quantize_as::<BlockIq4Xs>(x),
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
        .chain(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ4_NL", "IQ4_XS"])
        .collect();
    want.sort();
    assert_eq!(types, want);
}

/// The first differing block of two quantized byte strings, for failure messages.
fn first_difference(ty: GgmlType, ours: &[u8], want: &[u8]) -> Option<String> {
    if ours.len() != want.len() {
        return Some(format!("length {} vs {}", ours.len(), want.len()));
    }
    let i = ours.iter().zip(want).position(|(a, b)| a != b)?;
    let bb = ty.type_size().unwrap();
    let blk = i / bb;
    Some(format!(
        "first at byte {i} (block {blk}): ours {:02x?} llama.cpp {:02x?}",
        &ours[blk * bb..(blk + 1) * bb],
        &want[blk * bb..(blk + 1) * bb]
    ))
}

#[test]
fn llamacpp_quantize_bytes_are_reproduced() {
    let file = "llamacpp_quantize.json";
    let doc = load(file);
    let inputs: std::collections::HashMap<&str, Vec<f32>> = doc["inputs"]
        .as_array()
        .expect("inputs array")
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), hex_f32(i["values"].as_str().unwrap())))
        .collect();
    let cases = doc["cases"].as_array().expect("cases array");
    let mut failures = Vec::new();
    let mut types = Vec::new();
    let mut dequantized = 0;
    for case in cases {
        let ty = ggml_type(case["type"].as_str().unwrap());
        let input = case["input"].as_str().unwrap();
        let name = format!("{ty} / {input}");
        let x = &inputs[input];
        let want = hex(case["bytes"].as_str().unwrap());

        // The typed path and the run-time dispatch must both give llama.cpp's bytes.
        let typed = quantize_bytes(ty, x);
        if let Some(d) = first_difference(ty, &typed, &want) {
            failures.push(format!("{name}: Quantize differs: {d}"));
        }
        let mut row = vec![0u8; want.len()];
        match quantize_row(ty, x, &mut row) {
            Ok(()) => {
                if let Some(d) = first_difference(ty, &row, &want) {
                    failures.push(format!("{name}: quantize_row differs: {d}"));
                }
            }
            Err(e) => failures.push(format!("{name}: quantize_row: {e}")),
        }

        if let Some(values) = case.get("dequantized").and_then(Value::as_str) {
            dequantized += 1;
            let want_y = hex_f32(values);
            let words = aligned(&want);
            let bytes = &bytemuck::cast_slice::<u64, u8>(&words)[..want.len()];
            let mut y = vec![0.0f32; x.len()];
            dequantize_row(ty, bytes, &mut y).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(i) = y.iter().zip(&want_y).position(|(a, b)| a.to_bits() != b.to_bits()) {
                failures.push(format!(
                    "{name}: dequantization differs at {i}: {:e} vs ggml {:e}",
                    y[i], want_y[i]
                ));
            }
        }
        types.push(ty.name().to_string());
    }
    assert!(failures.is_empty(), "{file}: {} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(dequantized >= 14 * 4, "{file}: only {dequantized} cases with dequantized values");
    types.sort();
    types.dedup();
    let mut want: Vec<_> = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
        .into_iter()
        .chain(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"])
        .collect();
    want.sort();
    assert_eq!(types, want, "{file}: every type llama-quantize writes that pagoda supports");
}
