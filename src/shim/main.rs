//! `containerd-shim-wasmpool-v1`: containerd's shim (runtime v2) for WebAssembly
//! containers, on one [`wasmpool::WasmRuntime`] per shim process.
//!
//! containerd starts this binary for a container run with
//! `--runtime io.containerd.wasmpool.v1` (`ctr run`), or through a CRI runtime
//! handler whose `runtime_type` is that name (Kubernetes, with a `RuntimeClass`).
//! The first container of a group starts the shim process; later containers of
//! the same group are served by it — the same workers, the same compiled code:
//!
//! - a pod's containers (CRI's `io.kubernetes.cri.sandbox-id` annotation) share
//!   their pod's shim, as runc's shim shares them;
//! - any containers annotated with the same `io.wasmpool.group` share one shim
//!   (`ctr run --annotation io.wasmpool.group=jobs …`);
//! - any other container has a shim of its own.
//!
//! Built on containerd's own shim crate (`containerd-shim`, synchronous form):
//! its ttrpc task service, its shim start/delete protocol, its event publisher.

mod content;
mod oci;
mod output;
mod shim;
mod tasks;

fn main() {
    containerd_shim::run::<shim::WasmpoolShim>(shim::RUNTIME_ID, None);
}
