//! The constraint a request asks for, before it is compiled.

/// What the generated text must match.
///
/// Compiled against a tokenizer by [`Grammar::compile`](super::Grammar::compile).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConstraintSpec {
    /// A grammar in llama.cpp's GBNF syntax (`root ::= ...`); generation starts at `root`.
    /// Translated to llguidance's Lark dialect by [`gbnf_to_lark`](super::gbnf_to_lark).
    Gbnf(String),
    /// A grammar in llguidance's Lark dialect (`start: ...`).
    Lark(String),
    /// A JSON schema: the text is one JSON value that validates against it, written
    /// compactly (no whitespace between tokens), unless the schema's own `x-guidance`
    /// options say otherwise.
    JsonSchema(serde_json::Value),
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`): the schema
    /// `{"type": "object"}`.
    JsonObject,
}

impl ConstraintSpec {
    /// A short name of the kind of constraint, for messages: `"GBNF grammar"`,
    /// `"Lark grammar"`, `"JSON schema"`, `"JSON object"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConstraintSpec::Gbnf(_) => "GBNF grammar",
            ConstraintSpec::Lark(_) => "Lark grammar",
            ConstraintSpec::JsonSchema(_) => "JSON schema",
            ConstraintSpec::JsonObject => "JSON object",
        }
    }
}
