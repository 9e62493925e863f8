//! The SentencePiece tokenizer on Gemma 3's 262,144-piece vocabulary
//! (`models/gemma-3-270m-q4_k_m.gguf`, `scripts/fetch-model.sh gemma3`) against llama.cpp b11312
//! (tests/data/llamacpp/gemma3.json, `tokenize`: 50 strings made by scripts/gen_gemma3_refs.sh).
//!
//! Only the tokenizer is built from the file (its `tokenizer.ggml.*` keys), not the model.
//! What the vocabulary exercises: no space prefix (`add_space_prefix = false`), byte fallback
//! `<0xNN>` for characters without a piece, 6,249 control tokens (`<start_of_turn>`,
//! `<unused0..6241>`) matched in text only with special parsing, 165 user-defined tokens (runs of
//! newlines, spaces and tabs, HTML tags) always split out before SentencePiece, and llama.cpp's
//! promotion of the user-defined `</s>` to a control, end-of-generation token.

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::tokenizer::{TokenType, Tokenizer, TokenizerKind};

fn tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let model = ModelFile::open(common::gemma3_model_path()).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let tok = Tokenizer::from_gguf(&model.gguf()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("Gemma 3 tokenizer built in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        tok
    })
}

#[test]
fn every_llama_cpp_string_gives_the_same_ids() {
    let tok = tokenizer();
    let data = common::data_json("llamacpp/gemma3.json");
    let cases = data["tokenize"]["cases"].as_array().expect("tokenize.cases");
    assert_eq!(cases.len(), 50);
    let mut mismatches = Vec::new();
    let mut matched = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let mut ok = true;
        for (key, add_special, parse_special) in [
            ("ids", false, true),
            ("ids_with_bos", true, true),
            ("ids_no_parse_special", false, false),
        ] {
            let want = common::ids(&case[key]);
            let got = tok.encode(text, add_special, parse_special);
            if got != want {
                ok = false;
                mismatches.push(format!("{text:?} {key}:\n  got  {got:?}\n  want {want:?}"));
            }
        }
        // Decoding: what llama_detokenize(ids, remove_special = false, unparse_special = true)
        // gives, which is the text itself wherever llama.cpp round-trips (all 50 strings).
        let ids = common::ids(&case["ids"]);
        let want = case["detokenized"].as_str().unwrap();
        let got = tok.decode(&ids);
        if got != want {
            ok = false;
            mismatches.push(format!("{text:?} decode:\n  got  {got:?}\n  want {want:?}"));
        }
        if case["roundtrips"].as_bool().unwrap() {
            assert_eq!(tok.decode(&tok.encode(text, false, true)), text, "round trip of {text:?}");
        }
        matched += usize::from(ok);
    }
    eprintln!("{matched}/{} strings match llama.cpp", cases.len());
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn metadata_and_special_tokens() {
    let tok = tokenizer();
    assert_eq!(tok.kind(), TokenizerKind::SentencePiece);
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(tok.token_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    assert_eq!(tok.eot(), Some(106));
    // llama.cpp's end-of-generation set for this vocabulary: <eos>, <end_of_turn> and the
    // user-defined </s>, which it also turns into a control token.
    assert_eq!(tok.eog_ids(), [1, 106, 212]);
    assert_eq!(tok.token_text(212), Some("</s>"));
    assert_eq!(tok.token_type(212), Some(TokenType::Control));
    assert_eq!(tok.token_type(105), Some(TokenType::Control));
    assert_eq!(tok.token_type(203), Some(TokenType::UserDefined), "<s>");
    assert_eq!(tok.token_type(138), Some(TokenType::UserDefined), "two spaces");
    // No space prefix: a leading word has no ▁ unless the text has a space.
    assert_eq!(tok.encode("Hello", false, false), [tok.token_id("Hello").unwrap()]);
    assert_eq!(tok.encode(" Hello", false, false), [tok.token_id("▁Hello").unwrap()]);
    assert_eq!(tok.decode(&tok.encode(" Hello", true, false)), "<bos> Hello");
    // Every byte has its <0xNN> piece.
    for b in 0..=255u8 {
        let id = tok.byte_to_token(b).expect("byte piece");
        assert_eq!(tok.token_text(id), Some(format!("<0x{b:02X}>").as_str()));
        assert_eq!(tok.token_to_bytes(id), Some(&[b][..]));
    }
    // Special tokens in text: parsed with parse_special, plain text without.
    let chat = "<start_of_turn>user\nHi<end_of_turn>\n";
    assert_eq!(&tok.encode(chat, true, true)[..3], [2, 105, 2364]);
    assert!(!tok.encode(chat, false, false).contains(&105));
}
