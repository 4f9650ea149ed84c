//! Instance reuse: one instance of a service handles several requests, one
//! after another and — for `wasi:http/handler@0.3`, whose `handle` is an
//! async export — several at once, as `wasmtime serve` and Spin do.
//!
//! An instance is a job on the scheduler like any guest: its store's event
//! loop is polled one fuel slice at a time, parked while it waits. It takes
//! requests from its service's [`Pool`] while it may (fewer than
//! `max_concurrent` in hand, fewer than `max_count` taken in all, none of
//! them past its deadline, not CPU-bound just now), and is dropped once it
//! has been idle for `idle`. Each request keeps its own deadline (past it the
//! client gets `504` at once), its own fuel (the store is refilled with a
//! request's budget as it is taken: alone, it has exactly its budget;
//! taken beside others, they share the sum of theirs), and its own log lines
//! (the instance's output is switched to each request it takes). The memory
//! limit is the instance's, across all its requests.
//!
//! An instance that traps, runs out of fuel or memory, or lets a request pass
//! its deadline is never reused: every request it still holds ends with it,
//! and the bodies it was still writing are cut off. One that missed a
//! deadline takes nothing more and lives at most until the latest deadline
//! of the requests it took (its own work in the background included).

use super::body::RequestBody;
use super::p2::Handler;
use super::request::RequestJob;
use super::server::{NotReady, Served};
use crate::guest::host::{HostState, MemoryBudgetFull, MemoryLimiter};
use crate::guest::instance::Control;
use crate::guest::logs::RequestOutput;
use crate::guest::run::{classify, guest_error, store_with, RunError};
use crate::guest::stats::StatsCell;
use crate::guest::wasi::build_wasi;
use crate::scheduler::timers::TimerKey;
use crate::scheduler::{CpuMark, Job, Task};
use crate::settings::{Outcome, WasmConfig};
use futures_util::future::join;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::Request;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};
use wasmtime::component::{Accessor, Func};
use wasmtime::{AsContextMut, PoolConcurrencyLimitError};
use wasmtime_wasi_http::handler::{Prepared, Proxy};
use wasmtime_wasi_http::WasiHttpView;

/// Requests a `wasi:http/handler@0.3` instance takes in all, by default (`wasmtime serve`'s).
pub(crate) const P3_REUSE_COUNT: usize = 128;
/// Requests a `wasi:http/handler@0.3` instance takes at once, by default (`wasmtime serve`'s).
pub(crate) const P3_CONCURRENT_REUSE: usize = 16;

/// How long an instance's start-up (with its first request) holds back
/// others' (see `Pool::max_starting`).
pub(crate) const STARTING_GRACE: Duration = Duration::from_millis(250);

/// How a service's instances are reused.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reuse {
    max_count: usize,
    max_concurrent: usize,
    idle: Duration,
}

impl Reuse {
    /// The reuse of a service's instances; `None`: a fresh instance per request.
    pub(crate) fn of(config: &WasmConfig, p3: bool) -> Option<Reuse> {
        let max_count =
            config
                .http_max_instance_reuse_count
                .unwrap_or(if p3 { P3_REUSE_COUNT } else { 1 });
        if max_count <= 1 {
            return None;
        }
        // A 0.2 handler's `handle` is synchronous: one request at a time.
        let max_concurrent = if p3 {
            config
                .http_max_instance_concurrent_reuse_count
                .unwrap_or(P3_CONCURRENT_REUSE)
        } else {
            1
        };
        Some(Reuse {
            max_count,
            max_concurrent,
            idle: config.http_idle_instance_timeout,
        })
    }
}

/// A request waiting for an instance to take it.
struct Waiting {
    job: Arc<RequestJob>,
    request: Request<RequestBody>,
}

/// A service's reused instances, and the requests waiting for one.
pub(crate) struct Pool {
    reuse: Reuse,
    /// How many instances start at once (the scheduler's workers): more
    /// could not run sooner, only share the workers — a burst of requests to
    /// a service whose start-up is slow (a 200 ms Python one) would start an
    /// instance each, all to be ready late together. The others wait for the
    /// first instance to be available, as `wasmtime serve`'s wait for room in
    /// a busy instance. One starting for longer than [`STARTING_GRACE`]
    /// no longer counts: a handler that spins on its first request holds
    /// the others back no longer than that.
    max_starting: usize,
    state: Mutex<PoolState>,
    /// `state.closed`, read by every instance at every poll without the lock.
    closed: AtomicBool,
    /// Told when the last instance ended.
    ended: tokio::sync::Notify,
}

