//! `pagoda_cpu::quantize` against llama.cpp's `llama-quantize`: for every preset, the
//! output file is byte-identical (SHA-256) to what llama-quantize b11312 wrote from the
//! default model, and every tensor has the type llama.cpp chose
//! (tests/data/quantize/llamacpp.json, from scripts/gen_quantize_refs.sh). Plus the
//! failures: unknown types, requantizing without permission, output = input, and a run
//! that fails or is cancelled midway leaves neither the output nor a temporary file.

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::sha256::{sha256_file, sha256_hex};
use common::tempdir::TempDir;
use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::quantize::{
    plan, quantize, Preset, PresetError, QuantizeError, QuantizeOptions, TensorProgress,
};
use serde_json::Value;

fn refs() -> Value {
    let path = common::root().join("tests/data/quantize/llamacpp.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/gen_quantize_refs.sh)", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn input() -> ModelFile {
    ModelFile::open(common::model_path()).expect("the default model opens")
}

fn allow() -> QuantizeOptions {
    QuantizeOptions { allow_requantize: true, ..Default::default() }
}

fn continue_(_: &TensorProgress<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Quantizes the default model with `name` and compares the file with llama-quantize's.
fn matches_llama_quantize(name: &str) {
    let refs = refs();
    let expected = &refs["presets"][name];
    assert!(expected.is_object(), "no reference for {name}");
    let input = input();
    let preset = Preset::parse(name).unwrap();
    let dir = TempDir::new(&format!("quantize-{name}"));
    let out = dir.path("out.gguf");
    let mut lines = 0;
    let report = quantize(&input, &out, preset, &allow(), |_| {
        lines += 1;
        ControlFlow::Continue(())
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(lines, 272);

    // The types first: a difference there names the tensor.
    let written = ModelFile::open(&out).unwrap();
    let g = written.gguf();
    let got: Vec<(String, String)> =
        g.tensors().map(|t| (t.name().to_string(), t.ggml_type().name().to_string())).collect();
    let want: Vec<(String, String)> = refs["tensor_names"]
        .as_array()
        .unwrap()
        .iter()
        .zip(expected["types"].as_array().unwrap())
        .map(|(n, t)| (n.as_str().unwrap().to_string(), t.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, want, "{name}: tensor order or types differ from llama-quantize's");
    assert_eq!(report.file_bytes, expected["bytes"].as_u64().unwrap(), "{name}: file size");
    assert_eq!(std::fs::metadata(&out).unwrap().len(), report.file_bytes);
    assert_eq!(g.get_u32("general.file_type").unwrap(), preset.ftype());

    assert_eq!(
        sha256_file(&out),
        expected["sha256"].as_str().unwrap(),
        "{name}: the output differs from llama-quantize's (same types and size: tensor data)"
    );
    assert_eq!(dir.files(), ["out.gguf"], "{name}: a temporary file was left");
}

#[test]
fn q4_0_matches_llama_quantize() {
    matches_llama_quantize("Q4_0");
}
#[test]
fn q4_1_matches_llama_quantize() {
    matches_llama_quantize("Q4_1");
}
#[test]
fn q5_0_matches_llama_quantize() {
    matches_llama_quantize("Q5_0");
}
#[test]
fn q5_1_matches_llama_quantize() {
    matches_llama_quantize("Q5_1");
}
#[test]
fn q8_0_matches_llama_quantize() {
    matches_llama_quantize("Q8_0");
}
#[test]
fn q2_k_matches_llama_quantize() {
    matches_llama_quantize("Q2_K");
}
#[test]
fn q3_k_s_matches_llama_quantize() {
    matches_llama_quantize("Q3_K_S");
}
#[test]
fn q3_k_m_matches_llama_quantize() {
    matches_llama_quantize("Q3_K_M");
}
#[test]
fn q3_k_l_matches_llama_quantize() {
    matches_llama_quantize("Q3_K_L");
}
#[test]
fn q4_k_s_matches_llama_quantize() {
    matches_llama_quantize("Q4_K_S");
}
#[test]
fn q4_k_m_matches_llama_quantize() {
    matches_llama_quantize("Q4_K_M");
}
#[test]
fn q5_k_s_matches_llama_quantize() {
    matches_llama_quantize("Q5_K_S");
}
#[test]
fn q5_k_m_matches_llama_quantize() {
    matches_llama_quantize("Q5_K_M");
}
#[test]
fn q6_k_matches_llama_quantize() {
    matches_llama_quantize("Q6_K");
}
#[test]
fn iq4_nl_matches_llama_quantize() {
    matches_llama_quantize("IQ4_NL");
}
#[test]
fn iq4_xs_matches_llama_quantize() {
    matches_llama_quantize("IQ4_XS");
}
#[test]
fn f16_matches_llama_quantize() {
    matches_llama_quantize("F16");
}
#[test]
fn bf16_matches_llama_quantize() {
    matches_llama_quantize("BF16");
}

/// The per-tensor type choice alone, for every preset (no quantizer needed: this holds
/// even for formats pagoda-core cannot write yet).
#[test]
fn planned_types_match_llama_quantize_for_every_preset() {
    let refs = refs();
    let input = input();
    let g = input.gguf();
    let names: Vec<&str> =
        refs["tensor_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let presets = refs["presets"].as_object().unwrap();
    assert_eq!(presets.len(), 18);
    for (name, expected) in presets {
        let plan = plan(&g, Preset::parse(name).unwrap()).unwrap();
        let got: Vec<(&str, &str)> =
            plan.tensors.iter().map(|t| (t.input.name(), t.to.name())).collect();
        let want: Vec<(&str, &str)> = names
            .iter()
            .copied()
            .zip(expected["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn the_reference_input_is_the_default_model() {
    let refs = refs();
    assert_eq!(sha256_file(&common::model_path()), refs["input"]["sha256"].as_str().unwrap());
}

#[test]
fn sha256_helper_known_answers() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // 56 bytes: the length goes in a second padding block.
    assert_eq!(
        sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
    );
}

#[test]
fn unknown_type_is_named() {
    let e = Preset::parse("Q4_Z").unwrap_err();
    assert_eq!(e, PresetError::Unknown("Q4_Z".into()));
    let e = QuantizeError::from(e);
    assert!(e.to_string().contains("unknown quantization type 'Q4_Z'"), "{e}");
    let e = Preset::parse("IQ2_XXS").unwrap_err();
    assert!(e.to_string().contains("IQ2_XXS") && e.to_string().contains("not supported"), "{e}");
}

#[test]
fn requantizing_needs_permission_and_leaves_nothing() {
    let input = input();
    let dir = TempDir::new("quantize-requant");
    let out = dir.path("out.gguf");
    let e =
        quantize(&input, &out, Preset::Q8_0, &QuantizeOptions::default(), continue_).unwrap_err();
    match &e {
        QuantizeError::Requantize { tensor, from, to } => {
            assert_eq!(
                (tensor.as_str(), from.name(), to.name()),
                ("blk.0.attn_k.weight", "Q4_1", "Q8_0")
            )
        }
        e => panic!("expected Requantize, got {e:?}"),
    }
    assert!(e.to_string().contains("--allow-requantize"), "{e}");
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn output_equal_to_input_is_refused() {
    let dir = TempDir::new("quantize-same");
    let path = dir.path("model.gguf");
    std::fs::copy(common::model_path(), &path).unwrap();
    let input = ModelFile::open(&path).unwrap();
    let e = quantize(&input, &path, Preset::Q8_0, &allow(), continue_).unwrap_err();
    assert!(matches!(e, QuantizeError::SameFile { .. }), "{e:?}");
    assert!(e.to_string().contains("is the input file"), "{e}");
    // Also through another name for the same file.
    let alias = dir.dir().join(".").join("model.gguf");
    assert!(matches!(
        quantize(&input, &alias, Preset::Q8_0, &allow(), continue_),
        Err(QuantizeError::SameFile { .. })
    ));
    drop(input);
    assert_eq!(dir.files(), ["model.gguf"]);
    assert_eq!(sha256_file(&path), refs()["input"]["sha256"].as_str().unwrap());
}

#[test]
fn a_cancelled_run_leaves_the_old_output_and_no_temporary_file() {
    let input = input();
    let dir = TempDir::new("quantize-cancel");
    let out = dir.path("out.gguf");
    std::fs::write(&out, b"old contents").unwrap();
    // Stopped by the progress callback after a few tensors…
    let mut seen = 0;
    let e = quantize(&input, &out, Preset::Q5_0, &allow(), |_| {
        seen += 1;
        if seen == 5 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert!(matches!(e, QuantizeError::Cancelled), "{e:?}");
    assert_eq!(dir.files(), ["out.gguf"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
    // …or by the cancel flag (a SIGINT handler sets it).
    let cancel = Arc::new(AtomicBool::new(false));
    let opts = QuantizeOptions { cancel: Some(cancel.clone()), ..allow() };
    let e = quantize(&input, &out, Preset::Q5_0, &opts, |t| {
        if t.index == 10 {
            cancel.store(true, Ordering::Relaxed);
        }
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(matches!(e, QuantizeError::Cancelled), "{e:?}");
    assert_eq!(dir.files(), ["out.gguf"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"old contents");
}

#[test]
fn a_missing_output_directory_is_an_io_error_naming_it() {
    let input = input();
    let dir = TempDir::new("quantize-nodir");
    let out = dir.path("missing/out.gguf");
    let e = quantize(&input, &out, Preset::Q8_0, &allow(), continue_).unwrap_err();
    assert!(matches!(e, QuantizeError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("missing"), "{e}");
    assert!(dir.files().is_empty());
}

#[test]
fn the_output_runs_and_does_not_depend_on_the_thread_count() {
    let input = input();
    let dir = TempDir::new("quantize-threads");
    let one = dir.path("one.gguf");
    let opts = QuantizeOptions { threads: Some(1), ..allow() };
    quantize(&input, &one, Preset::Q8_0, &opts, continue_).unwrap();
    let three = dir.path("three.gguf");
    let opts = QuantizeOptions { threads: Some(3), ..allow() };
    quantize(&input, &three, Preset::Q8_0, &opts, continue_).unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&three).unwrap());

    let model = pagoda::Model::load(&one).unwrap();
    let opts = pagoda::Options::greedy().max_tokens(4);
    let text = model.generate("The capital of France is", &opts).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}
