//! The grammar's token environment (`pagoda::cpu::grammar::TokenEnv`) on both models: every
//! token's bytes round-trip (text tokens as the tokenizer decodes them, byte-fallback tokens
//! as their byte, control/unknown/unused tokens behind llguidance's special marker), the
//! end-of-generation ids are the tokenizer's, and building it — SmolLM2's 49k and Gemma's
//! 262k pieces — takes well under a second.

mod common;

use std::path::Path;
use std::time::Instant;

use pagoda::cpu::grammar::{TokenEnv, SPECIAL_TOKEN_MARKER};
use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::tokenizer::{TokenType, Tokenizer};

fn check(path: &Path, name: &str) {
    let file = ModelFile::open(path).expect("open model");
    let tok = Tokenizer::from_gguf(&file.gguf()).expect("tokenizer");
    let t0 = Instant::now();
    let env = TokenEnv::new(&tok).expect("token environment");
    let total = t0.elapsed();
    let (trie, factory) = env.build_time();
    eprintln!(
        "{name}: {} tokens, token environment built in {:.1} ms (trie {:.1} ms, parser \
         factory {:.1} ms)",
        tok.vocab_size(),
        total.as_secs_f64() * 1e3,
        trie.as_secs_f64() * 1e3,
        factory.as_secs_f64() * 1e3
    );
    assert!(total.as_secs_f64() < 2.0, "{name}: building took {total:?}");
    assert_eq!(env.vocab_size(), tok.vocab_size());
    assert_eq!(env.stop_tokens(), tok.eog_ids());
    let (mut special, mut bytes, mut dropped) = (0, 0, 0);
    for id in 0..tok.vocab_size() as u32 {
        let got = env.token_bytes(id).unwrap();
        let decoded = tok.token_to_bytes(id).unwrap();
        match tok.token_type(id).unwrap() {
            TokenType::Control | TokenType::Unknown | TokenType::Unused => {
                let text = tok.token_text(id).unwrap();
                assert_eq!(got[0], SPECIAL_TOKEN_MARKER, "{name}: token {id} {text:?}");
                assert_eq!(&got[1..], text.as_bytes(), "{name}: token {id}");
                special += 1;
            }
            _ if decoded.first() == Some(&SPECIAL_TOKEN_MARKER) => {
                assert!(got.is_empty(), "{name}: token {id} starts with 0xFF: no bytes");
                dropped += 1;
            }
            ty => {
                assert_eq!(got, decoded, "{name}: token {id} ({ty:?}) {:?}", tok.token_text(id));
                if ty == TokenType::Byte {
                    assert_eq!(got.len(), 1, "{name}: byte token {id}");
                    bytes += 1;
                }
            }
        }
    }
    assert!(env.token_bytes(tok.vocab_size() as u32).is_none());
    for &t in tok.eog_ids() {
        assert_eq!(env.token_bytes(t).unwrap()[0], SPECIAL_TOKEN_MARKER, "{name}: EOG {t}");
    }
    eprintln!("{name}: {special} special tokens, {bytes} byte tokens, {dropped} 0xFF tokens");
    assert!(special > 0, "{name}: no special tokens");
}

#[test]
fn smollm2_token_bytes_round_trip() {
    check(&common::model_path(), "SmolLM2");
}

#[test]
fn gemma3_token_bytes_round_trip_in_its_262k_vocabulary() {
    check(&common::gemma3_model_path(), "Gemma 3");
}
