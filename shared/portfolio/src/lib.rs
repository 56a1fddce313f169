//! Portfolio optimisation (placeholder until the library lands).
