//! A request's handler: how one request is handed to a fresh instance, in the
//! world the component exports — `wasi:http/incoming-handler@0.2` here, and
//! `wasi:http/handler@0.3` in [`super::p3`].

use super::body::RequestBody;
use crate::artifacts::{Code, Compiled, DiskCache, Engines};
use crate::guest::entry::handler_of;
use crate::guest::host::HostState;
use crate::guest::link::Pre;
use crate::guest::run::{guest_error, RunError};
use crate::guest::{Artifact, Linking, Prepared};
use hyper::Response;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::handler::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

/// What a handler answers: a response (its body streams on), or an error it set.
pub(crate) type Answer = Result<Response<WasiBody>, String>;

/// The pre-instance of a handler world.
enum World {
    P2(ProxyPre<HostState>),
    P3(wasmtime_wasi_http::p3::bindings::ServicePre<HostState>),
}

/// A handler ready to instantiate: the proxy's pre-instance on one engine.
pub(crate) struct Handler {
    pub(crate) engine: Engine,
    world: World,
}

impl Handler {
    /// The handler of `compiled`, or why the artifact is not a `wasi:http` service.
    pub(crate) fn of(
        compiled: &Compiled<Prepared>,
        linking: &Linking,
        trap_unknown_imports: bool,
    ) -> Result<Handler, String> {
        let Code::Component(component) = &compiled.code else {
            return Err("not a wasi:http service: a WASIp1 core module cannot serve HTTP; a component exporting `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x` can".into());
        };
        let Some((_, p3)) = handler_of(component) else {
            return Err(match &Prepared::of(compiled, linking).entry {
                Ok(crate::guest::entry::Entry::Component { name, .. }) => format!(
                    "not a wasi:http service: the component is a command (it exports `{name}`, not `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`); run it without an HTTP endpoint"
                ),
                Ok(_) => "not a wasi:http service".into(),
                Err(e) => e.clone(),
            });
        };
        let prepared = Prepared::of(compiled, linking);
        let Pre::Component(pre) = prepared.pre(compiled, linking, trap_unknown_imports)? else {
            return Err("a component was linked as a module".into());
        };
        let refuse = |e: wasmtime::Error| format!("not a wasi:http service: {e:#}");
        let world = if p3 {
            World::P3(
                wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()).map_err(refuse)?,
            )
        } else {
            World::P2(ProxyPre::new(pre.clone()).map_err(refuse)?)
        };
        Ok(Handler {
            engine: compiled.engine().clone(),
            world,
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

    /// Whether it is a `wasi:http/handler@0.3` handler.
    pub(crate) fn is_p3(&self) -> bool {
        matches!(self.world, World::P3(_))
    }

    /// An instance of the handler in `store`, to serve several requests.
    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<HostState>,
    ) -> Result<Proxy, RunError> {
        Ok(match &self.world {
            World::P2(pre) => Proxy::P2(
                pre.instantiate_async(&mut *store)
                    .await
                    .map_err(setup_error)?,
            ),
            World::P3(pre) => Proxy::P3(
                pre.instantiate_async(&mut *store)
                    .await
                    .map_err(setup_error)?,
            ),
        })
    }

    /// Instantiates the handler in `store` and calls it with the request (taken
    /// only once instantiation succeeded, so a retry on another engine has it);
    /// `answer` receives what it answers.
    pub(crate) async fn handle(
        &self,
        store: &mut Store<HostState>,
        request: &mut Option<hyper::Request<RequestBody>>,
        answer: impl FnOnce(Answer) + Send + Sync + 'static,
    ) -> Result<(), RunError> {
        match &self.world {
            World::P2(pre) => {
                let proxy = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(setup_error)?;
                let request = take(request)?;
                let mut http = store.data_mut().http();
                let incoming = http
                    .new_incoming_request(Scheme::Http, request)
                    .map_err(RunError::Setup)?;
                let outparam = http
                    .new_response_outparam_from_callback(move |set| {
                        answer(set.map_err(|code| format!("{code:?}")))
                    })
                    .map_err(RunError::Setup)?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, incoming, outparam)
                    .await
                    .map_err(guest_error)
            }
            World::P3(pre) => super::p3::handle(store, pre, request, answer).await,
        }
    }
}

/// A failure to instantiate: always a setup error (so a full pool moves the
/// request to the on-demand engine).
pub(crate) fn setup_error(error: wasmtime::Error) -> RunError {
    match guest_error(error) {
        RunError::Guest(e) => RunError::Setup(e),
        other => other,
    }
}

/// The request, handed out once.
pub(crate) fn take(
    request: &mut Option<hyper::Request<RequestBody>>,
) -> Result<hyper::Request<RequestBody>, RunError> {
    request
        .take()
        .ok_or_else(|| RunError::CannotRun("the request was handed out already".into()))
}
