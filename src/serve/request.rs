//! One request: admitted through the gate, handled by a fresh instance that
//! runs as a job on the scheduler, and answered — by the handler, or by the
//! service when the handler could not (`500` trap, `504` deadline, `413` body
//! too large, `503` stopping or full).

use super::body::{request_body, CutOff, CutOffGuard, RequestBody, ResponseBody};
use super::gate::Place;
use super::p2::{Answer, Handler};
use super::server::{NotReady, Served};
use super::stats::Refusal;
use crate::guest::host::{MemoryBudgetFull, MemoryLimiter};
use crate::guest::instance::Control;
use crate::guest::logs::RequestOutput;
use crate::guest::run::{classify, drive, record_fuel, store_with, Driven, RunError};
use crate::guest::stats::StatsCell;
use crate::guest::wasi::build_wasi;
use crate::scheduler::{CpuMark, Job, Task};
use crate::settings::{LogStream, Outcome};
use bytes::Bytes;
use futures_channel::oneshot;
use http::{header, Request, Response, StatusCode};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;
use wasmtime::PoolConcurrencyLimitError;

/// How a request's handling ended, as its waiting connection hears it.
enum Reply {
    /// The handler set a response (or an error code) on its outparam.
    Answered(Answer),
    /// The instance ended without setting one.
    Ended(Outcome),
    /// The service could not take it now (see `RequestJob::busy`).
    Busy(String),
}

/// Answers `request`: the response head once the handler set it (its body
/// streams on), or the service's own answer.
pub(crate) async fn respond<B>(served: Arc<Served>, request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let arrived = Instant::now();
    let (response, by_handler) = answer(&served, request).await;
    served
        .stats
        .answered(response.status().as_u16(), arrived.elapsed(), by_handler);
    response
}

async fn answer<B>(served: &Arc<Served>, request: Request<B>) -> (Response<ResponseBody>, bool)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = &served.shared.config;
    let host = request.headers().get(header::HOST);
    if request.uri().authority().is_none() && host.is_none() {
        return (
            plain(StatusCode::BAD_REQUEST, "a request needs a Host header"),
            false,
        );
    }
    if host.is_some_and(|host| host.to_str().is_err()) {
        return (
            plain(
                StatusCode::BAD_REQUEST,
                "the Host header is not visible ASCII",
            ),
            false,
        );
    }
    let limit = config.http_max_request_body;
    if content_length(&request).is_some_and(|length| length > limit) {
        served.stats.refused(Refusal::BodyTooLarge);
        return (too_large(limit), false);
    }
    let Some(place) = served.gate.enter().await else {
        served.stats.refused(Refusal::InFlight);
        return (try_again("too many requests in flight"), false);
    };
    let exceeded = Arc::new(AtomicBool::new(false));
    let line = request_line(&request);
    let request = request.map(|body| request_body(body, limit, exceeded.clone()));
    let (reply, replied) = oneshot::channel();
    let cut = CutOff::default();
    let job = RequestJob::start(served, place, line, reply, request, cut.clone());
    let mut cancel = CancelOnDrop(Some(Arc::downgrade(&job)));
    drop(job);
    let replied = replied.await;
    // The answer is in: from now on the handler's body streams on its own.
    cancel.0 = None;
    match replied {
        Ok(Reply::Answered(Ok(response))) => (
            response.map(|body| ResponseBody::streamed(body, config.http_max_response_body, cut)),
            true,
        ),
        Ok(Reply::Answered(Err(error))) => (
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the handler answered with an error: {error}"),
            ),
            true,
        ),
        Ok(Reply::Ended(_)) if exceeded.load(Ordering::Acquire) => {
            served.stats.refused(Refusal::BodyTooLarge);
            (too_large(limit), false)
        }
        Ok(Reply::Ended(outcome)) => (unanswered(&outcome), false),
        Ok(Reply::Busy(reason)) => {
            served.stats.refused(Refusal::Busy);
            (try_again(&reason), false)
        }
        Err(_) => {
            served.stats.refused(Refusal::Stopping);
            (
                plain(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping"),
                false,
            )
        }
    }
}

/// The service's answer for a handler that ended without setting a response.
fn unanswered(outcome: &Outcome) -> Response<ResponseBody> {
    match outcome {
        Outcome::DeadlineExceeded(limit) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the handler did not answer within {limit:?}"),
        ),
        Outcome::Stopped => plain(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping"),
        Outcome::Exited(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the handler returned without setting a response",
        ),
        other => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the handler failed: {other}"),
        ),
    }
}

