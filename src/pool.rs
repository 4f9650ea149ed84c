//! The fixed pool of worker threads and the commands they take from one channel.

use crate::exec::{self, WorkerWaker};
use crate::instance::{Instance, Phase};
use crate::outcome::Outcome;
use crate::Shared;
use crossbeam_channel::Receiver;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The set of instructions a worker knows how to process.
pub(crate) enum Command {
    /// Run this queued container to its end.
    Run(Arc<Instance>),
}

/// Starts `count` workers that share `commands`; they exit when every sender is gone.
pub(crate) fn spawn_workers(
    shared: &Arc<Shared>,
    commands: &Receiver<Command>,
    count: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|index| {
            let shared = shared.clone();
            let commands = commands.clone();
            thread::Builder::new()
                .name(format!("wasmpool-worker-{index}"))
                .spawn(move || worker_main(&shared, &commands))
        })
        .collect()
}

fn worker_main(shared: &Shared, commands: &Receiver<Command>) {
    let waker = WorkerWaker::for_current_thread();
    for command in commands.iter() {
        match command {
            Command::Run(instance) => run_one(shared, &instance, &waker),
        }
    }
}

/// Runs one container if it is still queued; whatever happens, it ends with an outcome.
fn run_one(shared: &Shared, instance: &Instance, waker: &Arc<WorkerWaker>) {
    {
        let mut phase = instance.phase.lock();
        if *phase != Phase::Queued {
            return; // stopped or removed while it waited
        }
        if shared.is_shutting_down() {
            drop(phase);
            instance.finish(Outcome::Stopped);
            return;
        }
        *phase = Phase::Running;
    }
    instance.control.attach(thread::current());
    instance.stats.begin();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| exec::run(shared, instance, waker)))
        .unwrap_or_else(|payload| Outcome::Panicked(panic_message(payload.as_ref())));
    instance.control.detach();
    instance.stats.end();
    log::debug!("container '{}' ended: {outcome}", instance.id);
    instance.finish(outcome);
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}
