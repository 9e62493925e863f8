//! `pagoda_cli`: the library behind the `pagoda` command. The binary (`src/main.rs`) only
//! calls [`main`]; the modules are here so that parts of the CLI can be tested and fuzzed
//! on their own (`pagoda_cli::batch::parse_request_line`).
//!
//! ```
//! use pagoda_cpu::sampler::SamplerConfig;
//! use pagoda_cli::batch::parse_request_line;
//!
//! let line = r#"{"id": "a", "prompt": "Once upon a time", "temperature": 0}"#;
//! let req = parse_request_line(line, 1, &SamplerConfig::default(), 64)?;
//! assert_eq!((req.prompt.as_str(), req.n_predict, req.sampler.temperature), ("Once upon a time", 64, 0.0));
//! let bad = parse_request_line(r#"{"prompt": 3}"#, 7, &SamplerConfig::default(), 64);
//! assert!(bad.unwrap_err().starts_with("line 7:"));
//! # Ok::<(), String>(())
//! ```
//!
//! Exit codes: 0 success, 1 runtime error (bad model, prompt too long, a failed batch
//! request, …), 2 usage error, 130 / 143 `batch` interrupted by SIGINT / SIGTERM (after
//! writing every completed result), 141 stdout closed by its reader (`pagoda … | head`):
//! the command stops at the first failed write and exits quietly, as `cat` killed by
//! SIGPIPE does.
#![forbid(unsafe_code)]

pub mod batch;
mod bench;
mod chat;
mod common;
pub mod compat;
pub mod constraint;
mod inspect;
mod logger;
mod perplexity;
mod plot;
mod progress;
mod quantize;
mod run;
mod sampling_fields;
mod serve;
mod tokenize;

use std::process::ExitCode;

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
    /// Generate text from a prompt, streaming it to stdout.
    Run(run::RunArgs),
    /// Run many requests (JSONL) concurrently through the engine, one result line each.
    Batch(batch::BatchArgs),
    /// Tokens/s like llama-bench; --batch: engine throughput by batch size; --scaling: time and KV memory vs N.
    Bench(bench::BenchArgs),
    /// An OpenAI-compatible HTTP server (completions, chat, streaming) on the engine.
    Serve(serve::ServeArgs),
    /// Interactive multi-turn chat with the model's chat template (Ctrl-D ends).
    Chat(chat::ChatArgs),
    /// Print the token ids of a text as a JSON array (--pieces: id and piece per line).
    Tokenize(tokenize::TokenizeArgs),
    /// Print the text of token ids (the inverse of tokenize).
    Detokenize(tokenize::DetokenizeArgs),
    /// Perplexity of a text file, by llama.cpp's method.
    Perplexity(perplexity::PerplexityArgs),
    /// Print a GGUF file's metadata and tensor table (like gguf-dump).
    Inspect(inspect::InspectArgs),
    /// Requantize a GGUF model (Q4_K_M, Q8_0, …): the file llama-quantize writes, byte for byte.
    Quantize(quantize::QuantizeArgs),
}

/// Address space the command needs before its own fallible allocations begin: argument
/// parsing, the logger and the first error message allocate through the infallible global
/// allocator, which aborts when the heap cannot grow (a process under `ulimit -v` just
/// above the size of its own mapped program). Everything after (thread stacks, model,
/// repacked weights, KV cache) is allocated fallibly and reports its own error.
const STARTUP_HEADROOM: usize = 4 << 20;

/// Whether [`STARTUP_HEADROOM`] bytes can still be reserved (and are then released).
fn has_startup_headroom() -> bool {
    let mut probe: Vec<u8> = Vec::new();
    let ok = probe.try_reserve_exact(STARTUP_HEADROOM).is_ok();
    // Keep the reservation observable, or the optimizer may drop the allocation pair.
    std::hint::black_box(&mut probe);
    ok
}

/// The `pagoda` command: parses the arguments, runs the subcommand, prints an error line.
pub fn main() -> ExitCode {
    if !has_startup_headroom() {
        eprintln!(
            "error: not enough memory to start: less than {} MiB of address space left \
             (is `ulimit -v` set too low?)",
            STARTUP_HEADROOM >> 20
        );
        return ExitCode::from(1);
    }
    logger::install();
    // llama.cpp's flags pagoda does not have: noted and dropped, or refused (exit 2),
    // before clap can misread `-ngl` as `-n gl`. Arguments that are not UTF-8 go to clap
    // as they are (a path may be any bytes).
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = match raw.iter().map(|a| a.to_str().map(String::from)).collect::<Option<Vec<_>>>() {
        Some(text) => match compat::filter(text) {
            Ok(f) => {
                for note in &f.notes {
                    eprintln!("{note}");
                }
                f.args.into_iter().map(Into::into).collect()
            }
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        },
        None => raw,
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Batch(a) => batch::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Chat(a) => chat::main(a),
        Command::Tokenize(a) => tokenize::main(a),
        Command::Detokenize(a) => tokenize::detokenize(a),
        Command::Perplexity(a) => perplexity::main(a),
        Command::Quantize(a) => quantize::main(a),
        Command::Inspect(a) => {
            inspect::run(&a).map_err(Into::into).and_then(|out| common::write_stdout(&out))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<common::Exit>() {
                if let Some(m) = &exit.message {
                    eprintln!("{m}");
                }
                return ExitCode::from(exit.code);
            }
            if common::is_broken_pipe(&*e) {
                return ExitCode::from(common::EXIT_BROKEN_PIPE);
            }
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
