//! The integration tests, in one binary so wasmtime links once.

mod common;

mod caching;
mod cli;
mod components;
mod control;
mod engine;
mod limits;
mod logs;
mod seed;
