//! One container as the runtime holds it: its plan, its artifact, its phase and
//! the shared cells (completion, logs, stats, stop control) that outlive a run;
//! the scheduler sees it as a [`Job`].

use super::link::Artifact;
use super::logs::LogBuffer;
use super::plan::RunPlan;
use super::stats::StatsCell;
use crate::scheduler::{Admission, Completion, CpuMark, Job, Task, WaitHandle};
use crate::settings::{ContainerId, ContainerState, Outcome};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{OnceLock, Weak};
use std::time::{Duration, Instant};

/// Where a container is in its life; the outcome itself lives in the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Created,
    Queued,
    Running,
    Ended,
}

/// What a served container's server offers its instance: a stop that drains.
pub(crate) trait Serving: Send + Sync {
    /// Stops accepting, lets requests in flight finish for up to `grace`, then
    /// stops the rest; the container ends once every request instance ended.
    fn stop(&self, grace: Duration);
}

/// Lets the host ask a running guest to stop, waking its task if it is parked.
#[derive(Default)]
pub(crate) struct Control {
    stop: AtomicBool,
    task: Mutex<Option<Weak<Task>>>,
    deadline: OnceLock<Instant>,
}

impl Control {
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        let task = self.task.lock().as_ref().and_then(Weak::upgrade);
        if let Some(task) = task {
            task.schedule();
        }
    }

    pub(crate) fn attach(&self, task: &Arc<Task>) {
        *self.task.lock() = Some(Arc::downgrade(task));
    }

    pub(crate) fn detach(&self) {
        *self.task.lock() = None;
    }

    /// The task running the container, while it has one.
    pub(crate) fn task(&self) -> Option<Arc<Task>> {
        self.task.lock().as_ref().and_then(Weak::upgrade)
    }

    /// Sets the run's wall-clock deadline, once, as instantiation begins.
    pub(crate) fn set_deadline(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }
}

/// One container: what to run and the cells hosts observe it through.
pub(crate) struct Instance {
    pub(crate) id: ContainerId,
    pub(crate) plan: RunPlan,
    pub(crate) artifact: Arc<Artifact>,
    pub(crate) phase: Mutex<Phase>,
    pub(crate) completion: Arc<Completion>,
    pub(crate) control: Control,
    pub(crate) logs: Arc<LogBuffer>,
    pub(crate) stats: Arc<StatsCell>,
    /// The runtime's count of guest runs and their ends.
    counters: Arc<super::stats::GuestCounters>,
    /// Its `wasi:config` values.
    pub(crate) config: Arc<super::config::ConfigValues>,
    /// Its service's buckets, and the operations it made on them.
    pub(crate) keyvalue: super::keyvalue::KeyValue,
    /// The server of a served container, while it serves.
    pub(crate) serving: OnceLock<Weak<dyn Serving>>,
    admission: Arc<Admission>,
    /// Whether the container holds a place in `admission`; it gives it back as it ends.
    admitted: AtomicBool,
}

impl Instance {
    pub(crate) fn new(
        id: ContainerId,
        plan: RunPlan,
        artifact: Arc<Artifact>,
        log_limit: usize,
        admission: Arc<Admission>,
        keyvalue: super::keyvalue::KeyValue,
        counters: Arc<super::stats::GuestCounters>,
    ) -> Self {
        let config = Arc::new(super::config::ConfigValues::new(&plan.config));
        let stats = Arc::new(StatsCell::new(plan.memory_limit));
        Instance {
            id,
            plan,
            artifact,
            phase: Mutex::new(Phase::Created),
            completion: Arc::default(),
            control: Control::default(),
            logs: Arc::new(LogBuffer::new(log_limit)),
            stats,
            counters,
            config,
            keyvalue,
            serving: OnceLock::new(),
            admission,
            admitted: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> ContainerState {
        let phase = self.phase.lock();
        match *phase {
            Phase::Created | Phase::Queued => ContainerState::Pending,
            Phase::Running => ContainerState::Running,
            Phase::Ended => self
                .completion
                .probe()
                .expect("an ended container has an outcome")
                .state(),
        }
    }

    /// A handle on the container's end; while it has a task, `wait` may run it.
    pub(crate) fn wait_handle(&self) -> WaitHandle {
        match self.control.task() {
            Some(task) => WaitHandle::with_task(self.completion.clone(), &task),
            None => WaitHandle::new(self.completion.clone()),
        }
    }

    pub(crate) fn has_ended(&self) -> bool {
        *self.phase.lock() == Phase::Ended
    }

    /// Moves a created container to the queue, taking an admission place.
    pub(crate) fn enqueue(&self) -> std::result::Result<(), Option<Phase>> {
        let mut phase = self.phase.lock();
        if *phase != Phase::Created {
            return Err(Some(*phase));
        }
        if !self.admission.try_admit() {
            return Err(None);
        }
        self.admitted.store(true, Ordering::Release);
        *phase = Phase::Queued;
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves a queued container to running as instantiation begins; false if
    /// it was stopped or removed meanwhile (for instance while it compiled).
    pub(crate) fn begin_running(&self) -> bool {
        let mut phase = self.phase.lock();
        if *phase != Phase::Queued {
            return false;
        }
        *phase = Phase::Running;
        true
    }

    /// Ends the container with `outcome` unless it already ended. Logs close
    /// first so a waiter that wakes sees every line; the phase lock is held
    /// throughout so `state` never sees an end without its outcome.
    pub(crate) fn finish(&self, outcome: Outcome) {
        let mut phase = self.phase.lock();
        self.end_locked(&mut phase, outcome);
    }

    fn end_locked(&self, phase: &mut Phase, outcome: Outcome) {
        if *phase != Phase::Ended {
            if matches!(*phase, Phase::Queued | Phase::Running) {
                self.counters.ended(&outcome);
            }
            *phase = Phase::Ended;
            self.stats.end();
            self.logs.close();
            if self.admitted.swap(false, Ordering::AcqRel) {
                self.admission.release();
            }
            self.completion.set(outcome);
        }
    }

    /// Asks the container to end: a container that is not running (created,
    /// queued, or still compiling) ends now as stopped; a running one is told
    /// to stop at its next poll, and its task is woken for it.
    pub(crate) fn request_stop(&self) {
        // A service drains for most of the grace, so that it ended within it.
        let grace = self.plan.stop_grace;
        self.request_stop_within(grace.saturating_sub(grace / 10));
    }

    /// As [`Instance::request_stop`]; a served container lets its requests in
    /// flight finish for up to `grace` first.
    pub(crate) fn request_stop_within(&self, grace: Duration) {
        let mut phase = self.phase.lock();
        match *phase {
            Phase::Created | Phase::Queued => self.end_locked(&mut phase, Outcome::Stopped),
            Phase::Running => {
                drop(phase);
                match self.serving.get().and_then(Weak::upgrade) {
                    Some(service) => service.stop(grace),
                    None => self.control.request_stop(),
                }
            }
            Phase::Ended => {}
        }
    }
}

impl Job for Instance {
    fn name(&self) -> String {
        format!("container '{}'", self.id)
    }

    fn has_ended(&self) -> bool {
        Instance::has_ended(self)
    }

    fn is_ready(&self) -> bool {
        self.artifact.loaded_quickly()
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
        Instance::finish(self, outcome);
    }

    fn detach(&self) {
        self.control.detach();
    }
}
