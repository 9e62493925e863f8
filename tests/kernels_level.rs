//! SIMD level detection and the `PAGODA_SIMD` override.

use pagoda::cpu::kernels::{simd_level, KernelError, Kernels, SimdLevel};

#[test]
fn names_round_trip() {
    for l in SimdLevel::ALL {
        assert_eq!(SimdLevel::from_name(l.name()), Some(l));
        assert_eq!(SimdLevel::from_name(&l.name().to_uppercase()), Some(l));
    }
    assert_eq!(SimdLevel::from_name("sse2"), None);
}

#[test]
fn available_levels_start_with_scalar_and_include_the_best() {
    let a = SimdLevel::available();
    assert_eq!(a[0], SimdLevel::Scalar);
    assert!(a.contains(&SimdLevel::best_available()));
    assert!(simd_level().is_available());
    assert!(Kernels::detect().level().is_available());
}

#[test]
fn unavailable_level_is_refused() {
    for l in SimdLevel::ALL {
        match Kernels::new(l) {
            Ok(k) => assert!(l.is_available() && k.level() == l),
            Err(e) => assert_eq!(e, KernelError::LevelUnavailable(l)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    assert!(Kernels::new(SimdLevel::Neon).is_err());
}

/// Prints `log` records on stderr, as the CLI's logger does (the library itself never
/// prints).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("{}: {}", record.level(), record.args());
    }
    fn flush(&self) {}
}

/// Runs this test binary again with `PAGODA_SIMD` set: the child checks what it got, and
/// that an unusable value is reported as a `log` warning.
#[test]
fn pagoda_simd_forces_a_level_or_falls_back() {
    if let Ok(want) = std::env::var("PAGODA_SIMD_TEST_EXPECT") {
        static LOG: StderrLog = StderrLog;
        log::set_logger(&LOG).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        assert_eq!(simd_level().name(), want);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let best = SimdLevel::best_available();
    let mut cases = vec![("scalar", "scalar"), ("bogus", best.name())];
    #[cfg(target_arch = "x86_64")]
    cases.push(("neon", best.name()));
    if SimdLevel::Avx2.is_available() {
        cases.push(("avx2", "avx2"));
    }
    for (set, want) in cases {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "pagoda_simd_forces_a_level_or_falls_back", "--nocapture"])
            .env("PAGODA_SIMD", set)
            .env("PAGODA_SIMD_TEST_EXPECT", want)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PAGODA_SIMD={set}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if set != want {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("WARN: PAGODA_SIMD"),
                "PAGODA_SIMD={set}: no logged warning: {err}"
            );
        }
    }
}
