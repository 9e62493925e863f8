//! pagoda-core on bare metal: everything the Cortex-M4F program computes, as a `no_std`,
//! heap-free library, so the host can run the very same code and compare.
//!
//! [`run`] does three things with pagoda-core (no default features: no `alloc`) and writes
//! one text line per result to a [`core::fmt::Write`]:
//!
//! 1. [`paging`]: a page pool over a static slab, block tables, a fork whose append copies a
//!    shared page on write (with the KV data), pool invariants and holder counts checked;
//! 2. [`attention`]: paged prefill and paged decode with GQA (4 query heads, 2 kv heads,
//!    head_dim 16, block size 4, 2 layers) over deterministic pseudo-random K/V/Q, checked
//!    against core's f64 naive attention and against each other;
//! 3. [`model`]: the GGUF reader over a tiny model in flash (`include_bytes!` of the file
//!    `build.rs` writes), Q8_0 and Q4_0 weights, a two-layer MLP run greedily for a few
//!    tokens with core's scalar `VecDot` kernels, cross-checked against `dequantize`.
//!
//! Every check that fails returns an [`Error`]. Output is deterministic (same bits on the
//! Cortex-M4F and on x86-64: IEEE f32/f64 with no fused operations, core's software libm),
//! except lines starting with `# `, which carry measurements from a [`Stopwatch`] and are
//! ignored when outputs are compared.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;

use pagoda_core::attention::AttnError;
use pagoda_core::gguf::GgufError;
use pagoda_core::kv::KvError;
use pagoda_core::pool::{InvariantViolation, PageId, PoolError};
use pagoda_core::table::TableError;

pub mod attention;
pub mod model;
pub mod paging;

/// Prefix of output lines that are measurements (not compared between runs).
pub const MEASUREMENT_PREFIX: &str = "# ";

/// The last line of a run whose checks all passed.
pub const DONE_LINE: &str = "done: all checks passed";

/// Why a run stopped: a failed check or an error from pagoda-core.
#[derive(Debug)]
pub enum Error {
    /// A check of this program failed.
    Check(&'static str),
    /// Page pool misuse.
    Pool(PoolError),
    /// A pool invariant broke.
    Invariant(InvariantViolation),
    /// Block table error.
    Table(TableError),
    /// KV storage error.
    Kv(KvError),
    /// Attention error.
    Attn(AttnError),
    /// GGUF reader error.
    Gguf(GgufError),
    /// The output sink failed.
    Write,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Check(what) => write!(f, "check failed: {what}"),
            Error::Pool(e) => write!(f, "{e}"),
            Error::Invariant(e) => write!(f, "{e}"),
            Error::Table(e) => write!(f, "{e}"),
            Error::Kv(e) => write!(f, "{e}"),
            Error::Attn(e) => write!(f, "{e}"),
            Error::Gguf(e) => write!(f, "{e}"),
            Error::Write => write!(f, "output write failed"),
        }
    }
}

macro_rules! from_error {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(e)
            }
        })*
    };
}

from_error!(
    Pool(PoolError),
    Invariant(InvariantViolation),
    Table(TableError),
    Kv(KvError),
    Attn(AttnError),
    Gguf(GgufError),
);

impl From<fmt::Error> for Error {
    fn from(_: fmt::Error) -> Self {
        Error::Write
    }
}

/// `Ok` if `cond`, else [`Error::Check`] with `what`.
pub fn ensure(cond: bool, what: &'static str) -> Result<(), Error> {
    if cond {
        Ok(())
    } else {
        Err(Error::Check(what))
    }
}

/// A counter for measurements (the target's SysTick under `qemu -icount`; nothing on the
/// host). Results are printed on `# ` lines only.
pub trait Stopwatch {
    /// Starts a measurement.
    fn start(&mut self);
    /// Units elapsed since [`start`](Self::start), or `None` if this stopwatch measures
    /// nothing.
    fn elapsed(&mut self) -> Option<u32>;
    /// What one unit is (e.g. `"instructions"`).
    fn unit(&self) -> &'static str;
}

/// A stopwatch that measures nothing (host runs): no `# ` lines are printed.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStopwatch;

impl Stopwatch for NoStopwatch {
    fn start(&mut self) {}
    fn elapsed(&mut self) -> Option<u32> {
        None
    }
    fn unit(&self) -> &'static str {
        ""
    }
}

