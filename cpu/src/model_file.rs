//! A GGUF model file, memory-mapped read-only or read into memory, and validated once.
//!
//! [`ModelFile::open`] maps the file and runs [`Gguf::parse`] over the whole header,
//! which checks every metadata entry and every tensor's shape, type and data bounds.
//! After that, [`ModelFile::gguf`] hands out zero-copy views into the map.
//!
//! [`ModelFile::read`] reads the whole file instead, into anonymous memory asked for
//! transparent huge pages (`madvise(MADV_HUGEPAGE)`, a hint), like llama.cpp's `--no-mmap`.
//! Decode streams all ~100 MB of weights per token: over the file's 4 KiB pages that is
//! 24k TLB misses a token, over 2 MiB pages 50; tg128 at 2 threads measured 10–20% faster
//! (`docs/benchmarks.md`). The cost is a copy at load (~50 ms) and the memory of the
//! copy (the page cache's copy stays reclaimable). It is also immune to the file
//! changing on disk, which a map is not (see [`ModelFile`]).
//!
//! ```no_run
//! use pagoda_cpu::model_file::{default_model_path, ModelFile};
//! let model = ModelFile::open(default_model_path())?;
//! let gguf = model.gguf();
//! println!("{} layers", gguf.get_u32("llama.block_count")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use pagoda_core::gguf::{Gguf, GgufError, GgufLayout};

/// The default model's file name, under `models/`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The environment variable that overrides the default model path.
pub const MODEL_ENV: &str = "PAGODA_MODEL";

/// `$PAGODA_MODEL` if set (and not empty), else `models/SmolLM2-135M-Instruct.Q4_1.gguf`
/// relative to the current directory.
pub fn default_model_path() -> PathBuf {
    match std::env::var_os(MODEL_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new("models").join(DEFAULT_MODEL_FILE),
    }
}

/// For tests: `$PAGODA_MODEL` if set (and not empty), else
/// `<workspace_root>/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
///
/// Tests pass e.g. `concat!(env!("CARGO_MANIFEST_DIR"), "/..")` from a member crate.
pub fn workspace_model_path(workspace_root: &Path) -> PathBuf {
    match std::env::var_os(MODEL_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root.join("models").join(DEFAULT_MODEL_FILE),
    }
}

/// A GGUF file mapped read-only (or read into memory), with its whole header validated.
///
/// # If the file changes while mapped (`open`; `read` copies and is not affected)
///
/// The map is read-only and private to this process, but it still shows the file's
/// current contents: the kernel does not snapshot it. If another process **truncates**
/// the file while it is mapped, touching a page past the new end raises `SIGBUS` and
/// kills the process; if it **rewrites** bytes in place, tensor views silently see the
/// new bytes (and metadata read after `open` may no longer match what was validated).
/// Rust cannot rule this out, so: do not modify, truncate or replace-in-place a model
/// file while it is in use. Replacing it by rename (write a new file, `mv` it over
/// the old path) is safe: the map keeps the old inode alive.
pub struct ModelFile {
    path: PathBuf,
    map: Bytes,
    /// What the validating parse in `open` learned, so `gguf()` is O(1).
    layout: GgufLayout,
}

