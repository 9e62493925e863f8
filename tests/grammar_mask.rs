//! Grammar masks (`pagoda::cpu::grammar`): applied to random logits they leave exactly the
//! tokens the grammar allows (every survivor is accepted by the matcher, sampled
//! disallowed tokens are refused), walks driven by random logits stay inside the grammar
//! and end only where it is complete, and the cost of a mask per token is measured on both
//! models.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use pagoda::cpu::grammar::{ConstraintSpec, Grammar, GrammarError, TokenEnv};
use pagoda::cpu::model_file::ModelFile;
use pagoda::cpu::tokenizer::Tokenizer;
use serde_json::json;

fn env_of(path: &Path) -> (Tokenizer, TokenEnv) {
    let file = ModelFile::open(path).expect("open model");
    let tok = Tokenizer::from_gguf(&file.gguf()).expect("tokenizer");
    let env = TokenEnv::new(&tok).expect("token environment");
    (tok, env)
}

fn specs() -> Vec<(&'static str, ConstraintSpec)> {
    let arith = std::fs::read_to_string(common::root().join("tests/data/grammars/arithmetic.gbnf"))
        .expect("arithmetic.gbnf");
    vec![
        ("json object", ConstraintSpec::JsonObject),
        (
            "schema",
            ConstraintSpec::JsonSchema(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                    "n": {"type": "integer", "minimum": -5, "maximum": 500}
                },
                "required": ["name", "tags", "n"],
                "additionalProperties": false
            })),
        ),
        ("arithmetic gbnf", ConstraintSpec::Gbnf(arith)),
        ("lark", ConstraintSpec::Lark("start: \"<\" /[a-z]{1,6}/ \">\"".into())),
    ]
}

