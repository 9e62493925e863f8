//! `quantize`: rewrite a GGUF model with another quantization preset, producing the very
//! bytes llama.cpp's `llama-quantize IN OUT TYPE` writes (without an importance matrix).
//!
//! | file               | what it holds                                               |
//! |--------------------|-------------------------------------------------------------|
//! | [`preset`]         | the presets (`Q4_K_M`, …): names, ftype ids, parsing        |
//! | [`tensor_type`]    | llama.cpp's per-tensor type choice, fallbacks, tensor order |
//! | [`writer`]         | the GGUF header llama.cpp writes                            |
//! | [`mix`]            | a file's type mix (`30 × Q5_0, 61 × F32`)                   |
//!
//! How a tensor is written: in llama.cpp's order ([`tensor_type::llama_order`]), with the
//! type [`tensor_type::choose_types`] gives it. A tensor that keeps its type is copied
//! byte for byte; any other is dequantized to f32 row by row
//! ([`pagoda_core::quant::dequantize_row`]) and quantized again
//! ([`pagoda_core::quant::quantize_row`], ggml's reference quantizers). Rows are
//! independent, so the work is spread over rayon's threads a slab at a time and the
//! output does not depend on the thread count.
//!
//! The output goes to a temporary file beside `output` (`.NAME.PID.N.tmp`), synced and
//! renamed over `output` at the end: `output` is never partial, and a failed or
//! cancelled run removes the temporary file.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use pagoda_cpu::model_file::ModelFile;
//! use pagoda_cpu::quantize::{quantize, Preset, QuantizeOptions};
//!
//! let input = ModelFile::open("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let opts = QuantizeOptions { allow_requantize: true, ..Default::default() };
//! let report = quantize(&input, "/tmp/q8.gguf".as_ref(), Preset::parse("Q8_0")?, &opts, |t| {
//!     eprintln!("{}: {} -> {}", t.name, t.from, t.to);
//!     ControlFlow::Continue(())
//! })?;
//! println!("{} -> {} bytes ({})", report.bytes_before, report.bytes_after, report.mix);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod mix;
pub mod preset;
pub mod tensor_type;
pub mod writer;

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use pagoda_core::gguf::{Gguf, TensorView};
use pagoda_core::quant::{dequantize_row, quantize_row, GgmlType, QuantError};
use rayon::prelude::*;

use crate::model_file::ModelFile;

pub use mix::TypeMix;
pub use preset::{Preset, PresetError};
pub use tensor_type::{is_quantized, ModelParams, ParamsError, TypeError};

/// How [`quantize`] runs.
#[derive(Clone, Debug, Default)]
pub struct QuantizeOptions {
    /// Requantize tensors that are already quantized (`--allow-requantize`): they are
    /// dequantized to f32 first, which loses more than quantizing from F16/F32 would.
    pub allow_requantize: bool,
    /// Worker threads (`None`: rayon's global pool). The output does not depend on it.
    pub threads: Option<usize>,
    /// Set to stop early (e.g. by a SIGINT handler): checked before every slab of rows;
    /// the run then fails with [`QuantizeError::Cancelled`] and leaves no file behind.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// One tensor written, for progress reports (llama-quantize prints a line each).
#[derive(Clone, Copy, Debug)]
pub struct TensorProgress<'a> {
    /// 0-based position in the output.
    pub index: usize,
    /// Number of tensors.
    pub count: usize,
    /// The tensor's name.
    pub name: &'a str,
    /// Its shape, ggml order (`ne[0]` is the row length), padded with 1s.
    pub ne: [u64; 4],
    /// Its type in the input.
    pub from: GgmlType,
    /// Its type in the output (equal to `from`: copied as it is).
    pub to: GgmlType,
    /// Bytes in the input.
    pub bytes_before: u64,
    /// Bytes in the output (without alignment padding).
    pub bytes_after: u64,
}

impl TensorProgress<'_> {
    /// Whether the tensor was converted (else copied byte for byte).
    pub fn converted(&self) -> bool {
        self.from != self.to
    }
}

