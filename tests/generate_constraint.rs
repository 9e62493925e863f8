//! The generator under a grammar (`Generator::with_constraint`): every token is one the
//! grammar allows, the text matches it, generation ends when the grammar is complete, and
//! the masks' cost is reported (compute time, and the part on the critical path).

mod common;

use pagoda::cpu::generate::{GenerateOptions, Generation, Generator, StopReason};
use pagoda::cpu::grammar::{ConstraintSpec, Grammar, TokenEnv};
use pagoda::cpu::model::{Llama, Session, SessionOptions};
use pagoda::cpu::sampler::{Sampler, SamplerConfig};
use pagoda::cpu::tokenizer::Tokenizer;

fn model() -> (Llama, Tokenizer) {
    common::model_and_tokenizer()
}

/// Generates from `prompt` under `spec` (`sampler` settings, at most `n` tokens); the text
/// and the generation.
fn constrained(
    model: &Llama,
    tok: &Tokenizer,
    grammar: &Grammar,
    prompt: &str,
    sampler: SamplerConfig,
    n: usize,
) -> (String, Generation) {
    let mut session = Session::new(model, SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(sampler).unwrap();
    let prompt = tok.encode(prompt, true, true);
    let opts = GenerateOptions { n_predict: Some(n), ..Default::default() };
    let mut g = Generator::start(&mut session, &mut sampler, &prompt, &opts)
        .unwrap()
        .with_constraint(grammar.matcher());
    let mut text = String::new();
    while let Some(step) = g.step_decoded(&mut session, &mut sampler, tok).unwrap() {
        text.push_str(&step.text);
    }
    (text, g.finish())
}

/// Whether every token of `tokens` is allowed where it stands, read by a fresh matcher.
fn follows(grammar: &Grammar, tokens: &[u32]) -> bool {
    let mut m = grammar.matcher();
    tokens.iter().all(|&t| m.compute_mask().unwrap().is_allowed(t) && m.commit(t).is_ok())
}

/// Integer arithmetic in GBNF (as tests/data/grammars/arithmetic.gbnf).
const ARITHMETIC: &str = r#"
root   ::= expr
expr   ::= term (ws ("+" | "-") ws term)*
term   ::= factor (ws ("*" | "/") ws factor)*
factor ::= number | "(" ws expr ws ")" | "-" factor
number ::= [0-9] | [1-9] [0-9]{1,4}
ws     ::= " "?
"#;

/// Where a reader of [`ARITHMETIC`] is, character by character.
#[derive(Clone, Copy, PartialEq)]
enum Arith {
    /// A factor must come: a number, `(` or a unary `-` (`space` if one space may come first).
    Factor { space: bool },
    /// In a number of `len` digits (`zero`: it is the single digit 0).
    Number { len: usize, zero: bool },
    /// After a factor: an operator, `)` or the end (`spaced` once its one space was used).
    After { spaced: bool },
}

/// [`ARITHMETIC`] by hand: `Some(complete)` when `text` is the start of an expression
/// (`complete`: a whole one), `None` when no expression starts with it.
fn arithmetic(text: &str) -> Option<bool> {
    let mut state = Arith::Factor { space: false };
    let mut depth = 0usize;
    for c in text.chars() {
        if let Arith::Number { len, zero } = state {
            if c.is_ascii_digit() {
                (!zero && len < 5).then_some(())?;
                state = Arith::Number { len: len + 1, zero };
                continue;
            }
            state = Arith::After { spaced: false };
        }
        state = match (state, c) {
            (Arith::Factor { space: true }, ' ') => Arith::Factor { space: false },
            (Arith::Factor { .. }, '(') => {
                depth += 1;
                Arith::Factor { space: true }
            }
            (Arith::Factor { .. }, '-') => Arith::Factor { space: false },
            (Arith::Factor { .. }, '0'..='9') => Arith::Number { len: 1, zero: c == '0' },
            (Arith::After { spaced: false }, ' ') => Arith::After { spaced: true },
            (Arith::After { .. }, '+' | '-' | '*' | '/') => Arith::Factor { space: true },
            (Arith::After { .. }, ')') if depth > 0 => {
                depth -= 1;
                Arith::After { spaced: false }
            }
            _ => return None,
        };
    }
    let ended = matches!(state, Arith::Number { .. } | Arith::After { spaced: false });
    Some(ended && depth == 0)
}

#[test]
fn the_arithmetic_reader_knows_expressions() {
    for whole in ["7", "12 + 3", "(1+2) * -3", "( 4 )/ 10000", "-(-5)"] {
        assert_eq!(arithmetic(whole), Some(true), "{whole:?}");
    }
    for start in ["1 +", "(", "3 * ", "-", "(1"] {
        assert_eq!(arithmetic(start), Some(false), "{start:?}");
    }
    for bad in ["1 **", "3 + +", "05", "123456", "1  + 2", " 1", "1)", "+1"] {
        assert_eq!(arithmetic(bad), None, "{bad:?}");
    }
}

#[test]
fn arithmetic_grammar_output_is_an_expression() {
    let (model, tok) = model();
    let env = TokenEnv::new(&tok).unwrap();
    let grammar = Grammar::compile(&env, ConstraintSpec::Gbnf(ARITHMETIC.into())).unwrap();
    for seed in 0..3 {
        let sampler = SamplerConfig { temperature: 1.0, seed, ..SamplerConfig::default() };
        let (text, gen) =
            constrained(&model, &tok, &grammar, "Write a sum of two numbers: ", sampler, 40);
        assert!(follows(&grammar, &gen.tokens), "seed {seed}: {:?}", gen.tokens);
        let cost = gen.constraint.expect("a constrained generation reports its masks");
        eprintln!(
            "seed {seed}: {text:?} ({:?}); mask {:.1} µs/token, on the critical path {:.1} µs/token",
            gen.stop,
            cost.mask_us_per_token(),
            cost.critical_us_per_token()
        );
        let complete = arithmetic(&text);
        assert!(complete.is_some(), "seed {seed}: no expression starts with {text:?}");
        if gen.stop != StopReason::Length {
            assert_eq!(complete, Some(true), "seed {seed}: {text:?} is not a whole expression");
            assert_eq!(gen.stop.finish_reason(), "stop");
        }
        assert_eq!(cost.masks.masks as usize, gen.tokens.len(), "one mask per token");
        assert!(cost.critical <= gen.gen_time);
    }
}

#[test]
fn json_object_mode_writes_a_json_object_and_ends_with_it() {
    let (model, tok) = model();
    let env = TokenEnv::new(&tok).unwrap();
    let grammar = Grammar::compile(&env, ConstraintSpec::JsonObject).unwrap();
    let (text, gen) = constrained(
        &model,
        &tok,
        &grammar,
        "A JSON object describing a cat named Tom, aged 3: ",
        SamplerConfig::greedy(),
        200,
    );
    assert_ne!(gen.stop, StopReason::Length, "{text:?}");
    assert_eq!(gen.stop.finish_reason(), "stop");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
    assert!(v.is_object(), "{text}");
    assert!(follows(&grammar, &gen.tokens));
    let cost = gen.constraint.unwrap();
    eprintln!(
        "json object: {} tokens, mask {:.1} µs/token (max {:?}), critical path {:.1} µs/token",
        gen.tokens.len(),
        cost.mask_us_per_token(),
        cost.masks.max,
        cost.critical_us_per_token()
    );
}

#[test]
fn json_schema_output_validates() {
    let (model, tok) = model();
    let env = TokenEnv::new(&tok).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": { "name": { "type": "string", "maxLength": 20 },
                        "age": { "type": "integer", "minimum": 0, "maximum": 99 } },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let grammar = Grammar::compile(&env, ConstraintSpec::JsonSchema(schema)).unwrap();
    let (text, gen) = constrained(
        &model,
        &tok,
        &grammar,
        "A cat named Tom, aged 3, as JSON: ",
        SamplerConfig::greedy(),
        100,
    );
    assert_ne!(gen.stop, StopReason::Length, "{text:?}");
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("{text}"));
    assert_eq!(obj.len(), 2, "{text}");
    assert!(obj["name"].as_str().is_some_and(|n| n.chars().count() <= 20), "{text}");
    assert!(obj["age"].as_u64().is_some_and(|a| a <= 99), "{text}");
    let cost = gen.constraint.unwrap();
    eprintln!(
        "json schema: {text} ({} tokens), mask {:.1} µs/token (max {:?}), critical path {:.1} µs/token",
        gen.tokens.len(),
        cost.mask_us_per_token(),
        cost.masks.max,
        cost.critical_us_per_token()
    );
}

