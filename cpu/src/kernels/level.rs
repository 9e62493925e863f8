//! The instruction set the kernels run with, detected once per process.
//!
//! Detection is at run time only (never `#[cfg(target_feature)]` alone), so one
//! generic binary runs the best path the CPU has. `PAGODA_SIMD=scalar|avx2|avx512|neon`
//! forces a path; if the CPU lacks it, a warning goes to stderr and the detected
//! path is used instead.

use std::fmt;
use std::sync::OnceLock;

/// An instruction-set level for the kernels.
///
/// | level    | requires (checked at run time)                                  |
/// |----------|-----------------------------------------------------------------|
/// | `Scalar` | nothing: portable Rust, the reference semantics                  |
/// | `Avx2`   | x86-64 AVX2 + FMA + F16C                                        |
/// | `Avx512` | the above + AVX-512 F/BW/VL/DQ/CD + VNNI (`vpdpbusd`)           |
/// | `Neon`   | aarch64 NEON (always present on aarch64)                         |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimdLevel {
    /// Portable scalar code.
    Scalar,
    /// x86-64 AVX2 with FMA and F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL, DQ, CD) with VNNI.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl SimdLevel {
    /// Every level, from the most portable to the widest.
    pub const ALL: [SimdLevel; 4] =
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Neon];

    /// The name used by `PAGODA_SIMD` (`"scalar"`, `"avx2"`, `"avx512"`, `"neon"`).
    pub const fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    /// The level named `name` (as in `PAGODA_SIMD`, ASCII case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Whether this CPU can run the level (checked at run time, every call).
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Avx2 => has_avx2(),
            SimdLevel::Avx512 => has_avx512(),
            SimdLevel::Neon => has_neon(),
        }
    }

    /// The levels this CPU can run, scalar first: what tests iterate over.
    pub fn available() -> Vec<SimdLevel> {
        Self::ALL.into_iter().filter(|l| l.is_available()).collect()
    }

    /// The widest level this CPU can run, ignoring `PAGODA_SIMD`.
    pub fn best_available() -> SimdLevel {
        if has_avx512() {
            SimdLevel::Avx512
        } else if has_avx2() {
            SimdLevel::Avx2
        } else if has_neon() {
            SimdLevel::Neon
        } else {
            SimdLevel::Scalar
        }
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
        && pulp::x86::V3::try_new().is_some()
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512cd")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && pulp::x86::V4::try_new().is_some()
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
#[cfg(not(target_arch = "aarch64"))]
fn has_neon() -> bool {
    false
}

/// The level chosen for this process: `PAGODA_SIMD` if set and available, else the
/// widest available. Decided on the first call and cached; an unknown or unavailable
/// `PAGODA_SIMD` value logs one warning (the `log` crate; the CLI prints it on stderr).
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let best = SimdLevel::best_available();
        match std::env::var("PAGODA_SIMD") {
            Ok(v) if !v.trim().is_empty() => match SimdLevel::from_name(&v) {
                Some(l) if l.is_available() => l,
                Some(l) => {
                    log::warn!("PAGODA_SIMD={l}: this CPU lacks it; using {best}");
                    best
                }
                None => {
                    log::warn!(
                        "PAGODA_SIMD={v:?} is not one of scalar|avx2|avx512|neon; using {best}"
                    );
                    best
                }
            },
            _ => best,
        }
    })
}
