//! The listener and its connections: hyper (HTTP/1.1 with keep-alive and
//! chunked bodies, HTTP/2 with prior knowledge) on wasmtime-wasi's own tokio
//! runtime — the runtime its host calls already use; our code starts none.
//! The accept loop never waits on a guest: a request waits for its answer on
//! its own connection task, while its handler runs on the scheduler.
//!
//! Bounds a client meets: `http_max_connections` (past it a new connection is
//! closed at once), every phase of a connection timed ([`super::watch`]:
//! `http_header_timeout` while it has no request in hand — first bytes, a
//! head, idle keep-alive, HTTP/2 with no stream — and `http_write_timeout`
//! for an answer it does not read), header count and bytes (`431`), HTTP/2
//! streams, flow-control windows and resets per connection, the in-flight
//! gate (`503`), body sizes (`413`).

use super::gate::Gate;
use super::p2::Handler;
use super::request::{self, RequestJob};
use super::reuse::{Pool, Reuse};
use super::stats::{Refusal, ServiceStats};
use super::watch::{Activity, Busy, Watched};
use crate::guest::host::MemoryBudget;
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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a stopped service's connections may take to write their last answers.
const FLUSH: Duration = Duration::from_millis(100);
/// HTTP/2 flow-control windows: what a client may send unread, per stream and per connection.
const H2_STREAM_WINDOW: u32 = 256 << 10;
const H2_CONNECTION_WINDOW: u32 = 1 << 20;
/// What an HTTP/2 stream may queue to send before its handler waits.
const H2_SEND_BUFFER: usize = 256 << 10;
/// Resets a connection may cause before it is closed (h2's default for pending-accept ones).
const H2_RESETS: usize = 20;

/// A request instance's fuel slice, in guest slices (`fuel_slice`): 1M fuel
/// by default, 0.3–0.5 ms of a Python or JS handler's code. A yield costs a
/// served guest more than the switch: its own code ran 1.5–2× longer a
/// request at 100k than at 1M (`perf`, componentize-py p3: 230 against
/// 128 µs, ~3,400 against ~4,900 requests/s; ComponentizeJS p2: 103–129
/// against 81–99 µs) — the Python interpreter itself ran twice the code and
/// allocations, not only with colder caches. A stop, a deadline or a woken
/// neighbour waits for the slice's end, still within the worker's 1 ms quantum.
const SERVING_SLICES: u64 = 10;

/// What every request of one service needs.
pub(crate) struct Served {
    pub(crate) instance: Arc<Instance>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queue: Arc<RunQueue>,
    pub(crate) timers: Arc<Timers>,
    /// The handler on the engine its artifact was compiled for.
    pub(crate) handler: Handler,
    /// The handler on the on-demand engine, made when first needed.
    on_demand: Mutex<OnDemand>,
    pub(crate) gate: Gate,
    pub(crate) stats: Arc<ServiceStats>,
    /// What all its request instances may hold together (`http_service_memory`).
    pub(crate) memory: Arc<MemoryBudget>,
    /// Each request instance's own limit: the spec's, else `http_instance_memory`.
    pub(crate) instance_memory: u64,
    /// Requests whose instance runs now, to stop them.
    live: Mutex<HashMap<u64, Weak<RequestJob>>>,
    next_request: AtomicU64,
    /// Set once the service stops what runs: a request job started after is stopped at once.
    stopping: AtomicBool,
    /// The tokio runtime its server runs on, where `handle_request` sends its requests.
    pub(crate) runtime: tokio::runtime::Handle,
    /// Its reused instances, unless each request gets a fresh one.
    pub(crate) pool: Option<Pool>,
}

/// The on-demand handler: compiled once by one request while the others that
/// need it meanwhile are answered `503`; a failure is kept for a while, then tried again.
enum OnDemand {
    Idle,
    Compiling,
    Ready(Arc<Handler>),
    Failed(String, Instant),
}

/// How long an on-demand compile failure is answered before it is tried again.
const ON_DEMAND_RETRY: Duration = Duration::from_secs(10);

/// Why the on-demand handler cannot take a request now.
pub(crate) enum NotReady {
    /// Another request is compiling it: try again.
    Busy(String),
    Failed(String),
}

impl Served {
    /// The fuel a request instance burns between two yields to its worker.
    pub(crate) fn fuel_slice(&self) -> u64 {
        self.shared.config.fuel_slice.saturating_mul(SERVING_SLICES)
    }

