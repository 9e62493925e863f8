//! The small ops of a Llama layer, scalar reference versions.