/// What a finished [`quantize`] wrote.
#[derive(Clone, Debug)]
pub struct Report {
    /// The preset (its ftype is the output's `general.file_type`).
    pub preset: Preset,
    /// Number of tensors.
    pub tensors: usize,
    /// Values in all tensors (for bits per weight).
    pub n_elements: u64,
    /// Tensor data bytes in the input.
    pub bytes_before: u64,
    /// Tensor data bytes in the output (without padding).
    pub bytes_after: u64,
    /// Size of the output file.
    pub file_bytes: u64,
    /// Tensors that needed a fallback type (their rows do not fit the preset's blocks).
    pub n_fallback: usize,
    /// The output's type mix.
    pub mix: TypeMix,
}

/// One tensor of a [`Plan`].
#[derive(Clone, Copy, Debug)]
pub struct PlannedTensor<'a> {
    /// The input tensor.
    pub input: TensorView<'a>,
    /// Its shape, ggml order, padded with 1s.
    pub ne: [u64; 4],
    /// Its output type.
    pub to: GgmlType,
    /// Its output bytes.
    pub bytes_after: u64,
}

/// The output's tensors in order, with their types: what [`quantize`] will write.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    /// Every tensor, in llama.cpp's order.
    pub tensors: Vec<PlannedTensor<'a>>,
    /// How many needed a fallback type.
    pub n_fallback: usize,
}

/// Why [`quantize`] failed. Every variant names what is wrong; I/O errors name the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The TYPE is not a preset pagoda writes.
    Preset(PresetError),
    /// The output is the input file.
    SameFile {
        /// The path given as output.
        path: PathBuf,
    },
    /// A tensor is already quantized and would be converted, but
    /// [`QuantizeOptions::allow_requantize`] is off.
    Requantize {
        /// The first such tensor.
        tensor: String,
        /// Its type.
        from: GgmlType,
        /// The type it would get.
        to: GgmlType,
    },
    /// A tensor's type cannot be converted to f32 (pagoda has no dequantizer for it).
    CannotDequantize {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A tensor's output type has no quantizer in pagoda-core (yet).
    CannotQuantize {
        /// The tensor.
        tensor: String,
        /// The output type.
        ty: GgmlType,
    },
    /// Converting a tensor failed.
    Convert {
        /// The tensor.
        tensor: String,
        /// What the row functions reported.
        source: QuantError,
    },
    /// The metadata lacks what the type choice needs.
    Metadata(ParamsError),
    /// No type could be chosen for a tensor.
    Type(TypeError),
    /// The input is one part of a split model (`split.count` > 1).
    SplitInput {
        /// Number of parts.
        count: u64,
    },
    /// Building the worker thread pool failed.
    Threads(String),
    /// Reading or writing a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// [`QuantizeOptions::cancel`] was set, or the progress callback broke off.
    Cancelled,
}

impl fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantizeError::Preset(e) => e.fmt(f),
            QuantizeError::SameFile { path } => {
                write!(f, "the output '{}' is the input file", path.display())
            }
            QuantizeError::Requantize { tensor, from, to } => write!(
                f,
                "tensor {} is already quantized ({from}): requantizing it to {to} is disabled \
                 (it loses quality; allow it with --allow-requantize)",
                tensor.escape_debug()
            ),
            QuantizeError::CannotDequantize { tensor, ty } => write!(
                f,
                "tensor {}: cannot dequantize type {ty} (pagoda has no dequantizer for it)",
                tensor.escape_debug()
            ),
            QuantizeError::CannotQuantize { tensor, ty } => write!(
                f,
                "tensor {}: cannot quantize to {ty} (pagoda-core has no quantizer for it yet)",
                tensor.escape_debug()
            ),
            QuantizeError::Convert { tensor, source } => {
                write!(f, "tensor {}: {source}", tensor.escape_debug())
            }
            QuantizeError::Metadata(e) => e.fmt(f),
            QuantizeError::Type(e) => e.fmt(f),
            QuantizeError::SplitInput { count } => write!(
                f,
                "the input is one part of a model split in {count} files (merge it first)"
            ),
            QuantizeError::Threads(e) => write!(f, "cannot start the worker threads: {e}"),
            QuantizeError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            QuantizeError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for QuantizeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QuantizeError::Preset(e) => Some(e),
            QuantizeError::Convert { source, .. } => Some(source),
            QuantizeError::Metadata(e) => Some(e),
            QuantizeError::Type(e) => Some(e),
            QuantizeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<PresetError> for QuantizeError {
    fn from(e: PresetError) -> Self {
        QuantizeError::Preset(e)
    }
}

