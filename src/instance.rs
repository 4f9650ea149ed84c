//! One container as the runtime holds it: its plan, its artifact, its phase and
//! the shared cells (completion, logs, stats, stop control) that outlive a run.

use crate::artifact::Artifact;
use crate::config::WasmConfig;
use crate::container::{ContainerId, ContainerState};
use crate::error::{Error, Result};
use crate::handle::{Completion, WaitHandle};
use crate::logs::LogBuffer;
use crate::outcome::Outcome;
use crate::pool::Admission;
use crate::spec::{parse_size, OutputSink, ServiceSpec, StdinSpec, StorageSpec};
use crate::stats::StatsCell;
use crate::task::Task;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{OnceLock, Weak};
use std::time::{Duration, Instant};

/// Everything a worker needs to run a container, resolved from its spec at create.
pub(crate) struct RunPlan {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) stdin: StdinSpec,
    pub(crate) output: Option<OutputSink>,
    pub(crate) network: bool,
    pub(crate) max_fuel: Option<u64>,
    pub(crate) memory_limit: Option<u64>,
    pub(crate) trap_on_grow_failure: bool,
    pub(crate) max_execution_time: Option<Duration>,
    pub(crate) max_open_resources: usize,
    pub(crate) invoke: Option<String>,
    pub(crate) trap_unknown_imports: bool,
}

/// A directory the guest sees at `guest`.
pub(crate) struct Mount {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
    pub(crate) readonly: bool,
}

impl RunPlan {
    /// Resolves `spec` against the runtime's defaults, refusing values it cannot use.
    pub(crate) fn new(spec: &ServiceSpec, config: &WasmConfig) -> Result<Self> {
        let wasm = spec.wasm.clone().unwrap_or_default();
        let memory_limit = match &wasm.max_memory {
            Some(text) => Some(parse_size(text).map_err(|_| Error::InvalidSpec {
                field: "wasm.max_memory",
                value: text.clone(),
                reason: "expected a size such as 64Mi, 1G or 65536".into(),
            })?),
            None => None,
        };
        let max_execution_time = wasm.max_execution_time.unwrap_or(config.max_execution_time);
        if let Some(cap) = wasm.max_open_resources {
            if cap < 16 {
                return Err(Error::InvalidSpec {
                    field: "wasm.max_open_resources",
                    value: cap.to_string(),
                    reason: "a guest needs at least 16 (its stdio and preopens are resources too)"
                        .into(),
                });
            }
        }
        if wasm.invoke.as_deref() == Some("") {
            return Err(Error::InvalidSpec {
                field: "wasm.invoke",
                value: String::new(),
                reason: "name an exported function".into(),
            });
        }
        let mut argv = vec![spec.image.name.clone()];
        argv.extend(spec.command.entrypoint.iter().flatten().cloned());
        argv.extend(spec.command.args.iter().flatten().cloned());
        let mut env: Vec<_> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.sort();
        let mounts = spec
            .storage
            .iter()
            .map(|storage| resolve_mount(storage, config))
            .collect::<Result<_>>()?;
        Ok(RunPlan {
            argv,
            env,
            workdir: spec.command.workdir.clone(),
            mounts,
            stdin: spec.stdin.clone(),
            output: spec.output.clone(),
            network: spec.network,
            max_fuel: wasm.max_fuel.or(config.max_fuel),
            memory_limit,
            trap_on_grow_failure: wasm.trap_on_grow_failure,
            max_execution_time: (max_execution_time != Duration::MAX).then_some(max_execution_time),
            max_open_resources: wasm.max_open_resources.unwrap_or(config.max_open_resources),
            invoke: wasm.invoke.clone(),
            trap_unknown_imports: wasm.trap_unknown_imports,
        })
    }
}

fn resolve_mount(storage: &StorageSpec, config: &WasmConfig) -> Result<Mount> {
    let (host, target, readonly) = match storage {
        StorageSpec::Bind {
            source,
            target,
            readonly,
        } => {
            if !source.is_dir() {
                return Err(Error::InvalidSpec {
                    field: "storage.source",
                    value: source.display().to_string(),
                    reason: "not a directory".into(),
                });
            }
            (source.clone(), target, *readonly)
        }
        StorageSpec::Named {
            name,
            target,
            readonly,
        } => {
            let valid = !name.is_empty()
                && name != "."
                && name != ".."
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(Error::InvalidSpec {
                    field: "storage.name",
                    value: name.clone(),
                    reason: "a volume name has only letters, digits, '-', '_' and '.'".into(),
                });
            }
            let dir = config.cache_dir.join("volumes").join(name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::InvalidSpec {
                field: "storage.name",
                value: name.clone(),
                reason: format!("cannot create '{}': {e}", dir.display()),
            })?;
            (dir, target, *readonly)
        }
    };
    if target.is_empty() {
        return Err(Error::InvalidSpec {
            field: "storage.target",
            value: target.clone(),
            reason: "a mount needs a guest path".into(),
        });
    }
    Ok(Mount {
        host,
        guest: target.clone(),
        readonly,
    })
}

/// Where a container is in its life; the outcome itself lives in the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Created,
    Queued,
    Running,
    Ended,
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
    ) -> Self {
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
        let mut phase = self.phase.lock();
        match *phase {
            Phase::Created | Phase::Queued => self.end_locked(&mut phase, Outcome::Stopped),
            Phase::Running => {
                drop(phase);
                self.control.request_stop();
            }
            Phase::Ended => {}
        }
    }
}
