//! The fixed pool of worker threads and the commands they take from one channel.

use crate::exec::{self, WorkerWaker};
use crate::instance::{Instance, Phase};
use crate::outcome::Outcome;
use crate::Shared;
use crossbeam_channel::{Receiver, TryRecvError};
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

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
    while let Some(command) = next_command(commands) {
        match command {
            Command::Run(instance) => {
                // `run_one` catches a guest's panics itself; this keeps the worker
                // serving even if our own bookkeeping around it panicked.
                let _ =
                    panic::catch_unwind(AssertUnwindSafe(|| run_one(shared, &instance, &waker)));
            }
        }
    }
}

/// How long an idle worker keeps looking for work before it blocks.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// The next command; spins briefly (yielding the CPU) before blocking, so a
/// host that starts containers back to back does not pay a thread wake-up each.
fn next_command(commands: &Receiver<Command>) -> Option<Command> {
    let give_up = Instant::now() + IDLE_SPIN;
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < give_up => thread::yield_now(),
            Err(TryRecvError::Empty) => return commands.recv().ok(),
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
    // Whatever happens from here on, the guard ends the run and waiters get an outcome.
    let mut run = EndOfRun {
        instance,
        outcome: None,
    };
    instance.control.attach(thread::current());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| exec::run(shared, instance, waker)))
        .unwrap_or_else(|payload| Outcome::Panicked(panic_message(payload.as_ref())));
    log::debug!("container '{}' ended: {outcome}", instance.id);
    run.outcome = Some(outcome);
}

/// Ends a run when dropped: detaches the worker, freezes the stats and sets the
/// outcome, or a panicked one if the run never produced it.
struct EndOfRun<'a> {
    instance: &'a Instance,
    outcome: Option<Outcome>,
}

impl Drop for EndOfRun<'_> {
    fn drop(&mut self) {
        self.instance.control.detach();
        self.instance.stats.end();
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Outcome::Panicked("the worker failed while running the container".into())
        });
        self.instance.finish(outcome);
    }
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
