//! A constraint compiled against a tokenizer, shared by every sample that follows it.

use std::time::{Duration, Instant};

use llguidance::api::TopLevelGrammar;

use super::error::{first_line, GrammarError};
use super::gbnf::gbnf_to_lark;
use super::matcher::Matcher;
use super::spec::ConstraintSpec;
use super::token_env::TokenEnv;

/// A compiled constraint: llguidance's parser for the grammar, at its start, over one
/// tokenizer's [`TokenEnv`]. Compile once per request; put it in an `Arc` to share it
/// between samples and threads (`Send + Sync`); each sample takes its own
/// [`Matcher`] from [`Grammar::matcher`].
pub struct Grammar {
    spec: ConstraintSpec,
    start: llguidance::Matcher,
    vocab_size: usize,
    compile_time: Duration,
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammar").field("spec", &self.spec).finish_non_exhaustive()
    }
}

impl PartialEq for Grammar {
    /// Two grammars are equal when they were compiled from equal specs for equally large
    /// vocabularies.
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec && self.vocab_size == other.vocab_size
    }
}

impl Grammar {
    /// Compiles `spec` for `env`'s tokenizer and checks that some text satisfies it (the
    /// first position allows at least one token).
    ///
    /// # Errors
    /// [`GrammarError::Malformed`] (a GBNF or Lark syntax error, with its line and column),
    /// [`GrammarError::InvalidSchema`], [`GrammarError::Unsupported`] (a schema feature
    /// llguidance does not implement) or [`GrammarError::Unsatisfiable`].
    pub fn compile(env: &TokenEnv, spec: ConstraintSpec) -> Result<Grammar, GrammarError> {
        let started = Instant::now();
        let top = match &spec {
            ConstraintSpec::Gbnf(text) => TopLevelGrammar::from_lark(gbnf_to_lark(text)?),
            ConstraintSpec::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            ConstraintSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(compact(schema))
            }
            ConstraintSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(&serde_json::json!({"type": "object"})))
            }
        };
        let parser =
            env.factory().create_parser(top).map_err(|e| classify(&spec, &e.to_string()))?;
        let mut start = llguidance::Matcher::new(Ok(parser));
        // The first mask: a grammar that compiles may still match nothing (a rule that
        // never terminates); llguidance then finds no token to allow, or fails saying so.
        let first = start.compute_mask().map_err(|e| GrammarError::Unsatisfiable {
            message: format!(
                "no text can start the {} (llguidance: {})",
                spec.kind(),
                first_line(&e.to_string())
            ),
        })?;
        if first.is_zero() {
            return Err(GrammarError::Unsatisfiable {
                message: format!("the {} matches no text", spec.kind()),
            });
        }
        Ok(Grammar { spec, start, vocab_size: env.vocab_size(), compile_time: started.elapsed() })
    }

    /// A matcher at the start of the grammar, for one sample.
    pub fn matcher(&self) -> Matcher {
        Matcher::new(self.start.deep_clone(), self.vocab_size)
    }

    /// The spec it was compiled from.
    pub fn spec(&self) -> &ConstraintSpec {
        &self.spec
    }

    /// How long [`Grammar::compile`] took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

/// The schema with llguidance's compact JSON layout (no optional whitespace, `,` and `:`
/// separators) unless it sets its own `x-guidance` options.
fn compact(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let serde_json::Value::Object(map) = &mut schema {
        map.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// llguidance's compile error as a [`GrammarError`] of the right kind.
fn classify(spec: &ConstraintSpec, message: &str) -> GrammarError {
    let message = first_line(message);
    let lower = message.to_ascii_lowercase();
    if lower.contains("unsatisfiable") {
        GrammarError::Unsatisfiable { message }
    } else if lower.contains("unimplemented") || lower.contains("not supported") {
        GrammarError::Unsupported { message }
    } else if matches!(spec, ConstraintSpec::JsonSchema(_) | ConstraintSpec::JsonObject) {
        GrammarError::InvalidSchema { message }
    } else {
        GrammarError::Malformed { message }
    }
}

/// `Grammar` is shared between threads (the engine's samples, the server's workers).
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Grammar>();
    shared::<super::TokenEnv>();
    const fn sendable<T: Send>() {}
    sendable::<Matcher>();
    sendable::<super::Mask>();
};
