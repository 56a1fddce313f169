//! Reliability regression tests (issue 15): see the module's tests.