impl PoolState {
    /// Whether fewer than `max` instances are starting, counting only those
    /// within their grace.
    fn may_start(&self, max: usize) -> bool {
        let now = Instant::now();
        let starting = self
            .starting
            .values()
            .filter(|since| now.duration_since(**since) < STARTING_GRACE)
            .count();
        starting < max
    }

    fn make_available(&mut self, id: u64, waker: &Waker) {
        self.starting.remove(&id);
        match self.available.iter_mut().find(|(known, _)| *known == id) {
            Some((_, known)) => known.clone_from(waker),
            None => self.available.push((id, waker.clone())),
        }
    }

    /// The first waiting request whose client is still there; those gone
    /// meanwhile go to `gone`, to be ended as stopped (no instance starts, or
    /// stops taking requests, for a request nobody waits for).
    fn next_waiting(&mut self, gone: &mut Vec<Arc<RequestJob>>) -> Option<Waiting> {
        while let Some(waiting) = self.waiting.pop_front() {
            if waiting.job.control.stop_requested() || waiting.job.has_ended() {
                gone.push(waiting.job);
            } else {
                return Some(waiting);
            }
        }
        None
    }

    /// The waker of an available instance other than `except`, moved to the
    /// back of the list: successive requests wake different instances, as
    /// tokio's `Notify::notify_one` wakes different waiters — not the same
    /// one again and again while the others idle.
    fn next_available(&mut self, except: Option<u64>) -> Option<Waker> {
        let at = self
            .available
            .iter()
            .position(|(id, _)| Some(*id) != except)?;
        let entry = self.available.remove(at);
        let waker = entry.1.clone();
        self.available.push(entry);
        Some(waker)
    }
}

#[derive(Default)]
struct PoolState {
    /// Requests handed to the pool that no instance took yet; each holds an
    /// in-flight place, so there are at most `http_max_in_flight`.
    waiting: VecDeque<Waiting>,
    /// Instances that take a request now, with their event loop's waker.
    available: Vec<(u64, Waker)>,
    /// Every instance that has not ended.
    live: HashMap<u64, Weak<Reused>>,
    /// Instances started that have not yet been available nor waited on
    /// I/O — busy with their start-up and first request — and since when.
    starting: HashMap<u64, Instant>,
    /// The service stops: nothing more is taken, idle instances go.
    closed: bool,
}

impl Pool {
    pub(crate) fn new(reuse: Reuse, max_starting: usize) -> Self {
        Pool {
            reuse,
            max_starting: max_starting.max(1),
            state: Mutex::new(PoolState::default()),
            closed: AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
        }
    }

    /// Hands a request to an instance that takes requests now, else to a new one.
    pub(crate) fn dispatch(
        &self,
        served: &Arc<Served>,
        job: Arc<RequestJob>,
        request: Request<RequestBody>,
    ) {
        let mut state = self.state.lock();
        if state.closed {
            drop(state);
            Job::finish(&*job, Outcome::Stopped);
            return;
        }
        let waiting = Waiting { job, request };
        if let Some(waker) = state.next_available(None) {
            state.waiting.push_back(waiting);
            drop(state);
            waker.wake();
            return;
        }
        if !state.may_start(self.max_starting) {
            // The next instance available takes it.
            state.waiting.push_back(waiting);
            return;
        }
        Reused::start(served, state, waiting);
    }

    /// Starts an instance for the first waiting request if none but
    /// `except` (one whose call in hand is parked) is available and one may
    /// start now. Called when an instance is not available, parks, ends, or
    /// is past its start-up's grace (so no longer holds others back).
    fn start_for_waiting(&self, served: &Arc<Served>, except: Option<u64>) {
        let mut gone = Vec::new();
        self.start_locked(served, self.state.lock(), except, &mut gone);
        end_gone(gone);
    }

