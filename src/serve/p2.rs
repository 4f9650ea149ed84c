//! The `wasi:http/incoming-handler@0.2` world: how one request is handed to a
//! fresh instance. A second handler world (WASI 0.3's `wasi:http/handler`) is
//! one more file beside this one.

use super::body::RequestBody;
use crate::artifacts::{Compiled, DiskCache, Engines};
use crate::guest::entry::Entry;
use crate::guest::host::HostState;
use crate::guest::link::Pre;
use crate::guest::run::{guest_error, RunError};
use crate::guest::{Artifact, Linking, Prepared};
use hyper::Response;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// What a handler answers through its `response-outparam`.
pub(crate) type Answer = Result<Response<HyperOutgoingBody>, ErrorCode>;

/// A handler ready to instantiate: the proxy's pre-instance on one engine.
pub(crate) struct Handler {
    pub(crate) engine: Engine,
    pre: ProxyPre<HostState>,
}

impl Handler {
    /// The handler of `compiled`, or why the artifact is not a `wasi:http` service.
    pub(crate) fn of(
        compiled: &Compiled<Prepared>,
        linking: &Linking,
        trap_unknown_imports: bool,
    ) -> Result<Handler, String> {
        let prepared = Prepared::of(compiled, linking);
        match &prepared.entry {
            Ok(Entry::Proxy { .. }) => {}
            Ok(Entry::Component { name, .. }) => {
                return Err(format!(
                    "not a wasi:http service: the component is a command (it exports `{name}`, not `wasi:http/incoming-handler@0.2.x`); run it without an HTTP endpoint"
                ))
            }
            Ok(Entry::Module { .. }) => {
                return Err("not a wasi:http service: a WASIp1 core module cannot serve HTTP; a component exporting `wasi:http/incoming-handler@0.2.x` can".into())
            }
            Err(e) => return Err(e.clone()),
        }
        let Pre::Component(pre) = prepared.pre(compiled, linking, trap_unknown_imports)? else {
            return Err("a component was linked as a module".into());
        };
        let pre =
            ProxyPre::new(pre.clone()).map_err(|e| format!("not a wasi:http service: {e:#}"))?;
        Ok(Handler {
            engine: compiled.engine().clone(),
            pre,
        })
    }

    /// The handler compiled for the on-demand engine, for a request that
    /// finds every pooled slot taken.
    pub(crate) fn on_demand(
        artifact: &Artifact,
        engines: &Engines,
        disk: Option<&DiskCache>,
        linking: &Linking,
        trap_unknown_imports: bool,
    ) -> Result<Handler, String> {
        let compiled = artifact.compiled_on_demand(engines, disk)?;
        Handler::of(compiled, linking, trap_unknown_imports)
    }

    /// Instantiates the handler in `store` and calls it with the request (taken
    /// only once instantiation succeeded, so a retry on another engine has it);
    /// `answer` receives what it sets on its `response-outparam`.
    pub(crate) async fn handle(
        &self,
        store: &mut Store<HostState>,
        request: &mut Option<hyper::Request<RequestBody>>,
        answer: impl FnOnce(Answer) + Send + Sync + 'static,
    ) -> Result<(), RunError> {
        let proxy = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(guest_error)
            .map_err(|e| match e {
                RunError::Guest(e) => RunError::Setup(e),
                other => other,
            })?;
        let Some(request) = request.take() else {
            return Err(RunError::CannotRun(
                "the request was handed out already".into(),
            ));
        };
        let mut http = store.data_mut().http();
        let incoming = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(RunError::Setup)?;
        let outparam = http
            .new_response_outparam_from_callback(answer)
            .map_err(RunError::Setup)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, incoming, outparam)
            .await
            .map_err(guest_error)
    }
}
