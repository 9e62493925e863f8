//! The byte-level BPE tokenizer on the real default model (SmolLM2, `pre = smollm`),
//! against llama.cpp's ids.

use std::path::Path;
use std::sync::OnceLock;

use pagoda::cpu::model_file::{workspace_model_path, ModelFile};
use pagoda::cpu::tokenizer::{TokenType, Tokenizer, TokenizerData, TokenizerError, TokenizerKind};
use proptest::prelude::*;
use serde_json::Value;

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path = workspace_model_path(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(
            path.exists(),
            "model file {} is missing: run scripts/fetch-model.sh (or set PAGODA_MODEL)",
            path.display()
        );
        let model = ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        Tokenizer::from_gguf(&model.gguf()).unwrap_or_else(|e| panic!("{e}"))
    })
}

#[test]
fn every_llama_cpp_reference_case_matches() {
    let tok = tokenizer();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tokenizer/tokenize_dev.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 21);
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let parse_special = case["parse_special"].as_bool().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        // llama-tokenize ran with --no-bos; the model's add_bos_token is false anyway.
        let got = tok.encode(text, true, parse_special);
        if got != want {
            mismatches.push(format!(
                "{text:?} (parse_special={parse_special}):\n  got  {got:?}\n  want {want:?}"
            ));
        }
        assert_eq!(tok.decode(&got), text, "decode of {text:?}");
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn metadata_of_the_default_model() {
    let tok = tokenizer();
    assert_eq!(tok.kind(), TokenizerKind::BytePairBpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert_eq!(tok.eot(), Some(2), "<|im_end|>");
    assert!(!tok.add_bos() && !tok.add_eos());
    assert!(tok.is_eog(0) && tok.is_eog(2), "<|endoftext|> and <|im_end|> end generation");
    assert!(!tok.is_eog(1) && !tok.is_eog(198));
    assert_eq!(tok.eog_ids(), [0, 2]);
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_text(198), Some("Ċ"));
    assert_eq!(tok.token_type(1), Some(TokenType::Control));
    assert_eq!(tok.token_type(198), Some(TokenType::Normal));
    assert_eq!(tok.token_type(49152), None);
}

#[test]
fn pieces_render_bytes_and_control_text() {
    let tok = tokenizer();
    assert_eq!(tok.token_to_bytes(198), Some(&b"\n"[..]));
    assert_eq!(tok.token_to_bytes(905), Some(&b" world"[..]));
    assert_eq!(tok.token_to_bytes(1), Some(&b"<|im_start|>"[..]));
    assert_eq!(tok.token_to_bytes(49152), None);
    assert_eq!(tok.decode(&[19556, 49152, 905]), "Hello\u{FFFD} world");
}

#[test]
fn stream_decoder_holds_split_characters() {
    let tok = tokenizer();
    // "😀" is split by byte-level BPE into several tokens.
    let ids = tok.encode("emoji 😀🎉👍 日本語", false, false);
    let mut dec = tok.stream_decoder();
    let mut text = String::new();
    let mut held_somewhere = false;
    for &id in &ids {
        let part = dec.push(id);
        assert!(!part.contains('\u{FFFD}'), "no replacement for a character completed later");
        held_somewhere |= dec.has_pending();
        text.push_str(&part);
    }
    text.push_str(&dec.finish());
    assert!(held_somewhere, "the emoji tokens end mid-character");
    assert_eq!(text, "emoji 😀🎉👍 日本語");

    // A dangling lead byte at the end comes out as U+FFFD; an invalid byte at once.
    let lead = tok.byte_to_token(0xF0).expect("a token for the lead byte 0xF0");
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(lead), "");
    assert_eq!(dec.push(19556), "\u{FFFD}Hello");
    assert_eq!(dec.push(lead), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(dec.push(u32::MAX), "\u{FFFD}");
}

#[test]
fn unencodable_bytes_are_dropped() {
    let tok = tokenizer();
    let missing: Vec<u8> = (0..=255u8).filter(|&b| tok.byte_to_token(b).is_none()).collect();
    assert_eq!(
        missing,
        [
            0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, 0xF5, 0xF6, 0xF7, 0xF8,
            0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF
        ]
    );
    // llama.cpp gives no id for U+0004; the text around it is unaffected.
    assert_eq!(
        tok.encode("a\u{4}b", false, false),
        [tok.encode("a", false, false), tok.encode("b", false, false)].concat()
    );
    // U+40000 = F1 80 80 80: the lead byte is lost, the continuation bytes remain.
    assert_eq!(tok.decode(&tok.encode("\u{40000}", false, false)), "\u{FFFD}\u{FFFD}\u{FFFD}");
    assert_eq!(tok.byte_to_token(b'\n'), Some(198));
}

#[test]
fn add_special_follows_the_model_flags() {
    let tok = tokenizer();
    // SmolLM2: add_bos_token = false, add_eos_token absent.
    assert_eq!(tok.encode("Hi", true, true), tok.encode("Hi", false, true));
}

