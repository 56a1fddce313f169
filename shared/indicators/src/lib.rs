//! Technical indicators (placeholder until the library lands).
