//! The tickmesh process: all four services in one process (`tickmesh up`) or one of them
//! (`tickmesh serve --target`), built the same way so both modes behave the same.

pub mod app;
pub mod demo;
pub mod observe;
pub mod replay;
pub mod startup;
pub mod web;

pub use app::{App, AppError, Deps, Target};