    /// [`Pool::start_for_waiting`] with the pool's lock held (and released).
    fn start_locked(
        &self,
        served: &Arc<Served>,
        mut state: MutexGuard<'_, PoolState>,
        except: Option<u64>,
        gone: &mut Vec<Arc<RequestJob>>,
    ) {
        let start = if !state.waiting.is_empty()
            && state.available.iter().all(|(id, _)| Some(*id) == except)
            && !state.closed
            && state.may_start(self.max_starting)
        {
            state.next_waiting(gone)
        } else {
            None
        };
        match start {
            Some(waiting) => Reused::start(served, state, waiting),
            None => drop(state),
        }
    }

    /// An instance may take a request (`can`): the first waiting one, else it
    /// is available until it is woken. One that will take one once its call
    /// in hand returns (`soon`: every request it holds was answered) stays
    /// available, so that a client's next request, sent on its answer, finds
    /// it; if that call is parked (on its body's writes, say) a request
    /// waiting meanwhile goes to a new instance. One that may not take any is
    /// not available; if then no instance is and requests wait, a new
    /// instance takes one.
    fn offer(
        &self,
        reused: &Reused,
        can: bool,
        soon: bool,
        parked: bool,
        waker: &Waker,
    ) -> Option<Waiting> {
        let mut gone = Vec::new();
        let taken = self.offer_locked(reused, can, soon, parked, waker, &mut gone);
        end_gone(gone);
        taken
    }

    fn offer_locked(
        &self,
        reused: &Reused,
        can: bool,
        soon: bool,
        parked: bool,
        waker: &Waker,
        gone: &mut Vec<Arc<RequestJob>>,
    ) -> Option<Waiting> {
        let mut state = self.state.lock();
        if state.closed {
            state.available.retain(|(id, _)| *id != reused.id);
            return None;
        }
        if can || soon {
            if can {
                if let Some(waiting) = state.next_waiting(gone) {
                    // More wait: another available instance takes the next.
                    let next = (!state.waiting.is_empty())
                        .then(|| state.next_available(Some(reused.id)))
                        .flatten();
                    drop(state);
                    if let Some(waker) = next {
                        waker.wake();
                    }
                    return Some(waiting);
                }
            }
            state.make_available(reused.id, waker);
            if can || !parked {
                return None;
            }
        } else {
            state.available.retain(|(id, _)| *id != reused.id);
            if !state.available.is_empty() {
                return None;
            }
        }
        // None available, or only this one with its call parked: a new one
        // may start.
        if parked {
            state.starting.remove(&reused.id);
        }
        self.start_locked(&reused.served, state, parked.then_some(reused.id), gone);
        None
    }

    /// The instance is about to answer the last request it holds: available
    /// from now, before the client hears its answer.
    fn answering(&self, reused: &Reused, waker: &Waker) {
        let mut state = self.state.lock();
        if !state.closed {
            state.make_available(reused.id, waker);
        }
    }