#[test]
fn a_grammar_that_allows_the_greedy_text_leaves_it_unchanged() {
    let (model, tok) = model();
    let prompt = "The capital of France is";
    let mut session = Session::new(&model, SessionOptions::default()).unwrap();
    let mut sampler = Sampler::new(SamplerConfig::greedy()).unwrap();
    let opts = GenerateOptions { n_predict: Some(2), ..Default::default() };
    let ids = tok.encode(prompt, true, true);
    let mut g = Generator::start(&mut session, &mut sampler, &ids, &opts).unwrap();
    let mut text = String::new();
    while let Some(s) = g.step_decoded(&mut session, &mut sampler, &tok).unwrap() {
        text.push_str(&s.text);
    }
    let free = g.finish();
    // A grammar of exactly that text: greedy decoding under it gives the same tokens, and
    // the generation ends there (the grammar is complete) instead of at the length limit.
    let env = TokenEnv::new(&tok).unwrap();
    let lark = format!("start: {}", serde_json::to_string(&text).unwrap());
    let grammar = Grammar::compile(&env, ConstraintSpec::Lark(lark)).unwrap();
    let (constrained_text, gen) =
        constrained(&model, &tok, &grammar, prompt, SamplerConfig::greedy(), 10);
    assert_eq!(constrained_text, text);
    assert_eq!(gen.tokens[..free.tokens.len()], free.tokens);
    assert!(
        matches!(gen.stop, StopReason::ConstraintComplete | StopReason::EndOfGeneration),
        "{:?}",
        gen.stop
    );
}
