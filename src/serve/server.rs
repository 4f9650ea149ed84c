//! The listener and its connections: hyper (HTTP/1.1 with keep-alive and
//! chunked bodies, HTTP/2 with prior knowledge) on wasmtime-wasi's own tokio
//! runtime — the runtime its host calls already use; our code starts none.
//! The accept loop never waits on a guest: a request waits for its answer on
//! its own connection task, while its handler runs on the scheduler.
//!
//! Bounds a client meets: `http_max_connections` (past it a new connection is
//! closed at once), `http_header_timeout` (a request head must arrive within
//! it, and an idle keep-alive connection is closed after it), header count
//! and bytes (`431`), the in-flight gate (`503`), body sizes (`413`).

use super::gate::Gate;
use super::p2::Handler;
use super::request::{self, RequestJob};
use super::stats::ServiceStats;
use crate::guest::instance::Serving;
use crate::guest::{Instance, Shared};
use crate::scheduler::{RunQueue, Timers};
use crate::settings::{Error, LogStream, Outcome, Protocol, Result, WasmConfig};
use futures_channel::oneshot;
use futures_util::future::{select, Either, FutureExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

/// How long a stopped service's connections may take to write their last answers.
const FLUSH: Duration = Duration::from_millis(100);

/// What every request of one service needs.
pub(crate) struct Served {
    pub(crate) instance: Arc<Instance>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<RunQueue>,
    pub(crate) timers: Arc<Timers>,
    /// The handler on the engine its artifact was compiled for.
    pub(crate) handler: Handler,
    /// The handler on the on-demand engine, made when first needed.
    on_demand: OnceLock<std::result::Result<Handler, String>>,
    pub(crate) gate: Gate,
    pub(crate) stats: Arc<ServiceStats>,
    /// Requests whose instance runs now, to stop them.
    live: Mutex<HashMap<u64, Weak<RequestJob>>>,
    next_request: AtomicU64,
}

impl Served {
    pub(crate) fn next_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn track(&self, id: u64, job: &Arc<RequestJob>) {
        self.live.lock().insert(id, Arc::downgrade(job));
    }

    pub(crate) fn untrack(&self, id: u64) {
        self.live.lock().remove(&id);
    }

    /// The handler for a request that found every pooled slot taken.
    pub(crate) fn on_demand(&self) -> std::result::Result<&Handler, String> {
        self.on_demand
            .get_or_init(|| {
                Handler::on_demand(
                    &self.instance.artifact,
                    &self.shared.engines,
                    self.shared.disk.as_ref(),
                    &self.shared.linking,
                    self.instance.plan.trap_unknown_imports,
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Stops every request instance that runs now.
    fn stop_live(&self) {
        let live: Vec<_> = self
            .live
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for job in live {
            job.control.request_stop();
        }
    }
}

/// A service being served: one container, one listener.
pub(crate) struct Service {
    served: Arc<Served>,
    address: SocketAddr,
    /// Sends the drain's deadline to the server task.
    stop: Mutex<Option<oneshot::Sender<Instant>>>,
    /// The server task: aborted if the service is dropped while it still runs.
    _task: AbortOnDropJoinHandle<()>,
}

impl Service {
    /// Compiles and checks the container's handler, binds its endpoint and
    /// starts serving; errors say why it cannot serve.
    pub(crate) fn start(
        instance: &Arc<Instance>,
        shared: &Arc<Shared>,
        queue: &Arc<RunQueue>,
        timers: &Arc<Timers>,
    ) -> Result<Arc<Service>> {
        let failed = |reason: String| Error::Failed {
            id: instance.id.clone(),
            reason,
        };
        let config = &shared.config;
        let endpoint = instance
            .plan
            .endpoints
            .iter()
            .find(|e| e.protocol == Protocol::Http)
            .ok_or_else(|| failed("no HTTP endpoint".into()))?;
        let address = SocketAddr::new(endpoint.host.unwrap_or(config.http_host), endpoint.port);
        let compiled = instance
            .artifact
            .compiled(&shared.engines, shared.disk.as_ref())
            .map_err(failed)?;
        let handler = Handler::of(
            compiled,
            &shared.linking,
            instance.plan.trap_unknown_imports,
        )
        .map_err(failed)?;
        let listen_error = |e: std::io::Error| Error::Listen {
            id: instance.id.clone(),
            address,
            reason: e.to_string(),
        };
        let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let served = Arc::new(Served {
            instance: instance.clone(),
            shared: shared.clone(),
            queue: queue.clone(),
            timers: timers.clone(),
            handler,
            on_demand: OnceLock::new(),
            gate: Gate::new(
                config.http_max_in_flight,
                config.http_max_queued,
                config.http_queue_timeout,
            ),
            stats: Arc::new(ServiceStats::new(instance.plan.memory_limit)),
            live: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
        });
        let (stop, stopped) = oneshot::channel();
        let task = wasmtime_wasi::runtime::spawn(serve(served.clone(), listener, stopped));
        instance.logs.push_lines(
            None,
            LogStream::Runtime,
            vec![format!("serving http://{address}/").into_bytes()],
        );
        log::info!("container '{}' serving http://{address}/", instance.id);
        Ok(Arc::new(Service {
            served,
            address,
            stop: Mutex::new(Some(stop)),
            _task: task,
        }))
    }

    /// The address the service listens on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn served(&self) -> &Arc<Served> {
        &self.served
    }
}

impl Serving for Service {
    fn stop(&self, grace: Duration) {
        let deadline = Instant::now()
            .checked_add(grace)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(deadline);
        }
    }
}

/// The hyper builder: HTTP/1.1 and HTTP/2, with the configured bounds.
fn builder(config: &WasmConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.http_header_timeout)
        .max_headers(config.http_max_headers)
        .max_buf_size(config.http_max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(config.http_max_in_flight).unwrap_or(u32::MAX))
        .max_header_list_size(u32::try_from(config.http_max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(config.http_header_timeout)
        .keep_alive_timeout(config.http_header_timeout);
    builder
}

/// The server task: accept until told to stop, then drain — connections
/// finish their requests until the deadline, when what still runs is stopped —
/// and end the container.
async fn serve(
    served: Arc<Served>,
    listener: std::net::TcpListener,
    mut stop: oneshot::Receiver<Instant>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            served
                .instance
                .finish(Outcome::Failed(format!("cannot listen: {e}")));
            return;
        }
    };
    let config = &served.shared.config;
    let builder = builder(config);
    let graceful = GracefulShutdown::new();
    let (hard_stop, hard_stopped) = oneshot::channel::<()>();
    let hard_stopped = hard_stopped.shared();
    let deadline = loop {
        let accepted = match select(pin!(listener.accept()), &mut stop).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right((deadline, _)) => break deadline.unwrap_or_else(|_| Instant::now()),
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, say: back off a moment rather than spin.
                log::warn!("container '{}': accept failed: {e}", served.instance.id);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if served.stats.connections() >= config.http_max_connections as u64 {
            drop(stream);
            continue;
        }
        let open = served.stats.connection();
        let _ = stream.set_nodelay(true);
        let service = {
            let served = served.clone();
            hyper::service::service_fn(move |request| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(request::respond(served, request).await) }
            })
        };
        let connection = graceful.watch(
            builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned(),
        );
        let hard_stopped = hard_stopped.clone();
        tokio::spawn(async move {
            let _open = open;
            let _ = select(pin!(connection), hard_stopped).await;
        });
    };
    drop(listener);
    let mut shutdown = pin!(graceful.shutdown());
    let drained = matches!(
        select(
            shutdown.as_mut(),
            pin!(tokio::time::sleep_until(deadline.into())),
        )
        .await,
        Either::Left(_)
    );
    served.gate.close();
    if !drained {
        served.stop_live();
    }
    served.gate.all_back().await;
    if !drained {
        // The stopped requests' answers (503) are ready: let their connections
        // write them and close, briefly, before what is left is cut.
        let _ = select(shutdown, pin!(tokio::time::sleep(FLUSH))).await;
    }
    let _ = hard_stop.send(());
    served
        .instance
        .logs
        .push_lines(None, LogStream::Runtime, vec![b"stopped serving".to_vec()]);
    served.instance.finish(Outcome::Stopped);
}