    /// Whether an idle instance may go: no request waits for it.
    fn retire(&self, reused: &Reused) -> bool {
        let mut state = self.state.lock();
        if !state.waiting.is_empty() && !state.closed {
            return false;
        }
        state.available.retain(|(id, _)| *id != reused.id);
        reused.accepting.store(false, Ordering::Release);
        true
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The service stops: waiting requests are answered `503`, and idle
    /// instances are woken to go; busy ones finish what they hold.
    pub(crate) fn close(&self) {
        let (waiting, wakers) = {
            let mut state = self.state.lock();
            state.closed = true;
            self.closed.store(true, Ordering::Release);
            let wakers: Vec<Waker> = state.available.drain(..).map(|(_, w)| w).collect();
            (std::mem::take(&mut state.waiting), wakers)
        };
        for waiting in waiting {
            Job::finish(&*waiting.job, Outcome::Stopped);
        }
        for waker in wakers {
            waker.wake();
        }
    }

    /// Stops every instance now.
    pub(crate) fn stop_all(&self) {
        let live: Vec<_> = self
            .state
            .lock()
            .live
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for reused in live {
            reused.control.request_stop();
        }
    }

    /// Waits until every instance ended.
    pub(crate) async fn all_ended(&self) {
        loop {
            let mut ended = pin!(self.ended.notified());
            ended.as_mut().enable();
            if self.state.lock().live.is_empty() {
                return;
            }
            ended.await;
        }
    }

    fn ended(&self, reused: &Reused) {
        {
            let mut state = self.state.lock();
            state.live.remove(&reused.id);
            state.starting.remove(&reused.id);
            state.available.retain(|(id, _)| *id != reused.id);
            if state.live.is_empty() {
                self.ended.notify_waiters();
            }
        }
        // Requests it left waiting go to a new instance.
        self.start_for_waiting(&reused.served, None);
    }
}

/// Ends, as stopped, waiting requests whose client left (outside the lock).
fn end_gone(gone: Vec<Arc<RequestJob>>) {
    for job in gone {
        Job::finish(&*job, Outcome::Stopped);
    }
}

/// A request an instance took.
struct Taken {
    job: Arc<RequestJob>,
    deadline: Option<Instant>,
}

/// What an instance holds since it was last idle: the requests it took that
/// are not done — a few, whatever its reuse count — and the deadline that
/// bounds its life.
#[derive(Default)]
struct Held {
    /// Taken requests, until each has ended and its body was written (or dropped).
    requests: Vec<Taken>,
    /// The latest deadline of every request it took since it was last idle,
    /// done ones included: work a guest goes on with after its answers ends by then.
    latest: Option<Instant>,
}

impl Held {
    /// Forgets requests that are done: ended, their bodies no longer theirs to cut.
    fn prune(&mut self) {
        self.requests
            .retain(|taken| !(taken.job.has_ended() && taken.job.cut().is_moot()));
    }
}

/// One reused instance, as the scheduler runs it.
pub(crate) struct Reused {
    id: u64,
    served: Arc<Served>,
    control: Control,
    /// Its CPU, fuel and memory: a live "request instance" of the service's stats.
    stats: Arc<StatsCell>,
    /// Its stdout and stderr, switched to each request it takes.
    output: RequestOutput,
    ended: AtomicBool,
    /// The requests it took since it was last idle: their deadlines bound its
    /// life, and their bodies are cut off if it ends other than by going idle.
    held: Mutex<Held>,
    /// Since when it has had nothing to do, while it has not.
    idle_since: Mutex<Option<Instant>>,
    /// It takes more requests (not past its count, no deadline missed, not stopping).
    accepting: AtomicBool,
    /// Its event loop waits (it is not CPU-bound): it may take a request
    /// beside those it holds. Cleared as it takes one.
    waiting_only: AtomicBool,
    /// The wake-up armed for its next deadline.
    timer: Mutex<Option<TimerKey>>,
    /// Its event loop's waker, as of its last turn.
    waker: Mutex<Option<Waker>>,
    /// When it was started: its start-up's grace runs from then.
    started: Instant,
    /// Its grace passed, and the pool was told.
    grace_over: AtomicBool,
}

/// How a reused instance's run ended, seen from outside its event loop.
enum End<T> {
    Finished(T),
    Stopped,
    /// A request it took is past its deadline, and it still runs.
    Killed,
    /// Idle for its idle time.
    Retired,
}

impl Reused {
    /// A new instance, queued on the scheduler, that takes `first` first;
    /// `state` (its pool's) is unlocked before it is queued.
    fn start(served: &Arc<Served>, mut state: MutexGuard<'_, PoolState>, first: Waiting) {
        let id = served.next_request();
        let reused = Arc::new(Reused {
            id,
            served: served.clone(),
            control: Control::default(),
            stats: Arc::new(StatsCell::new(Some(served.instance_memory))),
            output: RequestOutput::new(first.job.id()),
            ended: AtomicBool::new(false),
            held: Mutex::new(Held::default()),
            idle_since: Mutex::new(None),
            accepting: AtomicBool::new(true),
            waiting_only: AtomicBool::new(false),
            timer: Mutex::new(None),
            waker: Mutex::new(None),
            started: Instant::now(),
            grace_over: AtomicBool::new(false),
        });
        state.live.insert(id, Arc::downgrade(&reused));
        state.starting.insert(id, reused.started);
        drop(state);
        served.stats.instance_made();
        served.stats.request_began(id, &reused.stats);
        let job = first.job.clone();
        let future = run(reused.clone(), first);
        let task = Arc::new(Task::new(
            reused.clone(),
            Box::pin(future),
            &served.queue,
            &served.timers,
            served.fuel_slice(),
        ));
        reused.control.attach(&task);
        reused.take(&job);
        if served.stopping() {
            reused.control.request_stop();
        }
        task.schedule();
    }

