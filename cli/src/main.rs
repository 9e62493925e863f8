//! `pagoda`: the command-line front end. Thin: parses flags, calls the libraries, prints.
#![forbid(unsafe_code)]

mod inspect;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pagoda",
    version,
    about = "Fast CPU inference of quantized Llama models on a paged KV cache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a GGUF file's metadata and tensor table (like gguf-dump).
    Inspect(inspect::InspectArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    };
    match result {
        Ok(out) => print!("{out}"),
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}
