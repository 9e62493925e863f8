//! (to be written: SIMD paged attention)