/// Random walks: random logits, masked, arg-max sampled. Returns (masks, time in
/// compute_mask).
fn walks(tok: &Tokenizer, env: &TokenEnv, name: &str, rng: &mut common::Rng) -> (u64, Duration) {
    let (mut masks, mut time) = (0u64, Duration::ZERO);
    for (what, spec) in specs() {
        let grammar = Grammar::compile(env, spec).unwrap_or_else(|e| panic!("{what}: {e}"));
        for walk in 0..4 {
            let mut m = grammar.matcher();
            let mut text = Vec::new();
            for step in 0..48 {
                let t0 = Instant::now();
                let mask = m.compute_mask().unwrap();
                time += t0.elapsed();
                masks += 1;
                assert!(!mask.is_empty(), "{name} {what}: empty mask at step {step}");
                let mut logits: Vec<f32> = (0..tok.vocab_size() + 7).map(|_| rng.unit()).collect();
                mask.apply(&mut logits);
                let finite: Vec<u32> =
                    (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
                assert_eq!(finite.len(), mask.count(), "{name} {what}: survivors = mask");
                assert!(finite.iter().all(|&i| (i as usize) < tok.vocab_size()));
                assert_eq!(finite, mask.allowed());
                // A few disallowed tokens: a copy of the matcher refuses each.
                for _ in 0..3 {
                    let t = rng.below(tok.vocab_size()) as u32;
                    if !mask.is_allowed(t) {
                        let mut probe = m.clone();
                        assert!(
                            matches!(probe.commit(t), Err(GrammarError::Rejected { .. })),
                            "{name} {what}: disallowed token {t} {:?} accepted after {:?}",
                            tok.token_text(t),
                            String::from_utf8_lossy(&text)
                        );
                    }
                }
                // Arg-max of the masked logits: allowed, and the matcher takes it.
                let best = finite
                    .iter()
                    .copied()
                    .max_by(|&a, &b| logits[a as usize].total_cmp(&logits[b as usize]))
                    .unwrap();
                m.commit(best).unwrap_or_else(|e| panic!("{name} {what}: {e}"));
                if tok.is_eog(best) {
                    assert!(m.is_finished(), "{name} {what}: EOS taken but not finished");
                    break;
                }
                text.extend_from_slice(tok.token_to_bytes(best).unwrap());
                if m.is_finished() {
                    break;
                }
            }
            if m.is_finished() {
                let s = String::from_utf8_lossy(&text).into_owned();
                if matches!(what, "json object" | "schema") {
                    let v: serde_json::Value = serde_json::from_str(&s)
                        .unwrap_or_else(|e| panic!("{name} {what} walk {walk}: {e}: {s}"));
                    assert!(v.is_object(), "{s}");
                }
                if what == "lark" {
                    assert!(s.starts_with('<') && s.ends_with('>'), "{s}");
                }
                // Finished: only end-of-generation tokens remain.
                let last = m.compute_mask().unwrap();
                assert!(last.allowed().iter().all(|&t| tok.is_eog(t)), "{name} {what}");
            }
        }
    }
    (masks, time)
}

fn measure(path: &Path, name: &str, seed: u64) {
    let (tok, env) = env_of(path);
    let mut rng = common::Rng(seed);
    let (masks, time) = walks(&tok, &env, name, &mut rng);
    eprintln!(
        "{name}: {masks} masks over random walks, {:.1} µs per mask (vocabulary {})",
        time.as_secs_f64() * 1e6 / masks as f64,
        tok.vocab_size()
    );
}

#[test]
fn smollm2_masks_leave_exactly_the_allowed_tokens() {
    measure(&common::model_path(), "SmolLM2", 0x5eed_0001);
}

#[test]
fn gemma3_masks_leave_exactly_the_allowed_tokens() {
    measure(&common::gemma3_model_path(), "Gemma 3", 0x5eed_0002);
}

#[test]
fn compile_errors_are_typed_and_name_the_problem() {
    let (_tok, env) = env_of(&common::model_path());
    let gbnf = |s: &str| Grammar::compile(&env, ConstraintSpec::Gbnf(s.into())).unwrap_err();
    let schema =
        |v: serde_json::Value| Grammar::compile(&env, ConstraintSpec::JsonSchema(v)).unwrap_err();
    let e = gbnf("root ::= \"a\" (\"b\"\n");
    assert!(
        matches!(&e, GrammarError::Malformed { message } if message.contains("line 2, column 1")),
        "{e}"
    );
    let e = gbnf("root ::= x\n");
    assert!(e.to_string().contains("undefined rule 'x'"), "{e}");
    let e = gbnf("start ::= \"a\"\n");
    assert!(e.to_string().contains("no 'root' rule"), "{e}");
    let e = gbnf("root ::= \"\\q\"\n");
    assert!(e.to_string().contains("unknown escape '\\q' at line 1, column 11"), "{e}");
    let e = gbnf("root ::= [z-a]\n");
    assert!(e.to_string().contains("out of order"), "{e}");
    let e = gbnf("root ::= root \"a\"\n");
    assert!(matches!(e, GrammarError::Unsatisfiable { .. }), "{e}");
    let e = schema(json!({"type": "integer", "minimum": 5, "maximum": 1}));
    assert!(matches!(e, GrammarError::Unsatisfiable { .. }), "{e}");
    let e = schema(json!({"enum": []}));
    assert!(matches!(e, GrammarError::Unsatisfiable { .. }), "{e}");
    let e = schema(json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true}));
    assert!(matches!(e, GrammarError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("uniqueItems"), "{e}");
    let e = schema(
        json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}),
    );
    assert!(!e.to_string().is_empty() && !e.to_string().contains('\n'), "{e}");
    let e = Grammar::compile(&env, ConstraintSpec::Lark("start: (".into())).unwrap_err();
    assert!(matches!(e, GrammarError::Malformed { .. }), "{e}");
    for e in [gbnf("root ::= (\n"), schema(json!({"type": "nonsense"}))] {
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn gbnf_features_match_llama_cpp_syntax() {
    let (tok, env) = env_of(&common::model_path());
    // Accepts exactly the listed strings (as whole texts).
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("root ::= \"a\"{2,3} \"b\"?\n", &["aa", "aab", "aaa", "aaab"], &["a", "aaaa", "ab"]),
        ("root ::= [^x\\n]+ # comment\n", &["ab", "yz"], &["x", "axb"]),
        ("root ::= Item (\",\" Item)*\nItem ::= [0-9]\n", &["1", "1,2,3"], &["1,", ",1"]),
        ("root ::= (\n  \"x\" |\n  \"y\"\n)\n", &["x", "y"], &["xy"]),
        ("root ::= \"\\x41\\u00e9\" .\n", &["Aé!", "Aéz"], &["Aé", "A"]),
        ("root ::= my-rule\nmy-rule ::= \"k\"{3}\n", &["kkk"], &["kk", "kkkk"]),
    ];
    for (grammar, good, bad) in cases {
        let g = Grammar::compile(&env, ConstraintSpec::Gbnf(grammar.to_string()))
            .unwrap_or_else(|e| panic!("{grammar:?}: {e}"));
        for (text, expect) in good.iter().map(|t| (t, true)).chain(bad.iter().map(|t| (t, false))) {
            let mut m = g.matcher();
            // Byte by byte through the byte tokens: no tokenization choices involved.
            let mut ok = true;
            for b in text.bytes() {
                let t = tok.byte_to_token(b).unwrap();
                if !m.compute_mask().unwrap().is_allowed(t) {
                    ok = false;
                    break;
                }
                m.commit(t).unwrap();
            }
            let complete = ok && m.is_accepting();
            assert_eq!(complete, expect, "{grammar:?} on {text:?}");
        }
    }
}
