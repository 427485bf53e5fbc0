//! Checks only: see `tests/`.
