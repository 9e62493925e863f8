//! llama.cpp's flags that pagoda does not have, caught before clap sees them.
//!
//! People come with llama.cpp habits. Without this, clap reads a short multi-letter flag
//! as a known short flag plus its value: `-ngl 0` would become `-n gl`, `-fa` would become
//! `-f a` (a prompt file named "a"), `-ctk q8_0` would become `-c tk`. Each flag in
//! the table `FLAGS` is either accepted with a one-line note that it does nothing on a CPU build
//! (`-ngl`) or refused with a message naming the flag and pagoda's way to get the same
//! (`-ctk` → `--kv-type`) — usage errors, exit 2.
//!
//! ```
//! use pagoda_cli::compat::{filter, Filtered};
//! let args = ["pagoda", "run", "-ngl", "99", "-p", "Hi"].map(String::from).to_vec();
//! let Filtered { args, notes } = filter(args).unwrap();
//! assert_eq!(args, ["pagoda", "run", "-p", "Hi"]);
//! assert!(notes[0].starts_with("note: -ngl 99:"));
//! let refused = filter(["pagoda", "run", "-ctk", "q8_0"].map(String::from).to_vec());
//! assert!(refused.unwrap_err().contains("--kv-type"));
//! ```

/// What a llama.cpp flag takes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    /// Nothing: `--mlock`.
    None,
    /// Always one argument: `-ngl 99`.
    One,
    /// An argument only if the next one is one of these words: `-fa` or `-fa on`.
    OneOf(&'static [&'static str]),
}

/// What pagoda does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Accepted; the note says why it changes nothing.
    Ignore(&'static str),
    /// Refused (exit 2); the message says what to use instead.
    Refuse(&'static str),
}

/// One llama.cpp flag: its spellings, its value and pagoda's answer.
struct Flag {
    names: &'static [&'static str],
    value: Value,
    action: Action,
}

const ON_OFF: &[&str] = &["on", "off", "auto", "1", "0", "true", "false"];

/// The flags. Only spellings pagoda does not use itself are listed; pagoda's own flags
/// (`-c`, `-n`, `-t`, `-b`, `--temp`, …) keep llama.cpp's names and meanings.
const FLAGS: &[Flag] = &[
    Flag {
        names: &["-ngl", "--n-gpu-layers", "--gpu-layers", "-ngld", "--n-gpu-layers-draft"],
        value: Value::One,
        action: Action::Ignore("pagoda runs on the CPU; there is no GPU to offload layers to"),
    },
    Flag {
        names: &["-fa", "--flash-attn"],
        value: Value::OneOf(ON_OFF),
        action: Action::Ignore(
            "pagoda's attention is always one fused pass over the KV pages (online softmax)",
        ),
    },
    Flag {
        names: &["--no-mmap"],
        value: Value::None,
        action: Action::Ignore("pagoda reads the model into memory by default (--mmap maps it)"),
    },
    Flag {
        names: &[
            "-sm",
            "--split-mode",
            "-mg",
            "--main-gpu",
            "-ts",
            "--tensor-split",
            "-dev",
            "--device",
        ],
        value: Value::One,
        action: Action::Ignore("pagoda runs on the CPU; there are no GPUs to split across"),
    },
    Flag {
        names: &["-nkvo", "--no-kv-offload"],
        value: Value::None,
        action: Action::Ignore("pagoda keeps the KV cache in CPU memory always"),
    },
    Flag {
        names: &["-cb", "--cont-batching"],
        value: Value::None,
        action: Action::Ignore("pagoda's engine (batch, serve) always batches continuously"),
    },
    Flag {
        names: &["--mlock"],
        value: Value::None,
        action: Action::Refuse(
            "pagoda does not lock the model in RAM; it reads it into (huge-page) memory by \
             default, so it is not paged out the way a mapped file is",
        ),
    },
    Flag {
        names: &["--numa"],
        value: Value::One,
        action: Action::Refuse("pagoda has no NUMA placement; run it under `numactl` instead"),
    },
    Flag {
        names: &["-ctk", "--cache-type-k", "-ctv", "--cache-type-v"],
        value: Value::One,
        action: Action::Refuse(
            "pagoda's KV pages have one type for K and V: --kv-type f32|f16|bf16|q8_0|q4_0",
        ),
    },
    Flag {
        names: &["-i", "--interactive", "-cnv", "--conversation", "-if", "--interactive-first"],
        value: Value::None,
        action: Action::Refuse("for an interactive conversation use `pagoda chat`"),
    },
    Flag {
        names: &["-np", "--parallel"],
        value: Value::One,
        action: Action::Refuse(
            "pagoda's engine takes as many sequences as its KV pages hold: size it with \
             --kv-pages (batch, serve)",
        ),
    },
    Flag {
        names: &["-ub", "--ubatch-size"],
        value: Value::One,
        action: Action::Refuse("pagoda has one batch size: -b / --batch-size"),
    },
    Flag {
        names: &["-tb", "--threads-batch"],
        value: Value::One,
        action: Action::Refuse("pagoda uses one thread count for prompts and generation: -t"),
    },
    Flag {
        names: &["-hf", "-hfr", "--hf-repo", "-mu", "--model-url", "-dr", "--docker-repo"],
        value: Value::One,
        action: Action::Refuse(
            "pagoda does not download models; fetch one with scripts/fetch-model.sh and pass -m",
        ),
    },
    Flag {
        names: &["-co", "--color"],
        value: Value::None,
        action: Action::Ignore("pagoda prints plain text"),
    },
];

