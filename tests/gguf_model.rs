//! The GGUF reader against the real default model.

use std::path::Path;

use pagoda::core::ggml_type::GgmlType;
use pagoda::core::gguf::{Value, ValueType};
use pagoda::cpu::model_file::{workspace_model_path, ModelFile};

fn open_model() -> ModelFile {
    let path = workspace_model_path(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(
        path.exists(),
        "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
        path.display()
    );
    ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn header_and_metadata() {
    let model = open_model();
    let g = model.gguf();
    assert_eq!(g.version(), 3);
    assert_eq!(g.tensor_count(), 272);
    assert_eq!(g.metadata_len(), 33);
    assert_eq!(g.metadata().count(), 33);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(g.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert!(!g.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    let tokens = g.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens.elem_type(), ValueType::String);
    let first: Vec<&str> = tokens.iter_str().unwrap().take(3).collect();
    assert_eq!(first, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    assert_eq!(tokens.iter_str().unwrap().count(), 49152);
    let types = g.get_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.iter_i32().unwrap().count(), 49152);
    assert_eq!(g.get_array("tokenizer.ggml.merges").unwrap().iter_str().unwrap().count(), 48900);
    assert!(matches!(g.get("general.languages"), Some(Value::Array(a)) if a.len() == 1));
}

#[test]
fn tensors() {
    let model = open_model();
    let g = model.gguf();
    assert_eq!(g.tensors().count(), 272);
    let t = g.tensor("token_embd.weight").unwrap();
    assert_eq!(t.ggml_type(), GgmlType::Q8_0);
    assert_eq!(t.dims(), [576, 49152]);
    assert_eq!(t.data().len(), 30081024);
    let norm = g.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!(norm.try_cast::<f32>().unwrap().len(), 576);
}
