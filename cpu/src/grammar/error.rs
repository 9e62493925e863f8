//! What can go wrong when a constraint is compiled or followed.

/// A constraint that cannot be compiled or followed, with the reason in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrammarError {
    /// The grammar text is not valid GBNF (or Lark): `message` names what is wrong and
    /// where (`line L, column C` of the grammar text).
    Malformed {
        /// What is wrong, with the line and column when known.
        message: String,
    },
    /// The JSON schema is not a schema llguidance understands (bad JSON types for
    /// keywords, an unknown `$ref`, ...).
    InvalidSchema {
        /// llguidance's reason.
        message: String,
    },
    /// The grammar or schema is well formed but no text satisfies it (e.g. an integer with
    /// `minimum` 5 and `maximum` 1, an `enum` of nothing, a rule that never terminates).
    Unsatisfiable {
        /// Why, as far as it is known.
        message: String,
    },
    /// The schema uses a JSON Schema feature llguidance does not implement (`oneOf`,
    /// unknown keywords, ...).
    Unsupported {
        /// llguidance's reason (names the keywords).
        message: String,
    },
    /// The tokenizer cannot back a token environment (no end-of-generation token).
    Tokenizer {
        /// What is missing.
        message: String,
    },
    /// A token was committed that the grammar does not allow at this position (a caller
    /// sampled without applying the mask), or the matcher failed internally.
    Rejected {
        /// llguidance's reason.
        message: String,
    },
}

impl std::fmt::Display for GrammarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GrammarError::Malformed { message } => write!(f, "malformed grammar: {message}"),
            GrammarError::InvalidSchema { message } => write!(f, "invalid JSON schema: {message}"),
            GrammarError::Unsatisfiable { message } => write!(f, "unsatisfiable: {message}"),
            GrammarError::Unsupported { message } => {
                write!(f, "unsupported JSON schema feature: {message}")
            }
            GrammarError::Tokenizer { message } => write!(f, "tokenizer: {message}"),
            GrammarError::Rejected { message } => {
                write!(f, "token rejected by the grammar: {message}")
            }
        }
    }
}

impl std::error::Error for GrammarError {}

/// llguidance's error text reduced to its first line (its messages may append the parser
/// state and the whole grammar on further lines).
pub(crate) fn first_line(message: &str) -> String {
    let line = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("unknown error");
    line.trim().to_string()
}
