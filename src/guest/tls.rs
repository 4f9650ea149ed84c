//! `wasi:tls` for outgoing connections, as wasmtime 48 offers it
//! (`wasmtime-wasi-tls`: `wasi:tls@0.2.0-draft` beside WASIp2 and
//! `@0.3.0-draft` beside WASIp3, rustls with the webpki roots). A guest
//! without `network` gets a provider that refuses every handshake, so the
//! interface links (a component importing it runs) and grants nothing.

use super::host::HostState;
use std::future::Future;
use std::pin::Pin;
use wasmtime_wasi_tls::{
    DefaultProvider, Error, TlsProvider, TlsStream, TlsTransport, WasiTlsCtx, WasiTlsCtxBuilder,
    WasiTlsCtxView, WasiTlsView,
};

/// The TLS context of a guest: rustls with `network`, else refusal.
pub(crate) fn context(network: bool) -> WasiTlsCtx {
    let provider: Box<dyn TlsProvider> = if network {
        Box::new(DefaultProvider::default())
    } else {
        Box::new(Denied)
    };
    WasiTlsCtxBuilder::new().provider(provider).build()
}

/// Refuses every handshake: the guest was not granted the network.
struct Denied;

type Handshake = Pin<Box<dyn Future<Output = Result<Box<dyn TlsStream>, Error>> + Send>>;

impl TlsProvider for Denied {
    fn connect(&self, server_name: String, _: Box<dyn TlsTransport>) -> Handshake {
        Box::pin(async move {
            Err(Error::msg(format!(
                "TLS to {server_name} refused: the guest was not granted the network"
            )))
        })
    }
}

impl WasiTlsView for HostState {
    fn tls(&mut self) -> WasiTlsCtxView<'_> {
        match &mut self.wasi {
            super::host::Wasi::Preview2 { table, imports, .. } => WasiTlsCtxView {
                table,
                ctx: &mut imports.tls,
            },
            super::host::Wasi::Preview1(_) => unreachable!("a module store was linked to wasi:tls"),
        }
    }
}

pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    let mut options = wasmtime_wasi_tls::p2::LinkOptions::default();
    options.tls(true);
    wasmtime_wasi_tls::p2::add_to_linker(linker, &options)?;
    wasmtime_wasi_tls::p3::add_to_linker(linker)?;
    Ok(())
}
