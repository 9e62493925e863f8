//! `pagoda quantize`: rewrite a GGUF model with another quantization preset, the file
//! llama.cpp's `llama-quantize` writes for the same arguments, byte for byte
//! ([`pagoda_cpu::quantize`]).
//!
//! Arguments as llama-quantize takes them: `IN [OUT] TYPE [NTHREADS]`. Without OUT (the
//! second argument is a type) the output is `ggml-model-TYPE.gguf` beside IN. One line per
//! tensor and a summary go to stderr; stdout stays empty. The output appears whole or not
//! at all (a temporary file beside it is renamed at the end); SIGINT / SIGTERM stop at the
//! next slab of rows, remove the temporary file and exit 130 / 143 (a second signal ends
//! the process at once).

use std::ffi::OsString;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use pagoda_cpu::model_file::ModelFile;
use pagoda_cpu::quantize::{quantize, Preset, PresetError, QuantizeError, QuantizeOptions};

use crate::common::{init_threads, CliResult, Exit};

/// Arguments of `pagoda quantize`.
#[derive(Args, Debug)]
#[command(override_usage = "pagoda quantize [--allow-requantize] [-t N] IN [OUT] TYPE [NTHREADS]")]
pub struct QuantizeArgs {
    /// Requantize tensors that are already quantized (dequantized to f32 first: worse than
    /// quantizing from F16/F32).
    #[arg(long = "allow-requantize")]
    pub allow_requantize: bool,
    /// Threads (default: all cores; also the optional NTHREADS argument).
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// IN [OUT] TYPE [NTHREADS]. TYPE: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M
    /// (Q3_K), Q3_K_L, Q4_K_S, Q4_K_M (Q4_K), Q5_K_S, Q5_K_M (Q5_K), Q6_K, IQ4_NL, IQ4_XS,
    /// F16, BF16, F32, or llama.cpp's ftype id. OUT defaults to ggml-model-TYPE.gguf beside IN.
    #[arg(value_name = "ARG", num_args = 2..=4, required = true)]
    pub args: Vec<OsString>,
}

/// The positional arguments, sorted out as llama-quantize does.
#[derive(Debug, PartialEq, Eq)]
struct Positional {
    input: PathBuf,
    output: PathBuf,
    preset: Preset,
    threads: Option<usize>,
}

/// A usage error: clap's format and exit status 2.
fn usage(msg: String) -> Box<dyn std::error::Error> {
    let e = clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"));
    let _ = e.print();
    Box::new(Exit { code: 2, message: None })
}

/// `IN [OUT] TYPE [NTHREADS]`: the second argument is the type if it names one (then OUT
/// is `ggml-model-NAME.gguf` in IN's directory), else OUT.
fn positional(args: &[OsString]) -> Result<Positional, String> {
    let text = |s: &OsString| s.to_string_lossy().into_owned();
    let as_type = |s: &OsString| match Preset::parse_named(&text(s)) {
        Ok(p) => Some(Ok(p)),
        Err(e @ PresetError::Unsupported { .. }) => Some(Err(e.to_string())),
        Err(_) => None,
    };
    let input = PathBuf::from(&args[0]);
    let (output, (preset, _), rest) = match as_type(&args[1]) {
        Some(found) => {
            let (preset, name) = found?;
            let dir = input.parent().unwrap_or(Path::new(""));
            (dir.join(format!("ggml-model-{name}.gguf")), (preset, name), &args[2..])
        }
        None => {
            let Some(ty) = args.get(2) else {
                return Err(format!(
                    "missing TYPE after OUT '{}' (or '{}' is not a quantization type: {})",
                    text(&args[1]),
                    text(&args[1]),
                    Preset::NAMES.join(", ")
                ));
            };
            let found = Preset::parse_named(&text(ty)).map_err(|e| e.to_string())?;
            (PathBuf::from(&args[1]), found, &args[3..])
        }
    };
    let threads = match rest {
        [] => None,
        [n] => match text(n).trim().parse::<i64>() {
            // llama-quantize: 0 or less means all cores.
            Ok(n) if n <= 0 => None,
            Ok(n) => Some(n.min(1024) as usize),
            Err(_) => return Err(format!("invalid NTHREADS '{}' (expected a number)", text(n))),
        },
        [_, extra, ..] => return Err(format!("unexpected argument '{}'", text(extra))),
    };
    Ok(Positional { input, output, preset, threads })
}

