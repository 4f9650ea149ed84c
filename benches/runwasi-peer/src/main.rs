//! A minimal wasmtime shim on runwasi's `containerd-shim-wasm`, as runwasi's
//! own `containerd-shim-wasmtime` does it for WASIp1 modules: a fresh engine,
//! the module from the OCI layer (or the rootfs file arg0 names), stdio
//! inherited (containerd's FIFOs in the container's init), exit code returned.

use anyhow::{Context, Result};
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Cli, Config, Shim};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::WasiCtxBuilder;

struct Peer;

#[derive(Default)]
struct PeerSandbox;

impl Shim for Peer {
    type Sandbox = PeerSandbox;

    fn name() -> &'static str {
        "runwasipeer"
    }
}

impl Sandbox for PeerSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> Result<i32> {
        let bytes = match ctx.entrypoint().source {
            Source::Oci([layer, ..]) => layer.layer.clone(),
            Source::Oci([]) => anyhow::bail!("no wasm layer"),
            Source::File(path) => std::fs::read(&path).with_context(|| path.display().to_string())?,
        };
        let engine = Engine::default();
        let module = Module::new(&engine, bytes)?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |cx| cx)?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdio().args(ctx.args());
        for pair in ctx.envs() {
            if let Some((k, v)) = pair.split_once('=') {
                wasi.env(k, v);
            }
        }
        let mut store = Store::new(&engine, wasi.build_p1());
        let instance = linker.instantiate_async(&mut store, &module).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        match start.call_async(&mut store, ()).await {
            Ok(()) => Ok(0),
            Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ok(exit.0),
                None => anyhow::bail!("{error:?}"),
            },
        }
    }
}

fn main() {
    Peer::run(Config::default());
}
