//! The GGUF reader against the real default model, checked against llama.cpp's view of
//! it (`tests/data/gguf/model_tensor_sizes.json`, provenance in the README there).

use std::path::Path;

use pagoda::core::ggml_type::GgmlType;
use pagoda::core::gguf::{Gguf, Value, ValueType};
use pagoda::cpu::model_file::{workspace_model_path, ModelFile, ModelFileError};
use serde_json::Value as Json;

fn open_model() -> ModelFile {
    let path = workspace_model_path(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        path.exists(),
        "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
        path.display()
    );
    ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn reference() -> Json {
    let text = include_str!("data/gguf/model_tensor_sizes.json");
    serde_json::from_str(text).expect("reference JSON parses")
}

#[test]
fn header_counts_match_reference() {
    let model = open_model();
    let g = model.gguf();
    let r = reference();
    let meta = &r["metadata"];
    assert_eq!(g.version() as u64, meta["GGUF.version"].as_u64().unwrap());
    assert_eq!(g.tensor_count() as u64, meta["GGUF.tensor_count"].as_u64().unwrap());
    assert_eq!(g.metadata_len() as u64, meta["GGUF.kv_count"].as_u64().unwrap());
    assert_eq!((g.version(), g.tensor_count(), g.metadata_len()), (3, 272, 33));
    assert_eq!(g.metadata().count(), 33);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.data_start() % 32, 0);
}

#[test]
fn every_metadata_value_matches_reference() {
    let model = open_model();
    let g = model.gguf();
    let r = reference();
    let meta = r["metadata"].as_object().unwrap();
    let mut checked = 0;
    for (key, value) in g.metadata() {
        let want = meta.get(key).unwrap_or_else(|| panic!("key {key} not in the reference"));
        match value {
            Value::Str(s) => {
                let w = want.as_str().unwrap();
                match w.strip_suffix("...") {
                    Some(prefix) => assert!(s.starts_with(prefix), "{key}"),
                    None => assert_eq!(s, w, "{key}"),
                }
            }
            Value::F32(x) => assert_eq!(x as f64, want.as_f64().unwrap(), "{key}"),
            Value::Bool(b) => assert_eq!(b, want.as_bool().unwrap(), "{key}"),
            Value::Array(a) => match want {
                Json::Array(items) => {
                    let got: Vec<&str> = a.iter_str().unwrap().collect();
                    let want: Vec<&str> = items.iter().map(|i| i.as_str().unwrap()).collect();
                    assert_eq!(got, want, "{key}");
                }
                Json::String(s) => assert_eq!(*s, format!("<array len {}>", a.len()), "{key}"),
                other => panic!("{key}: unexpected reference {other}"),
            },
            v => {
                let n = v.as_integer().unwrap_or_else(|| panic!("{key}: {v:?}"));
                assert_eq!(n, want.as_i64().unwrap() as i128, "{key}");
            }
        }
        checked += 1;
    }
    assert_eq!(checked, meta.keys().filter(|k| !k.starts_with("GGUF.")).count());
}

#[test]
fn typed_accessors_on_the_model() {
    let model = open_model();
    let g = model.gguf();
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(g.get_u64("llama.context_length").unwrap(), 8192);
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
    assert!(!g.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    assert_eq!(g.get_i32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!((tokens.len(), tokens.elem_type()), (49152, ValueType::String));
    let first: Vec<&str> = tokens.iter_str().unwrap().take(3).collect();
    assert_eq!(first, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert_eq!(tokens.iter_str().unwrap().count(), 49152);
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.elem_type(), ValueType::I32);
    assert_eq!(types.iter_i32().unwrap().count(), 49152);
    let merges = g.get_array("tokenizer.ggml.merges").unwrap();
    assert_eq!(merges.iter_str().unwrap().count(), 48900);
}

#[test]
fn every_tensor_matches_reference() {
    let model = open_model();
    let g = model.gguf();
    let r = reference();
    let want = r["tensors"].as_array().unwrap();
    assert_eq!(g.tensors().len(), want.len());
    let mut total = 0u64;
    for (t, w) in g.tensors().zip(want) {
        assert_eq!(t.name(), w["name"].as_str().unwrap());
        assert_eq!(t.ggml_type().name(), w["type"].as_str().unwrap(), "{}", t.name());
        let shape: Vec<u64> =
            w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(t.dims(), shape, "{}", t.name());
        assert_eq!(t.n_elements(), w["n_elements"].as_u64().unwrap(), "{}", t.name());
        assert_eq!(t.data().len() as u64, w["n_bytes"].as_u64().unwrap(), "{}", t.name());
        assert_eq!(g.tensor(t.name()).unwrap(), t, "lookup by name finds the same tensor");
        t.check_supported().unwrap();
        total += t.data().len() as u64;
    }
    assert_eq!(total, r["total_tensor_bytes"].as_u64().unwrap());

    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.ggml_type(), embd.dims(), embd.n_rows()),
        (GgmlType::Q8_0, &[576, 49152][..], 49152)
    );
    assert_eq!(embd.try_cast::<[u8; 34]>().unwrap().len(), 49152 * 18);
    let norm = g.tensor("output_norm.weight").unwrap();
    let w = norm.try_cast::<f32>().unwrap();
    assert_eq!(w.len(), 576);
    assert!(w.iter().all(|x| x.is_finite()));
    assert!(g.tensor("output.weight").is_err(), "embeddings are tied");
}