/// The shape of `t`, ggml order, padded with 1s (a 0-D tensor is `[1, 1, 1, 1]`).
fn shape(t: &TensorView<'_>) -> [u64; 4] {
    let mut ne = [1u64; 4];
    ne[..t.dims().len()].copy_from_slice(t.dims());
    ne
}

/// The tensors [`quantize`] would write for `preset`, in order, with their types (what
/// `llama-quantize --dry-run` shows). Fails on metadata the type choice needs.
pub fn plan<'a>(g: &Gguf<'a>, preset: Preset) -> Result<Plan<'a>, QuantizeError> {
    if let Some(count) = g.get("split.count").and_then(|v| v.as_integer()) {
        if count > 1 {
            return Err(QuantizeError::SplitInput {
                count: count.clamp(0, u64::MAX as i128) as u64,
            });
        }
    }
    let params = ModelParams::from_gguf(g).map_err(QuantizeError::Metadata)?;
    let mut views: Vec<TensorView<'a>> = g.tensors().collect();
    views.sort_by(|a, b| tensor_type::llama_order(a.name(), b.name()));
    let descs: Vec<tensor_type::TensorDesc<'a>> = views
        .iter()
        .map(|t| tensor_type::TensorDesc { name: t.name(), ne: shape(t), ty: t.ggml_type() })
        .collect();
    let choice = tensor_type::choose_types(&params, preset, &descs).map_err(QuantizeError::Type)?;
    let tensors = views
        .into_iter()
        .zip(choice.types)
        .map(|(input, to)| {
            let ne = shape(&input);
            let bytes_after = if to == input.ggml_type() {
                input.data().len() as u64
            } else {
                // The type choice only gives types whose blocks divide the row.
                to.row_bytes(ne[0]).unwrap_or(0) * ne[1] * ne[2] * ne[3]
            };
            PlannedTensor { input, ne, to, bytes_after }
        })
        .collect();
    Ok(Plan { tensors, n_fallback: choice.n_fallback })
}

/// Checks, before anything is written, that every conversion the plan needs is allowed
/// and possible.
fn check(plan: &Plan<'_>, options: &QuantizeOptions) -> Result<(), QuantizeError> {
    for t in plan.tensors.iter().filter(|t| t.to != t.input.ggml_type()) {
        let (name, from) = (t.input.name(), t.input.ggml_type());
        if is_quantized(from) && !options.allow_requantize {
            return Err(QuantizeError::Requantize { tensor: name.into(), from, to: t.to });
        }
        // An empty row probes for a (de)quantizer without converting anything.
        if let Err(QuantError::Unsupported(_)) = dequantize_row(from, &[], &mut []) {
            return Err(QuantizeError::CannotDequantize { tensor: name.into(), ty: from });
        }
        if let Err(QuantError::Unsupported(_)) = quantize_row(t.to, &[], &mut []) {
            return Err(QuantizeError::CannotQuantize { tensor: name.into(), ty: t.to });
        }
    }
    Ok(())
}

