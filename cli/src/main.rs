//! `pagoda`: the command-line front end. Thin: parses flags, calls the libraries, prints.
#![forbid(unsafe_code)]

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
enum Command {}

fn main() {
    let cli = Cli::parse();
    match cli.command {}
}