    pub(crate) fn next_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the service stopped what runs: what starts now is stopped at once.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn track(&self, id: u64, job: &Arc<RequestJob>) {
        self.live.lock().insert(id, Arc::downgrade(job));
        // Checked after it is tracked, so that `stop_live` misses no job.
        if self.stopping.load(Ordering::Acquire) {
            job.control.request_stop();
        }
    }

    pub(crate) fn untrack(&self, id: u64) {
        self.live.lock().remove(&id);
    }

    /// The handler for a request that found every pooled slot taken.
    pub(crate) fn on_demand(&self) -> std::result::Result<Arc<Handler>, NotReady> {
        {
            let mut state = self.on_demand.lock();
            match &*state {
                OnDemand::Ready(handler) => return Ok(handler.clone()),
                OnDemand::Compiling => {
                    return Err(NotReady::Busy(
                        "the service's code for requests beyond its pooled slots is being compiled"
                            .into(),
                    ))
                }
                OnDemand::Failed(reason, at) if at.elapsed() < ON_DEMAND_RETRY => {
                    return Err(NotReady::Failed(reason.clone()))
                }
                _ => *state = OnDemand::Compiling,
            }
        }
        // Compiled with no lock held: other workers go on meanwhile.
        let made = Handler::on_demand(
            &self.instance.artifact,
            &self.shared.engines,
            self.shared.disk.as_ref(),
            &self.shared.linking,
            self.instance.plan.trap_unknown_imports,
        );
        let mut state = self.on_demand.lock();
        match made {
            Ok(handler) => {
                let handler = Arc::new(handler);
                *state = OnDemand::Ready(handler.clone());
                Ok(handler)
            }
            Err(reason) => {
                *state = OnDemand::Failed(reason.clone(), Instant::now());
                Err(NotReady::Failed(reason))
            }
        }
    }

    /// Stops every request instance that runs now, and any started after.
    fn stop_live(&self) {
        self.stopping.store(true, Ordering::Release);
        let live: Vec<_> = self
            .live
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for job in live {
            job.control.request_stop();
        }
        if let Some(pool) = &self.pool {
            pool.stop_all();
        }
    }
}