/// Writes `input` quantized with `preset` to `output`, as llama-quantize does, calling
/// `progress` after each tensor (`ControlFlow::Break` cancels). The output is written to a
/// temporary file beside it and renamed at the end; on any error, nothing is left behind
/// and an existing `output` is untouched.
pub fn quantize(
    input: &ModelFile,
    output: &Path,
    preset: Preset,
    options: &QuantizeOptions,
    mut progress: impl FnMut(&TensorProgress<'_>) -> ControlFlow<()>,
) -> Result<Report, QuantizeError> {
    if same_file(input.path(), output) {
        return Err(QuantizeError::SameFile { path: output.to_path_buf() });
    }
    let g = input.gguf();
    let plan = plan(&g, preset)?;
    check(&plan, options)?;
    let pool = Pool::new(options.threads)?;
    let cancelled = || options.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));

    // llama.cpp always pads to 32 bytes, even when the input's general.alignment (copied
    // into the output) says otherwise, which makes a file readers misplace; pagoda pads to
    // the alignment the output declares. For the usual 32 the bytes are the same.
    let alignment = g.alignment();
    let infos: Vec<writer::TensorInfo<'_>> = plan
        .tensors
        .iter()
        .map(|t| writer::TensorInfo {
            name: t.input.name(),
            ne: t.ne,
            ty: t.to,
            size: t.bytes_after,
        })
        .collect();
    let header = writer::header(&g, preset.ftype(), &infos, alignment)
        .map_err(|source| QuantizeError::Io { path: output.to_path_buf(), source })?;

    let mut out = TempFile::create(output)?;
    out.write(&header)?;
    let mut file_bytes = header.len() as u64;
    let count = plan.tensors.len();
    let mut buf = Vec::new();
    for (index, t) in plan.tensors.iter().enumerate() {
        if cancelled() {
            return Err(QuantizeError::Cancelled);
        }
        let from = t.input.ggml_type();
        if t.to == from {
            out.write(t.input.data())?;
        } else {
            convert(t, &pool, &mut buf, &mut out, &cancelled)?;
        }
        let padded = writer::pad(t.bytes_after, alignment);
        out.write(&ZEROS[..(padded - t.bytes_after) as usize])?;
        file_bytes += padded;
        let p = TensorProgress {
            index,
            count,
            name: t.input.name(),
            ne: t.ne,
            from,
            to: t.to,
            bytes_before: t.input.data().len() as u64,
            bytes_after: t.bytes_after,
        };
        if progress(&p).is_break() {
            return Err(QuantizeError::Cancelled);
        }
    }
    if cancelled() {
        return Err(QuantizeError::Cancelled);
    }
    out.commit()?;
    Ok(Report {
        preset,
        tensors: count,
        n_elements: plan.tensors.iter().map(|t| t.input.n_elements()).sum(),
        bytes_before: plan.tensors.iter().map(|t| t.input.data().len() as u64).sum(),
        bytes_after: plan.tensors.iter().map(|t| t.bytes_after).sum(),
        file_bytes,
        n_fallback: plan.n_fallback,
        mix: TypeMix::from_types(plan.tensors.iter().map(|t| t.to)),
    })
}

/// Zeros for alignment padding (alignment is at most 2^16, `MAX_ALIGNMENT`).
static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

/// Output bytes converted per slab: the memory a conversion holds at once, and the unit
/// of cancellation.
const SLAB_BYTES: usize = 16 << 20;
/// Values per parallel task (llama.cpp's `min_chunk_size`, 32 × 512).
const TASK_VALUES: usize = 32 * 512;

/// Dequantizes and requantizes one tensor, a slab of rows at a time, into `out`.
fn convert(
    t: &PlannedTensor<'_>,
    pool: &Pool,
    buf: &mut Vec<u8>,
    out: &mut TempFile,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), QuantizeError> {
    let (from, to, name) = (t.input.ggml_type(), t.to, t.input.name());
    let n_per_row = t.ne[0] as usize;
    let n_rows = (t.ne[1] * t.ne[2] * t.ne[3]) as usize;
    if n_per_row == 0 || n_rows == 0 {
        return Ok(());
    }
    let src_row = t.input.data().len() / n_rows;
    let dst_row = t.bytes_after as usize / n_rows;
    let rows_per_task = (TASK_VALUES / n_per_row).max(1);
    let rows_per_slab = (SLAB_BYTES / dst_row.max(1)).max(1).next_multiple_of(rows_per_task);
    let convert_err = |source| match source {
        QuantError::Unsupported(ty) if ty == from => {
            QuantizeError::CannotDequantize { tensor: name.into(), ty }
        }
        QuantError::Unsupported(ty) => QuantizeError::CannotQuantize { tensor: name.into(), ty },
        source => QuantizeError::Convert { tensor: name.into(), source },
    };
    for first in (0..n_rows).step_by(rows_per_slab) {
        if cancelled() {
            return Err(QuantizeError::Cancelled);
        }
        let rows = rows_per_slab.min(n_rows - first);
        let src = &t.input.data()[first * src_row..(first + rows) * src_row];
        buf.resize(rows * dst_row, 0);
        let dst = &mut buf[..rows * dst_row];
        pool.run(|| {
            dst.par_chunks_mut(rows_per_task * dst_row)
                .zip(src.par_chunks(rows_per_task * src_row))
                .try_for_each_init(
                    || (vec![0f32; n_per_row], Vec::new()),
                    |(values, bounce), (d, s)| {
                        for (d, s) in d.chunks_mut(dst_row).zip(s.chunks(src_row)) {
                            dequantize_aligned(from, s, values, bounce)?;
                            quantize_row(to, values, d)?;
                        }
                        Ok(())
                    },
                )
        })
        .map_err(convert_err)?;
        out.write(dst)?;
    }
    Ok(())
}

