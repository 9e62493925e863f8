//! `pagoda tokenize`: the ids of a text, as a JSON array.

use clap::Args;

use crate::common::{load, write_stdout, CliResult, ModelArgs};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Treat special-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long = "no-special")]
    no_special: bool,
    /// The text.
    text: String,
}

pub fn main(a: TokenizeArgs) -> CliResult {
    let loaded = load(&a.model)?;
    let ids = loaded.tokenizer.encode(&a.text, true, !a.no_special);
    write_stdout(&format!("{}\n", serde_json::to_string(&ids)?))
}
