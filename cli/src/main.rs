//! `pagoda`: the command-line front end. Thin: everything lives in the `pagoda_cli` library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pagoda_cli::main()
}
