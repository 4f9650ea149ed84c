//! The run of one container as a future: compile, instantiate, call the entry
//! point, and say how it ended. Workers poll it one fuel slice at a time.

use super::entry::Entry;
use super::host::{HostState, MemoryLimitExceeded, MemoryLimiter};
use super::instance::{Control, Instance};
use super::link::{Pre, Prepared};
use super::plan::RunPlan;
use super::stats::StatsCell;
use super::wasi::build_wasi;
use super::Shared;
use crate::artifacts::Compiled;
use crate::settings::Outcome;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use wasmtime::component::ResourceTableError;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap};
use wasmtime_wasi::I32Exit;

/// Why the guest's future ended with an error.
pub(crate) enum RunError {
    /// Before the entry point ran: instantiation or export lookup.
    Setup(wasmtime::Error),
    /// While the initializer or the entry point ran.
    Guest(wasmtime::Error),
    /// The artifact cannot run as asked: a link error, a missing entry point.
    CannotRun(String),
}

/// How a call into the guest ended, seen from outside it.
pub(crate) enum Driven<T> {
    Finished(T),
    Stopped,
    DeadlineExceeded,
}

/// A fresh store for one run of `engine`'s code: the plan's memory limit
/// (accounted in `stats`) and fuel budget, yielding every `fuel_slice`.
/// Returns the store and its fuel budget.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    wasi: super::host::Wasi,
    plan: &RunPlan,
    stats: &Arc<StatsCell>,
    fuel_slice: u64,
) -> Result<(Store<HostState>, u64), RunError> {
    let limiter = MemoryLimiter::new(plan.memory_limit, plan.trap_on_grow_failure, stats.clone());
    store_with(engine, wasi, plan, limiter, fuel_slice)
}

/// A fresh store as [`new_store`] makes it, with this memory limiter.
pub(crate) fn store_with(
    engine: &wasmtime::Engine,
    wasi: super::host::Wasi,
    plan: &RunPlan,
    limiter: MemoryLimiter,
    fuel_slice: u64,
) -> Result<(Store<HostState>, u64), RunError> {
    let mut store = Store::new(engine, HostState { wasi, limiter });
    store.limiter(|state| &mut state.limiter);
    // The component model's own handle tables — resources, and WASI 0.3's
    // streams, futures, waitables and subtasks — share the resource cap.
    store.set_max_component_handles(plan.max_open_resources);
    let budget = plan.max_fuel.unwrap_or(u64::MAX);
    store
        .set_fuel(budget)
        .and_then(|()| store.fuel_async_yield_interval(Some(fuel_slice)))
        .map_err(RunError::Setup)?;
    Ok((store, budget))
}

/// Polls `call` until it finishes, a stop is requested through `control`, or
/// `deadline` passes; checked at every poll, so at every fuel slice.
pub(crate) async fn drive<F: Future>(
    call: F,
    control: &Control,
    deadline: Option<Instant>,
) -> Driven<F::Output> {
    let mut call = pin!(call);
    poll_fn(|cx| {
        if control.stop_requested() {
            return Poll::Ready(Driven::Stopped);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Poll::Ready(Driven::DeadlineExceeded);
        }
        call.as_mut().poll(cx).map(Driven::Finished)
    })
    .await
}

/// Records the fuel a finished store consumed of its `budget`: exact, once
/// the guest's future is gone.
pub(crate) fn record_fuel(store: &Store<HostState>, budget: u64, stats: &StatsCell) {
    let consumed = budget.saturating_sub(store.get_fuel().unwrap_or(0));
    stats
        .fuel
        .store(consumed, std::sync::atomic::Ordering::Relaxed);
}

/// The whole run of `instance`: the future a task polls.
pub(crate) async fn future(shared: Arc<Shared>, instance: Arc<Instance>) -> Outcome {
    run(&shared, &instance).await
}

