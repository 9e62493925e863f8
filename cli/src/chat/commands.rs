//! The chat's own commands (`/clear`, `/save FILE`, `/load FILE`, `/help`) and the file
//! format of a saved conversation.
//!
//! A saved conversation is one JSON object:
//!
//! ```json
//! {"system": "You are terse.", "messages": [{"role": "user", "content": "Hi"},
//!                                           {"role": "assistant", "content": "Hello."}]}
//! ```
//!
//! `system` is the system prompt (`null`: the template's default); `messages` are the turns
//! in order, each `user` or `assistant`.

use std::path::{Path, PathBuf};

use pagoda_cpu::chat::Message;
use serde_json::{json, Value};

use crate::common::{escape_controls, write_atomically};

/// A command typed at the prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Forget the conversation and its cache; the system prompt stays.
    Clear,
    /// Write the conversation to a file.
    Save(PathBuf),
    /// Replace the conversation by a saved one.
    Load(PathBuf),
    /// List the commands.
    Help,
}

/// What `/help` prints.
pub const HELP: &str =
    "commands: /clear (forget the conversation), /save FILE (write it as JSON), \
/load FILE (continue a saved one), /help; a line ending in \\ continues on the next line; \
start a message with // to begin it with /; Ctrl-C stops a reply, Ctrl-D leaves";

/// What a message is: a command, a command misused (the hint to print), or words for the
/// model (a leading `//` stands for `/`).
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command.
    Command(Command),
    /// `/something` that is not a command as typed: a one-line hint.
    Hint(String),
    /// A message for the model.
    Say(String),
}

/// Reads a message: `/clear`, `/save FILE`, `/load FILE` and `/help` are commands; any
/// other word after `/` gets a hint; `//…` is the message `/…`.
pub fn parse(message: &str) -> Parsed {
    if let Some(rest) = message.strip_prefix("//") {
        return Parsed::Say(format!("/{rest}"));
    }
    let Some(rest) = message.strip_prefix('/') else {
        return Parsed::Say(message.to_owned());
    };
    let rest = rest.trim();
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    let file = |what: &str, make: fn(PathBuf) -> Command| {
        if arg.is_empty() {
            Parsed::Hint(format!("/{what} needs a file name: /{what} FILE"))
        } else {
            Parsed::Command(make(PathBuf::from(arg)))
        }
    };
    let no_arg = |c: Command| {
        if arg.is_empty() {
            Parsed::Command(c)
        } else {
            Parsed::Hint(format!("/{name} takes no argument"))
        }
    };
    match name {
        "clear" => no_arg(Command::Clear),
        "help" => no_arg(Command::Help),
        "save" => file("save", Command::Save),
        "load" => file("load", Command::Load),
        _ => Parsed::Hint(format!(
            "unknown command '/{}' (try /help; start with // to say it)",
            escape_controls(name)
        )),
    }
}

/// The conversation as JSON (see the module docs): `messages` after the system message.
pub fn to_json(messages: &[Message]) -> Value {
    let (system, turns) = match messages.split_first() {
        Some((first, rest)) if first.role == "system" => (Some(first.content.as_str()), rest),
        _ => (None, messages),
    };
    let turns: Vec<Value> =
        turns.iter().map(|m| json!({ "role": m.role, "content": m.content })).collect();
    json!({ "system": system, "messages": turns })
}

/// Writes `messages` to `path` (whole or not at all).
pub fn save(path: &Path, messages: &[Message]) -> Result<(), String> {
    let mut text = serde_json::to_string_pretty(&to_json(messages))
        .map_err(|e| format!("cannot encode the conversation: {e}"))?;
    text.push('\n');
    write_atomically(path, text.as_bytes())
}

/// The messages of a saved conversation (system message first, if any), or what is wrong
/// with it, naming the file.
pub fn load(path: &Path) -> Result<Vec<Message>, String> {
    let shown = escape_controls(&path.display().to_string());
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read '{shown}': {e}"))?;
    from_json(&text).map_err(|e| format!("'{shown}' is not a saved chat: {e}"))
}

/// Parses a saved conversation (see the module docs).
pub fn from_json(text: &str) -> Result<Vec<Message>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("expected a JSON object with \"messages\"")?;
    if let Some(key) = obj.keys().find(|k| *k != "system" && *k != "messages") {
        return Err(format!("unknown field \"{}\"", escape_controls(key)));
    }
    let mut messages = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(Message::system(s.as_str())),
        Some(_) => return Err("\"system\" must be a string or null".into()),
    }
    let turns = obj
        .get("messages")
        .ok_or("missing \"messages\"")?
        .as_array()
        .ok_or("\"messages\" must be an array")?;
    for (i, m) in turns.iter().enumerate() {
        let m = m.as_object().ok_or_else(|| format!("messages[{i}] must be an object"))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages[{i}].role must be a string"))?;
        if role != "user" && role != "assistant" {
            return Err(format!(
                "messages[{i}].role is \"{}\" (expected \"user\" or \"assistant\")",
                escape_controls(role)
            ));
        }
        let content = m
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("messages[{i}].content must be a string"))?;
        messages.push(Message::new(role, content));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_hints() {
        assert_eq!(parse("/clear"), Parsed::Command(Command::Clear));
        assert_eq!(parse("/help "), Parsed::Command(Command::Help));
        assert_eq!(parse("/save  a b.json"), Parsed::Command(Command::Save("a b.json".into())));
        assert_eq!(parse("/load x"), Parsed::Command(Command::Load("x".into())));
        assert!(matches!(parse("/save"), Parsed::Hint(h) if h.contains("/save FILE")));
        assert!(matches!(parse("/clear now"), Parsed::Hint(h) if h.contains("no argument")));
        assert!(matches!(parse("/quit"), Parsed::Hint(h) if h.contains("'/quit'")));
        assert_eq!(parse("//etc is a path"), Parsed::Say("/etc is a path".into()));
        assert_eq!(parse("hello /clear"), Parsed::Say("hello /clear".into()));
    }

    #[test]
    fn saved_conversations_round_trip_and_bad_ones_say_why() {
        let messages = vec![
            Message::system("Be terse."),
            Message::user("Hi \"there\"\nsecond line"),
            Message::assistant("Hello."),
        ];
        let text = to_json(&messages).to_string();
        assert_eq!(from_json(&text).unwrap(), messages);
        let no_system = &messages[1..];
        assert_eq!(from_json(&to_json(no_system).to_string()).unwrap(), no_system);
        for (bad, why) in [
            ("[1]", "expected a JSON object"),
            ("{\"system\": null}", "missing \"messages\""),
            ("{\"messages\": {}}", "must be an array"),
            ("{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages[0].role"),
            ("{\"messages\": [{\"role\": \"user\"}]}", "messages[0].content"),
            ("{\"messages\": [], \"sytem\": \"x\"}", "unknown field \"sytem\""),
            ("{\"messages\": [], \"system\": 3}", "\"system\" must be"),
            ("{\"messages\": [", "invalid JSON"),
        ] {
            let e = from_json(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