/// Runs `f` between `watch.start()` and `watch.elapsed()` and, if the stopwatch measures,
/// writes `# {label}: {n} {unit}`.
pub fn measure<W: fmt::Write, S: Stopwatch, T>(
    out: &mut W,
    watch: &mut S,
    label: fmt::Arguments<'_>,
    f: impl FnOnce() -> T,
) -> Result<T, Error> {
    watch.start();
    let result = f();
    if let Some(n) = watch.elapsed() {
        writeln!(out, "{MEASUREMENT_PREFIX}{label}: {n} {}", watch.unit())?;
    }
    Ok(result)
}

/// Marsaglia's xorshift32: the deterministic inputs (and, in `build.rs`, the model weights).
#[derive(Clone, Debug)]
pub struct XorShift32(u32);

impl XorShift32 {
    /// A generator from a non-zero seed (0 is replaced by 1: xorshift would stay at 0).
    pub const fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 { 1 } else { seed })
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Uniform in `[-1, 1)` from 24 random bits (exact in f32, so the same on every target).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// Fills `out` with [`next_f32`](Self::next_f32) values times `scale`.
    pub fn fill(&mut self, out: &mut [f32], scale: f32) {
        for v in out {
            *v = scale * self.next_f32();
        }
    }
}

/// FNV-1a over the bit patterns of `values`: a checksum that sees every bit.
pub fn fnv1a(values: &[f32]) -> u32 {
    let mut h = 0x811c_9dc5u32;
    for v in values {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ b as u32).wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Sum of `values` in order (f32).
pub fn sum(values: &[f32]) -> f32 {
    values.iter().sum()
}

/// Writes page ids as `[0 2 4]`.
pub fn write_pages<W: fmt::Write>(out: &mut W, pages: &[PageId]) -> Result<(), Error> {
    out.write_char('[')?;
    for (i, p) in pages.iter().enumerate() {
        if i > 0 {
            out.write_char(' ')?;
        }
        write!(out, "{}", p.0)?;
    }
    out.write_char(']')?;
    Ok(())
}

/// Largest `|a[i] - b[i]|`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (&x, &y)| m.max((x - y).abs()))
}

/// The static memory the program works in: the page pool's entries, the KV slab and
/// attention buffers. The target keeps one in `.bss`; the host test allocates one.
pub struct Arena {
    /// Storage for the page pool.
    pub paging: paging::Buffers,
    /// Buffers of the attention part (its own pool, KV slab, contiguous shadow K/V, Q/out).
    pub attention: attention::Buffers,
}

impl Arena {
    /// All buffers zeroed (pool entries vacant).
    pub const fn new() -> Self {
        Arena { paging: paging::Buffers::new(), attention: attention::Buffers::new() }
    }
}

impl Default for Arena {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every part, writing one line per result to `out` and `# ` measurement lines from
/// `watch`; ends with [`DONE_LINE`]. Stops at the first failed check.
pub fn run<W: fmt::Write, S: Stopwatch>(
    arena: &mut Arena,
    out: &mut W,
    watch: &mut S,
) -> Result<(), Error> {
    writeln!(out, "pagoda-embedded: pagoda-core without alloc")?;
    paging::run(&mut arena.paging, out)?;
    attention::run(&mut arena.attention, out, watch)?;
    model::run(out, watch)?;
    writeln!(out, "{DONE_LINE}")?;
    Ok(())
}

/// Compares two run outputs line by line, ignoring `# ` measurement lines; `Err` names the
/// first difference (1-based line numbers among the compared lines).
pub fn compare_outputs<'a>(expected: &'a str, got: &'a str) -> Result<usize, Mismatch<'a>> {
    let keep = |l: &&str| !l.starts_with(MEASUREMENT_PREFIX);
    let mut e = expected.lines().filter(keep);
    let mut g = got.lines().filter(keep);
    let mut line = 0;
    loop {
        line += 1;
        match (e.next(), g.next()) {
            (None, None) => return Ok(line - 1),
            (a, b) if a == b => {}
            (expected, got) => return Err(Mismatch { line, expected, got }),
        }
    }
}

/// The first differing line of two outputs (see [`compare_outputs`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch<'a> {
    /// Line number among the compared lines, from 1.
    pub line: usize,
    /// The expected line (`None`: the expected output ended first).
    pub expected: Option<&'a str>,
    /// The line found (`None`: that output ended first).
    pub got: Option<&'a str>,
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: expected {:?}, got {:?}",
            self.line,
            self.expected.unwrap_or("<end of output>"),
            self.got.unwrap_or("<end of output>")
        )
    }
}