/// [`dequantize_row`], copying the row to an aligned buffer first if it is not aligned
/// for its blocks (the tensor data of a mapped file always is).
fn dequantize_aligned(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [f32],
    bounce: &mut Vec<u64>,
) -> Result<(), QuantError> {
    match dequantize_row(ty, bytes, out) {
        Err(QuantError::Misaligned { .. }) => {
            bounce.clear();
            bounce.resize(bytes.len().div_ceil(8), 0);
            let aligned = &mut bytemuck::cast_slice_mut::<u64, u8>(bounce)[..bytes.len()];
            aligned.copy_from_slice(bytes);
            dequantize_row(ty, aligned, out)
        }
        r => r,
    }
}

/// Where the parallel work runs.
enum Pool {
    Global,
    Own(rayon::ThreadPool),
}

impl Pool {
    fn new(threads: Option<usize>) -> Result<Pool, QuantizeError> {
        match threads {
            None => Ok(Pool::Global),
            Some(n) => rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map(Pool::Own)
                .map_err(|e| QuantizeError::Threads(e.to_string())),
        }
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            Pool::Global => f(),
            Pool::Own(p) => p.install(f),
        }
    }
}

/// Whether `a` and `b` name the same existing file (same device and inode on Unix, same
/// canonical path elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The output being written: a temporary file beside the target, renamed over it by
/// [`commit`](Self::commit), removed if dropped before.
struct TempFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
}

/// Distinguishes the temporary files of concurrent runs in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// The temporary file's name pattern: `.NAME.PID.N.tmp` beside `target`.
    fn create(target: &Path) -> Result<TempFile, QuantizeError> {
        let io = |source| QuantizeError::Io { path: target.to_path_buf(), source };
        let meta = std::fs::metadata(target).ok();
        if meta.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(io(io::Error::new(io::ErrorKind::InvalidInput, "is not a regular file")));
        }
        // Replace what a symlink points to, not the link.
        let target = match meta {
            Some(_) => target.canonicalize().map_err(io)?,
            None => target.to_path_buf(),
        };
        let name = target.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = target.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let file =
            File::create(&tmp).map_err(|source| QuantizeError::Io { path: tmp.clone(), source })?;
        Ok(TempFile { target, tmp, file: Some(BufWriter::with_capacity(1 << 20, file)) })
    }

    fn io_error(&self, source: io::Error) -> QuantizeError {
        QuantizeError::Io { path: self.tmp.clone(), source }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), QuantizeError> {
        let r = match self.file.as_mut() {
            Some(f) => f.write_all(bytes),
            None => Ok(()),
        };
        r.map_err(|e| self.io_error(e))
    }

    /// Flushes, syncs and renames the temporary file over the target.
    fn commit(mut self) -> Result<(), QuantizeError> {
        let Some(w) = self.file.take() else { return Ok(()) };
        let synced = w.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(self.io_error(e));
        }
        if let Err(source) = std::fs::rename(&self.tmp, &self.target) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(QuantizeError::Io { path: self.target.clone(), source });
        }
        // Make the rename durable (best effort).
        if let Some(dir) = self.target.parent() {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