    fn pool(&self) -> &Pool {
        self.served
            .pool
            .as_ref()
            .expect("a reused instance belongs to a pool")
    }

    /// Records a request it takes: its deadline starts now, and a stop of it
    /// (its client gone, the service stopping) wakes this instance.
    fn take(&self, job: &Arc<RequestJob>) {
        let deadline = Instant::now().checked_add(self.served.instance.plan.request_timeout);
        if let Some(task) = self.control.task() {
            job.control.attach(&task);
        }
        *self.idle_since.lock() = None;
        self.output.switch_to(job.id(), &self.served.instance.logs);
        let mut held = self.held.lock();
        held.prune();
        held.latest = held.latest.max(deadline);
        held.requests.push(Taken {
            job: job.clone(),
            deadline,
        });
    }

    /// The requests it holds that have not ended.
    fn unfinished(&self) -> Vec<Arc<RequestJob>> {
        self.held
            .lock()
            .requests
            .iter()
            .filter(|taken| !taken.job.has_ended())
            .map(|taken| taken.job.clone())
            .collect()
    }

    /// Ends requests whose stop was asked or whose deadline passed (it then
    /// takes nothing more); returns when it must end, if it is not idle: the
    /// latest deadline of the requests it took.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let timeout = self.served.instance.plan.request_timeout;
        let mut ended = Vec::new();
        let kill;
        {
            let held = self.held.lock();
            kill = held.latest;
            for taken in held.requests.iter() {
                if taken.job.has_ended() {
                    continue;
                }
                let outcome = if taken.job.control.stop_requested() {
                    Outcome::Stopped
                } else if taken.deadline.is_some_and(|deadline| now >= deadline) {
                    Outcome::DeadlineExceeded(timeout)
                } else {
                    continue;
                };
                ended.push((taken.job.clone(), outcome));
            }
        }
        for (job, outcome) in ended {
            // Its guest task runs on in the background: nothing more is
            // taken, so the instance goes once what it holds is done.
            self.accepting.store(false, Ordering::Release);
            job.cut().set();
            Job::finish(&*job, outcome);
        }
        kill
    }

    /// The request's `handle` returned: it ends (its answer went out, or it
    /// is answered `500`); a 0.3 handler's body may still be written.
    fn returned(&self, request: u64) {
        let job = self
            .held
            .lock()
            .requests
            .iter()
            .find(|taken| taken.job.id() == request)
            .map(|taken| taken.job.clone());
        if let Some(job) = job {
            Job::finish(&*job, Outcome::Exited(0));
        }
        self.held.lock().prune();
    }

    /// It has nothing to do: the requests it took are done, bodies included.
    fn went_idle(&self) {
        let mut idle = self.idle_since.lock();
        if idle.is_none() {
            *idle = Some(Instant::now());
            *self.held.lock() = Held::default();
            self.output.flush(&self.served.instance.logs);
        }
    }

    /// Sets its requests' bodies as cut off: it ended other than by going idle.
    fn cut_all(&self) {
        for taken in self.held.lock().requests.iter() {
            taken.job.cut().set();
        }
    }

    /// Wakes it at its next deadline: a request's, its own end's, or its idle time's.
    fn arm(&self, kill: Option<Instant>) {
        let unfinished = self
            .held
            .lock()
            .requests
            .iter()
            .filter(|taken| !taken.job.has_ended())
            .filter_map(|taken| taken.deadline)
            .min();
        let idle = self
            .idle_since
            .lock()
            .and_then(|since| since.checked_add(self.pool().reuse.idle));
        let Some(next) = [unfinished, kill, idle].into_iter().flatten().min() else {
            return;
        };
        let mut timer = self.timer.lock();
        if timer.is_some_and(|(at, _)| at == next) {
            return;
        }
        if let Some(key) = timer.take() {
            self.served.timers.cancel(key);
        }
        if let Some(task) = self.control.task() {
            *timer = Some(self.served.timers.arm(next, &task));
        }
    }

