//! A model borrowed or shared: what a [`Session`](super::Session) or an
//! [`Engine`](crate::engine::Engine) runs.

use std::sync::Arc;

use super::Llama;

/// The model a session or engine runs: borrowed (`'m`), or shared ownership (an
/// `Arc<Llama>`, so the owner is `'static`: it can be stored and moved between threads
/// without borrowing anything). Dereferences to the [`Llama`].
#[derive(Clone, Debug)]
pub enum ModelRef<'m> {
    /// Borrowed from the caller.
    Borrowed(&'m Llama),
    /// Shared ownership.
    Shared(Arc<Llama>),
}

impl std::ops::Deref for ModelRef<'_> {
    type Target = Llama;
    fn deref(&self) -> &Llama {
        match self {
            ModelRef::Borrowed(m) => m,
            ModelRef::Shared(m) => m,
        }
    }
}