/// The arguments with the accepted llama.cpp flags (and their values) taken out, and one
/// note per accepted flag for stderr.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// What clap should parse.
    pub args: Vec<String>,
    /// `note: -ngl 99: …` lines.
    pub notes: Vec<String>,
}

/// Takes llama.cpp-only flags out of `args` (the program name first). A refused flag is
/// an error message for a usage error (exit 2). Arguments after `--`, and values of
/// pagoda's own flags that take free text (`-p`, `--system`, `--stop`), are left alone:
/// `-p -ngl` is a prompt.
pub fn filter(args: Vec<String>) -> Result<Filtered, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut notes = Vec::new();
    let mut it = args.into_iter().peekable();
    if let Some(program) = it.next() {
        out.push(program);
    }
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.push(arg);
            out.extend(it);
            break;
        }
        if TEXT_VALUED.contains(&arg.as_str()) {
            out.push(arg);
            out.extend(it.next());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let Some(flag) = FLAGS.iter().find(|f| f.names.contains(&name.as_str())) else {
            out.push(arg);
            continue;
        };
        let value = match (flag.value, inline) {
            (_, Some(v)) => Some(v),
            (Value::None, None) => None,
            (Value::One, None) => match it.next() {
                Some(v) => Some(v),
                None => return Err(format!("{name} needs a value (and does nothing in pagoda)")),
            },
            (Value::OneOf(words), None) => {
                if it.peek().is_some_and(|v| words.contains(&v.to_ascii_lowercase().as_str())) {
                    it.next()
                } else {
                    None
                }
            }
        };
        let shown = match &value {
            Some(v) => format!("{name} {v}"),
            None => name.clone(),
        };
        match flag.action {
            Action::Ignore(why) => notes.push(format!("note: {shown}: {why}; ignored")),
            Action::Refuse(what) => {
                return Err(format!("{name} is a llama.cpp flag pagoda does not have: {what}"))
            }
        }
    }
    Ok(Filtered { args: out, notes })
}

/// pagoda's flags whose value is free text, which may itself start with `-`.
const TEXT_VALUED: &[&str] = &["-p", "--prompt", "--system", "--stop", "--dry-sequence-breaker"];

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn every_listed_flag_is_taken_out_or_refused_never_passed_on() {
        for flag in FLAGS {
            for name in flag.names {
                let value = if flag.value == Value::One { " 1" } else { "" };
                let r = filter(args(&format!("pagoda run {name}{value} -p hi")));
                match (flag.action, r) {
                    (Action::Ignore(_), Ok(f)) => {
                        assert_eq!(f.args, args("pagoda run -p hi"), "{name}");
                        assert_eq!(f.notes.len(), 1, "{name}");
                        assert!(f.notes[0].contains(name), "{}", f.notes[0]);
                    }
                    (Action::Refuse(_), Err(m)) => assert!(m.starts_with(name), "{m}"),
                    (a, r) => panic!("{name}: {a:?} gave {r:?}"),
                }
            }
        }
    }

    #[test]
    fn optional_values_and_inline_values() {
        let f = filter(args("pagoda run -fa on -p hi")).unwrap();
        assert_eq!(f.args, args("pagoda run -p hi"));
        let f = filter(args("pagoda run -fa -p hi")).unwrap();
        assert_eq!(f.args, args("pagoda run -p hi"));
        let f = filter(args("pagoda run --n-gpu-layers=99 -p hi")).unwrap();
        assert_eq!((f.args, f.notes[0].as_str()), (args("pagoda run -p hi"), "note: --n-gpu-layers 99: pagoda runs on the CPU; there is no GPU to offload layers to; ignored"));
    }

    #[test]
    fn text_values_and_everything_after_double_dash_are_left_alone() {
        let f = filter(args("pagoda run -p -ngl --stop -fa")).unwrap();
        assert_eq!(f.args, args("pagoda run -p -ngl --stop -fa"));
        assert!(f.notes.is_empty());
        let f = filter(args("pagoda tokenize -- -ngl")).unwrap();
        assert_eq!(f.args, args("pagoda tokenize -- -ngl"));
    }

    #[test]
    fn a_missing_value_is_an_error() {
        assert!(filter(args("pagoda run -ngl")).unwrap_err().contains("-ngl needs a value"));
    }
}