/// A service being served: one container, one listener.
pub(crate) struct Service {
    served: Arc<Served>,
    address: SocketAddr,
    /// The drain's deadline, to the server task: a later stop may move it sooner.
    stop: tokio::sync::watch::Sender<Option<Instant>>,
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
        let mut handler = Handler::of(
            compiled,
            &shared.linking,
            instance.plan.trap_unknown_imports,
        )
        .map_err(failed)?;
        let reuse = Reuse::of(config, handler.is_p3());
        if reuse.is_some() {
            // Instances that live for many requests run on the engine whose
            // pool resets their memories whole (see `Engines::reused`).
            let compiled = instance
                .artifact
                .compiled_for_reuse(&shared.engines, shared.disk.as_ref())
                .map_err(failed)?;
            handler = Handler::of(
                compiled,
                &shared.linking,
                instance.plan.trap_unknown_imports,
            )
            .map_err(failed)?;
        }
        let listen_error = |e: std::io::Error| Error::Listen {
            id: instance.id.clone(),
            address,
            reason: e.to_string(),
        };
        let listener = std::net::TcpListener::bind(address).map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        let memory = Arc::new(MemoryBudget::new(config.http_service_memory));
        let pool = reuse.map(|reuse| Pool::new(reuse, config.workers));
        let runtime =
            wasmtime_wasi::runtime::with_ambient_tokio_runtime(tokio::runtime::Handle::current);
        let served = Arc::new(Served {
            instance: instance.clone(),
            shared: shared.clone(),
            queue: queue.clone(),
            timers: timers.clone(),
            handler,
            on_demand: Mutex::new(OnDemand::Idle),
            gate: Gate::new(
                config.http_max_in_flight,
                config.http_max_queued,
                config.http_queue_timeout,
            ),
            stats: Arc::new(ServiceStats::new(memory.clone())),
            memory,
            instance_memory: instance
                .plan
                .memory_limit
                .unwrap_or(config.http_instance_memory),
            live: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            runtime,
            pool,
        });
        let (stop, stopped) = tokio::sync::watch::channel(None);
        // Not aborted when the service is dropped (a removed container): the
        // task ends by itself once its requests ended, within its bounds.
        drop(
            served
                .runtime
                .spawn(serve(served.clone(), listener, stopped)),
        );
        instance.logs.push_lines(
            None,
            LogStream::Runtime,
            vec![format!("serving http://{address}/").into_bytes()],
        );
        log::info!("container '{}' serving http://{address}/", instance.id);
        Ok(Arc::new(Service {
            served,
            address,
            stop,
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
    /// A second stop with a shorter grace (a KILL after a TERM, a second
    /// Ctrl-C) moves the drain's deadline sooner; a longer one changes nothing.
    fn stop(&self, grace: Duration) {
        let deadline = Instant::now()
            .checked_add(grace)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600));
        self.stop.send_if_modified(|current| match current {
            Some(earlier) if *earlier <= deadline => false,
            _ => {
                *current = Some(deadline);
                true
            }
        });
    }
}

impl Drop for Service {
    /// A service dropped (its container removed) stops now; its server task
    /// ends once what still runs has stopped.
    fn drop(&mut self) {
        Serving::stop(self, Duration::ZERO);
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
        // What a client may send that no handler read yet: 256 KiB a stream,
        // 1 MiB a connection, whatever its number of streams.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_SEND_BUFFER)
        // Rapid reset (CVE-2023-44487): streams a client opens and resets
        // before they are served, and streams it makes the server reset, are
        // bounded; past either the connection is closed (GOAWAY).
        .max_pending_accept_reset_streams(H2_RESETS)
        .max_local_error_reset_streams(H2_RESETS)
        .keep_alive_interval(config.http_header_timeout)
        .keep_alive_timeout(config.http_header_timeout);
    builder
}

/// The server task: accept until told to stop, then drain — connections
/// finish their requests until the deadline (which a later stop may move
/// sooner), when what still runs is stopped — and end the container.
async fn serve(
    served: Arc<Served>,
    listener: std::net::TcpListener,
    mut stop: tokio::sync::watch::Receiver<Option<Instant>>,
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
    loop {
        let stopped = pin!(stop.wait_for(Option::is_some));
        let accepted = match select(pin!(listener.accept()), stopped).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => break,
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
            served.stats.refused(Refusal::Connections);
            drop(stream);
            continue;
        }
        let open = served.stats.connection();
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let service = {
            let served = served.clone();
            let activity = activity.clone();
            hyper::service::service_fn(move |request| {
                let served = served.clone();
                // Busy from the request's head until its answer was written whole.
                let busy = Busy::new(&activity);
                async move {
                    let response = request::respond(served, request).await;
                    Ok::<_, Infallible>(response.map(|body| body.holding(busy)))
                }
            })
        };
        let connection = graceful.watch(
            builder
                .serve_connection(
                    TokioIo::new(Watched::new(stream, activity.clone())),
                    service,
                )
                .into_owned(),
        );
        let hard_stopped = hard_stopped.clone();
        let (quiet, write) = (config.http_header_timeout, config.http_write_timeout);
        tokio::spawn(async move {
            let _open = open;
            let expired = pin!(activity.expired(quiet, write));
            let _ = select(select(pin!(connection), hard_stopped), expired).await;
        });
    }
    drop(listener);
    let mut shutdown = pin!(graceful.shutdown());
    let drained = loop {
        let deadline = (*stop.borrow_and_update()).unwrap_or_else(Instant::now);
        let sooner = pin!(async {
            if stop.changed().await.is_err() {
                // The service is gone (its stop was sent first): no later stop comes.
                std::future::pending::<()>().await;
            }
        });
        let timer = pin!(tokio::time::sleep_until(deadline.into()));
        match select(shutdown.as_mut(), select(timer, sooner)).await {
            Either::Left(_) => break true,
            Either::Right((Either::Left(_), _)) => break false,
            // A later stop: look at its deadline.
            Either::Right((Either::Right(_), _)) => continue,
        }
    };
    served.gate.close();
    if let Some(pool) = &served.pool {
        pool.close();
    }
    if !drained {
        served.stop_live();
    }
    // Stopped instances end at their next fuel slice or host call; a runtime
    // whose workers are gone never ends them: then the container ends anyway.
    let all_back = pin!(async {
        served.gate.all_back().await;
        if let Some(pool) = &served.pool {
            pool.all_ended().await;
        }
    });
    let bound = pin!(tokio::time::sleep(config.stop_timeout));
    if let Either::Right(_) = select(all_back, bound).await {
        log::warn!(
            "container '{}': request instances still running {:?} after the stop",
            served.instance.id,
            config.stop_timeout
        );
    }
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