async fn run(shared: &Shared, instance: &Instance) -> Outcome {
    let artifact = &instance.artifact;
    let compiles_now = !artifact.is_compiled();
    let compiled = match artifact.compiled(&shared.engines, shared.disk.as_ref()) {
        Ok(compiled) => compiled,
        Err(reason) => return Outcome::Failed(reason),
    };
    if !instance.begin_running() {
        return Outcome::Stopped; // stopped or removed while it compiled
    }
    // The run's CPU and wall time start here: an artifact's first compile is not the guest's.
    instance.stats.begin(compiles_now);
    let deadline = instance
        .plan
        .max_execution_time
        .and_then(|limit| Instant::now().checked_add(limit));
    if let Some(deadline) = deadline {
        instance.control.set_deadline(deadline);
    }
    let outcome = run_on(shared, instance, compiled, deadline).await;
    // Every pooled slot is taken by other live guests: run this one with its
    // own allocations (the artifact compiles once more, for that engine).
    if let Err(RunError::Setup(e)) = &outcome {
        if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
            log::debug!("container '{}': pooled slots all in use ({e})", instance.id);
            // The pooled attempt's memory is gone with its store.
            instance.stats.forget_memory();
            let compiled = match artifact.compiled_on_demand(&shared.engines, shared.disk.as_ref())
            {
                Ok(compiled) => compiled,
                Err(reason) => return Outcome::Failed(reason),
            };
            return finish(run_on(shared, instance, compiled, deadline).await, instance);
        }
    }
    finish(outcome, instance)
}

fn finish(outcome: Result<Outcome, RunError>, instance: &Instance) -> Outcome {
    match outcome {
        Ok(outcome) => outcome,
        Err(error) => classify(error, &instance.plan),
    }
}

/// Instantiates `compiled` in a fresh store and runs it until it ends, is stopped, or its deadline.
async fn run_on(
    shared: &Shared,
    instance: &Instance,
    compiled: &Compiled<Prepared>,
    deadline: Option<Instant>,
) -> Result<Outcome, RunError> {
    let plan = &instance.plan;
    let prepared = Prepared::of(compiled, &shared.linking);
    let entry = prepared
        .entry
        .as_ref()
        .map_err(|e| RunError::CannotRun(e.clone()))?;
    let component = matches!(compiled.code, crate::artifacts::Code::Component(_));
    let wasi = build_wasi(instance, component, None).map_err(RunError::CannotRun)?;
    let pre = prepared
        .pre(compiled, &shared.linking, plan.trap_unknown_imports)
        .map_err(RunError::CannotRun)?;
    let (mut store, budget) = new_store(
        compiled.engine(),
        wasi,
        plan,
        &instance.stats,
        shared.config.fuel_slice,
    )?;
    let driven = drive(
        instantiate_and_call(
            &mut store,
            entry,
            pre,
            || prepared.module_entry(compiled, plan.invoke.as_deref()),
            plan.invoke.as_deref(),
        ),
        &instance.control,
        deadline,
    )
    .await;
    // The guest's future is gone (cancelled where it stood, if it was stopped):
    // the store is ours again, and its fuel is exact.
    record_fuel(&store, budget, &instance.stats);
    Ok(match driven {
        Driven::Finished(Ok(code)) => Outcome::Exited(code),
        Driven::Finished(Err(error)) => return Err(error),
        Driven::Stopped => Outcome::Stopped,
        Driven::DeadlineExceeded => {
            Outcome::DeadlineExceeded(plan.max_execution_time.unwrap_or_default())
        }
    })
}

