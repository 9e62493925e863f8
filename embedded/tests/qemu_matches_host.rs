//! The bare-metal run must print exactly what the same code prints on the host.
//!
//! `scripts/embedded.sh` runs the Cortex-M4F binary under qemu, saves its output and passes
//! the file in `PAGODA_EMBEDDED_QEMU_OUTPUT`; this test runs [`pagoda_embedded::run`] on the
//! host and compares line by line (measurement lines, `# …`, are skipped). A missing
//! variable or file is a failure, not a skip.

use pagoda_embedded::{compare_outputs, run, Arena, Mismatch, NoStopwatch, DONE_LINE};

/// The host run's output; panics if a check failed.
fn host_output() -> String {
    let mut arena = Box::new(Arena::new());
    let mut out = String::new();
    if let Err(e) = run(&mut arena, &mut out, &mut NoStopwatch) {
        panic!("host run failed: {e}\noutput so far:\n{out}");
    }
    out
}

#[test]
fn host_run_passes_its_checks_and_prints_no_measurements() {
    let out = host_output();
    assert_eq!(out.lines().last(), Some(DONE_LINE));
    assert!(!out.lines().any(|l| l.starts_with('#')), "NoStopwatch measures nothing");
    assert!(out.lines().count() > 20, "every part reports");
}

#[test]
fn host_run_is_deterministic() {
    assert_eq!(host_output(), host_output());
}

#[test]
fn comparison_skips_measurements_and_finds_differences() {
    let host = "a\nb\ndone\n";
    assert_eq!(compare_outputs(host, "a\n# 123 instructions\nb\ndone\n"), Ok(3));
    assert_eq!(
        compare_outputs(host, "a\nB\ndone\n"),
        Err(Mismatch { line: 2, expected: Some("b"), got: Some("B") })
    );
    assert_eq!(
        compare_outputs(host, "a\nb\n"),
        Err(Mismatch { line: 3, expected: Some("done"), got: None })
    );
    assert_eq!(
        compare_outputs(host, "a\nb\ndone\nFAILED: x\n"),
        Err(Mismatch { line: 4, expected: None, got: Some("FAILED: x") })
    );
}

#[test]
fn qemu_output_matches_host() {
    const VAR: &str = "PAGODA_EMBEDDED_QEMU_OUTPUT";
    let path = std::env::var_os(VAR).unwrap_or_else(|| {
        panic!("{VAR} is not set: run scripts/embedded.sh, which runs qemu and sets it")
    });
    let qemu = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the qemu output {}: {e}", path.to_string_lossy()));
    let host = host_output();
    match compare_outputs(&host, &qemu) {
        Ok(n) => {
            assert!(n > 20, "compared only {n} lines");
            println!("qemu output matches the host run: {n} lines (measurement lines skipped)");
        }
        Err(m) => panic!("qemu output differs from the host run at {m}\n--- qemu output:\n{qemu}"),
    }
    assert!(qemu.lines().any(|l| l == DONE_LINE), "the qemu run finished its checks");
}
