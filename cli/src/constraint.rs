//! Structured output on the command line: `--grammar FILE`, `--json-schema FILE|JSON`,
//! `--json-object`, and the per-request forms of `batch` lines and the server
//! (`grammar`, `json_schema`, OpenAI's `response_format`).
//!
//! `--json` is pagoda's output-format flag in every command, so "any JSON object" is
//! `--json-object` (the name of OpenAI's `response_format: {"type": "json_object"}`);
//! `--json-schema '{}'` allows any JSON value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgGroup, Args};
use pagoda_cpu::grammar::{ConstraintSpec, Grammar, TokenEnv};
use serde_json::{Map, Value};

use crate::common::{read_text_file, CliResult};

/// The output constraint flags (at most one of them).
#[derive(Args, Clone, Debug, Default)]
#[command(group = ArgGroup::new("output-constraint").multiple(false))]
pub struct ConstraintArgs {
    /// Constrain the output to a GBNF grammar (llama.cpp's syntax; generation starts at
    /// `root`).
    #[arg(long = "grammar", value_name = "FILE", group = "output-constraint")]
    pub grammar: Option<PathBuf>,
    /// Constrain the output to one JSON value valid against a JSON schema: a file, or the
    /// schema itself when the argument starts with `{`.
    #[arg(long = "json-schema", value_name = "FILE|JSON", group = "output-constraint")]
    pub json_schema: Option<String>,
    /// Constrain the output to a JSON object (OpenAI's response_format json_object; --json
    /// is the output-format flag).
    #[arg(long = "json-object", group = "output-constraint")]
    pub json_object: bool,
}

impl ConstraintArgs {
    /// The flag's spec and its name for messages (`--grammar FILE`), or `None` without one.
    ///
    /// # Errors
    /// An unreadable or non-UTF-8 file, or a schema that is not JSON, named by its flag.
    pub fn spec(&self) -> CliResult<Option<(ConstraintSpec, String)>> {
        if let Some(path) = &self.grammar {
            let what = format!("--grammar {}", path.display());
            let text = read_text_file(path).map_err(|e| format!("{what}: {e}"))?;
            return Ok(Some((ConstraintSpec::Gbnf(text), what)));
        }
        if let Some(arg) = &self.json_schema {
            let (text, what) = if arg.trim_start().starts_with('{') {
                (arg.clone(), "--json-schema".to_string())
            } else {
                let what = format!("--json-schema {arg}");
                let text = read_text_file(arg.as_ref()).map_err(|e| format!("{what}: {e}"))?;
                (text, what)
            };
            let schema: Value =
                serde_json::from_str(&text).map_err(|e| format!("{what}: not valid JSON ({e})"))?;
            return Ok(Some((ConstraintSpec::JsonSchema(schema), what)));
        }
        if self.json_object {
            return Ok(Some((ConstraintSpec::JsonObject, "--json-object".into())));
        }
        Ok(None)
    }

    /// [`spec`](Self::spec) compiled for `env`'s tokenizer.
    ///
    /// # Errors
    /// As [`spec`](Self::spec), and a grammar or schema that does not compile
    /// (`--grammar g.gbnf: malformed grammar: expecting ')' at line 3, column 9`).
    pub fn compile(&self, env: &TokenEnv) -> CliResult<Option<Arc<Grammar>>> {
        let Some((spec, what)) = self.spec()? else { return Ok(None) };
        let grammar = Grammar::compile(env, spec).map_err(|e| format!("{what}: {e}"))?;
        Ok(Some(Arc::new(grammar)))
    }
}

/// A request's own constraint setting (a batch line, a server request).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RequestConstraint {
    /// The request says nothing: the command's flags decide.
    #[default]
    Default,
    /// Free text (`response_format: {"type": "text"}`), whatever the flags say.
    Text,
    /// This grammar or schema.
    Spec(ConstraintSpec),
}