/// The most bytes of a request's target its log lines quote.
const LOGGED_TARGET: usize = 256;

/// "GET /path" for log lines, the target cut at [`LOGGED_TARGET`] bytes (a
/// client chooses it: up to `http_max_header_bytes` of it).
fn request_line<B>(request: &Request<B>) -> String {
    let target = request.uri().to_string();
    match target.char_indices().nth(LOGGED_TARGET) {
        Some((cut, _)) => format!(
            "{} {}… ({} bytes)",
            request.method(),
            &target[..cut],
            target.len()
        ),
        None => format!("{} {target}", request.method()),
    }
}

/// `503` with `Retry-After`: the service is busy, not the request wrong.
fn try_again(reason: &str) -> Response<ResponseBody> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{reason}: try again"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

fn too_large(limit: u64) -> Response<ResponseBody> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than {limit} bytes"),
    )
}

fn plain(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Stops the handler of a request whose client went away before it was answered.
struct CancelOnDrop(Option<Weak<RequestJob>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.0.as_ref().and_then(Weak::upgrade) {
            job.control.request_stop();
        }
    }
}

/// One request as the scheduler runs it.
pub(crate) struct RequestJob {
    id: u64,
    served: Arc<Served>,
    /// "GET /path", for log lines about it.
    line: String,
    pub(crate) control: Control,
    stats: Arc<StatsCell>,
    output: RequestOutput,
    ended: AtomicBool,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    /// Its place in flight, given back as it ends.
    place: Mutex<Option<Place>>,
    /// Set when its instance ends other than by returning.
    cut: CutOff,
    /// Why the service could not take it now (its memory budget full, its
    /// on-demand code compiling): answered `503`, try again.
    busy: Mutex<Option<String>>,
}

impl RequestJob {
    /// The request's record: its reply, its place, its logs' number.
    fn new(
        served: &Arc<Served>,
        place: Place,
        line: String,
        reply: oneshot::Sender<Reply>,
        cut: CutOff,
    ) -> Arc<RequestJob> {
        let id = served.next_request();
        served.stats.entered();
        Arc::new(RequestJob {
            id,
            served: served.clone(),
            line,
            control: Control::default(),
            stats: Arc::new(StatsCell::new(Some(served.instance_memory))),
            output: RequestOutput::new(id),
            ended: AtomicBool::new(false),
            reply: Mutex::new(Some(reply)),
            place: Mutex::new(Some(place)),
            cut,
            busy: Mutex::new(None),
        })
    }

    /// Creates the request's job: a fresh instance of its own, queued on the
    /// scheduler; or, for a service that reuses instances, handed to one.
    fn start(
        served: &Arc<Served>,
        place: Place,
        line: String,
        reply: oneshot::Sender<Reply>,
        request: Request<RequestBody>,
        cut: CutOff,
    ) -> Arc<RequestJob> {
        let job = RequestJob::new(served, place, line, reply, cut);
        if let Some(pool) = &served.pool {
            served.track(job.id, &job);
            pool.dispatch(served, job.clone(), request);
            return job;
        }
        served.stats.instance_made();
        served.stats.request_began(job.id, &job.stats);
        served.track(job.id, &job);
        let future = run(job.clone(), request);
        let task = Arc::new(Task::new(
            job.clone(),
            Box::pin(future),
            &served.queue,
            &served.timers,
            served.fuel_slice(),
        ));
        job.control.attach(&task);
        task.schedule();
        job
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn cut(&self) -> &CutOff {
        &self.cut
    }

    /// Says the service could not take it now: it is answered `503`, try again.
    pub(crate) fn set_busy(&self, reason: String) {
        *self.busy.lock() = Some(reason);
    }

    /// What the handler set on its outparam: the first answer wins.
    /// Whether its client has had its answer (or its end).
    pub(crate) fn has_answered(&self) -> bool {
        self.reply.lock().is_none()
    }

    pub(crate) fn answered(&self, answer: Answer) {
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(Reply::Answered(answer));
        }
    }
}

