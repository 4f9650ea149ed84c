//! Serving: a container whose component exports a `wasi:http` handler, behind
//! a real listener. Every request runs a fresh instance as a task on the
//! scheduler — fuel slices, fair with every other guest, parked while it waits
//! on I/O — and nothing a client sends or a handler does can grow the host
//! past a stated bound.
//!
//! - [`server`]: the listener, connections (hyper, HTTP/1.1 and HTTP/2, on
//!   wasmtime-wasi's own tokio runtime: our code starts none), their limits,
//!   and the graceful stop;
//! - [`gate`]: how many requests are in flight, a bounded wait beyond, `503`;
//! - [`request`]: one request as a scheduler job, and the answer it gets;
//! - [`p2`]: a request's handler, and the `wasi:http/incoming-handler@0.2` world;
//! - [`p3`]: the `wasi:http/handler@0.3` world (a handler world is one file);
//! - [`reuse`]: instances that serve several requests, in turn or at once;
//! - [`body`]: bounded request and response bodies;
//! - [`stats`]: counters and latency percentiles;
//! - [`watch`]: every phase of a connection timed.

pub(crate) mod body;
pub(crate) mod gate;
pub(crate) mod p2;
pub(crate) mod p3;
pub(crate) mod request;
pub(crate) mod reuse;
pub(crate) mod server;
pub(crate) mod stats;
pub(crate) mod watch;

pub use body::ResponseBody;

pub(crate) use server::Service;