#[test]
fn bad_metadata_is_a_clear_error() {
    let base = TokenizerData {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        merges: Some(vec!["a b".into()]),
        ..Default::default()
    };
    let ok = Tokenizer::from_data(base.clone()).unwrap();
    assert_eq!(ok.encode("ab", false, false), [2]);

    let err = Tokenizer::from_data(TokenizerData { pre: Some("mystery".into()), ..base.clone() })
        .unwrap_err();
    assert_eq!(err, TokenizerError::UnknownPre("mystery".into()));
    assert!(err.to_string().contains("mystery"));
    let err = Tokenizer::from_data(TokenizerData { pre: None, ..base.clone() }).unwrap_err();
    assert_eq!(err, TokenizerError::MissingKey("tokenizer.ggml.pre"));
    let err =
        Tokenizer::from_data(TokenizerData { model: "bert".into(), ..base.clone() }).unwrap_err();
    assert_eq!(err, TokenizerError::UnknownModel("bert".into()));
    let err = Tokenizer::from_data(TokenizerData { token_types: Some(vec![1]), ..base.clone() })
        .unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::LengthMismatch { key: "tokenizer.ggml.token_type", len: 1, n_tokens: 3 }
    ));
    let err = Tokenizer::from_data(TokenizerData { eos: Some(3), ..base.clone() }).unwrap_err();
    assert!(matches!(err, TokenizerError::SpecialIdOutOfRange { id: 3, .. }), "{err}");
    let err = Tokenizer::from_data(TokenizerData { tokens: vec![], ..base }).unwrap_err();
    assert_eq!(err, TokenizerError::BadVocabSize(0));
}

#[test]
fn llama3_pre_tokenizer_and_whole_word_lookup() {
    // A toy vocabulary with Llama 3 rules: "hello" is an entry, so it is one
    // token even though no merge builds it (ignore_merges); digits go in threes.
    let mut tokens: Vec<String> =
        ["h", "e", "l", "o", "1", "2", "3", "4", "Ġ", "hello", "12", "123", "he"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    tokens.push("<|eot_id|>".into());
    let tok = Tokenizer::from_data(TokenizerData {
        model: "gpt2".into(),
        pre: Some("llama-bpe".into()),
        tokens,
        merges: Some(vec!["h e".into(), "1 2".into(), "12 3".into()]),
        bos: Some(13),
        eos: Some(13),
        ..Default::default()
    })
    .unwrap();
    assert!(tok.add_bos(), "llama-bpe defaults add_bos to true");
    assert_eq!(tok.encode("hello", false, false), [9]);
    assert_eq!(tok.encode("hell", false, false), [12, 2, 2]);
    assert_eq!(tok.encode("1234", true, false), [13, 11, 7]);
    assert_eq!(tok.eot(), Some(13));
    assert!(tok.is_eog(13));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_inverts_encode_without_special_parsing(s in "\\PC{0,40}|[ \\t\\n a-z<|>_0-9]{0,40}|.{0,12}") {
        let tok = tokenizer();
        // Bytes without a token are dropped (as by llama.cpp): see `unencodable_bytes_are_dropped`.
        prop_assume!(s.bytes().all(|b| tok.byte_to_token(b).is_some()));
        let ids = tok.encode(&s, false, false);
        prop_assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        prop_assert_eq!(tok.decode(&ids), s);
    }

    #[test]
    fn stream_decoding_equals_decode(s in "\\PC{0,30}", cut in any::<proptest::sample::Index>()) {
        let tok = tokenizer();
        let mut ids = tok.encode(&s, false, true);
        // Also drop one token, which may leave a broken character behind.
        if !ids.is_empty() {
            ids.remove(cut.index(ids.len()));
        }
        let mut dec = tok.stream_decoder();
        let mut streamed: String = ids.iter().map(|&id| dec.push(id)).collect();
        streamed.push_str(&dec.finish());
        prop_assert_eq!(streamed, tok.decode(&ids));
    }
}

#[test]
fn pre_tokenizers_match_llama_cpp() {
    // llama.cpp's ids for the default model's vocabulary under each supported `pre`
    // (made by scripts/gen_bpe_pre_reference.py).
    let path = workspace_model_path(Path::new(env!("CARGO_MANIFEST_DIR")));
    let model =
        ModelFile::open(&path).unwrap_or_else(|e| panic!("{e} (run scripts/fetch-model.sh)"));
    let data = TokenizerData::from_gguf(&model.gguf()).unwrap();
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tokenizer/bpe_pre_llamacpp.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let texts: Vec<&str> =
        doc["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let by_pre = doc["ids"].as_object().unwrap();
    assert_eq!(by_pre.len(), 3);
    let mut mismatches = Vec::new();
    for (pre, cases) in by_pre {
        let tok =
            Tokenizer::from_data(TokenizerData { pre: Some(pre.clone()), ..data.clone() }).unwrap();
        let cases = cases.as_array().unwrap();
        assert_eq!(cases.len(), texts.len());
        for (text, want) in texts.iter().zip(cases) {
            let want: Vec<u32> =
                want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, false, false);
            if got != want {
                mismatches.push(format!("pre {pre}, {text:?}:\n  got  {got:?}\n  want {want:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