    /// Polls `call` (its instantiation, then its event loop) until it ends,
    /// is stopped, is killed, or retires; the rules are checked at every poll,
    /// so at every fuel slice.
    async fn drive<F: Future>(&self, call: F) -> End<F::Output> {
        let mut call = pin!(call);
        poll_fn(|cx| {
            if self.control.stop_requested() {
                return Poll::Ready(End::Stopped);
            }
            if self.pool().closed() {
                self.accepting.store(false, Ordering::Release);
            }
            let now = Instant::now();
            if !self.grace_over.load(Ordering::Relaxed)
                && now.duration_since(self.started) >= STARTING_GRACE
            {
                // It no longer holds back others' start: one may start now.
                self.grace_over.store(true, Ordering::Relaxed);
                self.pool().start_for_waiting(&self.served, None);
            }
            let kill = self.expire(now);
            if kill.is_some_and(|kill| now >= kill) {
                return Poll::Ready(End::Killed);
            }
            let idle_over = self
                .idle_since
                .lock()
                .is_some_and(|since| now.duration_since(since) >= self.pool().reuse.idle);
            if idle_over && self.pool().retire(self) {
                return Poll::Ready(End::Retired);
            }
            let mut polled = call.as_mut().poll(cx);
            // Its loop waits on I/O only: give it one more turn to take a
            // request beside those it holds.
            if polled.is_pending() && !self.waiting_only.swap(true, Ordering::AcqRel) {
                polled = call.as_mut().poll(cx);
            }
            match polled {
                Poll::Ready(value) => Poll::Ready(End::Finished(value)),
                Poll::Pending => {
                    self.arm(kill);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Instantiates the handler in a fresh store and serves requests on it
    /// until it ends; the first request is taken once instantiation succeeded
    /// (so that a retry on the on-demand engine still has it).
    async fn serve(
        self: &Arc<Self>,
        handler: &Handler,
        first: &mut Option<Waiting>,
    ) -> Result<Outcome, RunError> {
        let served = &self.served;
        let plan = &served.instance.plan;
        let wasi =
            build_wasi(&served.instance, true, Some(&self.output)).map_err(RunError::CannotRun)?;
        let limiter = MemoryLimiter::new(
            Some(served.instance_memory),
            plan.trap_on_grow_failure,
            self.stats.clone(),
        )
        .sharing(Some(served.memory.clone()));
        let (mut store, budget) =
            store_with(&handler.engine, wasi, plan, limiter, served.fuel_slice())?;
        // Dropped before the store unless it went idle: bodies still being
        // written end in an error, not as if whole.
        let mut cut = CutAll(Some(self));
        let meter = Mutex::new(Meter::new(budget));
        let ran = self
            .drive(async {
                let proxy = handler.instantiate(&mut store).await?;
                let func = match &proxy {
                    Proxy::P2(proxy) => *proxy.wasi_http_incoming_handler().func_handle().func(),
                    Proxy::P3(service) => *service.wasi_http_handler().func_handle().func(),
                };
                let first = first
                    .take()
                    .ok_or_else(|| RunError::CannotRun("the request was handed out".into()))?;
                store
                    .run_concurrent(async |accessor| {
                        self.requests(accessor, &proxy, func, first, &meter).await
                    })
                    .await
                    .map_err(guest_error)?
                    .map_err(guest_error)
            })
            .await;
        let outcome = match ran {
            End::Finished(Ok(())) | End::Retired => {
                cut.0 = None;
                Outcome::Exited(0)
            }
            End::Finished(Err(error)) => return Err(error),
            End::Stopped => Outcome::Stopped,
            End::Killed => Outcome::DeadlineExceeded(plan.request_timeout),
        };
        let used = meter.lock().used(store.get_fuel().unwrap_or(0));
        self.stats.fuel.store(used, Ordering::Relaxed);
        drop(cut);
        Ok(outcome)
    }

    /// The instance's event loop: takes requests while it may, each a
    /// concurrent call of `handle`, and returns once it takes no more and
    /// has nothing left to do (`Err`: the instance trapped).
    async fn requests(
        &self,
        accessor: &Accessor<HostState>,
        proxy: &Proxy,
        func: Func,
        first: Waiting,
        meter: &Mutex<Meter>,
    ) -> wasmtime::Result<()> {
        let reuse = self.pool().reuse;
        let mut calls = FuturesUnordered::new();
        let mut count = 0;
        let mut accept = |job: Arc<RequestJob>, request: Request<RequestBody>, alone: bool| {
            self.waiting_only.store(false, Ordering::Release);
            count += 1;
            if count >= reuse.max_count {
                self.accepting.store(false, Ordering::Release);
            }
            let (sent, answered) = futures_channel::oneshot::channel();
            let request = request.map(http_body_util::BodyExt::boxed_unsync);
            let prepared = accessor.with(|mut store| {
                let fuel = store.as_context_mut().get_fuel().unwrap_or(0);
                let fuel = meter.lock().refill(fuel, alone);
                store.as_context_mut().set_fuel(fuel)?;
                Prepared::new(
                    store.as_context_mut(),
                    proxy,
                    request,
                    <HostState as WasiHttpView>::http,
                    sent,
                )
            });
            handle(self, accessor, prepared, answered, job)
        };
        calls.push(accept(first.job, first.request, true));
        poll_fn(|cx| loop {
            match calls.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(request))) => self.returned(request),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(None) | Poll::Pending => {}
            }
            let ready = accessor.poll_ready_for_concurrent_call(func, cx).is_ready();
            let accepting = self.accepting.load(Ordering::Acquire);
            let waiting_only = self.waiting_only.load(Ordering::Acquire);
            let can = ready
                && accepting
                && calls.len() < reuse.max_concurrent
                && (calls.is_empty() || waiting_only);
            // Its calls in hand have all answered.
            let soon = accepting && self.all_answered(None);
            match &mut *self.waker.lock() {
                Some(known) => known.clone_from(cx.waker()),
                unknown => *unknown = Some(cx.waker().clone()),
            }
            if let Some(Waiting { job, request }) =
                self.pool().offer(self, can, soon, waiting_only, cx.waker())
            {
                self.take(&job);
                let alone = calls.is_empty();
                calls.push(accept(job, request, alone));
                continue;
            }
            if !calls.is_empty() || accessor.poll_no_interesting_tasks(cx).is_pending() {
                return Poll::Pending;
            }
            self.went_idle();
            if !self.accepting.load(Ordering::Acquire) {
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        })
        .await
    }

    /// Whether every request it holds (but `except`) has had its answer.
    fn all_answered(&self, except: Option<u64>) -> bool {
        self.held
            .lock()
            .requests
            .iter()
            .filter(|taken| Some(taken.job.id()) != except)
            .all(|taken| taken.job.has_answered())
    }

    /// `job`'s answer is about to go out: if it was the last one unanswered,
    /// the instance is available before its client can send another request.
    fn answering(&self, job: &RequestJob) {
        if !self.accepting.load(Ordering::Acquire) || !self.all_answered(Some(job.id())) {
            return;
        }
        if let Some(waker) = self.waker.lock().clone() {
            self.pool().answering(self, &waker);
        }
    }

    /// Marks the instance's requests busy (`503`, try again): no instance could be made now.
    fn busy(&self, reason: &str) {
        for job in self.unfinished() {
            job.set_busy(reason.to_string());
        }
    }
}

/// One request's call of `handle`, its answer forwarded to its client as
/// soon as the handler gives it; the request's number once `handle` returned.
async fn handle(
    reused: &Reused,
    accessor: &Accessor<HostState>,
    prepared: wasmtime::Result<Prepared<'_, HostState>>,
    answered: futures_channel::oneshot::Receiver<
        Result<hyper::Response<wasmtime_wasi_http::WasiBody>, wasmtime::Error>,
    >,
    job: Arc<RequestJob>,
) -> wasmtime::Result<u64> {
    let request = job.id();
    let forward = async move {
        if let Ok(answer) = answered.await {
            reused.answering(&job);
            job.answered(answer.map_err(|e| format!("{e:#}")));
        }
    };
    let call = async { prepared?.run(accessor, std::future::pending()).await };
    let (ran, ()) = join(call, forward).await;
    ran.map(|_| request)
}

/// Sets every taken request's body as cut off when dropped, unless disarmed.
struct CutAll<'a>(Option<&'a Reused>);

impl Drop for CutAll<'_> {
    fn drop(&mut self) {
        if let Some(reused) = self.0 {
            reused.cut_all();
        }
    }
}

/// The store's fuel across requests: refilled with a request's budget as it
/// is taken; what was burnt is counted.
struct Meter {
    budget: u64,
    /// What the store was last given.
    given: u64,
    used: u64,
}

impl Meter {
    fn new(budget: u64) -> Self {
        Meter {
            budget,
            given: budget,
            used: 0,
        }
    }

