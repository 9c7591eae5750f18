//! Key lifecycle.