/// The request's run: a fresh store, the handler called, its end classified;
/// on the on-demand engine when every pooled slot is taken.
async fn run(job: Arc<RequestJob>, request: Request<RequestBody>) -> Outcome {
    let served = job.served.clone();
    let plan = &served.instance.plan;
    job.stats.begin(false);
    let deadline = Instant::now().checked_add(plan.request_timeout);
    if let Some(deadline) = deadline {
        job.control.set_deadline(deadline);
    }
    let mut request = Some(request);
    let mut outcome = attempt(&job, &served.handler, &mut request, deadline).await;
    if let Err(RunError::Setup(e)) = &outcome {
        if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() && request.is_some() {
            job.stats.forget_memory();
            outcome = match served.on_demand() {
                Ok(handler) => attempt(&job, &handler, &mut request, deadline).await,
                Err(NotReady::Busy(reason)) => {
                    *job.busy.lock() = Some(reason.clone());
                    return Outcome::Failed(reason);
                }
                Err(NotReady::Failed(reason)) => return Outcome::Failed(reason),
            };
        }
    }
    match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            if let RunError::Setup(e) | RunError::Guest(e) = &error {
                if let Some(full) = e.downcast_ref::<MemoryBudgetFull>() {
                    *job.busy.lock() = Some(full.to_string());
                }
            }
            classify(error, plan)
        }
    }
}

async fn attempt(
    job: &Arc<RequestJob>,
    handler: &Handler,
    request: &mut Option<Request<RequestBody>>,
    deadline: Option<Instant>,
) -> Result<Outcome, RunError> {
    let served = &job.served;
    let plan = &served.instance.plan;
    let wasi =
        build_wasi(&served.instance, true, Some(&job.output)).map_err(RunError::CannotRun)?;
    let limiter = MemoryLimiter::new(
        Some(served.instance_memory),
        plan.trap_on_grow_failure,
        job.stats.clone(),
    )
    .sharing(Some(served.memory.clone()));
    let (mut store, budget) =
        store_with(&handler.engine, wasi, plan, limiter, served.fuel_slice())?;
    let answer = {
        let job = job.clone();
        move |answer| job.answered(answer)
    };
    // Dropped before the store (and the handler's body with it) unless the
    // handler returns: a stop, a deadline, a trap or a dropped task cut its body off.
    let guard = CutOffGuard::arm(&job.cut);
    let driven = drive(
        handler.handle(&mut store, request, answer),
        &job.control,
        deadline,
    )
    .await;
    // A setup error (no instance, so no body yet) may be retried on another engine.
    if matches!(driven, Driven::Finished(Ok(()) | Err(RunError::Setup(_)))) {
        guard.disarm();
    } else {
        drop(guard);
    }
    record_fuel(&store, budget, &job.stats);
    Ok(match driven {
        Driven::Finished(Ok(())) => Outcome::Exited(0),
        Driven::Finished(Err(error)) => return Err(error),
        Driven::Stopped => Outcome::Stopped,
        Driven::DeadlineExceeded => Outcome::DeadlineExceeded(plan.request_timeout),
    })
}

impl Job for RequestJob {
    fn name(&self) -> String {
        format!(
            "request {} ({}) of container '{}'",
            self.id, self.line, self.served.instance.id
        )
    }

    fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn slice_begin(&self, mark: Option<CpuMark>) {
        self.stats.slice_begin(mark);
    }

    fn slice_end(&self) -> Option<CpuMark> {
        self.stats.slice_end()
    }

    fn yielded(&self, fuel: u64) {
        self.stats.fuel.fetch_add(fuel, Ordering::Relaxed);
    }

    fn deadline(&self) -> Option<Instant> {
        self.control.deadline()
    }

    fn finish(&self, outcome: Outcome) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stats.end();
        let served = &self.served;
        let logs = &served.instance.logs;
        self.output.flush(logs);
        if !matches!(outcome, Outcome::Exited(_)) {
            log::info!("{}: {outcome}", self.name());
            logs.push_lines(
                Some(self.id),
                LogStream::Runtime,
                vec![format!("request {} ({}): {outcome}", self.id, self.line).into_bytes()],
            );
        }
        served.stats.request_ended(self.id);
        served.stats.left();
        served.untrack(self.id);
        // The place is back before the client hears the end: its next request finds it.
        drop(self.place.lock().take());
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(match self.busy.lock().take() {
                Some(reason) => Reply::Busy(reason),
                None => Reply::Ended(outcome),
            });
        }
    }

    fn detach(&self) {
        self.control.detach();
    }
}