/// Truncating the real file anywhere before the end of its last tensor is an error.
#[test]
fn truncated_model_is_an_error() {
    let model = open_model();
    let bytes = model.bytes();
    let g = model.gguf();
    let data_end = g.tensors().map(|t| t.data().as_ptr() as usize + t.data().len()).max().unwrap()
        - bytes.as_ptr() as usize;
    let tokens_end = {
        let a = g.get_array("tokenizer.ggml.tokens").unwrap();
        a.raw_bytes().as_ptr() as usize + a.raw_bytes().len() - bytes.as_ptr() as usize
    };
    let mut cuts = vec![0, 3, 4, 7, 8, 16, 23, 24, 25, tokens_end - 1, tokens_end, data_end - 1];
    let data_start = g.data_start() as usize;
    cuts.extend([data_start - 1, data_start, data_start + 1]);
    for t in g.tensors() {
        let start = t.data().as_ptr() as usize - bytes.as_ptr() as usize;
        cuts.extend([start, start + t.data().len() - 1]);
    }
    // Random offsets (xorshift, fixed seed) over the header and over the whole file.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let range = if i % 2 == 0 { data_start } else { data_end };
        cuts.push((x % range as u64) as usize);
    }
    for cut in cuts {
        if cut >= data_end {
            continue;
        }
        let e = Gguf::parse(&bytes[..cut]).expect_err("truncated file parsed");
        assert!(!e.to_string().is_empty());
    }
}

/// Opens with `ModelFile::open` (mapped) and `ModelFile::read` (copied into memory).
type Opener = fn(&Path) -> Result<ModelFile, ModelFileError>;
const OPENERS: [(&str, Opener); 2] =
    [("open", |p| ModelFile::open(p)), ("read", |p| ModelFile::read(p))];

#[test]
fn open_errors_name_the_path() {
    let dir = std::env::temp_dir().join(format!("pagoda-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, open) in OPENERS {
        let missing = Path::new("/nonexistent/dir/model.gguf");
        let e = open(missing).unwrap_err();
        assert!(matches!(e, ModelFileError::Io { .. }), "{name}");
        assert!(e.to_string().starts_with("/nonexistent/dir/model.gguf: "), "{name}: {e}");
        let bad = dir.join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x01\x00\x00\x00").unwrap();
        let e = open(&bad).unwrap_err();
        assert!(matches!(e, ModelFileError::Gguf { .. }), "{name}");
        assert_eq!(e.path(), bad);
        assert!(e.to_string().contains("GGUF version 1 is not supported"), "{name}: {e}");
        let empty = dir.join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        let e = open(&empty).unwrap_err();
        assert!(matches!(e, ModelFileError::Gguf { .. }), "{name}: {e}");
        assert_eq!(e.path(), empty);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `read` (the model copied into memory) holds exactly the bytes `open` maps, and a
/// truncated copy of the model is refused by both with the same message.
#[test]
fn read_equals_open_and_refuses_truncated_files_alike() {
    let mapped = open_model();
    let read = ModelFile::read(mapped.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(read.bytes() == mapped.bytes(), "read and mapped bytes differ");
    assert_eq!(read.gguf().tensors().count(), mapped.gguf().tensors().count());
    let dir = std::env::temp_dir().join(format!("pagoda-gguf-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.gguf");
    let data_start = mapped.gguf().data_start() as usize;
    std::fs::write(&cut, &mapped.bytes()[..data_start + 1000]).unwrap();
    let a = ModelFile::open(&cut).unwrap_err().to_string();
    let b = ModelFile::read(&cut).unwrap_err().to_string();
    assert_eq!(a, b);
    assert!(a.contains("cut.gguf"), "{a}");
    std::fs::remove_dir_all(&dir).unwrap();
}
