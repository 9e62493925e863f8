//! The SentencePiece path on a small vocabulary (tests/data/tokenizer/sp_tiny.gguf)
//! against the `sentencepiece` Python package's ids (sp_expected.json); both made by
//! scripts/gen_sp_vocab.py.

use pagoda::core::gguf::Gguf;
use pagoda::cpu::tokenizer::{Tokenizer, TokenizerKind};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tokenizer");

fn load() -> Tokenizer {
    let bytes = std::fs::read(format!("{DIR}/sp_tiny.gguf")).unwrap();
    let gguf = Gguf::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ids_equal_sentencepiece() {
    let tok = load();
    assert_eq!(tok.kind(), TokenizerKind::SentencePiece);
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/sp_expected.json")).unwrap())
            .unwrap();
    assert_eq!(tok.vocab_size() as u64, doc["vocab_size"].as_u64().unwrap());
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text, false, false);
        if got != want {
            mismatches.push(format!("{text:?}:\n  got  {got:?}\n  want {want:?}"));
        }
        assert_eq!(tok.decode(&got), text, "decode of {text:?}");
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn bos_and_special_tokens() {
    let tok = load();
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert!(tok.add_bos());
    let plain = tok.encode("Hello", false, false);
    let with_bos = tok.encode("Hello", true, false);
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], &plain[..]);
    // With special parsing, `</s>` is the EOS id and the text after it gets a space prefix again.
    let ids = tok.encode("a</s>a", false, true);
    let a = tok.encode("a", false, false);
    assert_eq!(ids, [a.clone(), vec![2], a].concat());
    assert!(tok.is_eog(2));
    // Byte-fallback pieces decode to their bytes.
    assert_eq!(tok.decode(&tok.encode("日本", false, false)), "日本");
    assert_eq!(tok.token_to_bytes(tok.token_id("<0x0A>").unwrap()), Some(&b"\n"[..]));
}
