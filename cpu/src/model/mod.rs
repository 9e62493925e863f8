//! The Llama model on the paged KV cache.
//!
//! - [`LlamaConfig`]: hyper-parameters from GGUF metadata.
//! - [`LlamaWeights`]: where each weight lives in the mapped file.
//! - [`KvCache`]: page pool + K/V page storage; sequences are block tables into it.
//! - [`KvManager`]: the cache, the prefix index and every sequence's tables; `prepare`s a
//!   [`Batch`] the forward pass runs. [`Session`] and the engine sit on it.
//! - [`Llama`]: the forward pass.
//! - [`Session`]: one sequence with its own cache, the unit the CLI drives.
//! - [`drop_out_of_window`]: sliding-window layers give back the pages their window left.

mod batch;
mod config;
mod eviction;
mod kv_cache;
mod kv_manager;
mod kv_slab;
mod kv_transform;
mod llama;
mod model_ref;
mod numerics;
mod prefix_index;
mod session;
mod weights;
mod window;

use std::fmt;

pub use batch::{Batch, SeqItem};
pub use config::{Family, FfnActivation, LlamaConfig, RopeStyle, MAX_ROPE_DIMS};
pub use eviction::Evictor;
pub use kv_cache::{KvCache, KvStore, KvType, SeqTable};
pub use kv_manager::{BatchEntry, KvManager, PrefixHit, SeqKv};
pub use kv_slab::KvSlab;
pub use kv_transform::KvTransform;
pub use llama::{ForwardScratch, Llama, Logits};
pub use model_ref::ModelRef;
pub use numerics::{Numerics, UnknownNumerics};
pub use prefix_index::{CachedGroup, PrefixIndex, PrefixKey};
pub use session::{Session, SessionOptions};
pub use weights::{LayerWeights, LlamaWeights, Weight};
pub use window::{drop_out_of_window, droppable_pages, max_window_pages};

use crate::model_file::ModelFileError;

/// Why a model could not be loaded or run.
#[derive(Debug)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be opened or is not valid GGUF.
    File(ModelFileError),
    /// Metadata or a tensor is missing or malformed (boxed: the error carries names
    /// inline, and would make every `Result` of the crate as large).
    Gguf(Box<pagoda_core::gguf::GgufError>),
    /// The file is valid but describes something pagoda cannot run.
    Unsupported(String),
    /// Inconsistent shapes or values.
    Invalid(String),
    /// The sequence does not fit in the context.
    ContextFull {
        /// Tokens the sequence would hold.
        needed: usize,
        /// The context size.
        n_ctx: usize,
    },
    /// The KV page pool has fewer free pages than a step needs (nothing was appended).
    OutOfPages {
        /// Pages the step needed (at least).
        needed: usize,
        /// Free pages in the pool.
        free: usize,
    },
    /// The forward pass produced NaN or infinite values: the weights (or the input) are
    /// broken. `layer` is the first block whose output is non-finite, `None` if the blocks
    /// are all finite and the values appear later (final norm, LM head) or earlier (the
    /// token embeddings; `what` says which).
    NonFinite {
        /// The first block (0-based) whose output hidden state is non-finite.
        layer: Option<usize>,
        /// What holds the values: "logits", "hidden state", "token embeddings".
        what: String,
    },
    /// Attention failed (a malformed shape or page list; the source says which).
    Attention(pagoda_core::attention::AttnError),
    /// A K/V page operation failed: `what` was being done.
    Kv {
        /// What was being done ("KV write", "attention mass", "KV cache (f16 pages)", …).
        what: String,
        /// The page store's error.
        source: pagoda_core::kv::KvError,
    },
    /// A weight's matmul failed.
    Kernel {
        /// The weight tensor.
        weight: String,
        /// The kernel's error.
        source: crate::kernels::KernelError,
    },
    /// A KV eviction policy cannot be used with this model or page size.
    Policy {
        /// The policy as given.
        policy: String,
        /// Why not.
        source: pagoda_core::evict::PolicyError,
    },
    /// A page could not be dropped from a sequence's table: `what` was dropping it.
    Evict {
        /// "KV eviction", "sliding window, layer 3", …
        what: String,
        /// The table's error.
        source: pagoda_core::evict::EvictError,
    },
    /// A block table or the page pool refused an operation (a bug: the manager's
    /// bookkeeping disagrees with the pool).
    Table(pagoda_core::table::TableError),
    /// The page pool's invariants do not hold (a bug), found by a check.
    Invariant(pagoda_core::pool::InvariantViolation),
    /// A buffer could not be allocated (too large for memory, or its size overflows).
    OutOfMemory {
        /// What the buffer is for.
        what: String,
        /// Bytes asked for (`None`: the size overflows).
        bytes: Option<usize>,
    },
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::File(e) => write!(f, "{e}"),
            ModelError::Gguf(e) => write!(f, "{e}"),
            ModelError::Unsupported(m) => write!(f, "unsupported model: {m}"),
            ModelError::Invalid(m) => write!(f, "{m}"),
            ModelError::ContextFull { needed, n_ctx } => write!(
                f,
                "the sequence needs {needed} tokens but the context holds {n_ctx} (raise -c)"
            ),
            ModelError::Attention(e) => write!(f, "attention: {e}"),
            ModelError::Kv { what, source } => write!(f, "{what}: {source}"),
            ModelError::Kernel { weight, source } => write!(f, "matmul {weight}: {source}"),
            ModelError::Policy { policy, source } => write!(f, "KV policy {policy}: {source}"),
            ModelError::Evict { what, source } => write!(f, "{what}: {source}"),
            ModelError::Table(e) => write!(f, "KV pages: {e}"),
            ModelError::Invariant(e) => write!(f, "{e}"),
            ModelError::OutOfPages { needed, free } => write!(
                f,
                "KV cache full: the step needs {needed} more pages, {free} are free \
                 (raise --kv-pages, or shorten the request)"
            ),
            ModelError::NonFinite { layer: Some(l), what } => write!(
                f,
                "non-finite values (NaN or infinity) in the {what} after layer {l}: the model's \
                 weights are broken"
            ),
            ModelError::NonFinite { layer: None, what } => write!(
                f,
                "non-finite values (NaN or infinity) in the {what}: the model's weights are broken"
            ),
            ModelError::OutOfMemory { what, bytes: Some(b) } => {
                write!(f, "cannot allocate {b} bytes for {what} (out of memory)")
            }
            ModelError::OutOfMemory { what, bytes: None } => {
                write!(f, "cannot allocate {what}: its size overflows")
            }
        }
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModelError::File(e) => Some(e),
            ModelError::Gguf(e) => Some(&**e),
            ModelError::Attention(e) => Some(e),
            ModelError::Kv { source, .. } => Some(source),
            ModelError::Kernel { source, .. } => Some(source),
            ModelError::Policy { source, .. } => Some(source),
            ModelError::Evict { source, .. } => Some(source),
            ModelError::Table(e) => Some(e),
            ModelError::Invariant(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ModelFileError> for ModelError {
    fn from(e: ModelFileError) -> Self {
        ModelError::File(e)
    }
}

impl From<pagoda_core::gguf::GgufError> for ModelError {
    fn from(e: pagoda_core::gguf::GgufError) -> Self {
        ModelError::Gguf(Box::new(e))
    }
}
