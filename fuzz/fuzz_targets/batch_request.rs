//! Fuzz the batch JSONL request parser (`pagoda batch`): any line parses to a request or an
//! error naming the line, never a panic. A parsed request has a non-empty prompt, at least
//! one token to generate (or the caller's default count, which may be 0) and sampler
//! settings that validate.
//!
//! The input: one byte choosing the default token count (0..=255), then the line (UTF-8;
//! the CLI reads lines as strings, so other bytes never reach the parser).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagoda_cli::batch::parse_request_line;
use pagoda_cpu::sampler::SamplerConfig;

fuzz_target!(|data: &[u8]| {
    let Some((&n, line)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(line) else { return };
    let line_no = 1 + usize::from(n) * 7;
    let defaults = SamplerConfig::default();
    match parse_request_line(text, line_no, &defaults, usize::from(n)) {
        Ok(r) => {
            assert_eq!(r.line_no, line_no);
            assert!(!r.prompt.is_empty(), "empty prompt accepted: {text:?}");
            // A line's own n_predict is at least 1; without one it takes the default (which
            // may be 0: generate nothing).
            assert!(r.n_predict >= 1 || r.n_predict == usize::from(n), "n_predict 0: {text:?}");
            assert!(r.sampler.validate().is_ok(), "invalid sampler accepted: {:?}", r.sampler);
        }
        Err(e) => {
            assert!(e.starts_with(&format!("line {line_no}: ")), "{e:?} does not name the line");
        }
    }
});
