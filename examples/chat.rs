//! A multi-turn chat that keeps its KV pages between turns:
//! `cargo run --release --example chat`. Each turn runs only its new tokens.
use std::io::Write;

use pagoda::{Message, Model, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = Model::load(pagoda::cpu::model_file::default_model_path())?;
    let opts = Options::greedy().max_tokens(48);

    // One-shot: a whole conversation rendered with the model's chat template.
    let reply = model.chat(
        &[Message::system("Answer in one sentence."), Message::user("What is a KV cache?")],
        &opts,
    )?;
    println!("one-shot: {reply}");

    // Multi-turn: the session keeps the pages of every earlier turn.
    let mut chat = model.session(&opts)?.with_system("You are a helpful assistant.");
    for user in ["My name is Ada.", "What is my name?"] {
        println!("> {user}");
        let before = chat.len();
        chat.chat_with(user, &opts, |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
        })?;
        println!("\n[{before} tokens were cached before this turn; {} now]", chat.len());
    }
    Ok(())
}