impl ModelFile {
    /// Maps `path` read-only and validates it as GGUF (header, metadata, every
    /// tensor's shape, type and bounds). Errors name the path.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile, ModelFileError> {
        let path = path.as_ref().to_path_buf();
        let file = open_regular(&path)?;
        // SAFETY: the map is read-only and we never create mutable references into it.
        // The remaining hazard is another process modifying or truncating the file
        // while it is mapped, which Rust cannot rule out; it is documented on
        // `ModelFile` as a requirement on callers (do not modify model files in use).
        let map = unsafe { Mmap::map(&file) }
            .map_err(|source| ModelFileError::Io { path: path.clone(), source })?;
        Self::validate(path, Bytes::Map(map))
    }

    /// Reads the whole file at `path` into anonymous memory (transparent huge pages where
    /// the OS grants them; see the module docs) and validates it as GGUF, as
    /// [`open`](Self::open) does. Errors name the path.
    pub fn read(path: impl AsRef<Path>) -> Result<ModelFile, ModelFileError> {
        use std::io::Read;
        let path = path.as_ref().to_path_buf();
        let io = |source| ModelFileError::Io { path: path.clone(), source };
        let mut file = open_regular(&path)?;
        let len = file.metadata().map_err(io)?.len();
        let len = usize::try_from(len).map_err(|_| {
            io(std::io::Error::new(std::io::ErrorKind::OutOfMemory, "file larger than memory"))
        })?;
        if len == 0 {
            // An anonymous map cannot be empty; the parser names what an empty file lacks.
            return Self::open(path);
        }
        let mut mem = anon_huge(len).map_err(io)?;
        // `read_exact` fails (instead of faulting) if the file shrank since `metadata`.
        file.read_exact(&mut mem).map_err(io)?;
        let map = mem.make_read_only().map_err(io)?;
        Self::validate(path, Bytes::Map(map))
    }

    /// Validates a GGUF file held in memory (e.g. downloaded, or unpacked from an archive).
    /// The bytes are copied once into page-aligned memory (huge pages where granted), as
    /// [`read`](Self::read) does: tensor data must be aligned for the kernels, and a
    /// `Vec<u8>` only promises byte alignment. [`path`](Self::path) is [`IN_MEMORY`].
    pub fn from_vec(bytes: Vec<u8>) -> Result<ModelFile, ModelFileError> {
        Self::from_slice_copied(&bytes)
    }

    /// Validates a GGUF file that lives for the whole program, typically
    /// `include_bytes!` of a model built into the binary. Zero-copy when the bytes start
    /// on a 32-byte boundary (GGUF's default tensor alignment); otherwise copied once into
    /// aligned memory, as [`from_vec`](Self::from_vec) does. [`path`](Self::path) is
    /// [`IN_MEMORY`].
    pub fn from_static(bytes: &'static [u8]) -> Result<ModelFile, ModelFileError> {
        if (bytes.as_ptr() as usize).is_multiple_of(32) {
            Self::validate(PathBuf::from(IN_MEMORY), Bytes::Static(bytes))
        } else {
            Self::from_slice_copied(bytes)
        }
    }

    fn from_slice_copied(bytes: &[u8]) -> Result<ModelFile, ModelFileError> {
        let path = PathBuf::from(IN_MEMORY);
        if bytes.is_empty() {
            // An anonymous map cannot be empty; the parser names what empty bytes lack.
            return Self::validate(path, Bytes::Static(&[]));
        }
        let io = |source| ModelFileError::Io { path: PathBuf::from(IN_MEMORY), source };
        let mut mem = anon_huge(bytes.len()).map_err(io)?;
        mem.copy_from_slice(bytes);
        let map = mem.make_read_only().map_err(io)?;
        Self::validate(path, Bytes::Map(map))
    }

    fn validate(path: PathBuf, map: Bytes) -> Result<ModelFile, ModelFileError> {
        let gguf = Gguf::parse(&map)
            .map_err(|e| ModelFileError::Gguf { path: path.clone(), source: Box::new(e) })?;
        let layout = gguf.layout();
        Ok(ModelFile { path, map, layout })
    }

    /// The path the file was opened from ([`IN_MEMORY`] for bytes given in memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes (mapped or read).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Zero-copy access to metadata and tensors (O(1): no re-parse).
    pub fn gguf(&self) -> Gguf<'_> {
        match Gguf::from_layout(&self.map, self.layout) {
            Some(g) => g,
            // `layout` came from parsing exactly these mapped bytes; the map never moves.
            None => unreachable!("the map of {} moved", self.path.display()),
        }
    }
}

impl fmt::Debug for ModelFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFile")
            .field("path", &self.path)
            .field("bytes", &self.map.len())
            .field("layout", &self.layout)
            .finish()
    }
}

/// `len` bytes (≥ 1) of zeroed anonymous memory, page-aligned, asked for transparent huge
/// pages (a hint only: without them the memory is in 4 KiB pages).
fn anon_huge(len: usize) -> std::io::Result<memmap2::MmapMut> {
    let mem = memmap2::MmapMut::map_anon(len)?;
    #[cfg(target_os = "linux")]
    let _ = mem.advise(memmap2::Advice::HugePage);
    Ok(mem)
}

/// Where a [`ModelFile`]'s bytes live.
enum Bytes {
    /// A read-only map: of the file ([`ModelFile::open`]) or of anonymous memory holding a
    /// copy ([`ModelFile::read`], [`ModelFile::from_vec`]).
    Map(Mmap),
    /// Bytes that live for the whole program, e.g. `include_bytes!` ([`ModelFile::from_static`]).
    Static(&'static [u8]),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Static(s) => s,
        }
    }
}

/// Opens `path` for reading if it is a regular file (symlinks followed). Anything else is
/// refused before it is opened: opening a FIFO blocks until a writer comes, and devices,
/// directories and `/proc` files cannot be mapped or have no meaningful length. The opened
/// file is checked again, in case the path was swapped in between.
fn open_regular(path: &Path) -> Result<File, ModelFileError> {
    let io = |source| ModelFileError::Io { path: path.to_path_buf(), source };
    let not_regular = |t: std::fs::FileType| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("is not a regular file ({})", file_kind(t)),
        ))
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let mut file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    if meta.len() == 0 {
        // /proc and /sys files say they are regular and empty, yet have contents (and
        // cannot be mapped). A truly empty file reads nothing and stays at offset 0.
        use std::io::Read;
        if file.read(&mut [0u8; 1]).map_err(io)? > 0 {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is not a regular file (it reports size 0 but has contents, like a /proc file)",
            )));
        }
    }
    Ok(file)
}

/// What kind of file a non-regular file is, for error messages.
fn file_kind(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a file"
    }
}

/// The name a model held in memory goes by in errors and [`ModelFile::path`].
pub const IN_MEMORY: &str = "<memory>";

/// Why a model file could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelFileError {
    /// Opening or mapping failed (missing file, permissions, …).
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file.
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (boxed: it carries names inline).
        source: Box<GgufError>,
    },
}

impl ModelFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ModelFileError::Io { path, .. } | ModelFileError::Gguf { path, .. } => path,
        }
    }
}

impl fmt::Display for ModelFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelFileError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ModelFileError::Gguf { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ModelFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelFileError::Io { source, .. } => Some(source),
            ModelFileError::Gguf { source, .. } => Some(&**source),
        }
    }
}
