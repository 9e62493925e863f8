//! Arbitrary bytes (as lossy UTF-8 text) through the real default model's tokenizer:
//! encode and decode never panic, ids stay in the vocabulary, and with special parsing
//! off decode(encode(text)) == text whenever every byte of the text has a token
//! (SmolLM2's vocabulary lacks a few, which llama.cpp drops as well).
//!
//! The model is `$PAGODA_MODEL`, else `../models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (run from `fuzz/`); missing, the target aborts naming scripts/fetch-model.sh.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use pagoda_cpu::model_file::{workspace_model_path, ModelFile};
use pagoda_cpu::tokenizer::Tokenizer;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = workspace_model_path(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        assert!(
            path.exists(),
            "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
            path.display()
        );
        let model = ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        Tokenizer::from_gguf(&model.gguf()).unwrap_or_else(|e| panic!("{e}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let tok = tokenizer();
    let text = String::from_utf8_lossy(data);
    for parse_special in [false, true] {
        let ids = tok.encode(&text, true, parse_special);
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        let decoded = tok.decode(&ids);
        if !parse_special && text.bytes().all(|b| tok.byte_to_token(b).is_some()) {
            assert_eq!(decoded, text, "round trip of {text:?}");
        }
    }
    // Raw bytes as ids (in and out of range) through both decoders.
    let ids: Vec<u32> =
        data.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).collect();
    let mut dec = tok.stream_decoder();
    let mut streamed: String = ids.iter().map(|&id| dec.push(id)).collect();
    streamed.push_str(&dec.finish());
    assert_eq!(streamed, tok.decode(&ids));
});