    /// The store's fuel as a request is taken: its budget if it runs alone,
    /// else the budget added to what the others have left.
    fn refill(&mut self, left: u64, alone: bool) -> u64 {
        self.used = self.used.saturating_add(self.given.saturating_sub(left));
        self.given = if alone {
            self.budget
        } else {
            left.saturating_add(self.budget)
        };
        self.given
    }

    fn used(&mut self, left: u64) -> u64 {
        self.used.saturating_add(self.given.saturating_sub(left))
    }
}

/// The run of a reused instance: on the on-demand engine when every pooled
/// slot is taken; the instance's end, for the requests it still holds.
async fn run(reused: Arc<Reused>, first: Waiting) -> Outcome {
    let served = reused.served.clone();
    reused.stats.begin(false);
    let mut first = Some(first);
    let mut outcome = reused.serve(&served.handler, &mut first).await;
    if let Err(RunError::Setup(e)) = &outcome {
        if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() && first.is_some() {
            reused.stats.forget_memory();
            outcome = match served.on_demand() {
                Ok(handler) => reused.serve(&handler, &mut first).await,
                Err(NotReady::Busy(reason)) => {
                    reused.busy(&reason);
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
                    reused.busy(&full.to_string());
                }
            }
            classify(error, &served.instance.plan)
        }
    }
}

impl Job for Reused {
    fn name(&self) -> String {
        format!(
            "instance {} of container '{}'",
            self.id, self.served.instance.id
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

    /// Its wake-ups are its own (see [`Reused::arm`]): they move as it takes requests.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    fn finish(&self, outcome: Outcome) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(key) = self.timer.lock().take() {
            self.served.timers.cancel(key);
        }
        self.stats.end();
        self.output.flush(&self.served.instance.logs);
        self.served.stats.request_ended(self.id);
        let unfinished = self.unfinished();
        if !unfinished.is_empty() {
            log::info!("{}: {outcome}", self.name());
            self.cut_all();
        }
        for job in unfinished {
            Job::finish(&*job, outcome.clone());
        }
        *self.held.lock() = Held::default();
        self.pool().ended(self);
    }

    fn detach(&self) {
        self.control.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(state: &PoolState) -> Vec<u64> {
        state.available.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn successive_requests_wake_different_available_instances() {
        let mut state = PoolState::default();
        for id in [1, 2, 3] {
            state.make_available(id, Waker::noop());
        }
        // Each wake-up moves the woken instance to the back.
        assert!(state.next_available(None).is_some());
        assert_eq!(ids(&state), [2, 3, 1]);
        assert!(state.next_available(None).is_some());
        assert_eq!(ids(&state), [3, 1, 2]);
        // An instance that took a request wakes another for the next one.
        assert!(state.next_available(Some(3)).is_some());
        assert_eq!(ids(&state), [3, 2, 1]);
        // Known instances are not listed twice.
        state.make_available(2, Waker::noop());
        assert_eq!(ids(&state), [3, 2, 1]);
        // Alone, it has no other to wake.
        state.available.retain(|(id, _)| *id == 3);
        assert!(state.next_available(Some(3)).is_none());
        assert!(state.next_available(None).is_some());
    }
}
