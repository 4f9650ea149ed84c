//! The `wasi:http/handler@0.3` world: a request handed to a fresh instance
//! whose `handle` is an async export, on the store's concurrent event loop
//! (which our poll drives one fuel slice at a time, like any call). The
//! response goes out as soon as the handler returns it; the loop then runs
//! on until the instance's remaining work — its body — is done.

use super::body::RequestBody;
use super::p2::{setup_error, take, Answer};
use crate::guest::host::HostState;
use crate::guest::run::{guest_error, RunError};
use futures_util::future::join;
use std::future::poll_fn;
use wasmtime::{AsContextMut, Store};
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

pub(crate) async fn handle(
    store: &mut Store<HostState>,
    pre: &ServicePre<HostState>,
    request: &mut Option<hyper::Request<RequestBody>>,
    answer: impl FnOnce(Answer) + Send + Sync + 'static,
) -> Result<(), RunError> {
    let service = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(setup_error)?;
    let request = take(request)?.map(http_body_util::BodyExt::boxed_unsync);
    let proxy = Proxy::P3(service);
    let (sent, answered) = futures_channel::oneshot::channel();
    store
        .run_concurrent(async |accessor| -> wasmtime::Result<()> {
            let prepared = accessor.with(|mut store| {
                Prepared::new(
                    store.as_context_mut(),
                    &proxy,
                    request,
                    <HostState as WasiHttpView>::http,
                    sent,
                )
            })?;
            let forward = async move {
                if let Ok(answered) = answered.await {
                    answer(answered.map_err(|e| format!("{e:#}")));
                }
            };
            let (ran, ()) = join(prepared.run(accessor, std::future::pending()), forward).await;
            ran?;
            // The answer is out; the instance may still be writing its body.
            poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            Ok(())
        })
        .await
        .map_err(guest_error)?
        .map_err(guest_error)
}
