//! The integration tests, in one binary so wasmtime links once.

mod common;

mod caches;
mod caching;
mod cli;
mod components;
mod control;
mod docs;
mod engine;
mod entry;
mod hostile;
mod hostile_clients;
mod http;
mod imports;
mod isolation;
#[cfg(feature = "shim")]
mod kubernetes;
mod limits;
mod logs;
mod metrics;
mod p3;
mod preinit;
mod registry;
mod registry_bounds;
mod reliability;
mod reuse;
mod scheduling;
mod seed;
mod serving;
#[cfg(feature = "shim")]
mod shim;