/// Instantiates the artifact and calls its entry point; the exit code on success.
///
/// Modules follow `wasmtime run`: a reactor's `_initialize` runs first, then
/// the export named by `invoke`, else the default export (`""`, else
/// `_start`, else `main`).
async fn instantiate_and_call(
    store: &mut Store<HostState>,
    entry: &Entry,
    pre: &Pre,
    module_entry: impl FnOnce() -> Result<super::entry::ModuleEntry, String>,
    invoke: Option<&str>,
) -> Result<i32, RunError> {
    let setup = RunError::CannotRun;
    match (pre, entry) {
        (Pre::Module(pre), Entry::Module { initialize, .. }) => {
            let entry = module_entry().map_err(setup)?;
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(RunError::Setup)?;
            if *initialize {
                let init = instance
                    .get_typed_func::<(), ()>(&mut *store, "_initialize")
                    .map_err(RunError::Setup)?;
                init.call_async(&mut *store, ())
                    .await
                    .map_err(guest_error)?;
            }
            if entry.returns_code {
                let main = instance
                    .get_typed_func::<(), i32>(&mut *store, &entry.name)
                    .map_err(RunError::Setup)?;
                return main.call_async(&mut *store, ()).await.map_err(guest_error);
            }
            let start = instance
                .get_typed_func::<(), ()>(&mut *store, &entry.name)
                .map_err(RunError::Setup)?;
            start
                .call_async(&mut *store, ())
                .await
                .map_err(guest_error)?;
            Ok(0)
        }
        (Pre::Component(pre), Entry::Component { run, p3, .. }) => {
            if let Some(name) = invoke {
                return Err(setup(format!(
                    "cannot invoke '{name}': invoking an export is supported for core modules; a component runs `wasi:cli/run`"
                )));
            }
            let instance = pre
                .instantiate_async(&mut *store)
                .await
                .map_err(RunError::Setup)?;
            let result = if *p3 {
                // An async export: called on the store's concurrent event loop,
                // which our poll drives one fuel slice at a time like any call.
                let command = wasmtime_wasi::p3::bindings::Command::new(&mut *store, &instance)
                    .map_err(RunError::Setup)?;
                store
                    .run_concurrent(async |store| command.wasi_cli_run().call_run(store).await)
                    .await
                    .map_err(guest_error)?
                    .map_err(guest_error)?
            } else {
                let run = instance
                    .get_typed_func::<(), (Result<(), ()>,)>(&mut *store, run)
                    .map_err(RunError::Setup)?;
                run.call_async(&mut *store, ()).await.map_err(guest_error)?.0
            };
            Ok(if result.is_ok() { 0 } else { 1 })
        }
        (_, Entry::Proxy { name, .. }) => Err(setup(format!(
            "a wasi:http service (it exports `{name}`), not a command: serve it — give its spec an HTTP endpoint, or run `wasmpool serve`"
        ))),
        _ => Err(setup("an artifact was linked as the wrong kind".into())),
    }
}

/// An error from calling into the guest. Running out of pooled fiber stacks
/// happens before the guest's code starts: that is a setup error, so the run
/// moves to on-demand allocation like a failed pooled instantiation.
pub(crate) fn guest_error(error: wasmtime::Error) -> RunError {
    if error.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        RunError::Setup(error)
    } else {
        RunError::Guest(error)
    }
}

/// Names the end of a guest whose future returned an error.
pub(crate) fn classify(error: RunError, plan: &RunPlan) -> Outcome {
    let (error, during_setup) = match error {
        RunError::Setup(e) => (e, true),
        RunError::Guest(e) => (e, false),
        RunError::CannotRun(reason) => return Outcome::Failed(reason),
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Outcome::MemoryLimit { limit: limit.limit };
    }
    if error.downcast_ref::<ResourceTableError>().is_some()
        || format!("{error:#}").contains("store handle limit exceeded")
    {
        return Outcome::Trapped(format!(
            "resource limit: the guest holds more than {} open resources (descriptors, streams, futures, sockets, pollables, subtasks)",
            plan.max_open_resources
        ));
    }
    let budget = plan.max_fuel.unwrap_or(u64::MAX);
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::OutOfFuel { budget },
        Some(trap) => Outcome::Trapped(trap.to_string()),
        None if during_setup => Outcome::Failed(format!("instantiation failed: {error:#}")),
        None => Outcome::Trapped(format!("{error:#}")),
    }
}