/// SIGINT / SIGTERM set the cancel flag (and note which); a second one ends the process.
struct Interrupt {
    cancel: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    fn install() -> CliResult<Interrupt> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let cancel = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            let setup = || -> std::io::Result<()> {
                // The shutdown goes first: it fires only once a first signal set `cancel`.
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, cancel.clone())?;
                signal_hook::flag::register(sig, cancel.clone())?;
                signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)?;
                Ok(())
            };
            setup().map_err(|e| format!("cannot install a handler for signal {sig}: {e}"))?;
        }
        Ok(Interrupt { cancel, signal })
    }
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn main(a: QuantizeArgs) -> CliResult {
    let p = positional(&a.args).map_err(usage)?;
    let threads = a.threads.map(usize::from).or(p.threads);
    init_threads(threads)?;
    let input = ModelFile::open(&p.input)?;
    let interrupt = Interrupt::install()?;
    let opts = QuantizeOptions {
        allow_requantize: a.allow_requantize,
        threads: None,
        cancel: Some(interrupt.cancel.clone()),
    };
    let t0 = Instant::now();
    let result = quantize(&input, &p.output, p.preset, &opts, |t| {
        let shape = t.ne.iter().map(|d| format!("{d:>6}")).collect::<Vec<_>>().join(", ");
        let size = if t.converted() {
            format!(
                "{:>6} -> {:<6} size = {:8.2} MiB -> {:8.2} MiB",
                t.from.name(),
                t.to.name(),
                t.bytes_before as f64 / MIB,
                t.bytes_after as f64 / MIB
            )
        } else {
            format!(
                "{:>6}    {:<6} size = {:8.3} MiB",
                t.from.name(),
                "(kept)",
                t.bytes_after as f64 / MIB
            )
        };
        eprintln!("[{:>4}/{:>4}] {:<36} - [{shape}], {size}", t.index + 1, t.count, t.name);
        ControlFlow::Continue(())
    });
    let report = match result {
        Ok(r) => r,
        Err(QuantizeError::Cancelled) => {
            let sig = interrupt.signal.load(Ordering::SeqCst);
            let name = if sig == 15 { "SIGTERM" } else { "SIGINT" };
            return Err(Box::new(Exit {
                code: 128 + (sig.clamp(1, 127) as u8),
                message: Some(format!(
                    "quantize: interrupted by {name}; '{}' was not written",
                    p.output.display()
                )),
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let bpw = |bytes: u64| bytes as f64 * 8.0 / report.n_elements.max(1) as f64;
    eprintln!(
        "quantize: model size = {:8.2} MiB ({:.2} BPW)",
        report.bytes_before as f64 / MIB,
        bpw(report.bytes_before)
    );
    eprintln!(
        "quantize: quant size = {:8.2} MiB ({:.2} BPW)",
        report.bytes_after as f64 / MIB,
        bpw(report.bytes_after)
    );
    eprintln!("quantize: types: {}", report.mix);
    if report.n_fallback > 0 {
        eprintln!(
            "quantize: {} of {} tensors needed a fallback type (rows not a whole number of blocks)",
            report.n_fallback, report.tensors
        );
    }
    eprintln!(
        "quantize: wrote '{}' from '{}' as {} (ftype {}): {} bytes in {:.2} s",
        p.output.display(),
        p.input.display(),
        p.preset,
        p.preset.ftype(),
        report.file_bytes,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn positional_arguments_as_llama_quantize_reads_them() {
        let p = positional(&args(&["m/in.gguf", "out.gguf", "q4_k", "3"])).unwrap();
        assert_eq!(
            p,
            Positional {
                input: "m/in.gguf".into(),
                output: "out.gguf".into(),
                preset: Preset::Q4_K_M,
                threads: Some(3)
            }
        );
        let p = positional(&args(&["m/in.gguf", "15"])).unwrap();
        assert_eq!((p.output, p.preset), (PathBuf::from("m/ggml-model-Q4_K.gguf"), Preset::Q4_K_M));
        let p = positional(&args(&["in.gguf", "Q8_0", "0"])).unwrap();
        assert_eq!((p.output, p.threads), (PathBuf::from("ggml-model-Q8_0.gguf"), None));
        let e = positional(&args(&["in.gguf", "out.gguf"])).unwrap_err();
        assert!(e.contains("missing TYPE"), "{e}");
        let e = positional(&args(&["in.gguf", "out.gguf", "Q9"])).unwrap_err();
        assert!(e.contains("'Q9'"), "{e}");
        let e = positional(&args(&["in.gguf", "IQ2_XXS"])).unwrap_err();
        assert!(e.contains("IQ2_XXS") && e.contains("not supported"), "{e}");
        let e = positional(&args(&["in.gguf", "Q8_0", "2", "x"])).unwrap_err();
        assert!(e.contains("unexpected argument 'x'"), "{e}");
        let e = positional(&args(&["in.gguf", "o", "Q8_0", "two"])).unwrap_err();
        assert!(e.contains("NTHREADS 'two'"), "{e}");
    }
}
