//! A minimal wasmtime shim on runwasi's `containerd-shim-wasm`, as runwasi's
//! own `containerd-shim-wasmtime` does it: for a WASIp1 module, a fresh
//! engine, the module from the OCI layer (or the rootfs file arg0 names),
//! stdio inherited (containerd's FIFOs in the container's init), exit code
//! returned; for a component exporting `wasi:http/incoming-handler`, a hyper
//! server on `0.0.0.0:8080` (or the container's `WASMTIME_HTTP_PROXY_SOCKET_ADDR`) in the
//! container's network, a fresh store and instance per request, as
//! runwasi's `http_proxy.rs` and `wasmtime serve` do.

use anyhow::{Context, Result};
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{Cli, Config, Shim};
use hyper_util::rt::TokioIo;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

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
        let envs: Vec<(String, String)> = ctx
            .envs()
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if wasmparser::Parser::is_component(&bytes) {
            let component = Component::new(&engine, bytes)?;
            return serve(engine, component, envs).await;
        }
        let module = Module::new(&engine, bytes)?;
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        p1::add_to_linker_async(&mut linker, |cx| cx)?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdio().args(ctx.args());
        for (k, v) in &envs {
            wasi.env(k, v);
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

/// A request's store: WASIp2 and wasi:http.
struct Host {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

async fn serve(engine: Engine, component: Component, envs: Vec<(String, String)>) -> Result<i32> {
    let mut linker = wasmtime::component::Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    // The container's environment names the address, as with runwasi.
    let address = envs
        .iter()
        .find(|(k, _)| k == "WASMTIME_HTTP_PROXY_SOCKET_ADDR")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let envs = std::sync::Arc::new(envs);
    loop {
        let (stream, _) = listener.accept().await?;
        let pre = pre.clone();
        let envs = envs.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                handle(pre.clone(), envs.clone(), request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    pre: ProxyPre<Host>,
    envs: std::sync::Arc<Vec<(String, String)>>,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<wasmtime_wasi_http::WasiBody>> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio();
    for (k, v) in envs.iter() {
        wasi.env(k, v);
    }
    let mut store = Store::new(
        pre.engine(),
        Host {
            ctx: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let mut http = store.data_mut().http();
    let incoming = http.new_incoming_request(Scheme::Http, request)?;
    let outparam = http.new_response_outparam_from_callback(move |answer| {
        let _ = sender.send(answer);
    })?;
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await
    });
    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => anyhow::bail!("the handler answered an error: {code:?}"),
        Err(_) => {
            task.await??;
            anyhow::bail!("the handler returned without a response")
        }
    }
}

fn main() {
    Peer::run(Config::default());
}