/// OpenAI's `response_format` object: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "json_schema": {"name": …, "schema": {…}, "strict": …}}` (a
/// missing `schema` allows any JSON value).
///
/// # Errors
/// What is wrong with its shape, naming the field (`response_format.type`, ...).
pub fn response_format(v: &Value) -> Result<RequestConstraint, (String, String)> {
    let err = |param: &str, m: &str| Err((param.to_string(), m.to_string()));
    let Value::Object(o) = v else {
        return err("response_format", "response_format must be an object");
    };
    match o.get("type").and_then(Value::as_str) {
        Some("text") => Ok(RequestConstraint::Text),
        Some("json_object") => Ok(RequestConstraint::Spec(ConstraintSpec::JsonObject)),
        Some("json_schema") => {
            let Some(Value::Object(js)) = o.get("json_schema") else {
                return err(
                    "response_format.json_schema",
                    "response_format.json_schema must be an object with a \"schema\"",
                );
            };
            if js.get("name").is_some_and(|n| !n.is_string()) {
                return err(
                    "response_format.json_schema.name",
                    "response_format.json_schema.name must be a string",
                );
            }
            if js.get("strict").is_some_and(|s| !s.is_boolean() && !s.is_null()) {
                return err(
                    "response_format.json_schema.strict",
                    "response_format.json_schema.strict must be a boolean",
                );
            }
            match js.get("schema") {
                None | Some(Value::Null) => Ok(RequestConstraint::Spec(
                    ConstraintSpec::JsonSchema(Value::Object(Map::new())),
                )),
                Some(s @ (Value::Object(_) | Value::Bool(_))) => {
                    Ok(RequestConstraint::Spec(ConstraintSpec::JsonSchema(s.clone())))
                }
                Some(_) => err(
                    "response_format.json_schema.schema",
                    "response_format.json_schema.schema must be a JSON schema (an object)",
                ),
            }
        }
        Some(t) => err(
            "response_format.type",
            &format!(
                "unknown response_format.type {} (known: text, json_object, json_schema)",
                Value::from(t)
            ),
        ),
        None => err("response_format.type", "response_format.type must be a string"),
    }
}

/// The constraint fields of a batch line: `grammar` (GBNF text), `json_schema` (a schema)
/// or `response_format` (as [`response_format`]), at most one of them.
///
/// # Errors
/// Two of them, or one of the wrong shape.
pub fn request_fields(o: &Map<String, Value>) -> Result<RequestConstraint, String> {
    let given: Vec<&str> = ["grammar", "json_schema", "response_format"]
        .into_iter()
        .filter(|k| o.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if given.len() > 1 {
        return Err(format!(
            "give at most one of \"grammar\", \"json_schema\", \"response_format\" (got {})",
            given.join(", ")
        ));
    }
    match given.first().copied() {
        None => Ok(RequestConstraint::Default),
        Some("grammar") => match &o["grammar"] {
            Value::String(g) => Ok(RequestConstraint::Spec(ConstraintSpec::Gbnf(g.clone()))),
            _ => Err("\"grammar\" must be a string (a GBNF grammar)".into()),
        },
        Some("json_schema") => match &o["json_schema"] {
            s @ (Value::Object(_) | Value::Bool(_)) => {
                Ok(RequestConstraint::Spec(ConstraintSpec::JsonSchema(s.clone())))
            }
            _ => Err("\"json_schema\" must be a JSON schema (an object)".into()),
        },
        Some(_) => response_format(&o["response_format"]).map_err(|(_, m)| m),
    }
}

/// Compiled grammars by spec, so requests with the same grammar or schema share one
/// compilation (a batch file of many lines with one schema, say).
#[derive(Default)]
pub struct GrammarCache {
    compiled: HashMap<String, Arc<Grammar>>,
}

impl GrammarCache {
    /// `spec` compiled for `env` (once per distinct spec).
    ///
    /// # Errors
    /// The grammar or schema does not compile; the message says why.
    pub fn get(&mut self, env: &TokenEnv, spec: &ConstraintSpec) -> Result<Arc<Grammar>, String> {
        let key = format!("{spec:?}");
        if let Some(g) = self.compiled.get(&key) {
            return Ok(g.clone());
        }
        let g = Arc::new(Grammar::compile(env, spec.clone()).map_err(|e| e.to_string())?);
        self.compiled.insert(key, g.clone());
        Ok(g)
    }
}
