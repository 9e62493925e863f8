//! `pagoda tokenize` (text → ids, or ids with their pieces) and `pagoda detokenize`
//! (ids → text).

use std::io::Read;

use clap::Args;
use serde_json::json;

use crate::common::{
    escape, load, read_text_file, usage_error, write_stdout, CliResult, ModelArgs,
};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Treat special-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long = "no-special")]
    no_special: bool,
    /// Do not add the model's BOS token (llama-tokenize's --no-bos).
    #[arg(long = "no-bos")]
    no_bos: bool,
    /// One token per line: its id and its piece, quoted with escapes (`  9906 -> 'Hello'`,
    /// llama-tokenize's layout); with --json, an array of {"id", "piece"} objects.
    #[arg(long = "pieces")]
    pieces: bool,
    /// With --pieces: a JSON array instead of lines.
    #[arg(long = "json", requires = "pieces")]
    json: bool,
    /// Read the text from standard input (all of it, as UTF-8) instead of the argument.
    #[arg(long = "stdin", conflicts_with_all = ["text", "file"])]
    stdin: bool,
    /// Read the text from a file.
    #[arg(short = 'f', long = "file", conflicts_with = "text")]
    file: Option<std::path::PathBuf>,
    /// The text.
    #[arg(required_unless_present_any = ["stdin", "file"])]
    text: Option<String>,
}

pub fn main(a: TokenizeArgs) -> CliResult {
    let text = match (&a.text, &a.file, a.stdin) {
        (Some(t), _, _) => t.clone(),
        (None, Some(f), _) => read_text_file(f)?,
        (None, None, true) => read_stdin_text()?,
        (None, None, false) => return Err(usage_error("give the text, -f FILE or --stdin")),
    };
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let add_bos = !a.no_bos;
    let ids = tok.encode(&text, add_bos, !a.no_special);
    if !a.pieces {
        return write_stdout(&format!("{}\n", serde_json::to_string(&ids)?));
    }
    let piece =
        |id: u32| String::from_utf8_lossy(tok.token_to_bytes(id).unwrap_or(&[])).into_owned();
    let out = if a.json {
        let arr: Vec<_> = ids.iter().map(|&id| json!({ "id": id, "piece": piece(id) })).collect();
        format!("{}\n", serde_json::Value::Array(arr))
    } else {
        ids.iter().map(|&id| format!("{id:6} -> '{}'\n", escape(&piece(id)))).collect()
    };
    write_stdout(&out)
}

/// Standard input, whole, as UTF-8.
fn read_stdin_text() -> CliResult<String> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| format!("reading stdin: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "stdin is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
        .into()
    })
}

#[derive(Args, Debug)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Read the ids from standard input instead of the arguments.
    #[arg(long = "stdin", conflicts_with = "ids")]
    stdin: bool,
    /// Leave control tokens (`<|im_start|>`, BOS) out; by default they show as their text,
    /// as llama.cpp's detokenizer shows them.
    #[arg(long = "no-special")]
    no_special: bool,
    /// Token ids: separate arguments, comma- or space-separated lists, or a JSON array
    /// (what `pagoda tokenize` prints).
    #[arg(required_unless_present = "stdin")]
    ids: Vec<String>,
}

/// Parses token ids from `text`: integers separated by commas, whitespace, or written as
/// a JSON array (`[1, 2, 3]`). The error names the first thing that is not an id.
pub fn parse_ids(text: &str) -> Result<Vec<u32>, String> {
    text.split(|c: char| c == ',' || c == '[' || c == ']' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|_| format!("'{}' is not a token id", escape(s))))
        .collect()
}

pub fn detokenize(a: DetokenizeArgs) -> CliResult {
    let text = if a.stdin { read_stdin_text()? } else { a.ids.join(" ") };
    let ids = parse_ids(&text).map_err(|e| usage_error(&e))?;
    let loaded = load(&a.model)?;
    let tok = &loaded.tokenizer;
    let n = tok.vocab_size();
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n) {
        return Err(format!("token id {bad} is outside the vocabulary (0..{n})").into());
    }
    let ids: Vec<u32> = if a.no_special {
        use pagoda_cpu::tokenizer::TokenType;
        ids.into_iter().filter(|&id| tok.token_type(id) != Some(TokenType::Control)).collect()
    } else {
        ids
    };
    let out = tok.decode(&ids);
    write_stdout(&format!("{out}\n"))
}

#[cfg(test)]
mod tests {
    use super::parse_ids;

    #[test]
    fn ids_parse_from_every_layout_tokenize_prints_or_people_type() {
        assert_eq!(parse_ids("[1,2,3]").unwrap(), [1, 2, 3]);
        assert_eq!(parse_ids("1 2\n3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_ids("[ 1, 2 ] 3,4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(parse_ids("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_ids("1 x 2").unwrap_err(), "'x' is not a token id");
        assert_eq!(parse_ids("-1").unwrap_err(), "'-1' is not a token id");
    }
}
