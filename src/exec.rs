//! Running one container on the calling worker thread: a fuel-sliced poll loop
//! that ends the guest at its end, a stop, or its deadline.

use crate::artifact::{Compiled, Entry};
use crate::host::{HostState, MemoryLimitExceeded, MemoryLimiter, Wasi};
use crate::instance::{Control, Instance};
use crate::logs::GuestOutput;
use crate::outcome::Outcome;
use crate::spec::{LogStream, StdinSpec};
use crate::stats::StatsCell;
use crate::Shared;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Instant;
use wasmtime::{Store, Trap};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Wakes a worker parked in [`drive`] by unparking its thread.
pub(crate) struct WorkerWaker {
    thread: Thread,
    woken: AtomicBool,
}

impl WorkerWaker {
    /// A waker for the calling thread.
    pub(crate) fn for_current_thread() -> Arc<Self> {
        Arc::new(WorkerWaker {
            thread: thread::current(),
            woken: AtomicBool::new(false),
        })
    }
}

impl Wake for WorkerWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// How [`drive`] left the guest's future.
enum Driven<T> {
    Finished(T),
    Stopped,
    DeadlineExceeded,
}

/// Polls `future` to its end on this thread, parking while it waits on a host
/// event, and gives up at a stop request or the deadline.
///
/// Guest code yields every fuel slice (the store's yield interval wakes the
/// waker before returning `Pending`), so a spinning guest is checked as often
/// as a sleeping one. Each poll runs inside wasmtime-wasi's ambient runtime so
/// its timers and I/O can register; they wake this thread through `waker`.
fn drive<F: Future>(
    mut future: Pin<&mut F>,
    control: &Control,
    deadline: Option<Instant>,
    waker: &Arc<WorkerWaker>,
    on_yield: impl Fn(),
) -> Driven<F::Output> {
    let task_waker = Waker::from(waker.clone());
    let mut cx = Context::from_waker(&task_waker);
    loop {
        if control.stop_requested() {
            return Driven::Stopped;
        }
        let now = deadline.map(|_| Instant::now());
        if let (Some(deadline), Some(now)) = (deadline, now) {
            if now >= deadline {
                return Driven::DeadlineExceeded;
            }
        }
        waker.woken.store(false, Ordering::Relaxed);
        let polled =
            wasmtime_wasi::runtime::with_ambient_tokio_runtime(|| future.as_mut().poll(&mut cx));
        if let Poll::Ready(output) = polled {
            return Driven::Finished(output);
        }
        if waker.woken.load(Ordering::Acquire) {
            // Woken during the poll: a fuel-slice yield, ready to run again.
            on_yield();
            continue;
        }
        // Waiting on a host event. A wake or a stop request that lands between
        // the check above and the park leaves an unpark token: no lost wake-up.
        match (deadline, now) {
            (Some(deadline), Some(now)) => thread::park_timeout(deadline - now),
            _ => thread::park(),
        }
    }
}

/// Why the guest's future ended with an error.
enum RunError {
    /// Before the entry point ran: instantiation or export lookup.
    Setup(wasmtime::Error),
    /// While the entry point ran.
    Guest(wasmtime::Error),
}

/// Instantiates the artifact and calls its entry point; the exit code on success.
async fn instantiate_and_call(
    store: &mut Store<HostState>,
    compiled: &Compiled,
) -> Result<i32, RunError> {
    match compiled {
        Compiled::Module { pre, entry } => {
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(RunError::Setup)?;
            if let Entry::MainWithCode = entry {
                let main = instance
                    .get_typed_func::<(), i32>(&mut *store, entry.name())
                    .map_err(RunError::Setup)?;
                return main
                    .call_async(&mut *store, ())
                    .await
                    .map_err(RunError::Guest);
            }
            let start = instance
                .get_typed_func::<(), ()>(&mut *store, entry.name())
                .map_err(RunError::Setup)?;
            start
                .call_async(&mut *store, ())
                .await
                .map_err(RunError::Guest)?;
            Ok(0)
        }
        Compiled::Component { pre, run } => {
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(RunError::Setup)?;
            let run = instance
                .get_typed_func::<(), (Result<(), ()>,)>(&mut *store, run)
                .map_err(RunError::Setup)?;
            let (result,) = run
                .call_async(&mut *store, ())
                .await
                .map_err(RunError::Guest)?;
            Ok(if result.is_ok() { 0 } else { 1 })
        }
    }
}

