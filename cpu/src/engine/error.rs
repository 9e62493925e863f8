//! What can go wrong in the engine.

use std::fmt;

use pagoda_core::pool::InvariantViolation;
use pagoda_core::table::TableError;

use super::RequestId;
use crate::grammar::GrammarError;
use crate::model::ModelError;
use crate::sampler::SamplerError;

/// Why a request was refused or a step failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// A request is malformed; the message says which field and why.
    InvalidRequest {
        /// The request.
        id: RequestId,
        /// What is wrong.
        reason: String,
    },
    /// The engine is already working on a request with this id.
    DuplicateId(RequestId),
    /// A request's prompt plus its tokens can never fit in the whole page pool, even alone.
    TooLarge {
        /// The request.
        id: RequestId,
        /// Pages one sample needs at its longest.
        pages_needed: usize,
        /// Pages in the pool.
        pages_total: usize,
    },
    /// The engine settings are unusable.
    InvalidConfig(String),
    /// The forward pass failed.
    Model(ModelError),
    /// A sampler setting is out of range.
    Sampler(SamplerError),
    /// A page-table operation failed (a bug: the engine reserves pages before using them).
    Table(TableError),
    /// The page pool's bookkeeping disagrees with the sequences (a bug).
    Invariant(InvariantViolation),
    /// A sequence's table disagrees with its tokens (a bug); the message says how.
    Inconsistent(String),
    /// A sample's grammar failed while generating: a mask could not be computed or the
    /// sampled token was refused (llguidance hit one of its limits; a bug otherwise, since
    /// disallowed tokens are masked out before sampling).
    Grammar {
        /// The request.
        id: RequestId,
        /// Which of its samples.
        sample: usize,
        /// What failed.
        error: GrammarError,
    },
    /// Requests are unfinished but none could be scheduled (a bug: requests that cannot
    /// fit are refused by `submit`).
    Stalled {
        /// Sequences waiting.
        waiting: usize,
        /// Sequences running.
        running: usize,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidRequest { id, reason } => write!(f, "{id}: {reason}"),
            EngineError::DuplicateId(id) => write!(f, "{id} is already queued or running"),
            EngineError::TooLarge { id, pages_needed, pages_total } => write!(
                f,
                "{id} can never fit: its prompt and tokens need {pages_needed} KV pages, \
                 the pool has {pages_total} (raise --kv-pages or shorten it)"
            ),
            EngineError::InvalidConfig(m) => write!(f, "engine settings: {m}"),
            EngineError::Model(e) => write!(f, "{e}"),
            EngineError::Sampler(e) => write!(f, "{e}"),
            EngineError::Table(e) => write!(f, "engine: {e}"),
            EngineError::Invariant(e) => write!(f, "{e}"),
            EngineError::Inconsistent(m) => write!(f, "engine state inconsistent: {m}"),
            EngineError::Grammar { id, sample, error } => {
                write!(f, "{id} sample {sample}: {error}")
            }
            EngineError::Stalled { waiting, running } => write!(
                f,
                "engine stalled with {waiting} waiting and {running} running sequences (a bug)"
            ),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Model(e) => Some(e),
            EngineError::Sampler(e) => Some(e),
            EngineError::Table(e) => Some(e),
            EngineError::Invariant(e) => Some(e),
            EngineError::Grammar { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        EngineError::Model(e)
    }
}

impl From<SamplerError> for EngineError {
    fn from(e: SamplerError) -> Self {
        EngineError::Sampler(e)
    }
}

impl From<InvariantViolation> for EngineError {
    fn from(e: InvariantViolation) -> Self {
        EngineError::Invariant(e)
    }
}
