//! The integration tests, in one binary so wasmtime links once.

mod common;

mod components;
mod control;
mod engine;
mod seed;
mod limits;
mod logs;
mod cli;