/// Runs `instance` to its end on this thread and says how it ended.
pub(crate) fn run(shared: &Shared, instance: &Instance, waker: &Arc<WorkerWaker>) -> Outcome {
    let compiled = match instance
        .artifact
        .compiled(&shared.engines, shared.disk.as_ref())
    {
        Ok(compiled) => compiled,
        Err(reason) => return Outcome::Failed(reason),
    };
    // The run's CPU and wall time start here: an artifact's first compile is not the guest's.
    instance.stats.begin();
    let plan = &instance.plan;
    let wasi = match build_wasi(instance, compiled) {
        Ok(wasi) => wasi,
        Err(reason) => return Outcome::Failed(reason),
    };
    let mut store = Store::new(
        compiled.engine(),
        HostState {
            wasi,
            limiter: MemoryLimiter {
                limit: plan.memory_limit,
                trap_on_refusal: plan.trap_on_grow_failure,
                stats: instance.stats.clone(),
            },
        },
    );
    store.limiter(|state| &mut state.limiter);
    let budget = plan.max_fuel.unwrap_or(u64::MAX);
    let slice = shared.config.fuel_slice.max(1);
    if let Err(e) = store
        .set_fuel(budget)
        .and_then(|()| store.fuel_async_yield_interval(Some(slice)))
    {
        return Outcome::Failed(format!("cannot meter fuel: {e:#}"));
    }
    let deadline = plan
        .max_execution_time
        .and_then(|limit| Instant::now().checked_add(limit));
    let stats: &StatsCell = &instance.stats;
    let driven = {
        let future = pin!(instantiate_and_call(&mut store, compiled));
        drive(future, &instance.control, deadline, waker, || {
            stats.fuel.fetch_add(slice, Ordering::Relaxed);
        })
    };
    let consumed = budget.saturating_sub(store.get_fuel().unwrap_or(0));
    stats.fuel.store(consumed, Ordering::Relaxed);
    match driven {
        Driven::Finished(Ok(code)) => Outcome::Exited(code),
        Driven::Finished(Err(error)) => classify(error, budget),
        Driven::Stopped => Outcome::Stopped,
        Driven::DeadlineExceeded => {
            Outcome::DeadlineExceeded(plan.max_execution_time.unwrap_or_default())
        }
    }
}

/// Names the end of a guest whose future returned an error.
fn classify(error: RunError, budget: u64) -> Outcome {
    let (error, during_setup) = match error {
        RunError::Setup(e) => (e, true),
        RunError::Guest(e) => (e, false),
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Outcome::MemoryLimit { limit: limit.limit };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::OutOfFuel { budget },
        Some(trap) => Outcome::Trapped(trap.to_string()),
        None if during_setup => Outcome::Failed(format!("instantiation failed: {error:#}")),
        None => Outcome::Trapped(format!("{error:#}")),
    }
}

/// The guest's WASI context: exactly the plan's env, argv, mounts and stdio.
fn build_wasi(instance: &Instance, compiled: &Compiled) -> Result<Wasi, String> {
    let plan = &instance.plan;
    let mut builder = WasiCtxBuilder::new();
    builder.args(&plan.argv).envs(&plan.env);
    let output = |stream| GuestOutput {
        buffer: instance.logs.clone(),
        stream,
        sink: plan.output.clone(),
    };
    builder
        .stdout(output(LogStream::Stdout))
        .stderr(output(LogStream::Stderr));
    match &plan.stdin {
        StdinSpec::Empty => {}
        StdinSpec::Bytes(bytes) => {
            builder.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes.clone()));
        }
        StdinSpec::Inherit => {
            builder.inherit_stdin();
        }
    }
    for mount in &plan.mounts {
        let perms = if mount.readonly {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&mount.host, &mount.guest, perms)
            .map_err(|e| format!("cannot mount '{}': {e:#}", mount.host.display()))?;
    }
    if let Some(dir) = &plan.workdir {
        builder.initial_cwd(dir);
    }
    // Off unless the spec asks: wasmtime-wasi refuses TCP, UDP and name lookups
    // by default, and no address passes its default check.
    if plan.network {
        builder
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    }
    Ok(match compiled {
        Compiled::Module { .. } => Wasi::Preview1(builder.build_p1()),
        Compiled::Component { .. } => Wasi::Preview2 {
            ctx: builder.build(),
            table: wasmtime::component::ResourceTable::new(),
        },
    })
}
